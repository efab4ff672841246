// Attention: one (batch row, head) pair per parallel task; per query the scores live in a buffer
// its caller keeps and only the visible keys are touched, so masks cost nothing.
#include "kernels/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"
#include "kernels/work_sharing.h"

namespace taskmoe::kernels {
namespace {

// MultiHeadAttention's score rows, kept by the calling control flow (ControlFlowLocal).
struct AttentionScores {
  std::vector<float> values;
};

absl::Status CheckAttentionInput(const Tensor& t, const char* what, bool bf16_allowed) {
  constexpr const char* kOp = "MultiHeadAttention";
  if (!(bf16_allowed && t.dtype() == DType::kBF16)) {
    if (absl::Status s = CheckDType(t, DType::kF32, kOp, what); !s.ok()) return s;
  }
  return CheckRank(t, 3, kOp, what);
}

// Keys and values are read 8 at a time as GCC/Clang vector types: the compilers reduce an
// `omp simd reduction` vector by adding its lanes one after another (a chain of dependent
// scalar additions per dot product, a fifth of attention's time); halving the vector instead
// takes three additions. 8 lanes: 16-lane vector types are split badly where AVX-512 is
// missing (the default build ran 3x slower than the plain loop).
using Float8 = float __attribute__((vector_size(32)));
using Float4 = float __attribute__((vector_size(16)));

inline Float8 Load8(const float* p) {
  Float8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// bf16 is the upper half of an f32: widen the bits and shift them into place. Written with
// the AVX2 intrinsic: GCC 12 turns __builtin_convertvector of 8 x u16 into two 128-bit
// widenings and an insert, which made bf16 keys shuffle-bound once the dot products no longer
// waited on each other.
inline Float8 Load8(const BFloat16* p) {
  const __m256i wide = _mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
  Float8 v;
  std::memcpy(&v, &wide, sizeof(v));
  return v;
}

// Finishes a . b over n values: `sum` holds the products of the first `i` values (a multiple
// of 8, zeros when there are none) in its 8 lanes; lanes are added pairwise, then the
// remaining products one by one.
template <typename T>
inline float FinishDot(Float8 sum, const float* a, const T* b, int64_t i, int64_t n) {
  const Float4 four =
      __builtin_shufflevector(sum, sum, 0, 1, 2, 3) + __builtin_shufflevector(sum, sum, 4, 5, 6, 7);
  float dot = (four[0] + four[2]) + (four[1] + four[3]);
  for (; i < n; ++i) dot += a[i] * ToFloat(b[i]);
  return dot;
}

// scores[j] = scale * (query . key j) for one head, keys [first, last) `stride` values apart.
// Four keys at a time: a dot product is one chain of dependent multiply-adds, so four
// independent ones keep the FMA units busy where one would wait on each result (a key at a
// time ran several times below the arithmetic's speed even from L1). Every dot product is
// still summed in the same order, whichever group of four it falls in.
template <typename T>
inline void Scores(const float* query, const T* keys, int64_t stride, int64_t head_dim,
                   int64_t first, int64_t last, float scale, float* scores) {
  int64_t j = first;
  for (; j + 4 <= last; j += 4) {
    const T* k0 = keys + j * stride;
    const T* k1 = k0 + stride;
    const T* k2 = k1 + stride;
    const T* k3 = k2 + stride;
    Float8 s0 = {}, s1 = {}, s2 = {}, s3 = {};
    int64_t i = 0;
    for (; i + 8 <= head_dim; i += 8) {
      const Float8 a = Load8(query + i);
      s0 += a * Load8(k0 + i);
      s1 += a * Load8(k1 + i);
      s2 += a * Load8(k2 + i);
      s3 += a * Load8(k3 + i);
    }
    scores[j] = FinishDot(s0, query, k0, i, head_dim) * scale;
    scores[j + 1] = FinishDot(s1, query, k1, i, head_dim) * scale;
    scores[j + 2] = FinishDot(s2, query, k2, i, head_dim) * scale;
    scores[j + 3] = FinishDot(s3, query, k3, i, head_dim) * scale;
  }
  for (; j < last; ++j) {
    const T* key = keys + j * stride;
    Float8 sum = {};
    int64_t i = 0;
    for (; i + 8 <= head_dim; i += 8) sum += Load8(query + i) * Load8(key + i);
    scores[j] = FinishDot(sum, query, key, i, head_dim) * scale;
  }
}

// out += sum over j in [first, last) of p[j] * value j, for one head (values `stride` apart),
// keys in order, the output held in registers 64 columns at a time: each column takes the same
// chain of multiply-adds as adding p[j] * value j to it key after key.
template <typename T>
inline void AddWeighted(const float* p, const T* values, int64_t stride, int64_t head_dim,
                        int64_t first, int64_t last, float* out) {
  int64_t c = 0;
  for (; c + 64 <= head_dim; c += 64) {
    Float8 acc[8];
    std::memcpy(acc, out + c, sizeof(acc));
    for (int64_t j = first; j < last; ++j) {
      const T* value = values + j * stride + c;
      const float weight = p[j];
      for (int u = 0; u < 8; ++u) acc[u] += weight * Load8(value + 8 * u);
    }
    std::memcpy(out + c, acc, sizeof(acc));
  }
  for (; c + 8 <= head_dim; c += 8) {
    Float8 acc = Load8(out + c);
    for (int64_t j = first; j < last; ++j) acc += p[j] * Load8(values + j * stride + c);
    std::memcpy(out + c, &acc, sizeof(acc));
  }
  for (; c < head_dim; ++c) {
    float acc = out[c];
    for (int64_t j = first; j < last; ++j) acc += p[j] * ToFloat(values[j * stride + c]);
    out[c] = acc;
  }
}

// Keys taken together by every head of a task (a multiple of Scores' four): each block of key
// and value rows is read from memory once, then from L1 by the other heads, where a head at a
// time would stride through every row once per head. 16 rows are 16 KB of f32 at a 256-wide
// model, 32 KB at 512; 8 made the prefetcher's streams too short (kernels_bench, 128 rows).
constexpr int64_t kKeyBlock = 16;

// One attention task's shape: a batch row's tq queries against its tk keys, for a group of
// heads_per_task consecutive heads.
struct AttentionTask {
  int64_t tq, tk, d, head_dim, heads_per_task;
  float scale;
  bool causal;
  int64_t causal_offset;
};

// One task: q, keys, values and out point at the group's first head in the row's first
// position (rows of d values); `scores` holds heads_per_task * tk floats.
template <typename T>
[[gnu::always_inline]] inline void AttendRows(const AttentionTask& task, const float* q,
                                              const T* keys, const T* values, int64_t visible_keys,
                                              float* scores, float* out) {
  const int64_t d = task.d, tk = task.tk, head_dim = task.head_dim;
  const int64_t heads = task.heads_per_task, width = heads * head_dim;
  for (int64_t t = 0; t < task.tq; ++t) {
    const float* query = q + t * d;
    float* result = out + t * d;
    const int64_t seen =
        task.causal ? std::min(visible_keys, t + task.causal_offset + 1) : visible_keys;
    std::memset(result, 0, sizeof(float) * width);
    if (seen <= 0) continue;
    for (int64_t first = 0; first < seen; first += kKeyBlock) {
      const int64_t last = std::min(seen, first + kKeyBlock);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t column = h * head_dim;
        Scores(query + column, keys + column, d, head_dim, first, last, task.scale,
               scores + h * tk);
      }
    }
    for (int64_t h = 0; h < heads; ++h) SoftmaxRow(scores + h * tk, seen);
    for (int64_t first = 0; first < seen; first += kKeyBlock) {
      const int64_t last = std::min(seen, first + kKeyBlock);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t column = h * head_dim;
        AddWeighted(scores + h * tk, values + column, d, head_dim, first, last, result + column);
      }
    }
  }
}

// AttendRows per key type, arithmetic-bound once the keys are in cache, hence compiled for
// AVX-512 too (cpu_dispatch.h).
TASKMOE_AVX512_CLONE void Attend(const AttentionTask& task, const float* q, const float* keys,
                                 const float* values, int64_t visible_keys, float* scores,
                                 float* out) {
  AttendRows(task, q, keys, values, visible_keys, scores, out);
}

TASKMOE_AVX512_CLONE void Attend(const AttentionTask& task, const float* q, const BFloat16* keys,
                                 const BFloat16* values, int64_t visible_keys, float* scores,
                                 float* out) {
  AttendRows(task, q, keys, values, visible_keys, scores, out);
}

}  // namespace

