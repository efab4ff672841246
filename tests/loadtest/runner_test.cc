// The closed and open loops, driven by fake callers (no server, no sleeps in the fakes): the
// bounds, the concurrency limit, warm-up exclusion, max_inflight skipping, and that a run
// waits for every answer. Nothing here asserts on elapsed time.
#include "loadtest/runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "loadtest/sweep.h"

namespace taskmoe::loadtest {
namespace {

Workload TestWorkload(int texts_per_request = 1) {
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("en-de:1,de-en:1");
  return Workload(*mix, {{"en-de", {"a", "b"}}, {"de-en", {"c"}}}, texts_per_request, 1);
}

// Answers every call at once, on the calling thread, with 3 tokens per text; records the
// largest number of calls it had open at the same time.
class InlineCaller : public Caller {
 public:
  void Start(const RequestSpec& spec, Done done) override {
    {
      std::lock_guard lock(mu_);
      ++open_;
      max_open_ = std::max(max_open_, open_);
      ++calls_;
      tasks_.push_back(spec.task);
    }
    CallResult result;
    result.latency_s = 0.001;
    result.output_tokens = 3 * static_cast<int64_t>(spec.texts.size());
    if (spec.task == fail_task_) {
      result.code = absl::StatusCode::kNotFound;
      result.message = "no such task";
    }
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    done(result);
  }
  std::string fail_task_;
  int calls_ = 0;
  int max_open_ = 0;
  std::vector<std::string> tasks_;

