// Element-wise activations (ReLU, exact GELU) and residual addition.
#ifndef TASKMOE_KERNELS_ACTIVATION_H_
#define TASKMOE_KERNELS_ACTIVATION_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

enum class Activation : uint8_t { kNone, kRelu, kGelu };

const char* ActivationName(Activation activation);
absl::StatusOr<Activation> ParseActivation(std::string_view name);

// GELU in its exact form, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as PyTorch's default.
float Gelu(float x);

// values[i] = act(values[i]) for i < count.
void ApplyActivationInPlace(Activation activation, float* values, int64_t count);

// x = act(x) over an f32 tensor of any shape.
absl::Status ApplyActivation(Activation activation, Tensor& x);

// y += x, element-wise, for f32 tensors of equal shape (the residual connection).
absl::Status AddInPlace(const Tensor& x, Tensor& y);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_ACTIVATION_H_
