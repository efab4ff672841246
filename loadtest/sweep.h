// Sweeps: the runs one invocation makes (one, or one per sweep value: callers for a
// concurrency sweep, arrival rate for a rate sweep, texts per request for a batch sweep),
// running them in turn, and the chart of their results (a throughput-latency curve for
// concurrency and rate sweeps, generated tokens/s against batch size for batch sweeps).
#ifndef TASKMOE_LOADTEST_SWEEP_H_
#define TASKMOE_LOADTEST_SWEEP_H_

#include <string>
#include <vector>

#include "loadtest/caller.h"
#include "loadtest/options.h"
#include "loadtest/report.h"
#include "loadtest/runner.h"
#include "loadtest/svg_plot.h"
#include "loadtest/workload.h"

namespace taskmoe::loadtest {

struct PlannedRun {
  std::string name;  // "run", "concurrency=4", "rate=20", "batch=32"
  RunConfig config;
  int texts_per_request = 1;
};

// One run per sweep value, each with the options' bounds and warm-up; or the single run.
std::vector<PlannedRun> PlanRuns(const LoadTestOptions& options);

// Runs the plan in order with `caller`, with a progress line per run when `progress`.
std::vector<RunReport> RunPlan(const std::vector<PlannedRun>& plan, Caller& caller,
                               Workload& workload, bool is_stream, bool progress);

// The chart of a sweep's runs; `label` names the series of a batch sweep.
Chart SweepChart(SweepKind kind, const std::vector<RunReport>& runs, bool is_stream,
                 const std::string& label);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_SWEEP_H_
