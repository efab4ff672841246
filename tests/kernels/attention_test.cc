// Multi-head attention against a naive masked reference, and the KV cache: incremental
// decoding through the cache must equal causal attention over the whole sequence.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "tests/kernels/reference.h"

namespace taskmoe::kernels {
namespace {

using testing::NaiveAttention;
using testing::RandomTensor;
using testing::ToVector;
using testing::WorstToleranceRatio;

struct AttentionCase {
  int64_t batch, tq, tk, d;
  int heads;
  std::vector<int32_t> key_lengths;
  bool causal;
  int64_t offset;
};

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

Tensor ToBFloat16(const Tensor& t) {
  Tensor out = Tensor::Allocate(DType::kBF16, t.shape());
  ConvertToBFloat16(t.data<float>(), t.numel(), out.data<BFloat16>());
  return out;
}

TEST_P(AttentionTest, MatchesNaiveReference) {
  const AttentionCase& c = GetParam();
  const Tensor q = RandomTensor(Shape{c.batch, c.tq, c.d}, 1);
  const Tensor k = RandomTensor(Shape{c.batch, c.tk, c.d}, 2);
  const Tensor v = RandomTensor(Shape{c.batch, c.tk, c.d}, 3);
  Tensor out;
  ASSERT_TRUE(
      MultiHeadAttention(q, k, v, c.key_lengths,
                         {.num_heads = c.heads, .causal = c.causal, .causal_offset = c.offset}, out)
          .ok());
  const auto expected = NaiveAttention(ToVector(q), ToVector(k), ToVector(v), c.batch, c.tq, c.tk,
                                       c.d, c.heads, c.key_lengths, c.causal, c.offset);
  EXPECT_LE(WorstToleranceRatio(ToVector(out), expected, 1e-5, 1e-4), 1.0);

  // bf16 keys and values (a reduced-precision model's cache) against the reference on the
  // same rounded values: the kernel widens bf16 exactly, so only f32 rounding differs.
  const Tensor k16 = ToBFloat16(k), v16 = ToBFloat16(v);
  Tensor out16;
  ASSERT_TRUE(MultiHeadAttention(
                  q, k16, v16, c.key_lengths,
                  {.num_heads = c.heads, .causal = c.causal, .causal_offset = c.offset}, out16)
                  .ok());
  const auto expected16 = NaiveAttention(ToVector(q), ToVector(k16), ToVector(v16), c.batch, c.tq,
                                         c.tk, c.d, c.heads, c.key_lengths, c.causal, c.offset);
  EXPECT_LE(WorstToleranceRatio(ToVector(out16), expected16, 1e-5, 1e-4), 1.0);
}

INSTANTIATE_TEST_SUITE_P(
    Masks, AttentionTest,
    ::testing::Values(AttentionCase{1, 1, 1, 8, 1, {}, false, 0},       // smallest
                      AttentionCase{2, 5, 7, 24, 3, {7, 4}, false, 0},  // padding
                      AttentionCase{3, 6, 6, 32, 4, {}, true, 0},       // causal
                      AttentionCase{2, 1, 9, 16, 2, {9, 3}, true, 8},   // decode step
                      AttentionCase{2, 3, 5, 16, 8, {0, 5}, false, 0},  // row with no keys
                      AttentionCase{4, 17, 33, 64, 8, {33, 1, 20, 32}, false, 0},
                      // Batches large enough for one task per row covering all heads (the
                      // decoder's layout at batch >= 4 x threads), with masks and causality.
                      AttentionCase{40, 1, 11, 64, 4, std::vector<int32_t>(40, 9), true, 8},
                      AttentionCase{33, 3, 6, 48, 6, {}, false, 0},
                      // Head widths of 8 or more take the 8-lane vector loops: 64 (whole
                      // chunks), 42 and 25 (chunks and a scalar remainder).
                      AttentionCase{3, 2, 10, 128, 2, {}, false, 0},
                      AttentionCase{2, 4, 7, 84, 2, {7, 5}, true, 3},
                      AttentionCase{9, 1, 24, 100, 4, {24, 1, 0, 23, 24, 5, 6, 7, 8}, false, 0},
                      // 76-wide heads: a 64-column block of the weighted sum, an 8-column
                      // chunk and a scalar remainder; 13 keys: three groups of four and one.
                      AttentionCase{3, 2, 13, 152, 2, {13, 6, 1}, true, 11}));

// A row's attention is the same, bit for bit, whatever batch it is part of: alone, or in a
// batch large enough for a task per row covering all its heads (the decoder's layout at batch
// >= 4 x threads) rather than one per head. Continuous batching relies on it: a sentence's
// tokens must not depend on the rows that share its steps.
TEST(Attention, RowsGiveTheSameBitsAloneAndInABatch) {
  constexpr int64_t kBatch = 40, kKeys = 23, kWidth = 256;
  const Tensor q = RandomTensor(Shape{kBatch, 1, kWidth}, 11);
  const Tensor k = RandomTensor(Shape{kBatch, kKeys, kWidth}, 12);
  const Tensor v = RandomTensor(Shape{kBatch, kKeys, kWidth}, 13);
  std::vector<int32_t> lengths(kBatch);
  for (int64_t b = 0; b < kBatch; ++b) lengths[b] = static_cast<int32_t>(1 + (b * 7) % kKeys);
  Tensor together;
  ASSERT_TRUE(MultiHeadAttention(q, k, v, lengths, {.num_heads = 4}, together).ok());
  const auto row_of = [](const Tensor& t, int64_t b) {
    const int64_t per_row = t.numel() / t.dim(0);
    Tensor row = Tensor::Allocate(DType::kF32, Shape{1, t.dim(1), t.dim(2)});
    std::memcpy(row.data<float>(), t.data<float>() + b * per_row, sizeof(float) * per_row);
    return row;
  };
  for (int64_t b = 0; b < kBatch; ++b) {
    Tensor alone;
    ASSERT_TRUE(MultiHeadAttention(row_of(q, b), row_of(k, b), row_of(v, b), {lengths[b]},
                                   {.num_heads = 4}, alone)
                    .ok());
    ASSERT_EQ(std::memcmp(alone.data<float>(), together.data<float>() + b * kWidth,
                          sizeof(float) * kWidth),
              0)
        << "row " << b;
  }
}

TEST(Attention, EmptyBatch) {
  Tensor out;
  const Tensor empty = Tensor::Allocate(DType::kF32, Shape{0, 3, 8});
  ASSERT_TRUE(MultiHeadAttention(empty, empty, empty, {}, {.num_heads = 2}, out).ok());
  EXPECT_EQ(out.shape(), (Shape{0, 3, 8}));
}

TEST(Attention, RefusesBadArguments) {
  const Tensor q = RandomTensor(Shape{2, 3, 8}, 1);
  const Tensor k = RandomTensor(Shape{2, 4, 8}, 2);
  Tensor out;
  EXPECT_FALSE(MultiHeadAttention(q, k, k, {}, {.num_heads = 3}, out).ok());  // 8 % 3
  EXPECT_FALSE(
      MultiHeadAttention(q, k, RandomTensor(Shape{2, 5, 8}, 3), {}, {.num_heads = 2}, out).ok());
  EXPECT_FALSE(MultiHeadAttention(q, RandomTensor(Shape{3, 4, 8}, 2),
                                  RandomTensor(Shape{3, 4, 8}, 2), {}, {.num_heads = 2}, out)
                   .ok());
  EXPECT_FALSE(MultiHeadAttention(q, k, k, std::vector<int32_t>{4}, {.num_heads = 2}, out).ok());
  EXPECT_FALSE(MultiHeadAttention(q, k, k, std::vector<int32_t>{4, 5}, {.num_heads = 2}, out).ok());
  EXPECT_FALSE(
      MultiHeadAttention(RandomTensor(Shape{6, 8}, 1), k, k, {}, {.num_heads = 2}, out).ok());
  EXPECT_FALSE(
      MultiHeadAttention(q, k, k, {}, {.num_heads = 2, .causal = true, .causal_offset = -1}, out)
          .ok());
  // bf16 keys need bf16 values, and queries stay f32.
  absl::Status mixed = MultiHeadAttention(q, ToBFloat16(k), k, {}, {.num_heads = 2}, out);
  EXPECT_FALSE(mixed.ok());
  EXPECT_NE(mixed.message().find("keys are bf16 but values are f32"), std::string::npos)
      << mixed.message();
  EXPECT_FALSE(
      MultiHeadAttention(ToBFloat16(q), ToBFloat16(k), ToBFloat16(k), {}, {.num_heads = 2}, out)
          .ok());
}

TEST(KvCache, IncrementalDecodingEqualsFullCausalAttention) {
  const int64_t batch = 3, steps = 6, d = 32;
  const int heads = 4;
  const Tensor q = RandomTensor(Shape{batch, steps, d}, 1);
  const Tensor k = RandomTensor(Shape{batch, steps, d}, 2);
  const Tensor v = RandomTensor(Shape{batch, steps, d}, 3);
  Tensor full;
  ASSERT_TRUE(MultiHeadAttention(q, k, v, {}, {.num_heads = heads, .causal = true}, full).ok());

  KvCache cache;
  ASSERT_TRUE(cache.Reset(batch, 10, d).ok());
  Tensor step_out;
  for (int64_t t = 0; t < steps; ++t) {
    // Row t of each sequence: a [batch, 1, d] slice gathered by hand.
    auto slice = [&](const Tensor& src) {
      Tensor s = Tensor::Allocate(DType::kF32, Shape{batch, 1, d});
      for (int64_t b = 0; b < batch; ++b) {
        std::copy_n(src.data<float>() + (b * steps + t) * d, d, s.data<float>() + b * d);
      }
      return s;
    };
    ASSERT_TRUE(cache.Append(slice(k), slice(v)).ok());
    const std::vector<int32_t> lengths(batch, static_cast<int32_t>(cache.length()));
    ASSERT_TRUE(MultiHeadAttention(slice(q), cache.keys(), cache.values(), lengths,
                                   {.num_heads = heads}, step_out)
                    .ok());
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < d; ++i) {
        EXPECT_NEAR(step_out.data<float>()[b * d + i], full.data<float>()[(b * steps + t) * d + i],
                    1e-5);
      }
    }
  }
  EXPECT_EQ(cache.length(), steps);
}

