// The int8 dequantisation formula (quantize.h's Dequantisation) as an inline loop, for
// kernels/*.cc only: it is compiled into each caller so that it takes the caller's
// instruction set (cpu_dispatch.h), and it needs the OpenMP simd pragmas kernels/ builds with.
#ifndef TASKMOE_KERNELS_DEQUANTIZE_ROW_H_
#define TASKMOE_KERNELS_DEQUANTIZE_ROW_H_

#include <cstdint>

#include "kernels/quantize.h"

namespace taskmoe::kernels {

// Columns [begin, begin + count) of row `row`: out[c] = y[row][begin + c] from raw[c] (the
// raw products of those columns). out may be raw (in place).
inline void DequantizeRow(const Dequantisation& dequantisation, int64_t row, int64_t begin,
                          int64_t count, const float* raw, float* out) {
  const float s = dequantisation.row_scales[row];
  const float* column_scales = dequantisation.column_scales + begin;
  if (dequantisation.bias != nullptr) {
    const float* bias = dequantisation.bias + begin;
    // simd: out may be raw itself (element c depends on element c only), which GCC's runtime
    // alias check would otherwise send down the scalar loop.
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) out[c] = raw[c] * (s * column_scales[c]) + bias[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < count; ++c) out[c] = raw[c] * (s * column_scales[c]);
  }
}

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_DEQUANTIZE_ROW_H_