absl::Status MultiHeadAttention(const Tensor& q, const Tensor& keys, const Tensor& values,
                                absl::Span<const int32_t> key_lengths,
                                const AttentionOptions& options, Tensor& out) {
  constexpr const char* kOp = "MultiHeadAttention";
  if (absl::Status s = CheckAttentionInput(q, "q", false); !s.ok()) return s;
  if (absl::Status s = CheckAttentionInput(keys, "keys", true); !s.ok()) return s;
  if (absl::Status s = CheckAttentionInput(values, "values", true); !s.ok()) return s;
  if (keys.dtype() != values.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": keys are ", DTypeName(keys.dtype()),
                                                   " but values are ", DTypeName(values.dtype())));
  }
  const int64_t batch = q.dim(0), tq = q.dim(1), d = q.dim(2), tk = keys.dim(1);
  if (absl::Status s = CheckShape(keys, Shape{batch, tk, d}, kOp, "keys"); !s.ok()) return s;
  if (absl::Status s = CheckShape(values, keys.shape(), kOp, "values"); !s.ok()) return s;
  const int heads = options.num_heads;
  if (heads < 1 || d % heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": model width ", d, " is not a multiple of ", heads, " heads"));
  }
  if (!key_lengths.empty() && static_cast<int64_t>(key_lengths.size()) != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": ", key_lengths.size(), " key lengths for a batch of ", batch));
  }
  for (size_t b = 0; b < key_lengths.size(); ++b) {
    if (key_lengths[b] < 0 || key_lengths[b] > tk) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": key length ", key_lengths[b],
                                                     " of row ", b, " outside [0, ", tk, "]"));
    }
  }
  if (options.causal && options.causal_offset < 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": negative causal offset"));
  }
  out.Resize(DType::kF32, Shape{batch, tq, d});
  if (out.numel() == 0) return absl::OkStatus();

  const int64_t head_dim = d / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const float* qd = q.data<float>();
  const bool bf16 = keys.dtype() == DType::kBF16;
  float* od = out.data<float>();
  // A task is one batch row and a group of its heads: all heads when there are enough rows to
  // share out, so that each key and value row is read once, front to back, with one
  // independent dot product per head in flight; single heads when rows are few.
  const int64_t heads_per_task = batch >= 4 * NumThreads() ? heads : 1;
  const int64_t tasks_per_row = heads / heads_per_task;
  const AttentionTask shape{.tq = tq,
                            .tk = tk,
                            .d = d,
                            .head_dim = head_dim,
                            .heads_per_task = heads_per_task,
                            .scale = scale,
                            .causal = options.causal,
                            .causal_offset = options.causal_offset};
  // One row of scores per task, held by the calling control flow (ControlFlowLocal): tasks run
  // on whichever thread of its team claims them (runtime.h), so a per-thread buffer would grow
  // whenever a thread first met a longer task, an allocation in the middle of a warm decoding
  // loop.
  std::vector<float>& scores = ControlFlowLocal<AttentionScores>().values;
  const int64_t scores_per_task = heads_per_task * tk;
  if (static_cast<int64_t>(scores.size()) < batch * tasks_per_row * scores_per_task) {
    scores.resize(batch * tasks_per_row * scores_per_task);
  }
  // Taken here: inside the loop body `scores` would name the running thread's own buffer.
  float* const all_scores = scores.data();
  ParallelFor(batch * tasks_per_row, batch * heads * tq * tk > 4096, [&](int64_t task) {
    const int64_t b = task / tasks_per_row;
    const int64_t offset = (task % tasks_per_row) * heads_per_task * head_dim;
    float* score_buffer = all_scores + task * scores_per_task;
    const int64_t visible_keys = key_lengths.empty() ? tk : key_lengths[b];
    const int64_t kv = b * tk * d + offset;
    if (bf16) {
      Attend(shape, qd + b * tq * d + offset, keys.data<BFloat16>() + kv,
             values.data<BFloat16>() + kv, visible_keys, score_buffer, od + b * tq * d + offset);
    } else {
      Attend(shape, qd + b * tq * d + offset, keys.data<float>() + kv, values.data<float>() + kv,
             visible_keys, score_buffer, od + b * tq * d + offset);
    }
  });
  return absl::OkStatus();
}

