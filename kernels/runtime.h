// Process-wide compute settings: the oneDNN CPU engine, per-thread streams, and the one
// thread-count setting that bounds oneDNN and our own OpenMP loops alike (they share the
// OpenMP runtime, so one bound means no oversubscription between them).
#ifndef TASKMOE_KERNELS_RUNTIME_H_
#define TASKMOE_KERNELS_RUNTIME_H_

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

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

// Applies the thread-count setting to the calling thread's OpenMP state if it changed since
// this thread last ran a kernel. Every kernel entry point calls it (OpenMP keeps the thread
// count per thread, and server threads are not created by OpenMP).
void ApplyThreadSetting();

// Runs body(i) for i in [0, n): across the kernel threads when `worth_it` (enough work to pay
// for waking them) and more than one thread is set, else on the calling thread. The threads
// are the calling thread's WorkSharingTeam (work_sharing.h), not OpenMP's: indices are claimed
// chunk by chunk, so a thread the OS has descheduled (shared cores, a CPU quota) never holds
// the others up at a barrier. oneDNN keeps its own OpenMP threads.
void ParallelFor(int64_t n, bool worth_it, absl::FunctionRef<void(int64_t)> body);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_RUNTIME_H_
