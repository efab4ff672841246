// oneDNN engine, streams and the thread-count setting.
#include "kernels/runtime.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_budget.h"
#include "kernels/work_sharing.h"

namespace taskmoe::kernels {

namespace {

// OpenMP (oneDNN's threads) waits passively unless the environment says otherwise. libgomp's
// default spins for up to milliseconds at every barrier and after every region: with the
// cores shared, a spinning thread burns the slice the thread it waits for needs, and after a
// oneDNN matmul it spins on the core our own WorkSharingTeam helper wants next (f32 decoding
// with a busy competitor per core fell from 0.45 to 0.02 of its quiet speed at batch 1).
// Passive waiting costs a few microseconds of wake-up per oneDNN matmul.
//
// libgomp reads its environment in a shared-library constructor, before main() and before the
// executable's own constructors, so this runs from .preinit_array, which the dynamic linker
// calls before any library's initialisers. runtime.cc is linked into every program that uses
// the kernels. An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT is left as it is.
void DefaultOpenMpToPassiveWaiting(int, char**, char**) {
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", /*overwrite=*/0);
  }
}
using PreinitFunction = void (*)(int, char**, char**);
__attribute__((section(".preinit_array"), used)) const PreinitFunction kPreinitOpenMpDefaults =
    &DefaultOpenMpToPassiveWaiting;

// Whether this thread's latest matmul ran on oneDNN, which picks ParallelFor's threads.
thread_local bool matmuls_on_onednn = false;

// OMP_NUM_THREADS when set; otherwise the CPU budget (cpu_budget.h), which unlike OpenMP's
// default also respects a cgroup CPU quota.
std::atomic<int>& ThreadSetting() {
  static std::atomic<int> threads{
      std::getenv("OMP_NUM_THREADS") != nullptr ? omp_get_max_threads() : DefaultComputeThreads()};
  return threads;
}

}  // namespace

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

absl::Status SetNumThreads(int threads) {
  if (threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("thread count must be >= 1, got ", threads));
  }
  ThreadSetting().store(threads, std::memory_order_relaxed);
  ApplyThreadSetting();
  return absl::OkStatus();
}

int NumThreads() { return ThreadSetting().load(std::memory_order_relaxed); }

void ApplyThreadSetting() {
  thread_local int applied = -1;
  const int wanted = NumThreads();
  if (applied != wanted) {
    omp_set_num_threads(wanted);
    applied = wanted;
  }
}

void NoteMatmulRuntime(bool on_onednn) { matmuls_on_onednn = on_onednn; }

void ParallelFor(int64_t n, bool worth_it, absl::FunctionRef<void(int64_t)> body) {
  if (!worth_it || NumThreads() <= 1 || InsideWorkSharingLoop()) {
    for (int64_t i = 0; i < n; ++i) body(i);
  } else if (matmuls_on_onednn) {
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
    ThreadTeam().Run(n, body);
  }
}

}  // namespace taskmoe::kernels
