// Copies between tensor layouts: splitting the output of a fused projection (queries, keys
// and values computed by one matmul) into the separate tensors attention reads.
#ifndef TASKMOE_KERNELS_LAYOUT_H_
#define TASKMOE_KERNELS_LAYOUT_H_

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// x: f32 [..., n * w] with n = parts.size() >= 1. Part i becomes f32 [..., w], the columns
// [i * w, (i + 1) * w) of every row (resized in place, reusing its storage). Parts must be
// distinct and must not alias x.
absl::Status SplitLastDim(const Tensor& x, absl::Span<Tensor* const> parts);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_LAYOUT_H_
