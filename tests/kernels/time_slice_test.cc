// TimeSliceWatch on simulated clocks: silent on a thread never preempted; learns the typical
// run from the runs the OS cut and yields in the runs that outlast it, without the typical run
// drifting (probe runs); time away between stretches of work is no sample; short slices are not
// yielded ahead.
#include "kernels/time_slice.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace taskmoe::kernels {
namespace {

constexpr int64_t kMicro = 1'000;
constexpr int64_t kMilli = 1'000'000;

// A thread doing chunks of 10 us inside one stretch of work; the OS takes its core away after
// `slice` of running (every `long_every`-th run `long_slice` instead), unless it yielded first,
// for `away`.
struct Simulation {
  int64_t slice;
  int64_t away;
  int64_t long_slice = 0;
  int long_every = 0;
  int64_t wall = 0;
  int64_t cpu = 0;
  int64_t run = 0;  // running time since the thread last got its core
  int runs = 0;
  std::vector<int64_t> yielded_at;  // run lengths at which it yielded
  int preempted = 0;

  int64_t ThisSlice() const {
    return long_every > 0 && runs % long_every == long_every - 1 ? long_slice : slice;
  }
  void NextRun() {
    run = 0;
    ++runs;
  }

  void Run(TimeSliceWatch& watch, int64_t total) {
    watch.BeginWork(wall, [&] { return cpu; });
    for (int64_t end = wall + total; wall < end;) {
      wall += 10 * kMicro;
      cpu += 10 * kMicro;
      run += 10 * kMicro;
      if (run >= ThisSlice()) {  // the OS preempts it inside the next chunk
        wall += away;
        ++preempted;
        NextRun();
      }
      if (watch.ShouldYield(wall, [&] { return cpu; })) {
        yielded_at.push_back(run);
        wall += away;  // the competitor's slice
        NextRun();
        watch.Yielded(wall, cpu);
      }
    }
  }
};

TEST(TimeSliceWatch, NeverYieldsOnAThreadNeverPreempted) {
  TimeSliceWatch watch;
  Simulation sim{.slice = int64_t{1} << 60, .away = 0};
  sim.Run(watch, 500 * kMilli);
  EXPECT_TRUE(sim.yielded_at.empty());
  EXPECT_EQ(watch.preempted_runs(), 0);
}

// Runs of 1.5 ms, and every third one of 12 ms: the watch learns a typical run between the two
// and yields in the long runs only, at twice the typical run, before their end.
TEST(TimeSliceWatch, YieldsInRunsThatOutlastTheTypicalOne) {
  TimeSliceWatch watch;
  Simulation sim{.slice = 15 * kMilli / 10,
                 .away = 15 * kMilli / 10,
                 .long_slice = 12 * kMilli,
                 .long_every = 3};
  sim.Run(watch, 3000 * kMilli);
  ASSERT_GT(sim.yielded_at.size(), 50u);
  for (int64_t at : sim.yielded_at) {
    EXPECT_GT(at, 15 * kMilli / 10);  // never in a short run
    EXPECT_LT(at, 12 * kMilli);
  }
  // Learnt from probes, the typical run does not drift towards the short runs' length.
  EXPECT_GT(watch.typical_run_ns(), 15 * kMilli / 10);
  EXPECT_LT(watch.typical_run_ns(), 12 * kMilli);
}

// Runs that all end at the same length are never outlasted: no yield.
TEST(TimeSliceWatch, DoesNotYieldWhenEveryRunEndsAlike) {
  TimeSliceWatch watch;
  Simulation sim{.slice = 3 * kMilli, .away = 3 * kMilli};
  sim.Run(watch, 1000 * kMilli);
  EXPECT_GT(watch.preempted_runs(), 100);
  EXPECT_TRUE(sim.yielded_at.empty());
  EXPECT_NEAR(static_cast<double>(watch.typical_run_ns()), 3e6, 1e5);
}

TEST(TimeSliceWatch, TimeAwayBetweenStretchesOfWorkIsNoSample) {
  TimeSliceWatch watch;
  int64_t wall = 0, cpu = 0;
  for (int loop = 0; loop < 100; ++loop) {
    wall += 5 * kMilli;  // asleep between loops
    watch.BeginWork(wall, [&] { return cpu; });
    for (int chunk = 0; chunk < 10; ++chunk) {
      wall += 10 * kMicro;
      cpu += 10 * kMicro;
      EXPECT_FALSE(watch.ShouldYield(wall, [&] { return cpu; }));
    }
  }
  EXPECT_EQ(watch.preempted_runs(), 0);
}

TEST(TimeSliceWatch, DoesNotYieldAheadOfShortSlices) {
  TimeSliceWatch watch;
  Simulation sim{.slice = 200 * kMicro, .away = 200 * kMicro};
  sim.Run(watch, 200 * kMilli);
  EXPECT_GT(watch.preempted_runs(), 100);
  EXPECT_TRUE(sim.yielded_at.empty());
}

}  // namespace
}  // namespace taskmoe::kernels