absl::Status KvCache::Reset(int64_t batch, int64_t capacity, int64_t d_model, DType dtype) {
  if (batch < 0 || capacity < 0 || d_model < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Reset: bad size [", batch, ", ", capacity, ", ", d_model, "]"));
  }
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Reset: cannot store ", DTypeName(dtype), " (f32 or bf16)"));
  }
  keys_.Resize(dtype, Shape{batch, capacity, d_model});
  values_.Resize(dtype, Shape{batch, capacity, d_model});
  batch_ = batch;
  capacity_ = capacity;
  d_model_ = d_model;
  lengths_.assign(batch, 0);
  dtype_ = dtype;
  return absl::OkStatus();
}

int64_t KvCache::length() const {
  int64_t longest = 0;
  for (int32_t l : lengths_) longest = std::max<int64_t>(longest, l);
  return longest;
}

void KvCache::RelayoutInto(int64_t batch, int64_t capacity, const Tensor& from, Tensor& to) const {
  to.Resize(dtype_, Shape{batch, capacity, d_model_});
  const size_t position_bytes = DTypeSize(dtype_) * d_model_;
  for (int64_t b = 0; b < batch_; ++b) {
    std::memcpy(static_cast<char*>(to.raw_data()) + b * capacity * position_bytes,
                static_cast<const char*>(from.raw_data()) + b * capacity_ * position_bytes,
                lengths_[b] * position_bytes);
  }
}

