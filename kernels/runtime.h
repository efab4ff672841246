// Process-wide compute settings: the oneDNN CPU engine, per-thread streams, and the one
// thread-count setting that bounds oneDNN and our own OpenMP loops alike (they share the
// OpenMP runtime, so one bound means no oversubscription between them).
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

// Applies the thread-count setting to the calling thread's OpenMP state if it changed since
// this thread last ran a kernel. Every kernel entry point calls it (OpenMP keeps the thread
// count per thread, and server threads are not created by OpenMP).
void ApplyThreadSetting();

// Runs body(i) for i in [0, n): across the kernel threads when `worth_it` (enough work to pay
// for waking them) and more than one thread is set, else on the calling thread.
//
// Which threads: while the calling thread's matmuls run on our own kernels (NoteMatmulRuntime),
// its WorkSharingTeam (work_sharing.h), whose indices are claimed chunk by chunk, so that a
// thread the OS has descheduled (shared cores, a CPU quota) never holds the others up at a
// barrier; while they run on oneDNN, OpenMP's team, the one oneDNN uses, so that one set of
// threads shares the cores (a second, spinning between loops, slowed the AVX-512 int8 step by
// 15-25 % at batch 32-128). Unlike `#pragma omp parallel for if (...)`, a loop run on one thread
// makes libgomp allocate nothing, which a decoding step must not.
void ParallelFor(int64_t n, bool worth_it, absl::FunctionRef<void(int64_t)> body);

// Records whether the calling thread's latest matmul ran on oneDNN (PackedLinear calls it):
// what ParallelFor's choice of threads above goes by.
void NoteMatmulRuntime(bool on_onednn);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_RUNTIME_H_
