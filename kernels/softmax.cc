// Numerically stable softmax rows: subtract the row maximum before exponentiating.
#include "kernels/softmax.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/dequantize_row.h"
#include "kernels/fast_math.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

// The largest of count > 0 values; NaNs never win over a number (all NaN gives -infinity).
inline float RowMax(const float* values, int64_t count) {
  // Starting from -infinity rather than values[0] and writing the comparison out keeps GCC on
  // the vector loop in every context this is inlined into: the greedy head's copy of the
  // values[0] form compiled to a scalar vmaxss chain (half of its time, 4 cycles a value).
  float m = -std::numeric_limits<float>::infinity();
  // The simd pragma lets the compiler reorder this reduction (it may not by default).
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < count; ++i) m = values[i] > m ? values[i] : m;
  return m;
}

// The index of the first of values[0, count) equal to m, or count if none (NaN equals
// nothing). Eight at a time: the greedy head scans every 384-column chunk of our f32 kernel's
// products this way (fixed chunks, so as many scans as chunks), and a scalar scan there cost
// about as much as the chunk's exponentials.
inline int64_t FirstEqual(const float* values, int64_t count, float m) {
  const __m256 target = _mm256_set1_ps(m);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const int equal =
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(values + i), target, _CMP_EQ_OQ));
    if (equal != 0) return i + __builtin_ctz(static_cast<unsigned>(equal));
  }
  while (i < count && !(values[i] == m)) ++i;
  return i;
}

// The length of x's rows: f32 [..., N] with N > 0, else InvalidArgument naming `op`.
absl::StatusOr<int64_t> RowLength(const Tensor& x, const char* op) {
  if (absl::Status s = CheckDType(x, DType::kF32, op, "x"); !s.ok()) return s;
  if (x.rank() < 1 || x.dim(x.rank() - 1) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": x has shape ", x.shape().ToString(), ", need [..., N>0]"));
  }
  return x.dim(x.rank() - 1);
}

template <void (*RowFn)(float*, int64_t)>
absl::Status ForEachRow(Tensor& x, const char* op) {
  absl::StatusOr<int64_t> length = RowLength(x, op);
  if (!length.ok()) return length.status();
  const int64_t n = *length;
  const int64_t rows = x.numel() / n;
  float* data = x.data<float>();
  ParallelFor(rows, rows * n > (1 << 16), [&](int64_t r) { RowFn(data + r * n, n); });
  return absl::OkStatus();
}

}  // namespace

void SoftmaxRow(float* values, int64_t count) {
  const float m = RowMax(values, count);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < count; ++i) {
    values[i] = FastExp(values[i] - m);
    sum += values[i];
  }
  const float inverse = 1.0f / sum;
  for (int64_t i = 0; i < count; ++i) values[i] *= inverse;
}

void LogSoftmaxRow(float* values, int64_t count) {
  const float m = RowMax(values, count);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < count; ++i) sum += FastExp(values[i] - m);
  const float shift = m + std::log(sum);
  for (int64_t i = 0; i < count; ++i) values[i] -= shift;
}

namespace {

// One row of ArgMaxAndLogSumExpRows: arithmetic-bound (an exp per vocabulary entry), hence
// compiled for AVX-512 too (cpu_dispatch.h). Without `log_sum_exp` only the blocks' maxima.
TASKMOE_AVX512_CLONE void ArgMaxAndLogSumExpRow(const float* row, int64_t r, int64_t n,
                                                const Dequantisation* dequantisation,
                                                int32_t* argmax, float* max, float* log_sum_exp) {
  // Blocks small enough for L1: a dequantised block is computed into `buffer` and reduced
  // there, so the 64k-wide output row is never written to memory.
  constexpr int64_t kBlock = 512;
  alignas(64) float buffer[kBlock];
  auto block_values = [&](int64_t begin, int64_t count) -> const float* {
    if (dequantisation == nullptr) return row + begin;
    DequantizeRow(*dequantisation, r, begin, count, row + begin, buffer);
    return buffer;
  };
  // The first maximum without a scalar pass over the row: vectorised maxima of blocks, the
  // first block holding the largest, then a scan of that block alone. NaNs never win.
  float m = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;
  int64_t best_block = 0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t count = std::min(kBlock, n - begin);
    const float* block = block_values(begin, count);
    const float block_max = RowMax(block, count);
    if (block_max > m) {
      if (sum > 0.0f) sum *= FastExp(m - block_max);
      m = block_max;
      best_block = begin;
    }
    // Blocks before the first number (all NaN maxima so far) cannot be scaled: skipped.
    if (log_sum_exp == nullptr || m == -std::numeric_limits<float>::infinity()) continue;
    float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
    for (int64_t i = 0; i < count; ++i) block_sum += FastExp(block[i] - m);
    sum += block_sum;
  }
  const int64_t count = std::min(kBlock, n - best_block);
  const float* block = block_values(best_block, count);
  const int64_t index = FirstEqual(block, count, m);
  const bool found = index < count;
  argmax[r] = static_cast<int32_t>(found ? best_block + index : 0);
  if (max != nullptr) max[r] = found ? m : std::numeric_limits<float>::quiet_NaN();
  if (log_sum_exp != nullptr) {
    log_sum_exp[r] = found ? m + std::log(sum) : std::numeric_limits<float>::quiet_NaN();
  }
}

}  // namespace

void ArgMaxAndLogSumExpRowsOnThisThread(const float* values, int64_t rows, int64_t n,
                                        const Dequantisation* dequantisation, int32_t* argmax,
                                        float* max, float* log_sum_exp) {
  for (int64_t r = 0; r < rows; ++r) {
    ArgMaxAndLogSumExpRow(values + r * n, r, n, dequantisation, argmax, max, log_sum_exp);
  }
}

void ArgMaxAndLogSumExpRows(const float* values, int64_t rows, int64_t n,
                            const Dequantisation* dequantisation, int32_t* argmax, float* max,
                            float* log_sum_exp) {
  ParallelFor(rows, rows * n > (1 << 16), [&](int64_t r) {
    ArgMaxAndLogSumExpRow(values + r * n, r, n, dequantisation, argmax, max, log_sum_exp);
  });
}

absl::Status ArgMaxAndLogSumExp(const Tensor& x, Tensor& argmax, Tensor& log_sum_exp) {
  absl::StatusOr<int64_t> length = RowLength(x, "ArgMaxAndLogSumExp");
  if (!length.ok()) return length.status();
  const int64_t n = *length;
  const int64_t rows = x.numel() / n;
  argmax.Resize(DType::kS32, Shape{rows});
  log_sum_exp.Resize(DType::kF32, Shape{rows});
  ArgMaxAndLogSumExpRows(x.data<float>(), rows, n, nullptr, argmax.data<int32_t>(), nullptr,
                         log_sum_exp.data<float>());
  return absl::OkStatus();
}

absl::Status SoftmaxInPlace(Tensor& x) { return ForEachRow<SoftmaxRow>(x, "Softmax"); }
absl::Status LogSoftmaxInPlace(Tensor& x) { return ForEachRow<LogSoftmaxRow>(x, "LogSoftmax"); }

}  // namespace taskmoe::kernels
