// The progress line of a long run: once a second, on stderr, how many requests are done,
// the recent request and token rates, errors and requests in flight. Owns its thread (started
// by the constructor, stopped and joined by the destructor).
#ifndef TASKMOE_LOADTEST_PROGRESS_H_
#define TASKMOE_LOADTEST_PROGRESS_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "loadtest/runner.h"

namespace taskmoe::loadtest {

// The counters at one instant.
struct ProgressSnapshot {
  double elapsed_s = 0;  // since the run started
  bool measuring = false;
  int64_t completed = 0;
  int64_t errors = 0;
  int64_t inflight = 0;
  int64_t output_tokens = 0;
  int64_t skipped = 0;
};
ProgressSnapshot TakeSnapshot(const LiveCounters& counters, double elapsed_s);

// One progress line (pure, for tests): totals from `now`, rates over the time since
// `previous`.
std::string FormatProgress(const std::string& label, const ProgressSnapshot& now,
                           const ProgressSnapshot& previous);

class ProgressReporter {
 public:
  // Does nothing when `enabled` is false. `counters` must outlive the reporter.
  ProgressReporter(const LiveCounters& counters, std::string label, bool enabled);
  ~ProgressReporter();
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

 private:
  void Loop(std::stop_token stop);

  const LiveCounters& counters_;
  const std::string label_;
  std::mutex mu_;
  std::condition_variable_any wake_;
  std::jthread thread_;  // last: started after the members it uses exist
};

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_PROGRESS_H_
