// Merging batch-sweep reports into one table and one chart. Rows are texts per request, in
// the order of the first report; a model without that point shows "-".
#include "loadtest/compare.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace taskmoe::loadtest {
namespace {

std::optional<double> TokensPerSecond(const NamedReport& r, int texts_per_request) {
  for (const RunReport& run : r.report.runs) {
    if (run.texts_per_request == texts_per_request) return run.summary.output_tokens_per_second;
  }
  return std::nullopt;
}

double PeakTokensPerSecond(const NamedReport& r) {
  double peak = 0;
  for (const RunReport& run : r.report.runs) {
    peak = std::max(peak, run.summary.output_tokens_per_second);
  }
  return peak;
}

std::string Rate(std::optional<double> v) { return v ? absl::StrFormat("%.1f", *v) : "-"; }

std::string Ratio(std::optional<double> v, std::optional<double> base) {
  if (!v || !base || *base <= 0) return "-";
  return absl::StrFormat("%.2fx", *v / *base);
}

}  // namespace

absl::StatusOr<std::vector<NamedReport>> ReadNamedReports(absl::string_view spec) {
  std::vector<NamedReport> reports;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos || eq == 0 || eq + 1 == item.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--compare: '", item, "' is not NAME=REPORT.json"));
    }
    absl::StatusOr<LoadedReport> report = ReadReport(std::string(item.substr(eq + 1)));
    if (!report.ok()) return report.status();
    reports.push_back({std::string(item.substr(0, eq)), *std::move(report)});
  }
  if (reports.empty()) return absl::InvalidArgumentError("--compare: no report given");
  return reports;
}

absl::StatusOr<std::string> CompareMarkdown(const std::vector<NamedReport>& reports,
                                            const std::string& baseline) {
  const NamedReport* base = nullptr;
  for (const NamedReport& r : reports) {
    if (r.name == baseline) base = &r;
  }
  if (!baseline.empty() && base == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--compare_baseline: '", baseline, "' is not one of the --compare names"));
  }
  std::vector<int> batches;
  for (const NamedReport& r : reports) {
    for (const RunReport& run : r.report.runs) {
      if (std::find(batches.begin(), batches.end(), run.texts_per_request) == batches.end()) {
        batches.push_back(run.texts_per_request);
      }
    }
  }

  std::string header = "| texts/request |";
  std::string rule = "|---:|";
  for (const NamedReport& r : reports) {
    absl::StrAppend(&header, " ", r.name, " tokens/s |");
    absl::StrAppend(&rule, "---:|");
  }
  for (const NamedReport& r : reports) {
    if (&r == base) continue;
    if (base != nullptr) {
      absl::StrAppend(&header, " ", r.name, " / ", base->name, " |");
      absl::StrAppend(&rule, "---:|");
    }
  }
  std::string out = absl::StrCat(header, "\n", rule, "\n");
  auto row = [&](const std::string& first, auto value_of) {
    absl::StrAppend(&out, "| ", first, " |");
    for (const NamedReport& r : reports) absl::StrAppend(&out, " ", Rate(value_of(r)), " |");
    if (base != nullptr) {
      for (const NamedReport& r : reports) {
        if (&r != base) absl::StrAppend(&out, " ", Ratio(value_of(r), value_of(*base)), " |");
      }
    }
    absl::StrAppend(&out, "\n");
  };
  for (int b : batches) {
    row(absl::StrCat(b), [b](const NamedReport& r) { return TokensPerSecond(r, b); });
  }
  row("**peak**", [](const NamedReport& r) { return std::optional(PeakTokensPerSecond(r)); });
  return out;
}

Chart CompareChart(const std::vector<NamedReport>& reports, const std::string& title) {
  Chart chart{.title = title,
              .x_label = "texts per request",
              .y_label = "generated tokens/s",
              .log_x = true};
  for (const NamedReport& r : reports) {
    Series series{.name = r.name};
    for (const RunReport& run : r.report.runs) {
      series.points.emplace_back(run.texts_per_request, run.summary.output_tokens_per_second);
    }
    chart.series.push_back(std::move(series));
  }
  return chart;
}

}  // namespace taskmoe::loadtest
