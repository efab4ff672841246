// Copies between tensor layouts: splitting the output of a fused projection (queries, keys
// and values computed by one matmul) into the separate tensors attention reads, and moving
// sequences of different lengths between the packed layout (each sequence's rows right after
// the previous one's: what per-token layers run on, no padding to compute) and the padded one
// ([batch, max_len, ...]: what attention reads).
#ifndef TASKMOE_KERNELS_LAYOUT_H_
#define TASKMOE_KERNELS_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// Checks lengths against max_len (when max_len >= 0) and returns each sequence's first packed
// row in `starts` and their sum, or an InvalidArgument error naming the operation `op`.
absl::Status SequenceStarts(absl::Span<const int32_t> lengths, int64_t max_len, const char* op,
                            std::vector<int64_t>& starts, int64_t& total);

// x: f32 [..., n * w] with n = parts.size() >= 1. Part i becomes f32 [..., w], the columns
// [i * w, (i + 1) * w) of every row (resized in place, reusing its storage). Parts must be
// distinct and must not alias x.
absl::Status SplitLastDim(const Tensor& x, absl::Span<Tensor* const> parts);

// packed: f32 [sum(lengths), n * w], sequence b's lengths[b] rows following sequence b - 1's,
// with n = parts.size() >= 1. Part i becomes f32 [lengths.size(), max_len, w]: row t of
// sequence b is columns [i * w, (i + 1) * w) of its packed row t, and positions t >=
// lengths[b] are zero. Lengths lie in [0, max_len]; parts must be distinct and not alias packed.
absl::Status UnpackSequences(const Tensor& packed, absl::Span<const int32_t> lengths,
                             int64_t max_len, absl::Span<Tensor* const> parts);

// The inverse for one part: padded f32 [lengths.size(), max_len, w] to packed f32
// [sum(lengths), w] (positions past each length are left out). packed must not alias padded.
absl::Status PackSequences(const Tensor& padded, absl::Span<const int32_t> lengths, Tensor& packed);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_LAYOUT_H_
