// Activation and residual loops.
#include "kernels/activation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace taskmoe::kernels {

const char* ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return "none";
    case Activation::kRelu:
      return "relu";
    case Activation::kGelu:
      return "gelu";
  }
  return "?";
}

absl::StatusOr<Activation> ParseActivation(std::string_view name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "gelu") return Activation::kGelu;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown activation '", std::string(name), "' (expected none, relu or gelu)"));
}

float Gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

void ApplyActivationInPlace(Activation activation, float* values, int64_t count) {
  switch (activation) {
    case Activation::kNone:
      return;
    case Activation::kRelu:
      for (int64_t i = 0; i < count; ++i) values[i] = std::max(values[i], 0.0f);
      return;
    case Activation::kGelu:
      for (int64_t i = 0; i < count; ++i) values[i] = Gelu(values[i]);
      return;
  }
}

absl::Status ApplyActivation(Activation activation, Tensor& x) {
  if (absl::Status s = CheckDType(x, DType::kF32, "ApplyActivation", "input"); !s.ok()) {
    return s;
  }
  ApplyActivationInPlace(activation, x.data<float>(), x.numel());
  return absl::OkStatus();
}

absl::Status AddInPlace(const Tensor& x, Tensor& y) {
  constexpr const char* kOp = "AddInPlace";
  if (absl::Status s = CheckDType(x, DType::kF32, kOp, "x"); !s.ok()) return s;
  if (absl::Status s = CheckDType(y, DType::kF32, kOp, "y"); !s.ok()) return s;
  if (absl::Status s = CheckShape(x, y.shape(), kOp, "x"); !s.ok()) return s;
  const float* src = x.data<float>();
  float* dst = y.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
