// A team of helper threads that share a loop with the thread that owns them, built to degrade
// gracefully when the cores are shared (a noisy neighbour, a CFS quota).
//
// An OpenMP parallel loop hands each thread its share up front and ends at a barrier: when the
// OS has descheduled one thread, every other waits for it, a whole time slice per loop, and a
// decoding step runs dozens of loops (with a busy competitor per core, int8 batch-32 decoding
// fell to 0.09x of its quiet speed). Here indices are claimed a few at a time, the owner works
// from the first moment, and it waits only for chunks a helper has already claimed: a helper
// that is not running has no share to hold back, and one that wakes late finds the loop done
// and goes back to sleep. Helpers spin briefly between loops (a step's loops come microseconds
// apart), then sleep on a futex, so an idle team burns no CPU.
//
// An owner left waiting for a helper's chunk spins on as long as that helper cannot be on the
// owner's own core (each helper says where it runs when it takes up a loop), up to about the
// time slice the OS gives a competitor: a helper on another core is either running or will run
// once that core's competitor has had its slice, and yielding would only hand the owner's core
// to its own competitor for a whole slice, the loop's end waiting on the owner to come back.
// Where the helper last ran on the owner's core, the owner yields at once: spinning there
// would keep the helper off it.
//
// Each thread has a home range, a contiguous share of every loop's indices (the owner the
// first), which it claims from first; only then does it claim from the others' ranges. Loops
// over a matmul's column blocks thus give each thread the same columns, step after step, while
// both are running, so each reads its part of the weights from its own caches (on a CPU whose
// cores sit on different dies, another die's cache is as far as memory); with one shared
// counter the threads took turns, and each step's split was new.
#ifndef TASKMOE_KERNELS_WORK_SHARING_H_
#define TASKMOE_KERNELS_WORK_SHARING_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace taskmoe::kernels {

class WorkSharingTeam {
 public:
  // Starts `helpers` helper threads (0: every loop runs on the owner alone), and returns once
  // each has made what it allocates at start (its oneDNN stream), so that a team allocates
  // only while it is being built, never during a later loop on a helper the OS ran late.
  explicit WorkSharingTeam(int helpers);
  // Stops and joins the helpers. Not while Run is running.
  ~WorkSharingTeam();
  WorkSharingTeam(const WorkSharingTeam&) = delete;
  WorkSharingTeam& operator=(const WorkSharingTeam&) = delete;

  // Runs body(i) for every i in [0, n) across the calling thread and the helpers, and returns
  // when all have run. Only the thread that created the team may call it; a body must not
  // call Run again (nested loops run on the thread that meets them).
  void Run(int64_t n, absl::FunctionRef<void(int64_t)> body);

  int helpers() const { return static_cast<int>(threads_.size()); }

  // Whether a helper took up its last loop on the CPU the calling thread now runs on (or where
  // that is unknown). The owner's wait asks it; public for tests.
  bool HelperLastRanOnThisCpu() const;

 private:
  // A claim word: the loop's epoch in the high 32 bits, the next unclaimed index of one home
  // range in the low 32 (kClosed while the owner is publishing a loop's fields). Each on its
  // own cache line, so that threads claiming from their own ranges do not share one.
  struct alignas(64) ClaimWord {
    std::atomic<uint64_t> word{0};
  };

  // Claims and runs chunks of loop `epoch` until none is left or a newer loop has started: the
  // home range of thread `slot` first, then the others'.
  void Work(uint32_t epoch, int slot);
  // Claims and runs chunks of home range `range` of loop `epoch`; false when a newer loop
  // has started.
  bool WorkOnRange(uint32_t epoch, int range);
  void HelperLoop(int slot);

  // One claim word per thread: loop indices are split into one contiguous home range per
  // thread, which that thread claims first and the others only once their own are done.
  std::unique_ptr<ClaimWord[]> claims_;
  // The CPU each helper took up its last loop on (sched_getcpu; slot 0, the owner, unused).
  struct alignas(64) HelperCpu {
    std::atomic<int> cpu{-1};
  };
  std::unique_ptr<HelperCpu[]> helper_cpus_;
  int threads_in_team_ = 1;  // helpers + the owner: how many home ranges a loop has
  std::atomic<int64_t> n_{0};
  std::atomic<int64_t> grain_{1};
  std::atomic<const absl::FunctionRef<void(int64_t)>*> body_{nullptr};
  std::atomic<int64_t> done_{0};        // indices of the current loop that have run
  std::atomic<uint32_t> published_{0};  // the newest loop's epoch, what sleeping helpers wait on
  std::atomic<bool> stop_{false};
  std::atomic<int> started_{0};  // helpers that have finished their start-up
  uint32_t epoch_ = 0;           // the owner's count of loops
  std::vector<std::thread> threads_;
};

// The calling thread's team for the current thread setting (NumThreads() - 1 helpers), created
// on first use and rebuilt when the setting changes. runtime.h's ParallelFor runs on it.
WorkSharingTeam& ThreadTeam();

// Whether the calling thread is running a WorkSharingTeam loop body (as owner or helper).
bool InsideWorkSharingLoop();

// The calling thread's slot in its team: 1 to helpers() for a team's helpers, 0 for every other
// thread (owners among them). A loop body indexes per-thread state that its caller prepared
// with it (PackedLinear's oneDNN memory objects): state prepared by the caller before the loop
// is warm whichever thread runs which index, unlike thread-local state. Always below
// NumThreads() while the setting is unchanged.
int WorkSharingSlot();

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_WORK_SHARING_H_
