// Conversions into the low-precision formats the matmul consumes: f32 -> bf16 rounding and
// symmetric int8 quantisation (per row for activations, per output channel for weights).
#ifndef TASKMOE_KERNELS_QUANTIZE_H_
#define TASKMOE_KERNELS_QUANTIZE_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace taskmoe::kernels {

// dst[i] = bf16(src[i]), round-to-nearest-even.
void ConvertToBFloat16(const float* src, int64_t count, BFloat16* dst);
// dst[i] = float(bf16(src[i])): the value bf16 would hold, kept in f32 (the bf16_as_f32 matmul
// path of CPUs without bf16 instructions). dst may be src.
void RoundToBFloat16Values(const float* src, int64_t count, float* dst);
// Whether each of the `count` floats at src is a bf16 value (its low 16 bits zero): such
// weights lose nothing held in bf16 (the f32 kernel's bf16 packing, f32_gemm.h; embedding
// tables).
bool AllBFloat16Values(const float* src, int64_t count);

// Quantises each row of a [rows, cols] matrix to s8 with its own scale:
// scale[r] = max|x[r, :]| / max_level (1 for an all-zero row), q[r, c] = round(x[r, c] /
// scale[r]), within [-max_level, max_level] (1 <= max_level <= 127; the AVX2 int8 kernel's
// weights use 31, int8_gemm.h). The row's values are recovered as q * scale with error at most
// scale / 2.
void QuantizeRowsSymmetric(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales,
                           int max_level = 127);
// The same with 127 levels, written as q + 128 in unsigned bytes, rows ldq >= cols apart, each
// row's last ldq - cols bytes set to 128 (zeros): the inputs of our int8 kernel (int8_gemm.h),
// which multiplies them unsigned.
void QuantizeRowsSymmetricShifted(const float* x, int64_t rows, int64_t cols, uint8_t* q,
                                  int64_t ldq, float* scales);

// How an int8 linear layer's raw products become its output:
// y[r][c] = raw[r][c] * row_scales[r] * column_scales[c] + bias[c] (no bias when null).
// kernels/dequantize_row.h applies it.
struct Dequantisation {
  const float* row_scales = nullptr;
  const float* column_scales = nullptr;
  const float* bias = nullptr;
};

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_QUANTIZE_H_
