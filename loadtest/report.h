// Reports of a load test: a human table on stdout, and a JSON file (the machine-readable
// record, read back by --compare). Times are in milliseconds in both.
//
// JSON layout: {"tool": "taskmoe-loadtest", "format_version": 1, "label": ..., "target": ...,
//   "api": ..., "loop": ..., "sweep": {"kind": ..., "values": [...]}, "tasks": {task: weight},
//   "texts": ..., "max_output_tokens": ..., "beam_size": ..., "duration_s": ...,
//   "requests_limit": ..., "warmup_s": ..., "seed": ...,
//   "runs": [RunReport as below, one per sweep point]}
#ifndef TASKMOE_LOADTEST_REPORT_H_
#define TASKMOE_LOADTEST_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loadtest/options.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"
#include "nlohmann/json.hpp"

namespace taskmoe::loadtest {

// One run (one point of a sweep) and the settings it ran with.
struct RunReport {
  std::string name;  // "concurrency=4", "batch=32", ... or "run"
  int concurrency = 1;
  double rate = 0;  // open loop; 0 for closed
  int texts_per_request = 1;
  int64_t warmup_requests = 0;
  int64_t skipped_arrivals = 0;
  Summary summary;
  std::map<std::string, std::string> error_examples;  // first message per status code
};

nlohmann::json RunToJson(const RunReport& run);
absl::StatusOr<RunReport> RunFromJson(const nlohmann::json& json);

// The whole report: the options that matter for reading the numbers, and the runs.
nlohmann::json ReportToJson(const LoadTestOptions& options, const TaskMix& mix,
                            const std::vector<RunReport>& runs);

// A report file's label and runs (for --compare).
struct LoadedReport {
  std::string label;
  std::vector<RunReport> runs;
};
absl::StatusOr<LoadedReport> ReadReport(const std::string& path);

// Writes `text` to `path` (replacing it); the message names the path on failure.
absl::Status WriteTextFile(const std::string& path, const std::string& text);
// Writes `json` (indented) to `path`.
absl::Status WriteJsonFile(const std::string& path, const nlohmann::json& json);

// The human table: one row per run, then errors by code where there were any.
std::string FormatTable(const std::vector<RunReport>& runs, bool is_stream);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_REPORT_H_
