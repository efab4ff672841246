// The command-line flags of taskmoe-loadtest (absl flags; `taskmoe-loadtest --help` lists
// them) and their translation into LoadTestOptions or, for --compare, CompareOptions.
#ifndef TASKMOE_LOADTEST_FLAGS_H_
#define TASKMOE_LOADTEST_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loadtest/options.h"

namespace taskmoe::loadtest {

// Reads the parsed flags (call after absl::ParseCommandLine) and returns validated options.
absl::StatusOr<LoadTestOptions> LoadTestOptionsFromFlags();

// How long to wait for the server's channel to connect before giving up.
absl::Duration ConnectTimeoutFromFlags();

// The comparison mode: no traffic, several reports merged into a table and a chart.
struct CompareOptions {
  std::string reports;   // "name=path,..."; empty: not in comparison mode
  std::string baseline;  // name of the model the ratios divide by
  std::string markdown_path;
  std::string plot_path;
  std::string title;
};
absl::StatusOr<CompareOptions> CompareOptionsFromFlags();

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_FLAGS_H_
