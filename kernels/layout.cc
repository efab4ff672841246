// SplitLastDim: one pass over x, rows in parallel when there are enough of them.
#include "kernels/layout.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {

absl::Status SplitLastDim(const Tensor& x, absl::Span<Tensor* const> parts) {
  constexpr const char* kOp = "SplitLastDim";
  if (absl::Status s = CheckDType(x, DType::kF32, kOp, "x"); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(parts.size());
  if (n == 0 || x.rank() < 1 || x.dim(x.rank() - 1) % n != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": x of shape ", x.shape().ToString(),
                                                   " does not split into ", n, " parts"));
  }
  const int64_t cols = x.dim(x.rank() - 1), width = cols / n;
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  for (int64_t i = 0; i < n; ++i) {
    if (parts[i] == nullptr || parts[i] == &x) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": part ", i, " is null or x itself"));
    }
    for (int64_t j = 0; j < i; ++j) {
      if (parts[j] == parts[i]) {
        return absl::InvalidArgumentError(absl::StrCat(kOp, ": parts ", j, " and ", i, " alias"));
      }
    }
    parts[i]->Resize(DType::kF32, x.shape().WithLastDim(width));
  }
  if (rows == 0 || width == 0) return absl::OkStatus();
  const float* in = x.data<float>();
  ParallelFor(rows, rows * cols > (1 << 16), [&](int64_t r) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(parts[i]->data<float>() + r * width, in + r * cols + i * width,
                  sizeof(float) * width);
    }
  });
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
