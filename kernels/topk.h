// Top-k selection per row: for beam search over the vocabulary and for MoE expert gating.
#ifndef TASKMOE_KERNELS_TOPK_H_
#define TASKMOE_KERNELS_TOPK_H_

#include "absl/status/status.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// For each row of x (f32 [..., N]), the k largest values in descending order and their
// indices in [0, N); equal values keep the lower index first, so results are deterministic.
// values is resized to f32 [..., k] and indices to s32 [..., k]. Requires 1 <= k <= N.
absl::Status TopK(const Tensor& x, int64_t k, Tensor& values, Tensor& indices);

// The same for one row of n floats, into values[0, k) and indices[0, k) (MoE gating, whose
// rows are a few experts wide and not a tensor). Requires 1 <= k <= n.
void TopKOfRow(const float* row, int64_t n, int64_t k, float* values, int32_t* indices);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_TOPK_H_
