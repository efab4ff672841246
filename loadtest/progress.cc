// The progress thread and its line format.
#include "loadtest/progress.h"

#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"

namespace taskmoe::loadtest {

ProgressSnapshot TakeSnapshot(const LiveCounters& counters, double elapsed_s) {
  return {.elapsed_s = elapsed_s,
          .measuring = counters.measuring,
          .completed = counters.completed,
          .errors = counters.errors,
          .inflight = counters.inflight,
          .output_tokens = counters.output_tokens,
          .skipped = counters.skipped};
}

std::string FormatProgress(const std::string& label, const ProgressSnapshot& now,
                           const ProgressSnapshot& previous) {
  const double interval = now.elapsed_s - previous.elapsed_s;
  const double per_s = interval > 0 ? 1.0 / interval : 0;
  std::string line =
      absl::StrFormat("[%s %6.1fs %s] %d done, %.1f req/s, %.0f tok/s, %d errors, %d in flight",
                      label, now.elapsed_s, now.measuring ? "measure" : "warm-up", now.completed,
                      static_cast<double>(now.completed - previous.completed) * per_s,
                      static_cast<double>(now.output_tokens - previous.output_tokens) * per_s,
                      now.errors, now.inflight);
  if (now.skipped > 0) absl::StrAppendFormat(&line, ", %d skipped", now.skipped);
  return line;
}

ProgressReporter::ProgressReporter(const LiveCounters& counters, std::string label, bool enabled)
    : counters_(counters), label_(std::move(label)) {
  if (enabled) thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
}

ProgressReporter::~ProgressReporter() {
  if (thread_.joinable()) {
    thread_.request_stop();  // wakes the wait below through its stop_token
    thread_.join();
  }
}

void ProgressReporter::Loop(std::stop_token stop) {
  const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  ProgressSnapshot previous;
  std::unique_lock lock(mu_);
  while (true) {
    // Nothing but the stop request wakes it early (the predicate is never true).
    wake_.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
    if (stop.stop_requested()) break;
    const ProgressSnapshot now = TakeSnapshot(
        counters_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    std::fprintf(stderr, "%s\n", FormatProgress(label_, now, previous).c_str());
    previous = now;
  }
}

}  // namespace taskmoe::loadtest
