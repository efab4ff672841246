// Planning, running and charting sweeps.
#include "loadtest/sweep.h"

#include "absl/strings/str_cat.h"
#include "loadtest/progress.h"

namespace taskmoe::loadtest {

std::vector<PlannedRun> PlanRuns(const LoadTestOptions& o) {
  PlannedRun base;
  base.name = "run";
  base.config = {.loop = o.loop,
                 .concurrency = o.concurrency,
                 .rate = o.loop == Loop::kOpen ? o.rate : 0,
                 .max_inflight = o.max_inflight,
                 .duration = o.duration,
                 .requests = o.requests,
                 .warmup = o.warmup,
                 .seed = o.seed};
  base.texts_per_request = o.texts_per_request;
  if (o.sweep.kind == SweepKind::kNone) return {base};

  std::vector<PlannedRun> plan;
  for (double v : o.sweep.values) {
    PlannedRun run = base;
    run.name = absl::StrCat(SweepKindName(o.sweep.kind), "=", v);
    switch (o.sweep.kind) {
      case SweepKind::kConcurrency:
        run.config.concurrency = static_cast<int>(v);
        break;
      case SweepKind::kRate:
        run.config.rate = v;
        break;
      case SweepKind::kBatch:
        run.texts_per_request = static_cast<int>(v);
        break;
      case SweepKind::kNone:
        break;
    }
    plan.push_back(run);
  }
  return plan;
}

std::vector<RunReport> RunPlan(const std::vector<PlannedRun>& plan, Caller& caller,
                               Workload& workload, bool is_stream, bool progress) {
  std::vector<RunReport> reports;
  for (const PlannedRun& run : plan) {
    workload.set_texts_per_request(run.texts_per_request);
    LiveCounters live;
    RunResult result;
    {
      ProgressReporter reporter(live, run.name, progress);
      result = RunLoad(run.config, caller, workload, &live);
    }
    RunReport report;
    report.name = run.name;
    report.concurrency = run.config.loop == Loop::kClosed ? run.config.concurrency : 0;
    report.rate = run.config.loop == Loop::kOpen ? run.config.rate : 0;
    report.texts_per_request = run.texts_per_request;
    report.warmup_requests = result.warmup_requests;
    report.skipped_arrivals = result.skipped_arrivals;
    report.summary = Summarize(result.samples, is_stream);
    report.error_examples = std::move(result.error_examples);
    reports.push_back(std::move(report));
  }
  return reports;
}

Chart SweepChart(SweepKind kind, const std::vector<RunReport>& runs, bool is_stream,
                 const std::string& label) {
  Chart chart;
  if (kind == SweepKind::kBatch) {
    chart.title = "Generated tokens/s by texts per request";
    chart.x_label = "texts per request";
    chart.y_label = "generated tokens/s";
    chart.log_x = true;
    Series series{.name = label.empty() ? "tokens/s" : label};
    for (const RunReport& r : runs) {
      series.points.emplace_back(r.texts_per_request, r.summary.output_tokens_per_second);
    }
    chart.series.push_back(std::move(series));
    return chart;
  }
  chart.title = absl::StrCat("Latency vs throughput (", SweepKindName(kind), " sweep)",
                             label.empty() ? "" : absl::StrCat(": ", label));
  chart.x_label = "throughput (requests/s)";
  chart.y_label = "latency (ms)";
  Series p50{.name = "p50"}, p90{.name = "p90"}, p99{.name = "p99"}, ttft{.name = "TTFT p50"};
  for (const RunReport& r : runs) {
    const double x = r.summary.requests_per_second;
    p50.points.emplace_back(x, r.summary.latency_s.p50 * 1e3);
    // The sweep value beside the median's point says which setting gave it.
    p50.point_labels.push_back(kind == SweepKind::kRate ? absl::StrCat("r=", r.rate)
                                                        : absl::StrCat("c=", r.concurrency));
    p90.points.emplace_back(x, r.summary.latency_s.p90 * 1e3);
    p99.points.emplace_back(x, r.summary.latency_s.p99 * 1e3);
    if (r.summary.ttft_s) ttft.points.emplace_back(x, r.summary.ttft_s->p50 * 1e3);
  }
  chart.series = {p50, p90, p99};
  if (is_stream) chart.series.push_back(ttft);
  return chart;
}

}  // namespace taskmoe::loadtest
