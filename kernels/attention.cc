// Attention: one (batch row, head) pair per parallel task; per query the scores live in a
// per-thread buffer and only the visible keys are touched, so masks cost nothing.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"

namespace taskmoe::kernels {
namespace {

absl::Status CheckAttentionInput(const Tensor& t, const char* what) {
  constexpr const char* kOp = "MultiHeadAttention";
  if (absl::Status s = CheckDType(t, DType::kF32, kOp, what); !s.ok()) return s;
  return CheckRank(t, 3, kOp, what);
}

// a . b over n floats. Written with GCC/Clang vector types because the compilers reduce an
// `omp simd reduction` vector by adding its lanes one after another (a chain of dependent
// scalar additions per dot product, a fifth of attention's time); halving the vector instead
// takes three additions. 8 lanes: 16-lane vector types are split badly where AVX-512 is
// missing (the default build of this function ran 3x slower than the loop it replaced).
using Float8 = float __attribute__((vector_size(32)));
using Float4 = float __attribute__((vector_size(16)));

inline float Dot(const float* a, const float* b, int64_t n) {
  float dot = 0.0f;
  int64_t i = 0;
  if (n >= 8) {
    Float8 sum = {};
    for (; i + 8 <= n; i += 8) {
      Float8 x, y;
      std::memcpy(&x, a + i, sizeof(x));
      std::memcpy(&y, b + i, sizeof(y));
      sum += x * y;
    }
    const Float4 four = __builtin_shufflevector(sum, sum, 0, 1, 2, 3) +
                        __builtin_shufflevector(sum, sum, 4, 5, 6, 7);
    dot = (four[0] + four[2]) + (four[1] + four[3]);
  }
  for (; i < n; ++i) dot += a[i] * b[i];
  return dot;
}

// One attention task's shape: a batch row's tq queries against its tk keys, for a group of
// heads_per_task consecutive heads.
struct AttentionTask {
  int64_t tq, tk, d, head_dim, heads_per_task;
  float scale;
  bool causal;
  int64_t causal_offset;
};

// One task: q, keys, values and out point at the group's first head in the row's first
// position (rows of d floats); `scores` holds heads_per_task * tk floats. Arithmetic-bound
// once the keys are in cache, hence compiled for AVX-512 too (cpu_dispatch.h).
TASKMOE_AVX512_CLONE void Attend(const AttentionTask& task, const float* q, const float* keys,
                                 const float* values, int64_t visible_keys, float* scores,
                                 float* out) {
  const int64_t d = task.d, tk = task.tk, head_dim = task.head_dim;
  const int64_t heads = task.heads_per_task, width = heads * head_dim;
  for (int64_t t = 0; t < task.tq; ++t) {
    const float* query = q + t * d;
    float* result = out + t * d;
    const int64_t seen =
        task.causal ? std::min(visible_keys, t + task.causal_offset + 1) : visible_keys;
    std::memset(result, 0, sizeof(float) * width);
    if (seen <= 0) continue;
    for (int64_t j = 0; j < seen; ++j) {
      const float* key = keys + j * d;
      for (int64_t h = 0; h < heads; ++h) {
        const float* q_h = query + h * head_dim;
        const float* k_h = key + h * head_dim;
        scores[h * tk + j] = Dot(q_h, k_h, head_dim) * task.scale;
      }
    }
    for (int64_t h = 0; h < heads; ++h) SoftmaxRow(scores + h * tk, seen);
    for (int64_t j = 0; j < seen; ++j) {
      const float* value = values + j * d;
      for (int64_t h = 0; h < heads; ++h) {
        const float p = scores[h * tk + j];
        float* r_h = result + h * head_dim;
        const float* v_h = value + h * head_dim;
#pragma omp simd
        for (int64_t i = 0; i < head_dim; ++i) r_h[i] += p * v_h[i];
      }
    }
  }
}

}  // namespace

absl::Status MultiHeadAttention(const Tensor& q, const Tensor& keys, const Tensor& values,
                                absl::Span<const int32_t> key_lengths,
                                const AttentionOptions& options, Tensor& out) {
  constexpr const char* kOp = "MultiHeadAttention";
  for (auto [t, what] : {std::pair{&q, "q"}, {&keys, "keys"}, {&values, "values"}}) {
    if (absl::Status s = CheckAttentionInput(*t, what); !s.ok()) return s;
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

  ApplyThreadSetting();
  const int64_t head_dim = d / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const float* qd = q.data<float>();
  const float* kd = keys.data<float>();
  const float* vd = values.data<float>();
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
  ParallelFor(batch * tasks_per_row, batch * heads * tq * tk > 4096, [&](int64_t task) {
    const int64_t b = task / tasks_per_row;
    const int64_t offset = (task % tasks_per_row) * heads_per_task * head_dim;
    thread_local std::vector<float> score_buffer;
    if (static_cast<int64_t>(score_buffer.size()) < heads_per_task * tk) {
      score_buffer.resize(heads_per_task * tk);
    }
    const int64_t visible_keys = key_lengths.empty() ? tk : key_lengths[b];
    Attend(shape, qd + b * tq * d + offset, kd + b * tk * d + offset, vd + b * tk * d + offset,
           visible_keys, score_buffer.data(), od + b * tq * d + offset);
  });
  return absl::OkStatus();
}

absl::Status KvCache::Reset(int64_t batch, int64_t capacity, int64_t d_model) {
  if (batch < 0 || capacity < 0 || d_model < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Reset: bad size [", batch, ", ", capacity, ", ", d_model, "]"));
  }
  keys_.Resize(DType::kF32, Shape{batch, capacity, d_model});
  values_.Resize(DType::kF32, Shape{batch, capacity, d_model});
  batch_ = batch;
  capacity_ = capacity;
  d_model_ = d_model;
  length_ = 0;
  return absl::OkStatus();
}

absl::Status KvCache::Append(const Tensor& keys, const Tensor& values) {
  constexpr const char* kOp = "KvCache::Append";
  if (absl::Status s = CheckDType(keys, DType::kF32, kOp, "keys"); !s.ok()) return s;
  if (absl::Status s = CheckDType(values, DType::kF32, kOp, "values"); !s.ok()) return s;
  if (keys.rank() != 3 || keys.dim(0) != batch_ || keys.dim(2) != d_model_) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": keys have shape ",
                                                   keys.shape().ToString(), ", expected [", batch_,
                                                   ", T, ", d_model_, "]"));
  }
  if (absl::Status s = CheckShape(values, keys.shape(), kOp, "values"); !s.ok()) return s;
  const int64_t steps = keys.dim(1);
  if (length_ + steps > capacity_) {
    return absl::OutOfRangeError(absl::StrCat(kOp, ": ", length_, " + ", steps,
                                              " positions exceed the capacity of ", capacity_));
  }
  const size_t bytes = sizeof(float) * steps * d_model_;
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t dst = (b * capacity_ + length_) * d_model_;
    const int64_t src = b * steps * d_model_;
    std::memcpy(keys_.data<float>() + dst, keys.data<float>() + src, bytes);
    std::memcpy(values_.data<float>() + dst, values.data<float>() + src, bytes);
  }
  length_ += steps;
  return absl::OkStatus();
}

