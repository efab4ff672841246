// TimeSliceWatch: learning the OS's time slice from the runs it cut, and the yield mark.
#include "kernels/time_slice.h"

namespace taskmoe::kernels {

bool TimeSliceWatch::WasAway(int64_t wall_ns, int64_t cpu_ns) const {
  return (wall_ns - last_wall_ns_) - (cpu_ns - last_cpu_ns_) > kAwayNs;
}

void TimeSliceWatch::StartRun(int64_t wall_ns) {
  run_start_ns_ = wall_ns;
  ++runs_;
}

void TimeSliceWatch::NoteCheck(int64_t wall_ns, int64_t cpu_ns) {
  last_wall_ns_ = wall_ns;
  last_cpu_ns_ = cpu_ns;
}

void TimeSliceWatch::Begin(int64_t wall_ns, int64_t cpu_ns) {
  // Away since the last check: asleep between loops, or preempted outside a loop's chunks
  // (spinning, the steps between loops); a new run either way, but no sample of the slice.
  if (WasAway(wall_ns, cpu_ns)) StartRun(wall_ns);
  NoteCheck(wall_ns, cpu_ns);
}

void TimeSliceWatch::Yielded(int64_t wall_ns, int64_t cpu_ns) {
  StartRun(wall_ns);
  NoteCheck(wall_ns, cpu_ns);
}

bool TimeSliceWatch::Check(int64_t wall_ns, int64_t cpu_ns) {
  if (WasAway(wall_ns, cpu_ns)) {
    // Preempted inside a stretch of work: the run lasted at least until the last check.
    const bool probe = runs_ % kProbeEvery == 0;
    if (preempted_runs_ < kRunsToLearn || probe) {
      const int64_t run_ns = last_wall_ns_ - run_start_ns_;
      typical_run_ns_ =
          typical_run_ns_ == 0 ? run_ns : typical_run_ns_ + (run_ns - typical_run_ns_) / 4;
    }
    ++preempted_runs_;
    StartRun(wall_ns);
  }
  NoteCheck(wall_ns, cpu_ns);
  if (preempted_runs_ < kRunsToLearn || runs_ % kProbeEvery == 0 ||
      typical_run_ns_ < kShortestSliceNs) {
    return false;
  }
  return wall_ns - run_start_ns_ >= kMarkInTypicalRuns * typical_run_ns_;
}

}  // namespace taskmoe::kernels
