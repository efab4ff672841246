// TimeSliceWatch: tells a kernel thread when to give up its core between two chunks of a
// parallel loop, shortly before the OS would take it away in the middle of one.
//
// Where the cores are shared (a busy neighbour, more runnable threads than CPUs), the OS runs
// each thread in time slices. A thread preempted while it holds a chunk of a loop holds the
// whole team up until it runs again, a competitor's slice later: with a busy competitor per
// core, the team's threads spent about a quarter of their time waiting so (docs/benchmarks.md,
// stop 57). A thread that yields at a chunk boundary holds nothing, and the others finish the
// loop and carry the step on (WorkSharingTeam::RunCarried) while it is away. The OS's slice is
// not something a thread can ask for, so it is learnt: the watch notices when the thread was off
// its CPU between two of its checks inside one stretch of work (its wall time advanced more
// than its CPU time), which it did not choose, and keeps an average of how long the runs that
// ended so lasted; once it has seen a few, it says to yield when the current run reaches twice
// that. Twice, not just under it: the OS (Linux's EEVDF, 250 Hz) mostly ends a run after its
// 1.5 ms slice, but lets some go on much longer and then ends them anywhere; under a busy
// competitor per core, a mark at twice the learnt run gave 1.16x / 1.24x the tokens/s at
// batch 1 / 8 (medians of 3 alternating rounds), a mark at 0.9x 1.02x / 1.10x
// (docs/benchmarks.md, stop 57). Runs cut short by a yield say nothing of the OS's runs: every
// eighth run is a probe that never yields, and after the first few the average learns from
// probes only. On a machine where the thread is never preempted it never says to yield. Time
// is passed in, so that tests can drive it.
#ifndef TASKMOE_KERNELS_TIME_SLICE_H_
#define TASKMOE_KERNELS_TIME_SLICE_H_

#include <cstdint>

namespace taskmoe::kernels {

class TimeSliceWatch {
 public:
  // Off-CPU time between two checks above which the thread counts as having been away.
  static constexpr int64_t kAwayNs = 30'000;
  // Checks closer together than this look at the clock only.
  static constexpr int64_t kCheckEveryNs = 50'000;
  // Preempted runs seen before the watch says to yield.
  static constexpr int kRunsToLearn = 3;
  // The yield mark, in typical preempted runs.
  static constexpr int64_t kMarkInTypicalRuns = 2;
  // One run in this many is a probe, which never yields.
  static constexpr int64_t kProbeEvery = 8;
  // Slices shorter than this are not worth yielding ahead of.
  static constexpr int64_t kShortestSliceNs = 500'000;

  // The thread starts a stretch of work in which it does not sleep (a loop's chunks): time off
  // its CPU since the last check was its own choice, or not inside a chunk, and is no sample of
  // the slice. `cpu_clock()` gives the thread's CPU time in ns; a system call, it is read only
  // when the wall clock moved enough since the last check for the thread to have been away.
  template <typename CpuClock>
  void BeginWork(int64_t wall_ns, CpuClock&& cpu_clock) {
    if (wall_ns - last_wall_ns_ <= kAwayNs) return;
    Begin(wall_ns, cpu_clock());
  }

  // A check at a chunk boundary inside the stretch of work: true when the thread should yield
  // now. Reads `cpu_clock()` at most every kCheckEveryNs.
  template <typename CpuClock>
  bool ShouldYield(int64_t wall_ns, CpuClock&& cpu_clock) {
    if (wall_ns - last_wall_ns_ < kCheckEveryNs) return false;
    return Check(wall_ns, cpu_clock());
  }

  // The thread yielded (or otherwise gave its core up on purpose): a new run starts.
  void Yielded(int64_t wall_ns, int64_t cpu_ns);

  // The average length of the preempted runs seen so far (0: none yet).
  int64_t typical_run_ns() const { return typical_run_ns_; }
  int preempted_runs() const { return preempted_runs_; }

 private:
  void Begin(int64_t wall_ns, int64_t cpu_ns);
  bool Check(int64_t wall_ns, int64_t cpu_ns);
  void StartRun(int64_t wall_ns);
  // The clocks as read at this check, against which the next one tells time away.
  void NoteCheck(int64_t wall_ns, int64_t cpu_ns);
  // Whether the thread was off its CPU since the last check.
  bool WasAway(int64_t wall_ns, int64_t cpu_ns) const;

  int64_t runs_ = 0;  // runs started; a run is a probe when this is a multiple of kProbeEvery
  int64_t last_wall_ns_ = 0;
  int64_t last_cpu_ns_ = 0;
  int64_t run_start_ns_ = 0;
  int64_t typical_run_ns_ = 0;
  int preempted_runs_ = 0;
};

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_TIME_SLICE_H_