absl::Status KvCache::AddRows(int64_t count, int64_t capacity) {
  if (count < 0 || capacity < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::AddRows: bad count ", count, " or capacity ", capacity));
  }
  if (d_model_ < 1) return absl::FailedPreconditionError("KvCache::AddRows before Reset");
  const int64_t new_batch = batch_ + count;
  const int64_t new_capacity = std::max(capacity_, capacity);
  const size_t needed = DTypeSize(dtype_) * new_batch * new_capacity * d_model_;
  bool filled = false;
  for (int32_t length : lengths_) filled = filled || length > 0;
  if (filled && (new_capacity != capacity_ || keys_.capacity_bytes() < needed ||
                 values_.capacity_bytes() < needed)) {
    // The rows' stride changes or the storage is too small: copy what is filled into the
    // spares (which grow once to the new size) and swap.
    RelayoutInto(new_batch, new_capacity, keys_, spare_keys_);
    RelayoutInto(new_batch, new_capacity, values_, spare_values_);
    std::swap(keys_, spare_keys_);
    std::swap(values_, spare_values_);
  } else {
    // Nothing to keep, or the rows keep their places: in the storage there is (which grows
    // only when too small).
    keys_.Resize(dtype_, Shape{new_batch, new_capacity, d_model_});
    values_.Resize(dtype_, Shape{new_batch, new_capacity, d_model_});
  }
  capacity_ = new_capacity;
  batch_ = new_batch;
  lengths_.resize(new_batch, 0);
  return absl::OkStatus();
}

absl::Status KvCache::AppendRowsOf(const KvCache& other) {
  if (&other == this) return absl::InvalidArgumentError("KvCache::AppendRowsOf: itself");
  if (other.batch_ == 0) return absl::OkStatus();
  if (other.d_model_ != d_model_ || other.dtype_ != dtype_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache::AppendRowsOf: rows of d_model ", other.d_model_, " (", DTypeName(other.dtype_),
        ") cannot join a cache of d_model ", d_model_, " (", DTypeName(dtype_), ")"));
  }
  const int64_t first = batch_;
  if (absl::Status s = AddRows(other.batch_, other.capacity_); !s.ok()) return s;
  const size_t position_bytes = DTypeSize(dtype_) * d_model_;
  for (int64_t r = 0; r < other.batch_; ++r) {
    const size_t bytes = other.lengths_[r] * position_bytes;
    for (auto [to, from] : {std::pair{&keys_, &other.keys_}, std::pair{&values_, &other.values_}}) {
      std::memcpy(static_cast<char*>(to->raw_data()) + (first + r) * capacity_ * position_bytes,
                  static_cast<const char*>(from->raw_data()) + r * other.capacity_ * position_bytes,
                  bytes);
    }
    lengths_[first + r] = other.lengths_[r];
  }
  return absl::OkStatus();
}

absl::Status KvCache::Append(const Tensor& keys, const Tensor& values) {
  return AppendToRows(0, keys, values);
}

