// Softmax and log-softmax over the last dimension, in place.
#ifndef TASKMOE_KERNELS_SOFTMAX_H_
#define TASKMOE_KERNELS_SOFTMAX_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// x[..., i] = exp(x_i - max) / sum_j exp(x_j - max), per row of the last dimension.
absl::Status SoftmaxInPlace(Tensor& x);
// x[..., i] = x_i - max - log(sum_j exp(x_j - max)).
absl::Status LogSoftmaxInPlace(Tensor& x);

// The same on one row of `count` values (count >= 1); the building blocks of the above.
void SoftmaxRow(float* values, int64_t count);
void LogSoftmaxRow(float* values, int64_t count);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_SOFTMAX_H_