TEST(KvCache, SelectRowsReordersAndDropsRows) {
  const int64_t d = 4;
  KvCache cache;
  ASSERT_TRUE(cache.Reset(3, 5, d).ok());
  const Tensor k = RandomTensor(Shape{3, 2, d}, 1);
  const Tensor v = RandomTensor(Shape{3, 2, d}, 2);
  ASSERT_TRUE(cache.Append(k, v).ok());
  // Beam search: hypothesis 0 and 1 both descend from row 2; row 1 finished.
  ASSERT_TRUE(cache.SelectRows(std::vector<int32_t>{2, 2, 0}).ok());
  EXPECT_EQ(cache.batch(), 3);
  for (auto [new_row, old_row] : {std::pair{0, 2}, {1, 2}, {2, 0}}) {
    for (int64_t t = 0; t < 2; ++t) {
      for (int64_t i = 0; i < d; ++i) {
        EXPECT_EQ(cache.keys().data<float>()[(new_row * 5 + t) * d + i],
                  k.data<float>()[(old_row * 2 + t) * d + i]);
        EXPECT_EQ(cache.values().data<float>()[(new_row * 5 + t) * d + i],
                  v.data<float>()[(old_row * 2 + t) * d + i]);
      }
    }
  }
  ASSERT_TRUE(cache.SelectRows(std::vector<int32_t>{1}).ok());
  EXPECT_EQ(cache.batch(), 1);
  EXPECT_EQ(cache.keys().data<float>()[0], k.data<float>()[2 * 2 * d]);
  EXPECT_FALSE(cache.SelectRows(std::vector<int32_t>{1}).ok());
  EXPECT_EQ(cache.length(), 2);
}

