// Numerically stable softmax rows: subtract the row maximum before exponentiating.
#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>

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

template <void (*RowFn)(float*, int64_t)>
absl::Status ForEachRow(Tensor& x, const char* op) {
  if (absl::Status s = CheckDType(x, DType::kF32, op, "x"); !s.ok()) return s;
  if (x.rank() < 1 || x.dim(x.rank() - 1) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": x has shape ", x.shape().ToString(), ", need [..., N>0]"));
  }
  ApplyThreadSetting();
  const int64_t n = x.dim(x.rank() - 1);
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

absl::Status SoftmaxInPlace(Tensor& x) { return ForEachRow<SoftmaxRow>(x, "Softmax"); }
absl::Status LogSoftmaxInPlace(Tensor& x) { return ForEachRow<LogSoftmaxRow>(x, "LogSoftmax"); }

}  // namespace taskmoe::kernels
