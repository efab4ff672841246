// A team of helper threads that share a loop with the thread that owns them, built to degrade
// gracefully when the cores are shared (a noisy neighbour, a CFS quota).
//
// An OpenMP parallel loop hands each thread its share up front and ends at a barrier: when the
// OS has descheduled one thread, every other waits for it, a whole time slice per loop, and a
// decoding step runs dozens of loops (with a busy competitor per core, int8 batch-32 decoding
// fell to 0.09x of its quiet speed). Here indices are claimed a few at a time, the owner works
// from the first moment, and it waits only for chunks a helper has already claimed: a helper
// that is not running has no share to hold back, and one that wakes late finds the loop done
// and goes back to sleep. Helpers spin for the next loop for up to 1 ms, then sleep on a futex,
// so an idle team burns no CPU: a step's loops come microseconds apart, but under contention
// the thread between them may be preempted, and a helper that slept meanwhile is woken only
// when the competitor on its core has had its slice.
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
//
// Under contention, what still held a step up was a thread preempted in the middle of a chunk:
// the loop cannot end until that thread runs again, a competitor's slice later (with a busy
// competitor per core, the threads spent about a quarter of their time waiting so). Two things
// together let the others go on meanwhile (docs/benchmarks.md, stop 57: 1.15-1.24x the
// tokens/s at batch 1 and 8 under such contention, medians; neither alone gained anything):
// - Between two chunks a thread yields its core once its run has lasted twice the run the OS
//   typically gives it (time_slice.h learns that from the preemptions it sees): it holds no
//   chunk while it is away, and the others finish the loop.
// - RunCarried runs the control flow between the loops (a decoding step's) on a fiber
//   (fiber.h) that whichever team thread finds a loop done resumes, the owner or a helper, so
//   a step goes on while its owner is away too.
#ifndef TASKMOE_KERNELS_WORK_SHARING_H_
#define TASKMOE_KERNELS_WORK_SHARING_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "kernels/fiber.h"

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

  // Runs control(), whose Run loops the team shares, on the team's fiber: each loop's control
  // flow after it goes on on whichever team thread finds the loop done (the last to finish a
  // chunk, or one that was waiting), so that a descheduled owner no longer stops it. Returns
  // when control() has returned. Only the team's creator may call it, not from a loop body;
  // inside a carried control flow, or where fibers are unsupported (fiber.h), runs control()
  // directly. Code in control() runs on varying OS threads: state it keeps across calls is
  // ControlFlowLocal (below), and it holds nothing tied to a thread (a thread_local's address,
  // a lock that checks its owner) across a loop.
  void RunCarried(absl::FunctionRef<void()> control);

  int helpers() const { return static_cast<int>(threads_.size()); }

  // The carried control flow's instance of state T (ControlFlowLocal): made on first use,
  // kept with the team. Only from the carried control flow.
  template <typename T>
  T& CarriedLocal() {
    static const size_t index = NextCarriedLocalIndex();
    if (carried_locals_.size() <= index) carried_locals_.resize(index + 1);
    if (carried_locals_[index] == nullptr) carried_locals_[index] = std::make_shared<T>();
    return *static_cast<T*>(carried_locals_[index].get());
  }

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
  // The scheduling loop of a team thread with nothing of its own to run: works on each new
  // loop, resumes the carried control flow once its loop is done, spins and then sleeps.
  // Returns when the carried control flow has finished (the owner) or the team stops.
  void Serve(int slot, bool owner);

  // Called by the carried control flow once it has published a loop: saves it and hands the
  // thread running it back to that thread's own context; returns when some thread resumes it,
  // the loop done.
  void Park();
  // Resumes the parked control flow if its loop is done and no other thread resumed it first;
  // returns once it has parked again or finished.
  bool TryResume(int slot);
  // Whether the carried control flow, in carrier state `state`, is parked and its loop done.
  bool ParkedOnADoneLoop(uint64_t state) const;
  bool Resumable() const;
  void SwitchIn(int slot);
  // Notes, on the fiber just switched into, the stack bounds of the thread that switched.
  void NoteHostStack(const SanitizerContext& host_stack);
  static void FiberMain(void* team);

  // The carried control flow's state: kIdle outside RunCarried; kRunning on some thread;
  // kParked, in the low bits, with the epoch of the loop it waits for in the high 32;
  // kFinished once control() has returned.
  enum Carrier : uint64_t { kIdle = 0, kRunning = 1, kParked = 2, kFinished = 3 };
  static constexpr uint64_t kCarrierStateMask = 3;
  std::atomic<uint64_t> carrier_{kIdle};
  static size_t NextCarriedLocalIndex();

  // A bump of `events_` wakes every sleeping team thread: a loop was published, the carried
  // control flow finished, or the team stops.
  void Notify();

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
  std::atomic<uint32_t> published_{0};  // the newest loop's epoch
  std::atomic<uint32_t> events_{0};     // what sleeping team threads wait on (Notify)
  std::atomic<bool> stop_{false};
  std::atomic<int> started_{0};  // helpers that have finished their start-up
  uint32_t epoch_ = 0;           // the count of loops, kept by the control flow publishing them
  // The carried control flow: its stack (made with the team, none where fibers are
  // unsupported or there are no helpers), its saved context while parked, what it runs, the
  // slot of the thread running it, whether it has finished, and each thread's own context
  // while it runs the fiber.
  std::optional<FiberStack> fiber_stack_;
  FiberContext fiber_ = nullptr;
  const absl::FunctionRef<void()>* control_ = nullptr;
  int host_slot_ = 0;
  bool control_finished_ = false;
  struct ThreadContext {
    FiberContext saved = nullptr;
    // The thread's own context as the sanitizers know it (fiber.h), for the switch back: its
    // ThreadSanitizer fiber, which the thread notes before it switches in, and its stack's
    // bounds, which the fiber notes once in (NoteHostStack).
    SanitizerContext sanitizer;
  };
  std::unique_ptr<ThreadContext[]> thread_contexts_;
  // CarriedLocal's instances, by type (only the carried control flow touches them).
  std::vector<std::shared_ptr<void>> carried_locals_;
  std::vector<std::thread> threads_;
};

