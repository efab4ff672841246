// Numerically stable softmax rows: subtract the row maximum before exponentiating.
#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/fast_math.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

float RowMax(const float* values, int64_t count) {
  float m = values[0];
  // The simd pragmas let the compiler reorder these reductions (it may not by default).
#pragma omp simd reduction(max : m)
  for (int64_t i = 1; i < count; ++i) m = std::max(m, values[i]);
  return m;
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
  ApplyThreadSetting();
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

absl::Status ArgMaxAndLogSumExp(const Tensor& x, Tensor& argmax, Tensor& log_sum_exp) {
  absl::StatusOr<int64_t> length = RowLength(x, "ArgMaxAndLogSumExp");
  if (!length.ok()) return length.status();
  const int64_t n = *length;
  const int64_t rows = x.numel() / n;
  argmax.Resize(DType::kS32, Shape{rows});
  log_sum_exp.Resize(DType::kF32, Shape{rows});
  ApplyThreadSetting();
  const float* data = x.data<float>();
  int32_t* best = argmax.data<int32_t>();
  float* shift = log_sum_exp.data<float>();
  ParallelFor(rows, rows * n > (1 << 16), [&](int64_t r) {
    const float* row = data + r * n;
    // The first maximum without a scalar pass over the row: vectorised maxima of blocks, the
    // first block holding the largest, then a scan of that block alone. NaNs never win.
    constexpr int64_t kBlock = 512;
    float m = -std::numeric_limits<float>::infinity();
    int64_t best_block = 0;
    for (int64_t begin = 0; begin < n; begin += kBlock) {
      const float block_max = RowMax(row + begin, std::min(kBlock, n - begin));
      if (block_max > m) {
        m = block_max;
        best_block = begin;
      }
    }
    int64_t index = best_block;
    const int64_t block_end = std::min(best_block + kBlock, n);
    while (index < block_end && !(row[index] == m)) ++index;
    best[r] = static_cast<int32_t>(index == block_end ? 0 : index);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += FastExp(row[i] - m);
    shift[r] = m + std::log(sum);
  });
  return absl::OkStatus();
}

absl::Status SoftmaxInPlace(Tensor& x) { return ForEachRow<SoftmaxRow>(x, "Softmax"); }
absl::Status LogSoftmaxInPlace(Tensor& x) { return ForEachRow<LogSoftmaxRow>(x, "LogSoftmax"); }

}  // namespace taskmoe::kernels
