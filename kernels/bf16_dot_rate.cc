// The vdpbf16ps / vfmadd231ps throughput probe (bf16_dot_rate.h). Compiled with AVX512-BF16
// (kernels/CMakeLists.txt): only CPUs on which cpu_features.h finds it call it.
#include "kernels/bf16_dot_rate.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <limits>

namespace taskmoe::kernels {
namespace {

// Independent accumulators: more than any core's latency x ports of either instruction, so
// that the loop measures issue rate, not a dependency chain.
constexpr int kChains = 16;
constexpr int kIterations = 400;  // 4,800 instructions a run: a few microseconds
constexpr int kRuns = 15;

using Clock = std::chrono::steady_clock;

// GCC 12's _mm512_reduce_add_ps trips -Wuninitialized in its own header: sum through memory.
float Sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float sum = 0;
  for (float x : lanes) sum += x;
  return sum;
}

// The seconds of one run of each; `sink` keeps the results alive.
double TimeFma(__m512 a, __m512 b, float& sink) {
  __m512 acc[kChains];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kIterations; ++i) {
    for (__m512& v : acc) v = _mm512_fmadd_ps(a, b, v);
  }
  __m512 total = acc[0];
  for (int c = 1; c < kChains; ++c) total = _mm512_add_ps(total, acc[c]);
  sink += Sum(total);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double TimeBF16Dot(__m512bh a, __m512bh b, float& sink) {
  __m512 acc[kChains];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kIterations; ++i) {
    for (__m512& v : acc) v = _mm512_dpbf16_ps(v, a, b);
  }
  __m512 total = acc[0];
  for (int c = 1; c < kChains; ++c) total = _mm512_add_ps(total, acc[c]);
  sink += Sum(total);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

double BF16DotToFmaRatio() {
  // Operands the compiler cannot fold: read through a volatile.
  volatile float seed = 1e-3f;
  const __m512 a = _mm512_set1_ps(seed);
  const __m512 b = _mm512_set1_ps(seed * 0.5f);
  const __m512bh a_bf16 = _mm512_cvtne2ps_pbh(a, a);
  const __m512bh b_bf16 = _mm512_cvtne2ps_pbh(b, b);
  float sink = 0;
  double fma_best = std::numeric_limits<double>::infinity();
  double dot_best = std::numeric_limits<double>::infinity();
  for (int run = 0; run < kRuns; ++run) {
    fma_best = std::min(fma_best, TimeFma(a, b, sink));
    dot_best = std::min(dot_best, TimeBF16Dot(a_bf16, b_bf16, sink));
  }
  volatile float keep = sink;
  (void)keep;
  // A vfmadd231ps does 16 multiply-adds, a vdpbf16ps 32.
  return (32.0 / dot_best) / (16.0 / fma_best);
}

}  // namespace taskmoe::kernels
