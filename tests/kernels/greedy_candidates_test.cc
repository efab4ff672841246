// The greedy head's int8 candidate filter (greedy_candidates.h): the recomputed columns are
// the f32 kernel's bits, and the head's arg-max and maximum through the filter are bitwise
// those of the full f32 head on random rows, near-ties, exact ties, non-finite inputs and every
// batch size, while the filter recomputes only a small share of the columns.
#include "kernels/greedy_candidates.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/f32_gemm.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "kernels/runtime.h"
#include "tests/kernels/reference.h"

namespace taskmoe::kernels {
namespace {

using testing::RandomTensor;
using testing::RandomVector;
using testing::RoundToBFloat16;
using testing::ThreadSettingScope;

// A vocabulary projection's weights: rows of norm about one.
Tensor HeadWeight(int64_t n, int64_t k, uint32_t seed, bool bf16_values) {
  std::vector<float> w = RandomVector(n * k, seed, 1.0f / std::sqrt(static_cast<float>(k)));
  if (bf16_values) w = RoundToBFloat16(w);
  Tensor t = Tensor::Allocate(DType::kF32, Shape{n, k});
  std::copy(w.begin(), w.end(), t.data<float>());
  return t;
}

TEST(GreedyCandidates, SelectedColumnsAreTheKernelsBits) {
  constexpr int64_t k = 70, n = 203, m = 9;  // n: a partial strip; m: two row tiles and a rest
  const std::vector<float> x = RandomVector(m * k, 1, 2.0f);
  const std::vector<float> bias = RandomVector(n, 2, 0.5f);
  for (bool bf16 : {false, true}) {
    const std::vector<float> w =
        bf16 ? RoundToBFloat16(RandomVector(n * k, 3)) : RandomVector(n * k, 3);
    std::vector<float> packed(F32GemmPackedFloats(n, k));
    std::vector<BFloat16> packed_bf16(F32GemmPackedBFloat16Values(n, k));
    if (bf16) {
      PackF32GemmWeightsAsBFloat16(w.data(), n, k, packed_bf16.data());
    } else {
      PackF32GemmWeights(w.data(), n, k, packed.data());
    }
    for (bool with_bias : {false, true}) {
      for (F32GemmTiles tiles : {F32GemmTiles::kAvx2, F32GemmTiles::kAvx512}) {
        std::vector<float> y(m * n);
        F32GemmArgs args{.a = x.data(),
                         .lda = k,
                         .m = m,
                         .packed = bf16 ? nullptr : packed.data(),
                         .packed_bf16 = bf16 ? packed_bf16.data() : nullptr,
                         .n = n,
                         .k = k,
                         .bias = with_bias ? bias.data() : nullptr,
                         .y = y.data(),
                         .ldy = n};
        F32Gemm(args, tiles);
        // Every column, in an order that mixes strips and lanes, in groups of every size.
        std::vector<int32_t> columns(n);
        for (int64_t c = 0; c < n; ++c) columns[c] = static_cast<int32_t>((c * 37) % n);
        for (int64_t r = 0; r < m; ++r) {
          std::vector<float> out(n);
          F32GemmSelectedColumns(args, r, columns.data(), 5, out.data());
          F32GemmSelectedColumns(args, r, columns.data() + 5, n - 5, out.data() + 5);
          for (int64_t j = 0; j < n; ++j) {
            ASSERT_EQ(std::memcmp(&out[j], &y[r * n + columns[j]], sizeof(float)), 0)
                << "bf16=" << bf16 << " bias=" << with_bias << " row " << r << " column "
                << columns[j] << ": " << out[j] << " vs " << y[r * n + columns[j]];
          }
        }
      }
    }
  }
}

TEST(GreedyCandidates, RecomputesOnlyColumnsThatCanWin) {
  // Raw products 0, 2, ..., 38 at a row scale of 0.5 and column scales of 1 (so y~ = 0 .. 19,
  // plus a bias of 1 for column 17), with bounds of 6 * 0.1 + 0.5 * 0.2 = 0.7 (and a few ulps);
  // the exact outputs here are y~ - 0.6. Column 19, the largest approximation, goes first:
  // 18.4, above the best lower bound 19 - 0.7. Upper bounds 18.7 keep 17 (18 with its bias)
  // and 18; 16 (16.7) cannot win. Twenty columns span two screened blocks.
  constexpr int64_t n = 20;
  std::vector<float> values(n), bias(n, 0.0f);
  for (int64_t c = 0; c < n; ++c) values[c] = 2.0f * static_cast<float>(c);
  bias[17] = 1.0f;
  const std::vector<float> column_scales(n, 1.0f), input_l1_factor(n, 0.1f),
      row_scale_factor(n, 0.2f);
  std::vector<int32_t> asked;
  std::vector<float> upper_bounds(n);
  CandidateRow row{.values = values.data(),
                   .n = n,
                   .input_l1 = 6.0f,
                   .row_scale = 0.5f,
                   .column_scales = column_scales.data(),
                   .bias = bias.data(),
                   .input_l1_factor = input_l1_factor.data(),
                   .row_scale_factor = row_scale_factor.data(),
                   .upper_bounds = upper_bounds.data()};
  const auto exact = [&](const int32_t* columns, int64_t count, float* out) {
    for (int64_t j = 0; j < count; ++j) {
      asked.push_back(columns[j]);
      out[j] = static_cast<float>(columns[j]) + bias[columns[j]] - 0.6f;
    }
  };
  EXPECT_EQ(MakeCandidatesExact(row, exact), 3);
  EXPECT_EQ(asked, (std::vector<int32_t>{19, 17, 18}));
  EXPECT_FLOAT_EQ(values[19], 18.4f);
  EXPECT_FLOAT_EQ(values[17], 17.4f);
  EXPECT_EQ(values[16], 16.0f);  // dequantised, not recomputed
  EXPECT_EQ(values[3], 3.0f);
  // Exact outputs at the top of the bounds: column 19's 19.6 rules out every other column.
  for (int64_t c = 0; c < n; ++c) values[c] = 2.0f * static_cast<float>(c);
  asked.clear();
  EXPECT_EQ(MakeCandidatesExact(row,
                                [&](const int32_t* columns, int64_t count, float* out) {
                                  for (int64_t j = 0; j < count; ++j) out[j] = 19.6f;
                                  asked.insert(asked.end(), columns, columns + count);
                                }),
            1);
  EXPECT_EQ(asked, (std::vector<int32_t>{19}));
  // A non-finite input bound makes every column exact.
  for (int64_t c = 0; c < n; ++c) values[c] = 2.0f * static_cast<float>(c);
  asked.clear();
  row.input_l1 = std::numeric_limits<float>::infinity();
  EXPECT_EQ(MakeCandidatesExact(row,
                                [&](const int32_t* columns, int64_t count, float* out) {
                                  for (int64_t j = 0; j < count; ++j) out[j] = 0.0f;
                                  asked.insert(asked.end(), columns, columns + count);
                                }),
            n);
  EXPECT_EQ(static_cast<int64_t>(asked.size()), n);
}

struct HeadResult {
  std::vector<int32_t> best;
  std::vector<float> max, log_sum_exp;
};

HeadResult RunHead(const PackedLinear& linear, const Tensor& x, GreedyLogSumExp kind) {
  Tensor products, best, max, lse;
  const absl::Status s = linear.ForwardArgMaxAndLogSumExp(x, products, best, max, lse, kind);
  EXPECT_TRUE(s.ok()) << s;
  HeadResult result;
  for (int64_t r = 0; r < best.numel(); ++r) {
    result.best.push_back(best.data<int32_t>()[r]);
    result.max.push_back(max.data<float>()[r]);
    result.log_sum_exp.push_back(lse.data<float>()[r]);
  }
  return result;
}

// Inputs that stress the filter: random rows, rows along one column's weights (one clear
// winner), rows between two nearly equal columns (a near-tie inside the int8 error), a row for
// two identical columns (an exact tie: the first must win), and non-finite rows.
Tensor HardInputs(const Tensor& w, int64_t rows, uint32_t seed) {
  const int64_t n = w.dim(0), k = w.dim(1);
  Tensor x = RandomTensor(Shape{rows, k}, seed, 1.5f);
  float* data = x.data<float>();
  const float* weights = w.data<float>();
  for (int64_t r = 0; r < rows; r += 3) {
    const int64_t column = (r * 131) % n;
    for (int64_t i = 0; i < k; ++i) data[r * k + i] = 8.0f * weights[column * k + i];
  }
  data[1 * k] = std::numeric_limits<float>::infinity();
  data[2 * k + 3] = std::numeric_limits<float>::quiet_NaN();
  return x;
}

TEST(GreedyCandidates, HeadGivesTheExactArgMaxAndMaximum) {
  constexpr int64_t k = 256, n = 3000, rows = 40;
  for (MatmulPath path : {MatmulPath::kAvx2F32, MatmulPath::kBF16AsF32}) {
    if (!CheckMatmulPathSupported(path).ok()) GTEST_SKIP() << "no AVX2";
    for (bool bf16_values : {false, true}) {
      Tensor w = HeadWeight(n, k, 11, bf16_values);
      // Near-ties: column 7 is column 5 with its last weight one bf16 step smaller; column
      // 9 is column 5 exactly (an exact tie; 5 must win over 9).
      float* weights = w.data<float>();
      std::copy_n(weights + 5 * k, k, weights + 7 * k);
      std::copy_n(weights + 5 * k, k, weights + 9 * k);
      weights[7 * k + k - 1] *= 0.9921875f;  // toward zero: 7 just below 5
      Tensor b = RandomTensor(Shape{n}, 12, 0.5f);
      b.data<float>()[7] = b.data<float>()[9] = b.data<float>()[5];
      absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, b, path);
      ASSERT_TRUE(linear.ok()) << linear.status();
      ASSERT_TRUE(linear->AddGreedyCandidateFilter(w).ok());
      ASSERT_TRUE(linear->greedy_candidate_filter_path().has_value());
      Tensor x = HardInputs(w, rows, 13);
      // Rows 4 and 5 along column 5 (so 5, 7 and 9 are the top three, within int8's error).
      for (int64_t r : {4, 5}) {
        for (int64_t i = 0; i < k; ++i) x.data<float>()[r * k + i] = 6.0f * weights[5 * k + i];
      }
      const size_t plain_bytes = PackedLinear::Create(w, b, path)->memory_bytes();
      // The int8 copy (a byte a weight, columns padded to 16) and a few floats per column.
      EXPECT_GT(linear->memory_bytes(), plain_bytes + n * k);
      EXPECT_LE(linear->memory_bytes(), plain_bytes + (n + 16) * k + 32 * n);
      for (int threads : {1, 2}) {
        ThreadSettingScope setting(threads);
        const HeadResult exact = RunHead(*linear, x, GreedyLogSumExp::kExact);
        const HeadResult filtered = RunHead(*linear, x, GreedyLogSumExp::kNone);
        ASSERT_EQ(filtered.best.size(), static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          SCOPED_TRACE(::testing::Message()
                       << MatmulPathName(path) << " bf16 values " << bf16_values << " threads "
                       << threads << " row " << r);
          EXPECT_EQ(filtered.best[r], exact.best[r]);
          if (std::isnan(exact.max[r])) {
            EXPECT_TRUE(std::isnan(filtered.max[r]));
            continue;
          }
          EXPECT_EQ(std::memcmp(&filtered.max[r], &exact.max[r], sizeof(float)), 0)
              << filtered.max[r] << " vs " << exact.max[r];
          // No log-sum-exp: the max stands in for it (a step's log-probability reads 0).
          EXPECT_EQ(std::memcmp(&filtered.log_sum_exp[r], &filtered.max[r], sizeof(float)), 0);
        }
        EXPECT_EQ(exact.best[4], 5);
        EXPECT_EQ(filtered.best[4], 5);
      }
    }
  }
}

TEST(GreedyCandidates, HeadRowsDoNotDependOnTheBatch) {
  constexpr int64_t k = 128, n = 1000, rows = 70;
  if (!CheckMatmulPathSupported(MatmulPath::kAvx2F32).ok()) GTEST_SKIP() << "no AVX2";
  const Tensor w = HeadWeight(n, k, 21, /*bf16_values=*/true);
  absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, Tensor(), MatmulPath::kAvx2F32);
  ASSERT_TRUE(linear.ok());
  ASSERT_TRUE(linear->AddGreedyCandidateFilter(w).ok());
  const Tensor x = RandomTensor(Shape{rows, k}, 22, 1.5f);
  const HeadResult batch = RunHead(*linear, x, GreedyLogSumExp::kNone);
  for (int64_t r = 0; r < rows; r += 7) {
    Tensor row = Tensor::Allocate(DType::kF32, Shape{1, k});
    std::copy_n(x.data<float>() + r * k, k, row.data<float>());
    const HeadResult alone = RunHead(*linear, row, GreedyLogSumExp::kNone);
    EXPECT_EQ(alone.best[0], batch.best[r]);
    EXPECT_EQ(std::memcmp(&alone.max[0], &batch.max[r], sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(&alone.log_sum_exp[0], &batch.log_sum_exp[r], sizeof(float)), 0);
  }
}

// A decoder's head gets the filter in f32 on every CPU with AVX2, full-mantissa f32 weights
// included (where other f32 layers run oneDNN's brgemm), and picks the best token of a full
// f32 product; bf16 gets it on bf16_as_f32, int8 never.
TEST(GreedyCandidates, GreedyHeadCarriesTheFilterInF32) {
  if (!CheckMatmulPathSupported(MatmulPath::kAvx2F32).ok()) GTEST_SKIP() << "no AVX2";
  constexpr int64_t k = 64, n = 2000, rows = 9;
  const Tensor w = HeadWeight(n, k, 41, /*bf16_values=*/false);
  const Tensor b = RandomTensor(Shape{n}, 42, 0.5f);
  absl::StatusOr<PackedLinear> head = PackedLinear::CreateGreedyHead(w, b, Precision::kF32);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->path(), MatmulPath::kAvx2F32);
  EXPECT_EQ(head->greedy_candidate_filter_path(), OwnInt8Path());
  // The best token of every row is that of the plain f32 layer (oneDNN's where it is the
  // default), up to a tie within f32 rounding.
  absl::StatusOr<PackedLinear> plain = PackedLinear::Create(w, b, Precision::kF32);
  ASSERT_TRUE(plain.ok());
  const Tensor x = RandomTensor(Shape{rows, k}, 43, 1.5f);
  const HeadResult filtered = RunHead(*head, x, GreedyLogSumExp::kNone);
  Tensor y;
  ASSERT_TRUE(plain->Forward(x, Activation::kNone, y).ok());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = y.data<float>() + r * n;
    const float best = *std::max_element(row, row + n);
    EXPECT_NEAR(row[filtered.best[r]], best, 1e-4f * std::max(1.0f, std::abs(best))) << r;
    EXPECT_NEAR(filtered.max[r], best, 1e-4f * std::max(1.0f, std::abs(best))) << r;
  }
  absl::StatusOr<PackedLinear> int8 = PackedLinear::CreateGreedyHead(w, b, Precision::kInt8);
  ASSERT_TRUE(int8.ok());
  EXPECT_FALSE(int8->greedy_candidate_filter_path().has_value());
  absl::StatusOr<PackedLinear> bf16 = PackedLinear::CreateGreedyHead(w, b, Precision::kBF16);
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(bf16->greedy_candidate_filter_path().has_value(),
            bf16->path() == MatmulPath::kBF16AsF32);
}

