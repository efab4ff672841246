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
constexpr int kIterations = 400;  // 6,400 instructions a run: a few microseconds
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

// The seconds of one run of kChains independent chains of `step` (acc -> acc'), started
// from `start_value` times the chain's number; `sink` keeps the results alive.
template <typename Step>
double TimeChains(Step step, float start_value, float& sink) {
  // Every loop over the chains unrolled, so that the accumulators live in registers (a loop
  // over an array in memory would time store-to-load forwarding instead). The chains start
  // from different values the compiler cannot know, or it would compute one and copy it: a
  // first form did, and timed the instructions' latency.
  __m512 acc[kChains];
#pragma GCC unroll 16
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(start_value * static_cast<float>(c));
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kIterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = step(acc[c]);
  }
  __m512 total = acc[0];
#pragma GCC unroll 16
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
    fma_best = std::min(
        fma_best, TimeChains([&](__m512 acc) { return _mm512_fmadd_ps(a, b, acc); }, seed, sink));
    dot_best = std::min(
        dot_best,
        TimeChains([&](__m512 acc) { return _mm512_dpbf16_ps(acc, a_bf16, b_bf16); }, seed, sink));
  }
  volatile float keep = sink;
  (void)keep;
  // A vfmadd231ps does 16 multiply-adds, a vdpbf16ps 32.
  return (32.0 / dot_best) / (16.0 / fma_best);
}

}  // namespace taskmoe::kernels