absl::Status KvCache::AppendToRows(int64_t first_row, const Tensor& keys, const Tensor& values) {
  constexpr const char* kOp = "KvCache::Append";
  if (absl::Status s = CheckDType(keys, DType::kF32, kOp, "keys"); !s.ok()) return s;
  if (absl::Status s = CheckDType(values, DType::kF32, kOp, "values"); !s.ok()) return s;
  if (keys.rank() != 3 || first_row < 0 || first_row + keys.dim(0) > batch_ ||
      (first_row == 0 && keys.dim(0) != batch_) || keys.dim(2) != d_model_) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": keys have shape ", keys.shape().ToString(), " for rows from ",
                     first_row, ", expected [", batch_ - first_row, ", T, ", d_model_, "]"));
  }
  if (absl::Status s = CheckShape(values, keys.shape(), kOp, "values"); !s.ok()) return s;
  const int64_t rows = keys.dim(0);
  const int64_t steps = keys.dim(1);
  if (absl::Status s = CheckRoom(kOp, first_row, rows, steps); !s.ok()) return s;
  const int64_t count = steps * d_model_;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = first_row + r;
    StorePositions(keys.data<float>() + r * count, values.data<float>() + r * count, count,
                   (b * capacity_ + lengths_[b]) * d_model_);
    lengths_[b] += static_cast<int32_t>(steps);
  }
  return absl::OkStatus();
}

absl::Status KvCache::CheckRoom(const char* op, int64_t first_row, int64_t rows,
                                int64_t steps) const {
  for (int64_t b = first_row; b < first_row + rows; ++b) {
    if (lengths_[b] + steps > capacity_) {
      return absl::OutOfRangeError(absl::StrCat(op, ": row ", b, " holds ", lengths_[b], "; ",
                                                steps, " more positions exceed the capacity of ",
                                                capacity_));
    }
  }
  return absl::OkStatus();
}

void KvCache::StorePositions(const float* keys, const float* values, int64_t count, int64_t at) {
  if (dtype_ == DType::kBF16) {
    ConvertToBFloat16(keys, count, keys_.data<BFloat16>() + at);
    ConvertToBFloat16(values, count, values_.data<BFloat16>() + at);
  } else {
    std::memcpy(keys_.data<float>() + at, keys, sizeof(float) * count);
    std::memcpy(values_.data<float>() + at, values, sizeof(float) * count);
  }
}

absl::Status KvCache::AppendPackedToRows(int64_t first_row, const Tensor& packed,
                                         absl::Span<const int32_t> lengths, int64_t steps) {
  constexpr const char* kOp = "KvCache::AppendPackedToRows";
  if (absl::Status s = CheckDType(packed, DType::kF32, kOp, "packed"); !s.ok()) return s;
  const auto rows = static_cast<int64_t>(lengths.size());
  if (packed.rank() != 2 || packed.dim(1) != 2 * d_model_ || first_row < 0 ||
      first_row + rows > batch_ || steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": packed of shape ", packed.shape().ToString(), " for ", rows,
                     " rows from ", first_row, " of ", steps, " steps, expected [tokens, ",
                     2 * d_model_, "] within ", batch_, " rows"));
  }
  // Each sequence's first token (the lengths checked against `steps`), kept with the cache.
  std::vector<int64_t>& starts = spare_starts_;
  int64_t tokens = 0;
  if (absl::Status s = SequenceStarts(lengths, steps, kOp, starts, tokens); !s.ok()) return s;
  if (absl::Status s = CheckRoom(kOp, first_row, rows, steps); !s.ok()) return s;
  if (tokens != packed.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": lengths add up to ", tokens,
                                                   " but packed has ", packed.dim(0), " rows"));
  }
  const float* const in = packed.data<float>();
  const int64_t d = d_model_;
  ParallelFor(rows, rows * steps * 2 * d > (1 << 16), [&](int64_t i) {
    const int64_t b = first_row + i;
    const int64_t dst = (b * capacity_ + lengths_[b]) * d;
    const int64_t length = lengths[i];
    for (int64_t t = 0; t < length; ++t) {
      const float* token = in + (starts[i] + t) * 2 * d;  // its keys, then its values
      StorePositions(token, token + d, d, dst + t * d);
    }
    const size_t pad_bytes = DTypeSize(dtype_) * (steps - length) * d;
    const size_t pad_at = DTypeSize(dtype_) * (dst + length * d);
    std::memset(static_cast<char*>(keys_.raw_data()) + pad_at, 0, pad_bytes);
    std::memset(static_cast<char*>(values_.raw_data()) + pad_at, 0, pad_bytes);
  });
  for (int64_t i = 0; i < rows; ++i) lengths_[first_row + i] += static_cast<int32_t>(steps);
  return absl::OkStatus();
}