TEST(KvCache, SelectRowsThatMostlyStayCopiesOnlyTheMovedOnes) {
  // A continuous batch: greedy rows stay in place beside a beam whose rows swap and repeat
  // (rows 5 and 6 of a block [4, 7)), and rows of their own lengths; then the same with the
  // last row dropped. Every selected row must hold its source row's keys and values.
  const int64_t d = 4, capacity = 6, batch = 8;
  KvCache cache;
  ASSERT_TRUE(cache.Reset(0, capacity, d).ok());
  std::vector<Tensor> k, v;
  for (int64_t r = 0; r < batch; ++r) {
    // Row r joins holding 1 + r % 3 positions.
    k.push_back(RandomTensor(Shape{1, 1 + r % 3, d}, 10 + r));
    v.push_back(RandomTensor(Shape{1, 1 + r % 3, d}, 50 + r));
    ASSERT_TRUE(cache.AddRows(1, capacity).ok());
    ASSERT_TRUE(cache.AppendToRows(r, k.back(), v.back()).ok());
  }
  auto expect_rows = [&](const std::vector<int32_t>& rows) {
    ASSERT_EQ(cache.batch(), static_cast<int64_t>(rows.size()));
    for (size_t r = 0; r < rows.size(); ++r) {
      const int32_t from = rows[r];
      ASSERT_EQ(cache.length(r), 1 + from % 3) << "row " << r;
      for (int64_t i = 0; i < cache.length(r) * d; ++i) {
        EXPECT_EQ(cache.keys().data<float>()[r * capacity * d + i], k[from].data<float>()[i]);
        EXPECT_EQ(cache.values().data<float>()[r * capacity * d + i], v[from].data<float>()[i]);
      }
    }
  };
  const std::vector<int32_t> beam_moves = {0, 1, 2, 3, 6, 4, 4, 7};
  ASSERT_TRUE(cache.SelectRows(beam_moves).ok());
  expect_rows(beam_moves);
  // Composed with the selection before: rows 0, 1, 2, 3, 6, 4, 4 of the original.
  ASSERT_TRUE(cache.SelectRows(std::vector<int32_t>{0, 1, 2, 3, 4, 6, 5}).ok());
  expect_rows({0, 1, 2, 3, 6, 4, 4});
}

