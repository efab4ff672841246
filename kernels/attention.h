// Multi-head scaled dot-product attention over projected queries, keys and values, with
// padding and causal masks, and the per-layer key/value cache of incremental decoding.
//
// Layout: every tensor is [batch, time, num_heads * head_dim], heads side by side in the last
// dimension: exactly what the q/k/v projections produce, so nothing is transposed. Queries and
// outputs are f32; keys and values f32 or (a cache's, to halve its memory traffic) bf16.
#ifndef TASKMOE_KERNELS_ATTENTION_H_
#define TASKMOE_KERNELS_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

struct AttentionOptions {
  int num_heads = 1;
  // Query t (0-based) of every batch row may only see keys j <= t + causal_offset. With
  // incremental decoding causal_offset is the number of keys cached before this step.
  bool causal = false;
  int64_t causal_offset = 0;
};

// out = softmax(q k^T / sqrt(head_dim) + mask) v, per batch row and head.
// q: [B, Tq, D]; keys, values: [B, Tk, D], both f32 or both bf16 (Tk may be a cache's
// capacity); key_lengths: B
// entries, row b sees keys [0, key_lengths[b]) (padding and unfilled cache are masked), or
// empty for all Tk keys. A query that sees no key gets zeros. out is resized to [B, Tq, D].
absl::Status MultiHeadAttention(const Tensor& q, const Tensor& keys, const Tensor& values,
                                absl::Span<const int32_t> key_lengths,
                                const AttentionOptions& options, Tensor& out);

// Keys and values of one attention layer for a batch of sequences decoded in step: a
// capacity reserved per row, a length per row that grows by Append (rows may have joined the
// batch at different steps, as in continuous batching), rows added at the end (AddRows) and
// row selection for beam search (reorder hypotheses) and for dropping finished sentences.
// Storage is reused across Reset calls, selections and additions, so steady decoding does not
// allocate once the buffers have reached the largest batch and capacity seen.
class KvCache {
 public:
  // Empties the cache and makes room for [batch, capacity, d_model], stored as `dtype`: f32,
  // or bf16 (rounded to nearest even on Append; half the bytes for attention to read).
  absl::Status Reset(int64_t batch, int64_t capacity, int64_t d_model, DType dtype = DType::kF32);

  // Appends `count` empty rows (length 0) after the existing ones and makes sure every row can
  // hold `capacity` positions, growing the capacity (existing rows keep their contents) when it
  // is smaller. Needs a prior Reset for d_model and dtype.
  absl::Status AddRows(int64_t count, int64_t capacity);

  // Appends every row of `other` (same d_model and dtype) after the existing ones, with its
  // filled positions, growing the capacity to other's when that is larger: rows decoded apart
  // joining this batch.
  absl::Status AppendRowsOf(const KvCache& other);

  // Appends f32 [batch, T, d_model] keys and values: row b at positions
  // [length(b), length(b) + T).
  absl::Status Append(const Tensor& keys, const Tensor& values);
  // The same for rows [first_row, first_row + keys.dim(0)) only (rows just added).
  absl::Status AppendToRows(int64_t first_row, const Tensor& keys, const Tensor& values);
  // The same from a fused key-value product of packed sequences: `packed` is f32
  // [sum(lengths), 2 * d_model], each token's keys then its values, the sequences one after
  // another; row first_row + i takes sequence i at positions [length, length + steps), zeros
  // after its lengths[i] tokens (as Append of the sequences padded to `steps` would), without
  // the padded copy in between.
  absl::Status AppendPackedToRows(int64_t first_row, const Tensor& packed,
                                  absl::Span<const int32_t> lengths, int64_t steps);

  // Keeps batch rows `rows` (in that order; a row may repeat, as when two beam hypotheses
  // descend from one). The new batch size is rows.size().
  absl::Status SelectRows(absl::Span<const int32_t> rows);

  // [batch, capacity, d_model] of dtype(); positions >= length(b) of row b are unspecified.
  const Tensor& keys() const { return keys_; }
  const Tensor& values() const { return values_; }
  int64_t batch() const { return batch_; }
  // Positions filled in row b, and the most of any row (0 for an empty batch).
  int64_t length(int64_t b) const { return lengths_[b]; }
  int64_t length() const;
  int64_t capacity() const { return capacity_; }
  DType dtype() const { return dtype_; }

 private:
  void SelectInto(absl::Span<const int32_t> rows, const Tensor& from, Tensor& to) const;
  // How many of the selected rows are not already in place (rows[r] != r).
  static int64_t MovedRows(absl::Span<const int32_t> rows);
  // Copies every row's filled positions into `to`, laid out as [batch, capacity, d_model].
  void RelayoutInto(int64_t batch, int64_t capacity, const Tensor& from, Tensor& to) const;
  // OutOfRange unless rows [first_row, first_row + rows) each have room for `steps` more
  // positions (errors name `op`).
  absl::Status CheckRoom(const char* op, int64_t first_row, int64_t rows, int64_t steps) const;
  // Stores `count` f32 keys and values at element `at` of the storage, in its dtype.
  void StorePositions(const float* keys, const float* values, int64_t count, int64_t at);

  Tensor keys_, values_;
  Tensor spare_keys_, spare_values_;   // double buffers for SelectRows and growth
  std::vector<int64_t> spare_starts_;  // AppendPackedToRows' first token of each sequence
  std::vector<int32_t> lengths_, spare_lengths_;
  int64_t batch_ = 0, capacity_ = 0, d_model_ = 0;
  DType dtype_ = DType::kF32;
};

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_ATTENTION_H_
