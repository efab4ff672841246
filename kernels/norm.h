// Layer normalisation over the last dimension.
#ifndef TASKMOE_KERNELS_NORM_H_
#define TASKMOE_KERNELS_NORM_H_

#include "absl/status/status.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dimension D, with the biased
// variance (as torch.nn.LayerNorm). x: f32 [..., D]; gamma, beta: f32 [D]. y is resized to
// x's shape; y may be x itself.
absl::Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                       Tensor& y);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_NORM_H_
