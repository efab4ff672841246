// The closed and open loops. One dispatching thread (the caller's) decides when to send;
// answers arrive on the transport's threads and only touch the shared state below.
#include "loadtest/runner.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "loadtest/schedule.h"

namespace taskmoe::loadtest {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// What the answer callbacks share with the dispatcher. Held by shared_ptr from every
// callback, so that a callback still returning after the dispatcher saw the last answer
// never touches freed memory.
struct SharedState {
  std::mutex mu;
  std::condition_variable answered;
  int64_t inflight = 0;
  std::vector<Sample> samples;
  std::map<std::string, std::string> error_examples;
};

}  // namespace

RunResult RunLoad(const RunConfig& config, Caller& caller, Workload& workload, LiveCounters* live) {
  RunResult result;
  if (config.duration <= absl::ZeroDuration() && config.requests <= 0) return result;

  auto shared = std::make_shared<SharedState>();
  const Clock::time_point start = Clock::now();
  const Clock::time_point measure_start = start + absl::ToChronoNanoseconds(config.warmup);
  const bool timed = config.duration > absl::ZeroDuration();
  const auto duration = absl::ToChronoNanoseconds(config.duration);
  Clock::time_point stop = timed ? measure_start + duration : Clock::time_point{};
  bool measuring = false;
  PoissonSchedule schedule(config.rate, config.seed);
  int64_t offered = 0;  // measured requests sent or skipped

  while (config.requests <= 0 || offered < config.requests) {
    Clock::time_point now;
    if (config.loop == Loop::kClosed) {
      std::unique_lock lock(shared->mu);
      auto has_room = [&] { return shared->inflight < config.concurrency; };
      if (timed && measuring) {
        if (!shared->answered.wait_until(lock, stop, has_room)) break;
      } else {
        // Warm-up requests are waited for whatever their length (each is bounded by its
        // deadline): measuring starts once one of them is answered.
        shared->answered.wait(lock, has_room);
      }
      now = Clock::now();
    } else {
      const Clock::time_point arrival =
          start + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(schedule.NextArrival()));
      if (timed && arrival >= stop) break;
      std::this_thread::sleep_until(arrival);
      now = Clock::now();
    }
    if (timed && measuring && now >= stop) break;
    const bool measured = now >= measure_start;
    if (measured && !measuring) {
      measuring = true;
      // Closed loop: the measured time starts with the first measured request, which may be
      // well after the warm-up period when warm-up requests are long (a batch of 512).
      if (timed && config.loop == Loop::kClosed) stop = std::max(stop, now + duration);
    }
    if (measured) {
      ++offered;
      if (live != nullptr) live->measuring = true;
    }
    {
      std::lock_guard lock(shared->mu);
      if (shared->inflight >= config.max_inflight && config.loop == Loop::kOpen) {
        if (measured) ++result.skipped_arrivals;
        if (live != nullptr) ++live->skipped;
        continue;
      }
      ++shared->inflight;
    }
    if (!measured) ++result.warmup_requests;
    if (live != nullptr) ++live->inflight;

    RequestSpec spec = workload.Next();
    const int texts = static_cast<int>(spec.texts.size());
    const double start_s = SecondsBetween(measure_start, Clock::now());
    caller.Start(spec, [shared, live, measured, start_s, texts](const CallResult& r) {
      if (live != nullptr) {
        ++live->completed;
        if (r.code != absl::StatusCode::kOk) ++live->errors;
        live->output_tokens += r.output_tokens;
        --live->inflight;
      }
      std::lock_guard lock(shared->mu);
      if (r.code != absl::StatusCode::kOk) {
        shared->error_examples.try_emplace(absl::StatusCodeToString(r.code), r.message);
      }
      if (measured) {
        shared->samples.push_back({.start_s = start_s,
                                   .end_s = start_s + r.latency_s,
                                   .ttft_s = r.ttft_s,
                                   .texts = texts,
                                   .output_tokens = r.output_tokens,
                                   .code = r.code});
      }
      --shared->inflight;
      // Under the lock: the dispatcher cannot see inflight == 0 and leave before this call.
      shared->answered.notify_all();
    });
  }

  std::unique_lock lock(shared->mu);
  shared->answered.wait(lock, [&] { return shared->inflight == 0; });
  result.samples = std::move(shared->samples);
  result.error_examples = std::move(shared->error_examples);
  return result;
}

}  // namespace taskmoe::loadtest
