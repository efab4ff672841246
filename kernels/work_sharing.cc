// WorkSharingTeam: the claim protocol, the helpers' spin-then-sleep wait, and per-thread teams.
#include "kernels/work_sharing.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

constexpr uint64_t kIndexMask = 0xffffffffu;
constexpr uint64_t kClosed = kIndexMask;

// How long a helper spins for the next loop before it sleeps. How long the owner spins on
// claimed chunks before it yields its core: briefly where a helper may share its core, else
// about a competitor's time slice (EEVDF's default base slice is 0.75 ms times 1 + log2 of the
// CPUs, 1.5 ms on 2). With a busy competitor per core (f32, two threads, AVX2, medians of 10
// alternations), spinning on for helpers elsewhere instead of yielding after 20 us gave 1.17x
// and 1.20x the tokens/s at batch 1 on two models, 0.98-1.16x at batch 8 and 32; the quiet
// machine's figures did not move.
constexpr auto kHelperSpin = std::chrono::microseconds(50);
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

}  // namespace

WorkSharingTeam::WorkSharingTeam(int helpers)
    : claims_(std::make_unique<ClaimWord[]>(std::max(helpers, 0) + 1)),
      helper_cpus_(std::make_unique<HelperCpu[]>(std::max(helpers, 0) + 1)),
      threads_in_team_(std::max(helpers, 0) + 1) {
  threads_.reserve(std::max(helpers, 0));
  for (int i = 0; i < helpers; ++i) threads_.emplace_back([this, i] { HelperLoop(i + 1); });
  for (int started = started_.load(std::memory_order_acquire); started < helpers;
       started = started_.load(std::memory_order_acquire)) {
    started_.wait(started, std::memory_order_acquire);
  }
}

WorkSharingTeam::~WorkSharingTeam() {
  stop_.store(true, std::memory_order_release);
  published_.fetch_add(1, std::memory_order_release);
  published_.notify_all();
  for (std::thread& t : threads_) t.join();
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
  published_.notify_all();

  Work(epoch, 0);
  // Wait only for chunks helpers have claimed and are running.
  const auto unfinished = [&] { return done_.load(std::memory_order_acquire) < n; };
  if (SpinWhile(unfinished, kOwnerSpin)) return;
  if (!HelperLastRanOnThisCpu() && SpinWhile(unfinished, kOwnerSpinHelpersElsewhere - kOwnerSpin)) {
    return;
  }
  while (unfinished()) sched_yield();
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
  uint32_t seen = 0;
  while (true) {
    const auto nothing_new = [&] {
      return published_.load(std::memory_order_acquire) == seen &&
             !stop_.load(std::memory_order_acquire);
    };
    if (!SpinWhile(nothing_new, kHelperSpin)) {
      while (nothing_new()) published_.wait(seen, std::memory_order_acquire);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = published_.load(std::memory_order_acquire);
    helper_cpus_[slot].cpu.store(sched_getcpu(), std::memory_order_relaxed);
    Work(seen, slot);
  }
}

WorkSharingTeam& ThreadTeam() {
  thread_local std::unique_ptr<WorkSharingTeam> team;
  const int helpers = NumThreads() - 1;
  if (team == nullptr || team->helpers() != helpers) {
    team.reset();
    team = std::make_unique<WorkSharingTeam>(helpers);
  }
  return *team;
}

bool InsideWorkSharingLoop() { return inside_loop; }

int WorkSharingSlot() { return slot_of_thread; }

}  // namespace taskmoe::kernels