void KvCache::SelectInto(absl::Span<const int32_t> rows, const Tensor& from, Tensor& to) const {
  const int64_t new_batch = static_cast<int64_t>(rows.size());
  // `to` and `from` swap roles after every selection: sizing `to` for the larger batch first
  // keeps both buffers as large as the largest batch, so neither Reset nor a later selection
  // has to allocate again.
  to.Resize(DType::kF32, Shape{std::max(new_batch, batch_), capacity_, d_model_});
  to.Resize(DType::kF32, Shape{new_batch, capacity_, d_model_});
  const size_t bytes = sizeof(float) * length_ * d_model_;
  for (int64_t r = 0; r < new_batch; ++r) {
    std::memcpy(to.data<float>() + r * capacity_ * d_model_,
                from.data<float>() + static_cast<int64_t>(rows[r]) * capacity_ * d_model_, bytes);
  }
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
  if (ascending) {
    // Dropping rows (finished sentences): compact in place. Row r moves down from rows[r] >= r,
    // and every later source lies above every row written so far, so nothing is overwritten
    // before it is read.
    const size_t bytes = sizeof(float) * length_ * d_model_;
    for (int64_t r = 0; r < new_batch; ++r) {
      if (rows[r] == r) continue;
      const int64_t from = static_cast<int64_t>(rows[r]) * capacity_ * d_model_;
      const int64_t to = r * capacity_ * d_model_;
      std::memcpy(keys_.data<float>() + to, keys_.data<float>() + from, bytes);
      std::memcpy(values_.data<float>() + to, values_.data<float>() + from, bytes);
    }
    keys_.Resize(DType::kF32, Shape{new_batch, capacity_, d_model_});
    values_.Resize(DType::kF32, Shape{new_batch, capacity_, d_model_});
  } else {
    // Reordering or repeating rows (beam search): through the spare buffers.
    SelectInto(rows, keys_, spare_keys_);
    SelectInto(rows, values_, spare_values_);
    std::swap(keys_, spare_keys_);
    std::swap(values_, spare_values_);
  }
  batch_ = new_batch;
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