 private:
  std::mutex mu_;
  int open_ = 0;
};

// Keeps every call open until Release(); then answers them all from another thread.
class HoldingCaller : public Caller {
 public:
  void Start(const RequestSpec& spec, Done done) override {
    std::lock_guard lock(mu_);
    held_.push_back(std::move(done));
    max_held_ = std::max(max_held_, held_.size());
  }
  void Release() {
    std::vector<Done> held;
    {
      std::lock_guard lock(mu_);
      held.swap(held_);
    }
    for (Done& done : held) done(CallResult{.latency_s = 0.01, .output_tokens = 1});
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  size_t max_held_ = 0;

 private:
  std::mutex mu_;
  std::vector<Done> held_;
};

TEST(RunLoadTest, ClosedLoopBoundedByRequests) {
  InlineCaller caller;
  Workload workload = TestWorkload(2);
  LiveCounters live;
  const RunResult result = RunLoad(
      {.loop = Loop::kClosed, .concurrency = 4, .duration = absl::ZeroDuration(), .requests = 50},
      caller, workload, &live);
  EXPECT_EQ(result.samples.size(), 50u);
  EXPECT_EQ(result.warmup_requests, 0);
  EXPECT_EQ(caller.calls_, 50);
  EXPECT_LE(caller.max_open_, 4);
  EXPECT_EQ(live.completed, 50);
  EXPECT_EQ(live.inflight, 0);
  EXPECT_EQ(live.output_tokens, 50 * 6);
  const Summary summary = Summarize(result.samples, false);
  EXPECT_EQ(summary.ok, 50);
  EXPECT_EQ(summary.texts, 100);
  EXPECT_EQ(summary.output_tokens, 300);
  for (const Sample& s : result.samples) {
    EXPECT_GE(s.start_s, 0);
    EXPECT_DOUBLE_EQ(s.end_s - s.start_s, 0.001);
  }
}

TEST(RunLoadTest, ClosedLoopNeverExceedsConcurrency) {
  // Calls stay open until released, so the loop must stop at `concurrency` open calls and
  // wait; a helper releases them whenever that many are held.
  HoldingCaller caller;
  Workload workload = TestWorkload();
  std::atomic<bool> done{false};
  std::thread releaser([&] {
    while (!done) {
      if (caller.held() == 3) caller.Release();
      std::this_thread::yield();
    }
  });
  const RunResult result = RunLoad(
      {.loop = Loop::kClosed, .concurrency = 3, .duration = absl::ZeroDuration(), .requests = 30},
      caller, workload);
  done = true;
  releaser.join();
  EXPECT_EQ(result.samples.size(), 30u);
  EXPECT_EQ(caller.max_held_, 3u);
}

TEST(RunLoadTest, ErrorsAreCountedByCodeWithAnExample) {
  InlineCaller caller;
  caller.fail_task_ = "de-en";
  Workload workload = TestWorkload();
  const RunResult result = RunLoad(
      {.loop = Loop::kClosed, .concurrency = 1, .duration = absl::ZeroDuration(), .requests = 200},
      caller, workload);
  const Summary summary = Summarize(result.samples, false);
  EXPECT_EQ(summary.requests, 200);
  EXPECT_GT(summary.errors.at("NOT_FOUND"), 0);
  EXPECT_EQ(summary.ok + summary.errors.at("NOT_FOUND"), 200);
  EXPECT_EQ(result.error_examples.at("NOT_FOUND"), "no such task");
}

TEST(RunLoadTest, OpenLoopBoundedByRequestsFollowsTheWorkload) {
  InlineCaller caller;
  Workload workload = TestWorkload();
  const RunResult result = RunLoad({.loop = Loop::kOpen,
                                    .rate = 1e5,  // arrivals 10 us apart: a short test
                                    .duration = absl::ZeroDuration(),
                                    .requests = 40,
                                    .seed = 3},
                                   caller, workload);
  EXPECT_EQ(result.samples.size(), 40u);
  EXPECT_EQ(result.skipped_arrivals, 0);
  // The same workload seed gives the same task sequence.
  Workload again = TestWorkload();
  for (int i = 0; i < 40; ++i) EXPECT_EQ(caller.tasks_[i], again.Next().task);
}

TEST(RunLoadTest, OpenLoopSkipsArrivalsBeyondMaxInflight) {
  HoldingCaller caller;
  Workload workload = TestWorkload();
  LiveCounters live;
  // The calls are released once every arrival has been offered: 5 sent, 15 skipped. The
  // live counter of skipped arrivals says when the offering is over.
  std::thread releaser([&] {
    while (live.skipped < 15) std::this_thread::yield();
    caller.Release();
  });
  const RunResult result = RunLoad({.loop = Loop::kOpen,
                                    .rate = 1e6,
                                    .max_inflight = 5,
                                    .duration = absl::ZeroDuration(),
                                    .requests = 20},
                                   caller, workload, &live);
  releaser.join();
  EXPECT_EQ(result.samples.size(), 5u);
  EXPECT_EQ(result.skipped_arrivals, 15);
  EXPECT_EQ(caller.max_held_, 5u);
}

TEST(RunLoadTest, WarmupRequestsAreNotMeasured) {
  // The first request leaves at once, well inside a 200 ms warm-up.
  InlineCaller caller;
  Workload workload = TestWorkload();
  const RunResult result = RunLoad({.loop = Loop::kClosed,
                                    .concurrency = 2,
                                    .duration = absl::ZeroDuration(),
                                    .requests = 10,
                                    .warmup = absl::Milliseconds(200)},
                                   caller, workload);
  EXPECT_EQ(result.samples.size(), 10u);
  EXPECT_GE(result.warmup_requests, 1);
  EXPECT_EQ(caller.calls_, 10 + result.warmup_requests);
  for (const Sample& s : result.samples) EXPECT_GE(s.start_s, 0);
}

TEST(RunLoadTest, LongWarmupRequestStillLeavesAMeasuredDuration) {
  // The one warm-up request is answered only after warm-up and duration have both passed
  // (a batch of 512 at the paper shape); the measured duration then starts with the next
  // request instead of being over already.
  HoldingCaller caller;
  Workload workload = TestWorkload();
  std::atomic<bool> done{false};
  std::thread releaser([&] {
    while (caller.held() == 0) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    while (!done) {
      caller.Release();
      std::this_thread::yield();
    }
  });
  const RunResult result = RunLoad({.loop = Loop::kClosed,
                                    .concurrency = 1,
                                    .duration = absl::Milliseconds(20),
                                    .warmup = absl::Milliseconds(1)},
                                   caller, workload);
  done = true;
  releaser.join();
  EXPECT_EQ(result.warmup_requests, 1);
  EXPECT_GE(result.samples.size(), 1u);
}

TEST(RunLoadTest, NoBoundMeansNoRun) {
  InlineCaller caller;
  Workload workload = TestWorkload();
  const RunResult result =
      RunLoad({.duration = absl::ZeroDuration(), .requests = 0}, caller, workload);
  EXPECT_TRUE(result.samples.empty());
  EXPECT_EQ(caller.calls_, 0);
}

TEST(SweepTest, PlansOneRunPerValue) {
  LoadTestOptions options;
  options.sweep = {SweepKind::kBatch, {1, 8, 32}};
  options.requests = 7;
  std::vector<PlannedRun> plan = PlanRuns(options);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[1].name, "batch=8");
  EXPECT_EQ(plan[1].texts_per_request, 8);
  EXPECT_EQ(plan[2].config.requests, 7);
  options.sweep = {SweepKind::kConcurrency, {2, 4}};
  plan = PlanRuns(options);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[1].name, "concurrency=4");
  EXPECT_EQ(plan[1].config.concurrency, 4);
  options.sweep = {};
  EXPECT_EQ(PlanRuns(options).size(), 1u);
}

TEST(SweepTest, RunPlanReportsEachPoint) {
  LoadTestOptions options;
  options.sweep = {SweepKind::kBatch, {1, 4}};
  options.duration = absl::ZeroDuration();
  options.requests = 5;
  options.warmup = absl::ZeroDuration();
  InlineCaller caller;
  Workload workload = TestWorkload();
  const std::vector<RunReport> reports =
      RunPlan(PlanRuns(options), caller, workload, /*is_stream=*/false, /*progress=*/false);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].summary.texts, 5);
  EXPECT_EQ(reports[1].summary.texts, 20);
  EXPECT_EQ(reports[1].summary.output_tokens, 60);
  const Chart chart = SweepChart(SweepKind::kBatch, reports, false, "model");
  ASSERT_EQ(chart.series.size(), 1u);
  EXPECT_EQ(chart.series[0].name, "model");
  EXPECT_EQ(chart.series[0].points[1].first, 4);
  EXPECT_TRUE(chart.log_x);
}

}  // namespace
}  // namespace taskmoe::loadtest