TEST(KvCache, AppendRowsOfAnotherCacheKeepsEveryRowsPositions) {
  // Rows decoded apart (capacity 7, longer than this cache's 3) join a running cache: the
  // capacity grows, the running rows keep their contents, the joining rows bring theirs.
  const int64_t d = 4;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    KvCache running, apart;
    ASSERT_TRUE(running.Reset(2, 3, d, dtype).ok());
    ASSERT_TRUE(apart.Reset(0, 7, d, dtype).ok());
    const Tensor k = RandomTensor(Shape{2, 2, d}, 1), v = RandomTensor(Shape{2, 2, d}, 2);
    ASSERT_TRUE(running.Append(k, v).ok());
    std::vector<Tensor> apart_k, apart_v;
    for (int64_t r = 0; r < 3; ++r) {
      apart_k.push_back(RandomTensor(Shape{1, 5 - r, d}, 10 + r));
      apart_v.push_back(RandomTensor(Shape{1, 5 - r, d}, 20 + r));
      ASSERT_TRUE(apart.AddRows(1, 7).ok());
      ASSERT_TRUE(apart.AppendToRows(r, apart_k.back(), apart_v.back()).ok());
    }
    ASSERT_TRUE(running.AppendRowsOf(apart).ok());
    ASSERT_EQ(running.batch(), 5);
    EXPECT_EQ(running.capacity(), 7);
    // Stored bf16 rounds, so compare against what the apart cache itself stores.
    auto at = [&](const KvCache& cache, const Tensor& t, int64_t row, int64_t i) {
      const int64_t index = row * cache.capacity() * d + i;
      return dtype == DType::kF32 ? t.data<float>()[index]
                                  : BFloat16ToFloat(t.data<BFloat16>()[index]);
    };
    for (int64_t r = 0; r < 2; ++r) {
      ASSERT_EQ(running.length(r), 2);
      for (int64_t i = 0; i < 2 * d; ++i) {
        EXPECT_NEAR(at(running, running.keys(), r, i), k.data<float>()[r * 2 * d + i], 1e-2);
      }
    }
    for (int64_t r = 0; r < 3; ++r) {
      ASSERT_EQ(running.length(2 + r), 5 - r);
      for (int64_t i = 0; i < (5 - r) * d; ++i) {
        EXPECT_EQ(at(running, running.keys(), 2 + r, i), at(apart, apart.keys(), r, i));
        EXPECT_EQ(at(running, running.values(), 2 + r, i), at(apart, apart.values(), r, i));
      }
    }
  }
  KvCache wide, narrow;
  ASSERT_TRUE(wide.Reset(1, 2, 8).ok());
  ASSERT_TRUE(narrow.Reset(1, 2, 4).ok());
  absl::Status s = wide.AppendRowsOf(narrow);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("d_model 4"), std::string::npos) << s;
  EXPECT_FALSE(wide.AppendRowsOf(wide).ok());
  EXPECT_EQ(wide.batch(), 1);
}

