// Token embedding lookup with scaling and sinusoidal position encodings.
#ifndef TASKMOE_KERNELS_EMBEDDING_H_
#define TASKMOE_KERNELS_EMBEDDING_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// The sinusoidal table of docs/model-format.md: f32 [max_positions, d_model] with
// PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)). d_model even.
absl::StatusOr<Tensor> SinusoidalPositions(int64_t max_positions, int64_t d_model);

// out[r, :] = table[ids[r], :] * scale + positions[position_ids[r], :].
// table: f32 or bf16 [V, D] (a bf16-stored model's table is kept in bf16, widened exactly
// here); positions: f32 [P, D], or an empty Tensor() for none (position_ids is
// then ignored). out is resized to [ids.size(), D]. An id outside [0, V) or a position
// outside [0, P) is an error naming the offending row.
absl::Status EmbeddingLookup(const Tensor& table, absl::Span<const int32_t> ids, float scale,
                             const Tensor& positions, absl::Span<const int32_t> position_ids,
                             Tensor& out);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_EMBEDDING_H_
