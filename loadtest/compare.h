// Side-by-side comparison of several reports of the same batch sweep (e.g. the paper
// experiment: one report per model served): a Markdown table of generated tokens/s per
// texts-per-request for each model, with ratios to a baseline model and the peaks, and a
// chart with one line per model.
#ifndef TASKMOE_LOADTEST_COMPARE_H_
#define TASKMOE_LOADTEST_COMPARE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loadtest/report.h"
#include "loadtest/svg_plot.h"

namespace taskmoe::loadtest {

struct NamedReport {
  std::string name;  // column and legend title
  LoadedReport report;
};

// "name=path,name=path" -> the reports read from those files.
absl::StatusOr<std::vector<NamedReport>> ReadNamedReports(absl::string_view spec);

// The Markdown table. `baseline` ("" for none) must be one of the names; every other model
// then gets a ratio column "name / baseline".
absl::StatusOr<std::string> CompareMarkdown(const std::vector<NamedReport>& reports,
                                            const std::string& baseline);

Chart CompareChart(const std::vector<NamedReport>& reports, const std::string& title);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_COMPARE_H_