// The calling thread's team for the current thread setting (NumThreads() - 1 helpers), created
// on first use and rebuilt when the setting changes; inside a carried control flow, the team
// carrying it, whichever thread runs it now. runtime.h's ParallelFor runs on it.
WorkSharingTeam& ThreadTeam();

// Whether the calling thread is running a WorkSharingTeam loop body (as owner or helper).
bool InsideWorkSharingLoop();

// The team carrying the calling code (RunCarried), or null outside a carried control flow.
WorkSharingTeam* CarryingTeam();

// State that a control flow keeps for itself across calls (a matmul's scratch buffers, its
// cache of oneDNN primitives): one instance per OS thread outside carried control flows, as a
// thread_local would be, and one per team inside them, whichever thread carries the control
// flow at the moment. A thread_local would give a carried control flow the state of each
// thread it passes through: buffers grown again (an allocation in a warm decoding step) and
// state shared with the loop bodies that thread runs. T names the state: one type per use.
template <typename T>
T& ControlFlowLocal() {
  if (WorkSharingTeam* team = CarryingTeam()) return team->CarriedLocal<T>();
  thread_local T own;
  return own;
}

// The calling thread's slot in its team: 1 to helpers() for a team's helpers, 0 for every other
// thread (owners among them). A loop body indexes per-thread state that its caller prepared
// with it (PackedLinear's oneDNN memory objects): state prepared by the caller before the loop
// is warm whichever thread runs which index, unlike thread-local state. Always below
// NumThreads() while the setting is unchanged.
int WorkSharingSlot();

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_WORK_SHARING_H_
