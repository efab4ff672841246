// Layer normalisation: two passes per row (mean, then variance of the centred values), which
// stays accurate where the one-pass E[x^2] - E[x]^2 form cancels.
#include "kernels/norm.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {

absl::Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                       Tensor& y) {
  constexpr const char* kOp = "LayerNorm";
  if (absl::Status s = CheckDType(x, DType::kF32, kOp, "x"); !s.ok()) return s;
  if (x.rank() < 1 || x.dim(x.rank() - 1) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": x has shape ", x.shape().ToString(), ", need [..., D>0]"));
  }
  const int64_t d = x.dim(x.rank() - 1);
  if (absl::Status s = CheckDType(gamma, DType::kF32, kOp, "gamma"); !s.ok()) return s;
  if (absl::Status s = CheckDType(beta, DType::kF32, kOp, "beta"); !s.ok()) return s;
  if (absl::Status s = CheckShape(gamma, Shape{d}, kOp, "gamma"); !s.ok()) return s;
  if (absl::Status s = CheckShape(beta, Shape{d}, kOp, "beta"); !s.ok()) return s;
  if (!(eps > 0.0f)) return absl::InvalidArgumentError(absl::StrCat(kOp, ": eps must be > 0"));
  if (y.raw_data() != x.raw_data()) y.Resize(DType::kF32, x.shape());

  const int64_t rows = x.numel() / d;
  const float* in = x.data<float>();
  float* out = y.data<float>();
  const float* g = gamma.data<float>();
  const float* b = beta.data<float>();
  ParallelFor(rows, rows * d > (1 << 16), [&](int64_t r) {
    const float* row = in + r * d;
    float* dst = out + r * d;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < d; ++i) sum += row[i];
    const float mean = sum / static_cast<float>(d);
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < d; ++i) {
      const float c = row[i] - mean;
      squares += c * c;
    }
    const float inv_std = 1.0f / std::sqrt(squares / static_cast<float>(d) + eps);
    for (int64_t i = 0; i < d; ++i) dst[i] = (row[i] - mean) * inv_std * g[i] + b[i];
  });
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