TEST(KvCache, RefusesOverflowAndBadShapes) {
  KvCache cache;
  EXPECT_FALSE(cache.Reset(1, 2, 0).ok());
  ASSERT_TRUE(cache.Reset(2, 2, 4).ok());
  const Tensor three_steps = RandomTensor(Shape{2, 3, 4}, 1);
  absl::Status overflow = cache.Append(three_steps, three_steps);
  EXPECT_EQ(overflow.code(), absl::StatusCode::kOutOfRange);
  const Tensor wrong_batch = RandomTensor(Shape{1, 1, 4}, 1);
  EXPECT_FALSE(cache.Append(wrong_batch, wrong_batch).ok());
  const Tensor one = RandomTensor(Shape{2, 1, 4}, 1);
  EXPECT_FALSE(cache.Append(one, RandomTensor(Shape{2, 1, 5}, 1)).ok());
  EXPECT_TRUE(cache.Append(one, one).ok());
  EXPECT_FALSE(cache.SelectRows(std::vector<int32_t>{-1}).ok());
  absl::Status int8_cache = cache.Reset(2, 2, 4, DType::kS8);
  EXPECT_NE(int8_cache.message().find("cannot store s8 (f32 or bf16)"), std::string::npos)
      << int8_cache.message();
  EXPECT_FALSE(cache.Append(ToBFloat16(one), ToBFloat16(one)).ok());  // Append takes f32
}

// Continuous batching: rows join a running cache (AddRows) with their own length, the capacity
// grows without losing what rows hold, only the new rows are filled (AppendToRows), and
// selection keeps each row's length.
TEST(KvCache, RowsJoinWithTheirOwnLengthsAndTheCapacityGrows) {
  const int64_t d = 4;
  KvCache cache;
  ASSERT_TRUE(cache.Reset(2, 3, d).ok());
  const Tensor first = RandomTensor(Shape{2, 2, d}, 1);
  ASSERT_TRUE(cache.Append(first, first).ok());
  ASSERT_TRUE(cache.AddRows(1, 5).ok());  // a third row, room for 5 positions in every row
  EXPECT_EQ(cache.batch(), 3);
  EXPECT_EQ(cache.capacity(), 5);
  EXPECT_EQ(cache.length(0), 2);
  EXPECT_EQ(cache.length(2), 0);
  const Tensor joining = RandomTensor(Shape{1, 4, d}, 2);
  ASSERT_TRUE(cache.AppendToRows(2, joining, joining).ok());
  EXPECT_EQ(cache.length(2), 4);
  EXPECT_EQ(cache.length(), 4);
  // The first rows kept their keys through the growth; the new row holds its own.
  const std::vector<float> keys = ToVector(cache.keys());
  const std::vector<float> old_keys = ToVector(first);
  const std::vector<float> new_keys = ToVector(joining);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 2 * d; ++i) {
      EXPECT_EQ(keys[b * 5 * d + i], old_keys[b * 2 * d + i]) << b << " " << i;
    }
  }
  for (int64_t i = 0; i < 4 * d; ++i) EXPECT_EQ(keys[2 * 5 * d + i], new_keys[i]) << i;
  // One step for every row appends at each row's own position.
  const Tensor step = RandomTensor(Shape{3, 1, d}, 3);
  ASSERT_TRUE(cache.Append(step, step).ok());
  EXPECT_EQ(cache.length(0), 3);
  EXPECT_EQ(cache.length(2), 5);
  // The joined row is full: one more step overflows, naming it.
  absl::Status full = cache.Append(step, step);
  EXPECT_EQ(full.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(full.message().find("row 2 holds 5"), std::string::npos) << full.message();
  ASSERT_TRUE(cache.SelectRows(std::vector<int32_t>{2, 0}).ok());
  EXPECT_EQ(cache.length(0), 5);
  EXPECT_EQ(cache.length(1), 3);
}