void KvCache::SelectInto(absl::Span<const int32_t> rows, const Tensor& from, Tensor& to) const {
  const int64_t new_batch = static_cast<int64_t>(rows.size());
  // `to` and `from` swap roles after every selection: sizing `to` for the larger batch first
  // keeps both buffers as large as the largest batch, so neither Reset nor a later selection
  // has to allocate again.
  to.Resize(dtype_, Shape{std::max(new_batch, batch_), capacity_, d_model_});
  to.Resize(dtype_, Shape{new_batch, capacity_, d_model_});
  const size_t row_bytes = DTypeSize(dtype_) * capacity_ * d_model_;
  const size_t position_bytes = DTypeSize(dtype_) * d_model_;
  for (int64_t r = 0; r < new_batch; ++r) {
    std::memcpy(static_cast<char*>(to.raw_data()) + r * row_bytes,
                static_cast<const char*>(from.raw_data()) + rows[r] * row_bytes,
                lengths_[rows[r]] * position_bytes);
  }
}

int64_t KvCache::MovedRows(absl::Span<const int32_t> rows) {
  int64_t moved = 0;
  for (size_t r = 0; r < rows.size(); ++r) moved += rows[r] != static_cast<int32_t>(r) ? 1 : 0;
  return moved;
}

absl::Status KvCache::SelectRows(absl::Span<const int32_t> rows) {
  bool ascending = true;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r] < 0 || rows[r] >= batch_) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvCache::SelectRows: row ", rows[r], " outside [0, ", batch_, ")"));
    }
    if (r > 0 && rows[r] <= rows[r - 1]) ascending = false;
  }
  const int64_t new_batch = static_cast<int64_t>(rows.size());
  spare_lengths_.resize(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) spare_lengths_[r] = lengths_[rows[r]];
  if (ascending) {
    // Dropping rows (finished sentences): compact in place. Row r moves down from rows[r] >= r,
    // and every later source lies above every row written so far, so nothing is overwritten
    // before it is read.
    const size_t row_bytes = DTypeSize(dtype_) * capacity_ * d_model_;
    const size_t position_bytes = DTypeSize(dtype_) * d_model_;
    for (int64_t r = 0; r < new_batch; ++r) {
      if (rows[r] == r) continue;
      for (Tensor* t : {&keys_, &values_}) {
        char* base = static_cast<char*>(t->raw_data());
        std::memcpy(base + r * row_bytes, base + rows[r] * row_bytes,
                    lengths_[rows[r]] * position_bytes);
      }
    }
    keys_.Resize(dtype_, Shape{new_batch, capacity_, d_model_});
    values_.Resize(dtype_, Shape{new_batch, capacity_, d_model_});
  } else if (int64_t moved = MovedRows(rows); new_batch <= batch_ && 2 * moved < new_batch) {
    // Most rows stay where they are (a continuous batch's greedy rows beside a beam, or beam
    // hypotheses that extend their own row): only the rows that change are copied, their
    // sources first gathered into the spare buffers, so none is overwritten before it is read.
    const size_t row_bytes = DTypeSize(dtype_) * capacity_ * d_model_;
    const size_t position_bytes = DTypeSize(dtype_) * d_model_;
    for (auto [data, spare] :
         {std::pair{&keys_, &spare_keys_}, std::pair{&values_, &spare_values_}}) {
      const int64_t spare_rows = spare->valid() ? spare->dim(0) : 0;
      spare->Resize(dtype_, Shape{std::max(moved, spare_rows), capacity_, d_model_});
      char* base = static_cast<char*>(data->raw_data());
      char* staging = static_cast<char*>(spare->raw_data());
      int64_t i = 0;
      for (int64_t r = 0; r < new_batch; ++r) {
        if (rows[r] == r) continue;
        std::memcpy(staging + i++ * row_bytes, base + rows[r] * row_bytes,
                    lengths_[rows[r]] * position_bytes);
      }
      i = 0;
      for (int64_t r = 0; r < new_batch; ++r) {
        if (rows[r] == r) continue;
        std::memcpy(base + r * row_bytes, staging + i++ * row_bytes,
                    lengths_[rows[r]] * position_bytes);
      }
      data->Resize(dtype_, Shape{new_batch, capacity_, d_model_});
    }
  } else {
    // Reordering or repeating most rows (beam search): through the spare buffers.
    SelectInto(rows, keys_, spare_keys_);
    SelectInto(rows, values_, spare_values_);
    std::swap(keys_, spare_keys_);
    std::swap(values_, spare_values_);
  }
  std::swap(lengths_, spare_lengths_);
  batch_ = new_batch;
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
