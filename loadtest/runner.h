// The load generator's two loops. Closed loop: keeps `concurrency` requests in flight, sending
// the next as soon as one is answered. Open loop: sends at the arrival times of a seeded
// Poisson process whatever the answers, up to `max_inflight` unanswered (arrivals beyond it
// are counted as skipped, so a stalled server cannot make the client grow without bound).
// Both send for `warmup` first (not measured), then measure until `duration` has passed or
// `requests` have been offered, whichever comes first, then wait for the answers in flight
// (each bounded by its deadline): every run ends by itself. In the closed loop the measured
// `duration` starts with the first measured request: when warm-up requests outlast the
// warm-up period, measuring starts once one of them is answered.
#ifndef TASKMOE_LOADTEST_RUNNER_H_
#define TASKMOE_LOADTEST_RUNNER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "loadtest/caller.h"
#include "loadtest/options.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"

namespace taskmoe::loadtest {

struct RunConfig {
  Loop loop = Loop::kClosed;
  int concurrency = 1;
  double rate = 10.0;
  int max_inflight = 1024;
  absl::Duration duration = absl::Seconds(10);  // 0: bounded by `requests` alone
  int64_t requests = 0;                         // 0: bounded by `duration` alone
  absl::Duration warmup = absl::ZeroDuration();
  uint64_t seed = 1;
};

// Counters the progress line reads while a run is going (all requests, warm-up included).
struct LiveCounters {
  std::atomic<int64_t> completed{0};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> inflight{0};
  std::atomic<int64_t> output_tokens{0};
  std::atomic<int64_t> skipped{0};  // open-loop arrivals not sent (max_inflight)
  std::atomic<bool> measuring{false};
};

struct RunResult {
  std::vector<Sample> samples;  // measured requests, in order of completion
  int64_t warmup_requests = 0;
  int64_t skipped_arrivals = 0;  // open loop: measured arrivals not sent (max_inflight)
  // The first error message of each status code (by name), warm-up included: what a
  // failing run most needs to say.
  std::map<std::string, std::string> error_examples;
};

// Runs one load. `live` (optional) is updated as requests complete; it must outlive the call.
RunResult RunLoad(const RunConfig& config, Caller& caller, Workload& workload,
                  LiveCounters* live = nullptr);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_RUNNER_H_