TEST(GreedyCandidates, FilterOnlyOnOurF32KernelAndForItsWeights) {
  const Tensor w = HeadWeight(100, 32, 31, false);
  absl::StatusOr<PackedLinear> int8 = PackedLinear::Create(w, Tensor(), Precision::kInt8);
  ASSERT_TRUE(int8.ok());
  EXPECT_TRUE(int8->AddGreedyCandidateFilter(w).ok());
  EXPECT_FALSE(int8->greedy_candidate_filter_path().has_value());
  if (!CheckMatmulPathSupported(MatmulPath::kAvx2F32).ok()) return;
  absl::StatusOr<PackedLinear> f32 = PackedLinear::Create(w, Tensor(), MatmulPath::kAvx2F32);
  ASSERT_TRUE(f32.ok());
  const absl::Status wrong = f32->AddGreedyCandidateFilter(HeadWeight(100, 16, 31, false));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find("[100, 32]"), std::string::npos) << wrong;
  EXPECT_FALSE(f32->greedy_candidate_filter_path().has_value());
  // Without a filter, kNone is the plain head without the log-sum-exp; a bad input is refused
  // either way.
  Tensor products, best, max, lse;
  EXPECT_FALSE(f32->ForwardArgMaxAndLogSumExp(RandomTensor(Shape{2, 5}, 1), products, best, max,
                                              lse, GreedyLogSumExp::kNone)
                   .ok());
  ASSERT_TRUE(f32->AddGreedyCandidateFilter(w).ok());
  EXPECT_FALSE(f32->ForwardArgMaxAndLogSumExp(RandomTensor(Shape{2, 5}, 1), products, best, max,
                                              lse, GreedyLogSumExp::kNone)
                   .ok());
  ASSERT_TRUE(f32->ForwardArgMaxAndLogSumExp(Tensor::Allocate(DType::kF32, Shape{0, 32}), products,
                                             best, max, lse, GreedyLogSumExp::kNone)
                  .ok());
  EXPECT_EQ(best.shape(), Shape{0});
}

}  // namespace
}  // namespace taskmoe::kernels
