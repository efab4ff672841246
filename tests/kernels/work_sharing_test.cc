// WorkSharingTeam: every index runs exactly once, loop after loop, whatever the team size
// (more helpers than cores included), from several owning threads at once; each thread starts on
// its own home range; nested loops run inline; the owner knows whether a helper runs on its CPU;
// a carried control flow (RunCarried) sees every loop done, on whichever thread it goes on.
#include "kernels/work_sharing.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

void ExpectEachIndexOnce(WorkSharingTeam& team, int64_t n) {
  std::vector<std::atomic<int>> hits(n);
  team.Run(n, [&](int64_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " of " << n;
}

TEST(WorkSharing, RunsEveryIndexOnce) {
  for (int helpers : {0, 1, 3, 8}) {
    WorkSharingTeam team(helpers);
    EXPECT_EQ(team.helpers(), helpers);
    for (int64_t n : {0, 1, 2, 5, 17, 64, 1000, 100000}) ExpectEachIndexOnce(team, n);
  }
}

// Thousands of back-to-back loops, as a decoding step's: no loop may see another's indices or
// body, whether the helpers are spinning or asleep between loops.
TEST(WorkSharing, BackToBackLoopsStayApart) {
  WorkSharingTeam team(2);
  for (int loop = 0; loop < 3000; ++loop) {
    const int64_t n = 1 + loop % 97;
    std::vector<int64_t> values(n, -1);
    team.Run(n, [&](int64_t i) { values[i] = i * loop; });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(values[i], i * loop) << "loop " << loop;
    if (loop % 500 == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // helpers sleep (after 1 ms)
    }
  }
}

// Each thread claims from its own contiguous share of the indices first (so that a matmul's
// threads keep the same columns of its weights, in their own caches, step after step). Every
// body waits until both threads have started one, so neither can finish its share and take
// over the other's first: the owner's first index is 0, the helper's the first of the second
// half, loop after loop.
TEST(WorkSharing, EachThreadStartsWithItsOwnHalf) {
  WorkSharingTeam team(1);
  for (int64_t n : {2, 9, 64}) {
    for (int loop = 0; loop < 20; ++loop) {
      std::atomic<int> started[2] = {0, 0};
      std::atomic<int64_t> first_index[2] = {-1, -1};
      team.Run(n, [&](int64_t i) {
        const int slot = WorkSharingSlot();
        ASSERT_TRUE(slot == 0 || slot == 1);
        int64_t none = -1;
        first_index[slot].compare_exchange_strong(none, i);
        started[slot].store(1);
        // Bounded, so that a helper the OS never runs fails the test instead of hanging it.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while ((started[0].load() == 0 || started[1].load() == 0) &&
               std::chrono::steady_clock::now() < deadline) {
          std::this_thread::yield();
        }
      });
      EXPECT_EQ(first_index[0].load(), 0) << "n " << n << ", loop " << loop;
      EXPECT_EQ(first_index[1].load(), n / 2) << "n " << n << ", loop " << loop;
    }
  }
}

// Runs a loop in which both threads of a one-helper team run a body (each body waits until
// both have started one).
void RunWithBothThreads(WorkSharingTeam& team) {
  std::atomic<int> started[2] = {0, 0};
  team.Run(8, [&](int64_t) {
    started[WorkSharingSlot()].store(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while ((started[0].load() == 0 || started[1].load() == 0) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  });
  ASSERT_EQ(started[1].load(), 1) << "the helper never ran";
}

// An owner waiting for a helper's chunk spins on only while the helper cannot be on its own
// core: it must know where the helper last ran. Helpers inherit the owner's CPU affinity.
TEST(WorkSharing, KnowsWhetherAHelperRunsOnTheOwnersCpu) {
  cpu_set_t original;
  ASSERT_EQ(sched_getaffinity(0, sizeof(original), &original), 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
    if (CPU_ISSET(cpu, &original)) cpus.push_back(cpu);
  }
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs in the affinity mask to part the threads";
  const auto pin = [](int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return sched_setaffinity(0, sizeof(one), &one) == 0;
  };
  ASSERT_TRUE(pin(cpus[0]));
  {
    WorkSharingTeam team(1);  // its helper may run on cpus[0] only
    RunWithBothThreads(team);
    EXPECT_TRUE(team.HelperLastRanOnThisCpu());
    ASSERT_TRUE(pin(cpus[1]));  // the owner moves; the helper stays
    EXPECT_FALSE(team.HelperLastRanOnThisCpu());
    RunWithBothThreads(team);
    EXPECT_FALSE(team.HelperLastRanOnThisCpu());
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(original), &original), 0);
}

TEST(WorkSharing, NestedLoopsRunInline) {
  WorkSharingTeam team(2);
  std::atomic<int64_t> sum{0};
  team.Run(16, [&](int64_t i) {
    EXPECT_TRUE(InsideWorkSharingLoop());
    ParallelFor(10, true, [&](int64_t j) { sum.fetch_add(i * 10 + j); });
  });
  EXPECT_FALSE(InsideWorkSharingLoop());
  EXPECT_EQ(sum.load(), 160 * 159 / 2);
}

// Indices run other than once when `owners` threads run `loops` ParallelFor loops at once
// with `threads` kernel threads, each owner's loops inside RunCarried when `carried`.
int MisrunIndicesFromConcurrentOwners(int threads, int owners, int loops, bool carried) {
  const int previous = NumThreads();
  EXPECT_TRUE(SetNumThreads(threads).ok());
  std::vector<std::thread> running;
  std::atomic<int> failures{0};
  for (int t = 0; t < owners; ++t) {
    running.emplace_back([&, t] {
      const auto run_loops = [&] {
        for (int loop = 0; loop < loops; ++loop) {
          const int64_t n = 40 + t;
          std::vector<std::atomic<int>> hits(n);
          ParallelFor(n, true, [&](int64_t i) { hits[i].fetch_add(1); });
          for (int64_t i = 0; i < n; ++i) {
            if (hits[i].load() != 1) failures.fetch_add(1);
          }
        }
      };
      if (carried) {
        RunCarried(run_loops);
      } else {
        run_loops();
      }
    });
  }
  for (std::thread& owner : running) owner.join();
  EXPECT_TRUE(SetNumThreads(previous).ok());
  return failures.load();
}

// Server workers each own a team; ParallelFor from several threads at once.
TEST(WorkSharing, ConcurrentOwnersEachUseTheirTeam) {
  EXPECT_EQ(MisrunIndicesFromConcurrentOwners(3, 4, 200, /*carried=*/false), 0);
}

// A carried control flow: loop after loop, each index runs once, what the loops wrote is seen by
// the control flow after them and what it wrote before them by the loops, whatever thread it
// continues on; ParallelFor inside it uses the carrying team; RunCarried inside it runs
// directly; it returns on the thread that called it.
TEST(WorkSharing, CarriedControlFlowSeesEachLoopDone) {
  for (int helpers : {0, 1, 3}) {
    WorkSharingTeam team(helpers);
    const std::thread::id caller = std::this_thread::get_id();
    int64_t total = 0;
    int nested_runs = 0;
    team.RunCarried([&] {
      EXPECT_EQ(CarryingTeam() != nullptr, kFibersSupported && helpers > 0);
      for (int loop = 0; loop < 2000; ++loop) {
        const int64_t n = 1 + loop % 61;
        std::vector<int64_t> values(n, -1);
        const int64_t factor = loop + 1;  // written by the control flow, read by the bodies
        team.Run(n, [&](int64_t i) { values[i] = i * factor; });
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(values[i], i * factor) << "loop " << loop;
          total += values[i];
        }
        if (kFibersSupported && helpers > 0) {
          ASSERT_EQ(&ThreadTeam(), &team);
        }
        // Helpers sleep (after 1 ms), and a loop wakes them.
        if (loop % 400 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      team.RunCarried([&] { ++nested_runs; });
    });
    EXPECT_EQ(std::this_thread::get_id(), caller);
    EXPECT_EQ(CarryingTeam(), nullptr);
    int64_t expected = 0;
    for (int loop = 0; loop < 2000; ++loop) {
      const int64_t n = 1 + loop % 61;
      expected += (loop + 1) * n * (n - 1) / 2;
    }
    EXPECT_EQ(total, expected) << helpers << " helpers";
    EXPECT_EQ(nested_runs, 1);
    // The team still runs plain loops afterwards.
    ExpectEachIndexOnce(team, 1000);
  }
}

// The control flow after a loop goes on on a thread that finds the loop done: with the owner's
// share done first and a helper's late, often the helper (the owner, spinning meanwhile, may
// see it first), and later loops and the end of RunCarried work from there.
TEST(WorkSharing, CarriedControlFlowMovesToTheThreadThatFinishesALoop) {
  if (!kFibersSupported) GTEST_SKIP() << "fibers are unsupported in this build (fiber.h)";
  WorkSharingTeam team(1);
  const std::thread::id caller = std::this_thread::get_id();
  int moved = 0;
  team.RunCarried([&] {
    for (int attempt = 0; attempt < 1000 && moved < 3; ++attempt) {
      // The owner's index waits (a little) for the helper to take the other, which then
      // finishes last.
      std::atomic<bool> helper_started{false};
      team.Run(2, [&](int64_t) {
        if (WorkSharingSlot() == 1) {
          helper_started.store(true);
          std::this_thread::sleep_for(std::chrono::microseconds(300));
          return;
        }
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
        while (!helper_started.load() && std::chrono::steady_clock::now() < give_up) {
        }
      });
      if (std::this_thread::get_id() != caller) {
        EXPECT_EQ(WorkSharingSlot(), 1);
        ++moved;
        ExpectEachIndexOnce(team, 500);
      }
    }
  });
  EXPECT_EQ(std::this_thread::get_id(), caller);
  EXPECT_GE(moved, 3);
}

// RunCarried from several threads at once, each on its own team (server workers).
TEST(WorkSharing, ConcurrentOwnersEachCarryTheirControlFlow) {
  EXPECT_EQ(MisrunIndicesFromConcurrentOwners(2, 3, 300, /*carried=*/true), 0);
}

}  // namespace
}  // namespace taskmoe::kernels
