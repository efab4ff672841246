// bf16 rounding and symmetric int8 quantisation loops (auto-vectorised).
#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu_dispatch.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {

void ConvertToBFloat16(const float* src, int64_t count, BFloat16* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = FloatToBFloat16(src[i]);
}

void RoundToBFloat16Values(const float* src, int64_t count, float* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = BFloat16ToFloat(FloatToBFloat16(src[i]));
}

bool AllBFloat16Values(const float* src, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, src + i, sizeof(bits));
    if ((bits & 0xffffu) != 0) return false;
  }
  return true;
}

namespace {

// One row of QuantizeRowsSymmetric (kOffset 0, int8_t) or of QuantizeRowsSymmetricShifted
// (kOffset 128, uint8_t); compiled for AVX-512 too (cpu_dispatch.h), whose 16-lane compares and
// direct int32 -> int8 narrowing halve its time.
template <typename Out, int kOffset>
TASKMOE_AVX512_CLONE float QuantizeRowSymmetric(const float* row, int64_t cols, Out* out,
                                                float level) {
  float max_abs = 0.0f;
#pragma omp simd reduction(max : max_abs)
  for (int64_t c = 0; c < cols; ++c) max_abs = std::max(max_abs, std::fabs(row[c]));
  const float scale = max_abs > 0.0f ? max_abs / level : 1.0f;
  const float inverse = 1.0f / scale;
  // Written so that it vectorises (std::nearbyint does not): NaN (a NaN input, or an
  // infinite one times a zero inverse) has no int8 value and becomes 0; the clamp only
  // catches the rounding of values a hair above max_abs; adding and subtracting 1.5 * 2^23
  // rounds half to even, as nearbyint does under the default rounding mode.
  constexpr float kRoundingShift = 12582912.0f;
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    float v = row[c] * inverse;
    v = v == v ? v : 0.0f;
    v = v > level ? level : v;
    v = v < -level ? -level : v;
    v = (v + kRoundingShift) - kRoundingShift;
    out[c] = static_cast<Out>(static_cast<int32_t>(v) + kOffset);
  }
  return scale;
}

}  // namespace

void QuantizeRowsSymmetric(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales,
                           int max_level) {
  const float level = static_cast<float>(max_level);
  // Rows in parallel: the int8 linear layers quantise every input this way, and a serial loop
  // left the second core idle for a tenth of an int8 decoding step.
  ParallelFor(rows, rows * cols > (1 << 15), [&](int64_t r) {
    scales[r] = QuantizeRowSymmetric<int8_t, 0>(x + r * cols, cols, q + r * cols, level);
  });
}

void QuantizeRowsSymmetricShifted(const float* x, int64_t rows, int64_t cols, uint8_t* q,
                                  int64_t ldq, float* scales) {
  ParallelFor(rows, rows * cols > (1 << 15), [&](int64_t r) {
    uint8_t* out = q + r * ldq;
    scales[r] = QuantizeRowSymmetric<uint8_t, 128>(x + r * cols, cols, out, 127.0f);
    std::memset(out + cols, 128, ldq - cols);
  });
}

}  // namespace taskmoe::kernels