TEST(KvCache, AddRowsAndAppendToRowsRefuseBadArguments) {
  KvCache cache;
  EXPECT_EQ(cache.AddRows(1, 4).code(), absl::StatusCode::kFailedPrecondition);  // no Reset
  ASSERT_TRUE(cache.Reset(2, 4, 4).ok());
  EXPECT_EQ(cache.AddRows(-1, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.AddRows(1, -4).code(), absl::StatusCode::kInvalidArgument);
  const Tensor one = RandomTensor(Shape{1, 1, 4}, 1);
  EXPECT_EQ(cache.AppendToRows(2, one, one).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.AppendToRows(-1, one, one).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(cache.AppendToRows(1, one, one).ok());
}

// A fused key-value product of packed sequences lands in the cache exactly as the padded
// route did (UnpackSequences, then AppendToRows): the rows' own tokens, zeros up to `steps`,
// the running rows untouched, in both storage types.
TEST(KvCache, AppendPackedToRowsEqualsUnpackingThenAppending) {
  const int64_t d = 16, capacity = 7, steps = 5;
  const std::vector<int32_t> lengths = {3, 5, 1};
  const int64_t tokens = 9;
  const Tensor packed = RandomTensor(Shape{tokens, 2 * d}, 11);
  const Tensor running_k = RandomTensor(Shape{2, 2, d}, 12);
  const Tensor running_v = RandomTensor(Shape{2, 2, d}, 13);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    KvCache direct, padded;
    for (KvCache* cache : {&direct, &padded}) {
      ASSERT_TRUE(cache->Reset(2, capacity, d, dtype).ok());
      ASSERT_TRUE(cache->Append(running_k, running_v).ok());
      ASSERT_TRUE(cache->AddRows(3, capacity).ok());
    }
    ASSERT_TRUE(direct.AppendPackedToRows(2, packed, lengths, steps).ok());
    Tensor k, v;
    Tensor* const parts[] = {&k, &v};
    ASSERT_TRUE(UnpackSequences(packed, lengths, steps, parts).ok());
    ASSERT_TRUE(padded.AppendToRows(2, k, v).ok());
    for (int64_t b = 0; b < 5; ++b) {
      ASSERT_EQ(direct.length(b), padded.length(b)) << b;
      const size_t bytes = DTypeSize(dtype) * direct.length(b) * d;
      const size_t at = DTypeSize(dtype) * b * capacity * d;
      EXPECT_EQ(std::memcmp(static_cast<const char*>(direct.keys().raw_data()) + at,
                            static_cast<const char*>(padded.keys().raw_data()) + at, bytes),
                0)
          << DTypeName(dtype) << " keys of row " << b;
      EXPECT_EQ(std::memcmp(static_cast<const char*>(direct.values().raw_data()) + at,
                            static_cast<const char*>(padded.values().raw_data()) + at, bytes),
                0)
          << DTypeName(dtype) << " values of row " << b;
    }
  }
}

TEST(KvCache, AppendPackedToRowsRefusesBadArguments) {
  const int64_t d = 4;
  KvCache cache;
  ASSERT_TRUE(cache.Reset(2, 3, d).ok());
  const std::vector<int32_t> lengths = {2, 1};
  const Tensor packed = RandomTensor(Shape{3, 2 * d}, 1);
  const auto code = [&](int64_t first_row, const Tensor& p, std::vector<int32_t> l, int64_t steps) {
    return cache.AppendPackedToRows(first_row, p, l, steps).code();
  };
  EXPECT_EQ(code(0, RandomTensor(Shape{3, d}, 2), lengths, 2),
            absl::StatusCode::kInvalidArgument);                               // keys only
  EXPECT_EQ(code(1, packed, lengths, 2), absl::StatusCode::kInvalidArgument);  // row 2
  EXPECT_EQ(code(-1, packed, lengths, 2), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(0, packed, {2, 2}, 2), absl::StatusCode::kInvalidArgument);  // 4 != 3
  EXPECT_EQ(code(0, packed, {3, 0}, 2), absl::StatusCode::kInvalidArgument);  // 3 > 2
  EXPECT_EQ(code(0, packed, {2, -1}, 2), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(0, packed, lengths, 4), absl::StatusCode::kOutOfRange);  // capacity 3
  EXPECT_EQ(cache.length(0), 0);  // nothing written by a refused call
  EXPECT_TRUE(cache.AppendPackedToRows(0, packed, lengths, 2).ok());
  EXPECT_EQ(cache.length(0), 2);
  EXPECT_EQ(cache.length(1), 2);
}

// A bf16 cache stores the rounded keys and values, keeps them through both kinds of row
// selection, and attention over it equals attention over the rounded values in f32.
TEST(KvCache, Bf16CacheHoldsRoundedValues) {
  const int64_t batch = 3, steps = 4, d = 32, capacity = 6;
  const Tensor k = RandomTensor(Shape{batch, steps, d}, 1);
  const Tensor v = RandomTensor(Shape{batch, steps, d}, 2);
  KvCache cache;
  ASSERT_TRUE(cache.Reset(batch, capacity, d, DType::kBF16).ok());
  ASSERT_TRUE(cache.Append(k, v).ok());
  ASSERT_EQ(cache.keys().dtype(), DType::kBF16);
  ASSERT_EQ(cache.dtype(), DType::kBF16);
  auto expect_row = [&](int64_t row, int64_t source_row) {
    for (int64_t t = 0; t < steps; ++t) {
      for (int64_t i = 0; i < d; ++i) {
        const int64_t at = (row * capacity + t) * d + i, from = (source_row * steps + t) * d + i;
        ASSERT_EQ(cache.keys().data<BFloat16>()[at].bits,
                  FloatToBFloat16(k.data<float>()[from]).bits);
        ASSERT_EQ(cache.values().data<BFloat16>()[at].bits,
                  FloatToBFloat16(v.data<float>()[from]).bits);
      }
    }
  };
  for (int64_t b = 0; b < batch; ++b) expect_row(b, b);

  const Tensor q = RandomTensor(Shape{batch, 1, d}, 3);
  const std::vector<int32_t> lengths(batch, static_cast<int32_t>(steps));
  Tensor from_cache, from_rounded;
  ASSERT_TRUE(
      MultiHeadAttention(q, cache.keys(), cache.values(), lengths, {.num_heads = 4}, from_cache)
          .ok());
  // The rounded values in an f32 tensor of the cache's capacity.
  Tensor k32 = Tensor::Allocate(DType::kF32, Shape{batch, capacity, d});
  Tensor v32 = Tensor::Allocate(DType::kF32, Shape{batch, capacity, d});
  const std::vector<float> kw = ToVector(cache.keys()), vw = ToVector(cache.values());
  std::copy(kw.begin(), kw.end(), k32.data<float>());
  std::copy(vw.begin(), vw.end(), v32.data<float>());
  ASSERT_TRUE(MultiHeadAttention(q, k32, v32, lengths, {.num_heads = 4}, from_rounded).ok());
  const std::vector<float> rounded = ToVector(from_rounded);
  EXPECT_LE(WorstToleranceRatio(ToVector(from_cache),
                                std::vector<double>(rounded.begin(), rounded.end()), 1e-6, 1e-6),
            1.0);

  ASSERT_TRUE(cache.SelectRows(std::vector<int32_t>{2, 2, 0}).ok());  // through the spares
  expect_row(0, 2);
  expect_row(1, 2);
  expect_row(2, 0);
  ASSERT_TRUE(cache.SelectRows(std::vector<int32_t>{2}).ok());  // compaction in place
  EXPECT_EQ(cache.batch(), 1);
  expect_row(0, 0);
}

}  // namespace
}  // namespace taskmoe::kernels
