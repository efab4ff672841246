// oneDNN engine, streams, the thread-count setting and ParallelFor.
#include "kernels/runtime.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_budget.h"
#include "kernels/work_sharing.h"

namespace taskmoe::kernels {

namespace {

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
  return absl::OkStatus();
}

int NumThreads() { return ThreadSetting().load(std::memory_order_relaxed); }

void UseOneDnnOnCallingThread() {
  thread_local bool single_threaded = false;
  if (!single_threaded) {
    // The thread setting's default may come from OpenMP's OMP_NUM_THREADS: read it first.
    (void)NumThreads();
    omp_set_num_threads(1);
    single_threaded = true;
  }
}

void ParallelFor(int64_t n, bool worth_it, absl::FunctionRef<void(int64_t)> body) {
  if (!worth_it || NumThreads() <= 1 || InsideWorkSharingLoop()) {
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
    ThreadTeam().Run(n, body);
  }
}

void RunCarried(absl::FunctionRef<void()> control) {
  // Inside a carried control flow ThreadTeam() is the carrying team, which runs it directly.
  if (NumThreads() <= 1 || InsideWorkSharingLoop()) {
    control();
    return;
  }
  ThreadTeam().RunCarried(control);
}

}  // namespace taskmoe::kernels
