// oneDNN engine, streams and the thread-count setting.
#include "kernels/runtime.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_budget.h"

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

void ParallelFor(int64_t n, bool worth_it, absl::FunctionRef<void(int64_t)> body) {
  if (worth_it && NumThreads() > 1) {
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

}  // namespace taskmoe::kernels
