// Process-wide compute settings: the oneDNN CPU engine, per-thread streams, the one
// thread-count setting, and ParallelFor, the one way kernels use more than one thread. oneDNN
// itself runs single-threaded on whichever thread calls it: its OpenMP team would be a second
// set of threads, whose barriers stall whenever the OS deschedules one of them.
#ifndef TASKMOE_KERNELS_RUNTIME_H_
#define TASKMOE_KERNELS_RUNTIME_H_

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
// CpuIsaName() and the other CPU queries live there; included because callers of the runtime
// (shared/anchors/ct2/ours_driver.cc among them) have always found CpuIsaName here.
#include "kernels/cpu_features.h"

namespace taskmoe::kernels {

// The CPU engine every primitive runs on.
dnnl::engine& Engine();
// A stream for the calling thread (oneDNN streams are not shared between threads).
dnnl::stream& ThreadStream();

// Sets the number of threads every kernel uses from now on, on whatever thread calls it.
// `threads` must be >= 1. The default is OMP_NUM_THREADS when set, else the CPUs this process
// may use: its affinity mask capped by its cgroup CPU quota (cpu_budget.h).
absl::Status SetNumThreads(int threads);
int NumThreads();

// Makes oneDNN primitives created and run on the calling thread single-threaded (OpenMP keeps
// its thread count per thread; the first call sets it to 1). Everything that creates or runs
// a oneDNN primitive calls it first.
void UseOneDnnOnCallingThread();

// Runs body(i) for i in [0, n): across the kernel threads when `worth_it` (enough work to pay
// for waking them) and more than one thread is set, else on the calling thread. The threads
// are the calling thread's WorkSharingTeam (work_sharing.h), whose indices are claimed chunk
// by chunk, so that a thread the OS has descheduled (shared cores, a CPU quota) never holds
// the others up at a barrier. A loop run on one thread allocates nothing, which a decoding
// step must not.
void ParallelFor(int64_t n, bool worth_it, absl::FunctionRef<void(int64_t)> body);

// The products' `worth_it` threshold: below this many multiply-adds a product runs on the
// calling thread, since waking the others costs a few microseconds, as much as ~100k
// multiply-adds take on one core.
inline constexpr int64_t kParallelMacs = int64_t{1} << 17;

// Runs control() -- a stretch of work made of ParallelFor loops and the steps between them, a
// decoding step -- so that each loop's continuation runs on whichever kernel thread finds the
// loop done (WorkSharingTeam::RunCarried): a thread the OS has descheduled then holds up
// nothing but the chunk it is in. Runs control() directly with one thread, inside a loop body
// or inside another RunCarried.
void RunCarried(absl::FunctionRef<void()> control);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_RUNTIME_H_
