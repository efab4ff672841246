// Top-k by insertion into a sorted window of k: O(N * k) worst case, but for the small k of
// gating and beam search almost every element fails the first comparison, and it needs no
// scratch memory.
#include "kernels/topk.h"

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {

void TopKOfRow(const float* row, int64_t n, int64_t k, float* values, int32_t* indices) {
  int64_t filled = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float value = row[i];
    // Strictly greater: an equal later element never displaces an earlier one.
    if (filled == k && !(value > values[k - 1])) continue;
    int64_t pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && value > values[pos - 1]) {
      values[pos] = values[pos - 1];
      indices[pos] = indices[pos - 1];
      --pos;
    }
    values[pos] = value;
    indices[pos] = static_cast<int32_t>(i);
  }
}

absl::Status TopK(const Tensor& x, int64_t k, Tensor& values, Tensor& indices) {
  constexpr const char* kOp = "TopK";
  if (absl::Status s = CheckDType(x, DType::kF32, kOp, "x"); !s.ok()) return s;
  if (x.rank() < 1) return absl::InvalidArgumentError(absl::StrCat(kOp, ": x is a scalar"));
  const int64_t n = x.dim(x.rank() - 1);
  if (k < 1 || k > n) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": k = ", k, " outside [1, ", n,
                                                   "] for x of shape ", x.shape().ToString()));
  }
  const Shape out_shape = x.shape().WithLastDim(k);
  values.Resize(DType::kF32, out_shape);
  indices.Resize(DType::kS32, out_shape);

  const int64_t rows = x.numel() / n;
  const float* in = x.data<float>();
  float* top_values = values.data<float>();
  int32_t* top_indices = indices.data<int32_t>();
  ParallelFor(rows, rows * n > (1 << 16), [&](int64_t r) {
    TopKOfRow(in + r * n, n, k, top_values + r * k, top_indices + r * k);
  });
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
