// WorkSharingTeam: the claim protocol, the helpers' spin-then-sleep wait, and per-thread teams.
#include "kernels/work_sharing.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>

#include "kernels/runtime.h"
#include "kernels/time_slice.h"

namespace taskmoe::kernels {
namespace {

constexpr uint64_t kIndexMask = 0xffffffffu;
constexpr uint64_t kClosed = kIndexMask;

// How long a helper spins for the next loop before it sleeps. A thread that sleeps on a futex
// and is woken while a competitor runs on its core gets that core back only once the
// competitor's slice is over, and inside a decoding step a helper meets gaps longer than a few
// microseconds whenever the thread running the step's control flow is preempted between two
// loops. With a busy competitor per core, batch 1, a helper that slept after 50 us slept about
// 440 times in a 5 s run, after 1 ms 38 times, after 3 ms 22 times; 1 ms gave medians of
// 1.06-1.15x the tokens/s at batch 1 and 1.09-1.26x at batch 8 on every path (3 ms no more;
// docs/benchmarks.md, stop 58), and nothing on a quiet machine. An idle team sleeps 1 ms after
// its last loop.
//
// How long the owner spins on claimed chunks before it yields its core: briefly where a helper
// may share its core, else about a competitor's time slice (EEVDF's default base slice is 0.75
// ms times 1 + log2 of the CPUs, 1.5 ms on 2). With a busy competitor per core (f32, two
// threads, AVX2, medians of 10 alternations), spinning on for helpers elsewhere instead of
// yielding after 20 us gave 1.17x and 1.20x the tokens/s at batch 1 on two models, 0.98-1.16x
// at batch 8 and 32; the quiet machine's figures did not move.
constexpr auto kHelperSpin = std::chrono::microseconds(1000);
constexpr auto kOwnerSpin = std::chrono::microseconds(20);
constexpr auto kOwnerSpinHelpersElsewhere = std::chrono::microseconds(1000);

// Chunks per thread and loop: enough that the others' shares are taken over when a thread
// stalls, few enough that claiming (one atomic operation each) stays negligible.
constexpr int64_t kChunksPerThread = 8;

uint64_t Pack(uint32_t epoch, uint64_t index) { return (uint64_t{epoch} << 32) | index; }
uint32_t EpochOf(uint64_t claim) { return static_cast<uint32_t>(claim >> 32); }
uint64_t IndexOf(uint64_t claim) { return claim & kIndexMask; }

// Where home range `range` of `ranges` starts in a loop of `n` indices (range `ranges`: n).
int64_t RangeBegin(int64_t n, int ranges, int range) { return n * range / ranges; }

thread_local bool inside_loop = false;
thread_local int slot_of_thread = 0;
// The team whose carried control flow the calling thread runs now (RunCarried), if any.
thread_local WorkSharingTeam* hosting_team = nullptr;

// A carried control flow's stack: reserved, not committed; a decoding step's deepest calls
// (oneDNN creating a primitive) use a small part of it.
constexpr size_t kFiberStackBytes = size_t{8} << 20;

// Spins (with pause) while `keep_waiting()` holds, for at most `limit`; true when it stopped
// holding.
template <typename Predicate>
bool SpinWhile(Predicate keep_waiting, std::chrono::microseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (keep_waiting()) {
    for (int i = 0; i < 16; ++i) _mm_pause();
    if (std::chrono::steady_clock::now() >= deadline) return !keep_waiting();
  }
  return true;
}

int64_t WallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ThreadCpuNs() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// When this thread should give its core up between two chunks (time_slice.h).
thread_local TimeSliceWatch slice_watch;

}  // namespace

WorkSharingTeam::WorkSharingTeam(int helpers)
    : claims_(std::make_unique<ClaimWord[]>(std::max(helpers, 0) + 1)),
      helper_cpus_(std::make_unique<HelperCpu[]>(std::max(helpers, 0) + 1)),
      threads_in_team_(std::max(helpers, 0) + 1),
      thread_contexts_(std::make_unique<ThreadContext[]>(std::max(helpers, 0) + 1)) {
  if (kFibersSupported && helpers > 0) {
    // Without a stack RunCarried runs its control flow on the owner, as Run alone would.
    absl::StatusOr<FiberStack> stack = FiberStack::Create(kFiberStackBytes);
    if (stack.ok()) fiber_stack_.emplace(*std::move(stack));
  }
  threads_.reserve(std::max(helpers, 0));
  for (int i = 0; i < helpers; ++i) threads_.emplace_back([this, i] { HelperLoop(i + 1); });
  for (int started = started_.load(std::memory_order_acquire); started < helpers;
       started = started_.load(std::memory_order_acquire)) {
    started_.wait(started, std::memory_order_acquire);
  }
}

WorkSharingTeam::~WorkSharingTeam() {
  stop_.store(true, std::memory_order_release);
  Notify();
  for (std::thread& t : threads_) t.join();
}

void WorkSharingTeam::Notify() {
  events_.fetch_add(1, std::memory_order_acq_rel);
  events_.notify_all();
}

void WorkSharingTeam::Run(int64_t n, absl::FunctionRef<void(int64_t)> body) {
  if (n <= 0) return;
  if (threads_.empty() || n == 1 || inside_loop || n >= static_cast<int64_t>(kClosed)) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  const uint32_t epoch = ++epoch_;
  // Close the claim words first: a helper that read the previous loop's open word and then
  // this loop's fields fails its compare-exchange, since the word has changed since.
  const int ranges = threads_in_team_;
  for (int r = 0; r < ranges; ++r) {
    claims_[r].word.store(Pack(epoch, kClosed), std::memory_order_relaxed);
  }
  grain_.store(std::max<int64_t>(1, n / (ranges * kChunksPerThread)), std::memory_order_release);
  n_.store(n, std::memory_order_release);
  body_.store(&body, std::memory_order_release);
  done_.store(0, std::memory_order_relaxed);
  for (int r = 0; r < ranges; ++r) {
    claims_[r].word.store(Pack(epoch, RangeBegin(n, ranges, r)), std::memory_order_release);
  }
  published_.store(epoch, std::memory_order_release);
  Notify();

  if (hosting_team == this) {
    Park();  // resumed once every index has run
    return;
  }
  Work(epoch, 0);
  // Wait only for chunks helpers have claimed and are running.
  const auto unfinished = [&] { return done_.load(std::memory_order_acquire) < n; };
  if (SpinWhile(unfinished, kOwnerSpin)) return;
  if (!HelperLastRanOnThisCpu() && SpinWhile(unfinished, kOwnerSpinHelpersElsewhere - kOwnerSpin)) {
    return;
  }
  while (unfinished()) sched_yield();
}

void WorkSharingTeam::RunCarried(absl::FunctionRef<void()> control) {
  if (!fiber_stack_.has_value() || hosting_team != nullptr || inside_loop) {
    control();
    return;
  }
  control_ = &control;
  control_finished_ = false;
  fiber_ = PrepareFiber(*fiber_stack_, &WorkSharingTeam::FiberMain, this);
  carrier_.store(kRunning, std::memory_order_release);
  SwitchIn(0);
  Serve(0, /*owner=*/true);
  carrier_.store(kIdle, std::memory_order_release);
  control_ = nullptr;
}

void WorkSharingTeam::FiberMain(void* team_pointer) {
  auto* team = static_cast<WorkSharingTeam*>(team_pointer);
  SanitizerContext came_from;
  BeginFiber(&came_from);
  team->NoteHostStack(came_from);
  (*team->control_)();
  team->control_finished_ = true;
  // Back to the thread that ran the end of control(), for good: RunCarried prepares the
  // fiber afresh.
  const ThreadContext& host = team->thread_contexts_[team->host_slot_];
  ExitFiber(&team->fiber_, host.saved, host.sanitizer);
}

void WorkSharingTeam::Park() {
  const ThreadContext& host = thread_contexts_[host_slot_];
  SanitizerContext came_from;
  SwitchContext(&fiber_, host.saved, host.sanitizer, &came_from);
  NoteHostStack(came_from);
}

void WorkSharingTeam::NoteHostStack(const SanitizerContext& host_stack) {
  SanitizerContext& host = thread_contexts_[host_slot_].sanitizer;
  host.stack_bottom = host_stack.stack_bottom;
  host.stack_size = host_stack.stack_size;
}

void WorkSharingTeam::SwitchIn(int slot) {
  host_slot_ = slot;
  hosting_team = this;
  ThreadContext& own = thread_contexts_[slot];
  own.sanitizer.tsan_fiber = CallingThreadSanitizerContext().tsan_fiber;
  SwitchContext(&own.saved, fiber_, fiber_stack_->sanitizer_context(), nullptr);
  hosting_team = nullptr;
  // The fiber has parked or finished; only now, its registers saved, may another thread
  // resume it (or the owner return).
  if (control_finished_) {
    carrier_.store(kFinished, std::memory_order_release);
    Notify();
  } else {
    carrier_.store((uint64_t{epoch_} << 32) | kParked, std::memory_order_release);
  }
}

bool WorkSharingTeam::ParkedOnADoneLoop(uint64_t state) const {
  // Parked: the loop it waits for is the newest, and stays so until it is resumed.
  return (state & kCarrierStateMask) == kParked &&
         done_.load(std::memory_order_acquire) >= n_.load(std::memory_order_acquire);
}

bool WorkSharingTeam::Resumable() const {
  return ParkedOnADoneLoop(carrier_.load(std::memory_order_acquire));
}

bool WorkSharingTeam::TryResume(int slot) {
  uint64_t state = carrier_.load(std::memory_order_acquire);
  if (!ParkedOnADoneLoop(state)) return false;
  // The epoch in the state word makes the exchange fail if another thread resumed the
  // control flow and it parked again, at a newer loop, since `state` was read.
  if (!carrier_.compare_exchange_strong(state, kRunning, std::memory_order_acq_rel)) return false;
  SwitchIn(slot);
  return true;
}

bool WorkSharingTeam::HelperLastRanOnThisCpu() const {
  const int cpu = sched_getcpu();
  if (cpu < 0) return true;  // unknown: yield, as if it did
  for (int slot = 1; slot < threads_in_team_; ++slot) {
    if (helper_cpus_[slot].cpu.load(std::memory_order_relaxed) == cpu) return true;
  }
  return false;
}

void WorkSharingTeam::Work(uint32_t epoch, int slot) {
  inside_loop = true;
  slice_watch.BeginWork(WallNs(), ThreadCpuNs);
  // The thread's own range, then the others' in turn (a thread the OS has not run leaves
  // its range to them).
  for (int i = 0; i < threads_in_team_; ++i) {
    if (!WorkOnRange(epoch, (slot + i) % threads_in_team_)) break;
  }
  inside_loop = false;
}

bool WorkSharingTeam::WorkOnRange(uint32_t epoch, int range) {
  std::atomic<uint64_t>& word = claims_[range].word;
  uint64_t claim = word.load(std::memory_order_acquire);
  while (true) {
    if (EpochOf(claim) != epoch || IndexOf(claim) == kClosed) return false;
    const int64_t n = n_.load(std::memory_order_acquire);
    const int64_t grain = grain_.load(std::memory_order_acquire);
    const absl::FunctionRef<void(int64_t)>* body = body_.load(std::memory_order_acquire);
    const int64_t first = static_cast<int64_t>(IndexOf(claim));
    const int64_t end = RangeBegin(n, threads_in_team_, range + 1);
    if (first >= end) return true;
    const int64_t last = std::min(end, first + grain);
    // On success the fields read above are this loop's: publishing a newer loop changes the
    // word before it rewrites them. On failure `claim` holds the word's current value.
    if (!word.compare_exchange_weak(claim, Pack(epoch, static_cast<uint64_t>(last)),
                                    std::memory_order_acq_rel, std::memory_order_acquire)) {
      continue;
    }
    for (int64_t i = first; i < last; ++i) (*body)(i);
    done_.fetch_add(last - first, std::memory_order_release);
    // Chunks hold the loop up until they are done: yield here, holding none, rather than be
    // preempted inside the next one.
    if (slice_watch.ShouldYield(WallNs(), ThreadCpuNs)) {
      sched_yield();
      slice_watch.Yielded(WallNs(), ThreadCpuNs());
    }
    claim = word.load(std::memory_order_acquire);
  }
}

void WorkSharingTeam::HelperLoop(int slot) {
  slot_of_thread = slot;
  // What a helper needs before it runs oneDNN matmul panels, made here rather than on first
  // use in some loop, so that it allocates once, when the team starts.
  UseOneDnnOnCallingThread();
  (void)ThreadStream();
  started_.fetch_add(1, std::memory_order_release);
  started_.notify_all();
  Serve(slot, /*owner=*/false);
}

void WorkSharingTeam::Serve(int slot, bool owner) {
  const auto done_serving = [&] {
    return owner ? carrier_.load(std::memory_order_acquire) == kFinished
                 : stop_.load(std::memory_order_acquire);
  };
  // Working on a loop already done costs a look at its claim words: start from none.
  uint32_t worked = 0;
  while (true) {
    // Read before looking for work, so that whatever is published after it wakes the wait.
    const uint32_t seen = events_.load(std::memory_order_acquire);
    if (done_serving()) return;
    const uint32_t newest = published_.load(std::memory_order_acquire);
    if (newest != worked) {
      worked = newest;
      if (slot > 0) helper_cpus_[slot].cpu.store(sched_getcpu(), std::memory_order_relaxed);
      Work(newest, slot);
    }
    if (TryResume(slot)) continue;
    const auto nothing_to_do = [&] {
      return events_.load(std::memory_order_acquire) == seen && !Resumable() && !done_serving();
    };
    if (!SpinWhile(nothing_to_do, kHelperSpin)) {
      // A control flow whose loop is done is resumed by the thread that finished it: a
      // sleeping thread need not wake for that.
      events_.wait(seen, std::memory_order_acquire);
    }
  }
}

WorkSharingTeam& ThreadTeam() {
  if (hosting_team != nullptr) return *hosting_team;
  thread_local std::unique_ptr<WorkSharingTeam> team;
  const int helpers = NumThreads() - 1;
  if (team == nullptr || team->helpers() != helpers) {
    team.reset();
    team = std::make_unique<WorkSharingTeam>(helpers);
  }
  return *team;
}

bool InsideWorkSharingLoop() { return inside_loop; }

WorkSharingTeam* CarryingTeam() { return hosting_team; }

size_t WorkSharingTeam::NextCarriedLocalIndex() {
  static std::atomic<size_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed);
}

int WorkSharingSlot() { return slot_of_thread; }

}  // namespace taskmoe::kernels
