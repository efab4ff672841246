// Layer norm, softmax, activations, residual add, embedding, top-k and quantisation against
// naive references, including odd sizes and bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/fast_math.h"
#include "kernels/layout.h"
#include "kernels/norm.h"
#include "kernels/quantize.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"
#include "tests/kernels/reference.h"

namespace taskmoe::kernels {
namespace {

using testing::RandomTensor;
using testing::RandomVector;
using testing::ToVector;
using testing::WorstToleranceRatio;

TEST(LayerNorm, MatchesReference) {
  for (int64_t d : {1, 7, 64, 513}) {
    const int64_t rows = 5;
    // An offset of 100 makes the one-pass variance formula lose digits; two passes must not.
    Tensor x = RandomTensor(Shape{rows, d}, 1);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 100.0f;
    const Tensor gamma = RandomTensor(Shape{d}, 2), beta = RandomTensor(Shape{d}, 3);
    Tensor y;
    ASSERT_TRUE(LayerNorm(x, gamma, beta, 1e-5f, y).ok());
    const auto expected =
        testing::NaiveLayerNorm(ToVector(x), ToVector(gamma), ToVector(beta), rows, d, 1e-5);
    EXPECT_LE(WorstToleranceRatio(ToVector(y), expected, 2e-4, 2e-4), 1.0) << "d=" << d;
    // In place gives the same answer.
    ASSERT_TRUE(LayerNorm(x, gamma, beta, 1e-5f, x).ok());
    EXPECT_EQ(ToVector(x), ToVector(y));
  }
}

TEST(LayerNorm, RefusesBadArguments) {
  const Tensor x = RandomTensor(Shape{2, 8}, 1);
  Tensor y;
  EXPECT_FALSE(LayerNorm(x, RandomTensor(Shape{7}, 1), RandomTensor(Shape{8}, 1), 1e-5f, y).ok());
  EXPECT_FALSE(LayerNorm(x, RandomTensor(Shape{8}, 1), RandomTensor(Shape{9}, 1), 1e-5f, y).ok());
  EXPECT_FALSE(LayerNorm(x, RandomTensor(Shape{8}, 1), RandomTensor(Shape{8}, 1), 0.0f, y).ok());
  EXPECT_FALSE(LayerNorm(Tensor::Allocate(DType::kBF16, Shape{2, 8}), RandomTensor(Shape{8}, 1),
                         RandomTensor(Shape{8}, 1), 1e-5f, y)
                   .ok());
}

TEST(Softmax, MatchesReferenceAndIsStable) {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor x = RandomTensor(Shape{4, n}, 5, 10.0f);
    x.data<float>()[0] = 1000.0f;  // would overflow exp() without the max subtraction
    const std::vector<float> in = ToVector(x);
    Tensor logp = x.Clone();
    ASSERT_TRUE(SoftmaxInPlace(x).ok());
    ASSERT_TRUE(LogSoftmaxInPlace(logp).ok());
    std::vector<double> expected(in.size()), expected_log(in.size());
    for (int64_t r = 0; r < 4; ++r) {
      double mx = -INFINITY, sum = 0;
      for (int64_t i = 0; i < n; ++i) mx = std::max<double>(mx, in[r * n + i]);
      for (int64_t i = 0; i < n; ++i) sum += std::exp(in[r * n + i] - mx);
      for (int64_t i = 0; i < n; ++i) {
        expected[r * n + i] = std::exp(in[r * n + i] - mx) / sum;
        expected_log[r * n + i] = in[r * n + i] - mx - std::log(sum);
      }
    }
    EXPECT_LE(WorstToleranceRatio(ToVector(x), expected, 1e-6, 1e-5), 1.0);
    EXPECT_LE(WorstToleranceRatio(ToVector(logp), expected_log, 1e-4, 1e-5), 1.0);
  }
  Tensor empty = Tensor::Allocate(DType::kF32, Shape{2, 0});
  EXPECT_FALSE(SoftmaxInPlace(empty).ok());
}

// Greedy and beam search read the best token and the log-softmax shift without rewriting the
// row; checked against a double-precision reference on rows wide enough to run in parallel.
TEST(Softmax, ArgMaxAndLogSumExpMatchTheReference) {
  for (int64_t n : {1, 7, 64000}) {
    Tensor x = RandomTensor(Shape{3, n}, 5, 8.0f);
    if (n > 1) x.data<float>()[n + 2] = x.data<float>()[n + n - 1] = 100.0f;  // a tie in row 1
    Tensor best, lse;
    ASSERT_TRUE(ArgMaxAndLogSumExp(x, best, lse).ok());
    ASSERT_EQ(best.shape(), Shape{3});
    for (int64_t r = 0; r < 3; ++r) {
      const float* row = x.data<float>() + r * n;
      const int64_t want = std::max_element(row, row + n) - row;  // the first maximum
      EXPECT_EQ(best.data<int32_t>()[r], want) << "n " << n << " row " << r;
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(row[i]) - row[want]);
      const double expected = row[want] + std::log(sum);
      EXPECT_NEAR(lse.data<float>()[r], expected, 1e-5 * std::fabs(expected) + 1e-5)
          << "n " << n << " row " << r;
    }
  }
  Tensor nan_row = Tensor::FromVector<float>(Shape{1, 3}, {NAN, 1.0f, 2.0f});
  Tensor best, lse;
  ASSERT_TRUE(ArgMaxAndLogSumExp(nan_row, best, lse).ok());
  EXPECT_EQ(best.data<int32_t>()[0], 2);  // NaNs never win
  // A NaN that opens the row and a maximum two blocks (of 512) further on.
  Tensor wide = RandomTensor(Shape{1, 1500}, 6, 4.0f);
  wide.data<float>()[0] = NAN;
  wide.data<float>()[1200] = 50.0f;
  ASSERT_TRUE(ArgMaxAndLogSumExp(wide, best, lse).ok());
  EXPECT_EQ(best.data<int32_t>()[0], 1200);
  // Equal maxima within one vector of eight and in the next: the first wins.
  Tensor ties = RandomTensor(Shape{1, 40}, 7, 4.0f);
  ties.data<float>()[13] = ties.data<float>()[9] = ties.data<float>()[20] = 60.0f;
  ASSERT_TRUE(ArgMaxAndLogSumExp(ties, best, lse).ok());
  EXPECT_EQ(best.data<int32_t>()[0], 9);
  Tensor empty = Tensor::Allocate(DType::kF32, Shape{2, 0});
  EXPECT_FALSE(ArgMaxAndLogSumExp(empty, best, lse).ok());
  Tensor ints = Tensor::Allocate(DType::kS32, Shape{2, 2});
  EXPECT_FALSE(ArgMaxAndLogSumExp(ints, best, lse).ok());
}

// Without a log-sum-exp the rows' arg-max and maximum are those of the full reduction: the
// first maximum, NaNs never winning, an all-NaN row index 0 and a NaN maximum.
TEST(Softmax, ArgMaxWithoutLogSumExpMatchesTheFullReduction) {
  constexpr int64_t rows = 6, n = 1500;
  Tensor x = RandomTensor(Shape{rows, n}, 8, 8.0f);
  float* data = x.data<float>();
  data[0] = NAN;                                   // row 0 opens with a NaN
  data[1 * n + 700] = data[1 * n + 1400] = 90.0f;  // row 1: a tie two blocks apart
  data[2 * n + 9] = data[2 * n + 13] = 90.0f;      // row 2: a tie in one vector
  std::fill_n(data + 3 * n, n, NAN);               // row 3: all NaN
  data[4 * n + n - 1] = 90.0f;                     // row 4: the last value
  data[5 * n + 3] = -std::numeric_limits<float>::infinity();
  std::vector<int32_t> want_best(rows), best(rows);
  std::vector<float> want_max(rows), want_lse(rows), max(rows);
  ArgMaxAndLogSumExpRows(data, rows, n, nullptr, want_best.data(), want_max.data(),
                         want_lse.data());
  ArgMaxAndLogSumExpRows(data, rows, n, nullptr, best.data(), max.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(best[r], want_best[r]) << "row " << r;
    EXPECT_EQ(std::memcmp(&max[r], &want_max[r], sizeof(float)), 0) << "row " << r;
  }
  EXPECT_EQ(best[1], 700);
  EXPECT_EQ(best[2], 9);
  EXPECT_EQ(best[3], 0);
  EXPECT_TRUE(std::isnan(max[3]));
  EXPECT_EQ(best[4], n - 1);
}

TEST(Layout, SplitLastDimCopiesColumnBlocks) {
  const Tensor x = RandomTensor(Shape{2, 3, 12}, 9);
  Tensor q, k, v;
  std::vector<Tensor*> parts = {&q, &k, &v};
  ASSERT_TRUE(SplitLastDim(x, parts).ok());
  for (Tensor* part : parts) ASSERT_EQ(part->shape(), (Shape{2, 3, 4}));
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t c = 0; c < 4; ++c) {
        EXPECT_EQ(parts[i]->data<float>()[r * 4 + c], x.data<float>()[r * 12 + i * 4 + c]);
      }
    }
  }
  // Enough rows to split in parallel.
  const Tensor big = RandomTensor(Shape{300, 512}, 4);
  std::vector<Tensor*> two = {&k, &v};
  ASSERT_TRUE(SplitLastDim(big, two).ok());
  EXPECT_EQ(v.data<float>()[299 * 256 + 255], big.data<float>()[299 * 512 + 511]);
  EXPECT_EQ(k.data<float>()[150 * 256], big.data<float>()[150 * 512]);

  std::vector<Tensor*> none;
  EXPECT_FALSE(SplitLastDim(x, none).ok());
  std::vector<Tensor*> five = {&q, &k, &v, &q, &k};
  EXPECT_FALSE(SplitLastDim(x, five).ok());  // 12 columns do not split 5 ways
  std::vector<Tensor*> repeated = {&q, &q};
  EXPECT_FALSE(SplitLastDim(x, repeated).ok());
  Tensor ints = Tensor::Allocate(DType::kS32, Shape{2, 4});
  EXPECT_FALSE(SplitLastDim(ints, two).ok());
}

TEST(Layout, UnpackAndPackSequencesMoveBetweenPackedAndPadded) {
  const std::vector<int32_t> lengths = {2, 0, 3, 1};
  const Tensor packed = RandomTensor(Shape{6, 8}, 12);  // 2 + 0 + 3 + 1 rows, 2 parts of 4
  Tensor first = RandomTensor(Shape{9}, 1), second;     // stale contents get overwritten
  std::vector<Tensor*> parts = {&first, &second};
  ASSERT_TRUE(UnpackSequences(packed, lengths, 4, parts).ok());
  for (Tensor* part : parts) ASSERT_EQ(part->shape(), (Shape{4, 4, 4}));
  int64_t row = 0;
  for (int64_t b = 0; b < 4; ++b) {
    for (int64_t t = 0; t < 4; ++t) {
      for (int64_t i = 0; i < 2; ++i) {
        for (int64_t c = 0; c < 4; ++c) {
          const float want = t < lengths[b] ? packed.data<float>()[(row + t) * 8 + i * 4 + c] : 0;
          EXPECT_EQ(parts[i]->data<float>()[(b * 4 + t) * 4 + c], want) << b << " " << t;
        }
      }
    }
    row += lengths[b];
  }
  // Packing a part back gives its columns of the packed rows.
  Tensor repacked;
  ASSERT_TRUE(PackSequences(second, lengths, repacked).ok());
  ASSERT_EQ(repacked.shape(), (Shape{6, 4}));
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t c = 0; c < 4; ++c) {
      EXPECT_EQ(repacked.data<float>()[r * 4 + c], packed.data<float>()[r * 8 + 4 + c]);
    }
  }
  // Enough rows to run in parallel.
  const Tensor big = RandomTensor(Shape{300, 512}, 4);
  const std::vector<int32_t> long_lengths = {100, 150, 50};
  std::vector<Tensor*> one = {&first};
  ASSERT_TRUE(UnpackSequences(big, long_lengths, 160, one).ok());
  ASSERT_TRUE(PackSequences(first, long_lengths, repacked).ok());
  EXPECT_EQ(ToVector(repacked), ToVector(big));

  const std::vector<int32_t> too_long = {2, 0, 5, 1};
  EXPECT_FALSE(UnpackSequences(packed, too_long, 4, parts).ok());  // 5 > max_len, 8 rows != 6
  const std::vector<int32_t> short_sum = {2, 0, 2, 1};
  EXPECT_FALSE(UnpackSequences(packed, short_sum, 4, parts).ok());
  const std::vector<int32_t> negative = {2, -1, 4, 1};
  EXPECT_FALSE(UnpackSequences(packed, negative, 4, parts).ok());
  EXPECT_FALSE(UnpackSequences(packed, lengths, -1, parts).ok());
  std::vector<Tensor*> three = {&first, &second, &repacked};
  EXPECT_FALSE(UnpackSequences(packed, lengths, 4, three).ok());  // 8 columns, 3 parts
  std::vector<Tensor*> repeated = {&first, &first};
  EXPECT_FALSE(UnpackSequences(packed, lengths, 4, repeated).ok());
  const std::vector<Tensor*> with_packed = {&first, const_cast<Tensor*>(&packed)};
  EXPECT_FALSE(UnpackSequences(packed, lengths, 4, with_packed).ok());  // a part is the input
  EXPECT_FALSE(PackSequences(second, lengths, second).ok());            // output is the input
  EXPECT_FALSE(PackSequences(packed, lengths, repacked).ok());          // not [batch, max_len, w]
  EXPECT_FALSE(PackSequences(second, too_long, repacked).ok());
  EXPECT_FALSE(PackSequences(second, {2, 0, 3}, repacked).ok());  // 3 lengths, 4 sequences
  Tensor ints = Tensor::Allocate(DType::kS32, Shape{6, 8});
  EXPECT_FALSE(UnpackSequences(ints, lengths, 4, parts).ok());
}

TEST(Activation, ReluGeluAndResidual) {
  Tensor x = Tensor::FromVector<float>(Shape{5}, {-2.0f, -0.5f, 0.0f, 0.5f, 3.0f});
  Tensor r = x.Clone();
  ASSERT_TRUE(ApplyActivation(Activation::kRelu, r).ok());
  EXPECT_EQ(ToVector(r), (std::vector<float>{0, 0, 0, 0.5f, 3.0f}));
  Tensor g = x.Clone();
  ASSERT_TRUE(ApplyActivation(Activation::kGelu, g).ok());
  // torch.nn.functional.gelu(torch.tensor([-2., -.5, 0., .5, 3.])) in float64.
  const std::vector<double> torch_gelu = {-0.04550026389635842, -0.15426876936299344, 0.0,
                                          0.34573123063700656, 2.99595030590511};
  EXPECT_LE(WorstToleranceRatio(ToVector(g), torch_gelu, 1e-6, 1e-6), 1.0);

  Tensor y = Tensor::FromVector<float>(Shape{5}, {1, 1, 1, 1, 1});
  ASSERT_TRUE(AddInPlace(x, y).ok());
  EXPECT_EQ(ToVector(y), (std::vector<float>{-1.0f, 0.5f, 1.0f, 1.5f, 4.0f}));
  EXPECT_FALSE(AddInPlace(Tensor::Allocate(DType::kF32, Shape{4}), y).ok());
}

TEST(Embedding, GathersScalesAndAddsPositions) {
  const Tensor table = RandomTensor(Shape{10, 6}, 1);
  absl::StatusOr<Tensor> positions = SinusoidalPositions(8, 6);
  ASSERT_TRUE(positions.ok());
  // PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...): spot checks.
  EXPECT_FLOAT_EQ(positions->data<float>()[0 * 6 + 1], 1.0f);
  EXPECT_NEAR(positions->data<float>()[3 * 6 + 0], std::sin(3.0), 1e-6);
  EXPECT_NEAR(positions->data<float>()[3 * 6 + 2], std::sin(3.0 / std::pow(10000.0, 2.0 / 6)),
              1e-6);
  EXPECT_NEAR(positions->data<float>()[5 * 6 + 5], std::cos(5.0 / std::pow(10000.0, 4.0 / 6)),
              1e-6);

  const std::vector<int32_t> ids = {3, 0, 9};
  const std::vector<int32_t> pos = {0, 1, 7};
  Tensor out;
  ASSERT_TRUE(EmbeddingLookup(table, ids, 2.0f, *positions, pos, out).ok());
  ASSERT_EQ(out.shape(), (Shape{3, 6}));
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 6; ++i) {
      EXPECT_FLOAT_EQ(out.data<float>()[r * 6 + i], table.data<float>()[ids[r] * 6 + i] * 2.0f +
                                                        positions->data<float>()[pos[r] * 6 + i]);
    }
  }
  ASSERT_TRUE(EmbeddingLookup(table, ids, 1.0f, Tensor(), {}, out).ok());
  EXPECT_EQ(out.data<float>()[0], table.data<float>()[18]);

  absl::Status bad_id =
      EmbeddingLookup(table, std::vector<int32_t>{1, 10}, 1.0f, Tensor(), {}, out);
  EXPECT_EQ(bad_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_id.message().find("token id 10 at row 1"), std::string::npos) << bad_id;
  EXPECT_FALSE(EmbeddingLookup(table, std::vector<int32_t>{-1}, 1.0f, Tensor(), {}, out).ok());
  EXPECT_FALSE(
      EmbeddingLookup(table, ids, 1.0f, *positions, std::vector<int32_t>{0, 1, 8}, out).ok());
  EXPECT_FALSE(EmbeddingLookup(table, ids, 1.0f, *positions, std::vector<int32_t>{0}, out).ok());
  EXPECT_FALSE(SinusoidalPositions(8, 5).ok());
  ASSERT_TRUE(EmbeddingLookup(table, {}, 1.0f, Tensor(), {}, out).ok());
  EXPECT_EQ(out.shape(), (Shape{0, 6}));
}

// A bf16 table (a bf16-stored model's, kept in bf16) gives what its exact f32 widening gives;
// a table of another dtype is refused, naming it.
TEST(Embedding, LooksUpBFloat16TablesExactly) {
  absl::StatusOr<Tensor> table16 = RandomTensor(Shape{10, 6}, 3).ConvertTo(DType::kBF16);
  ASSERT_TRUE(table16.ok());
  absl::StatusOr<Tensor> table32 = table16->ConvertTo(DType::kF32);
  ASSERT_TRUE(table32.ok());
  absl::StatusOr<Tensor> positions = SinusoidalPositions(8, 6);
  ASSERT_TRUE(positions.ok());
  const std::vector<int32_t> ids = {3, 0, 9, 3};
  const std::vector<int32_t> pos = {0, 1, 7, 2};
  for (const bool with_positions : {false, true}) {
    const Tensor& p = with_positions ? *positions : Tensor();
    const std::vector<int32_t> position_ids = with_positions ? pos : std::vector<int32_t>();
    Tensor from16, from32;
    ASSERT_TRUE(EmbeddingLookup(*table16, ids, 16.0f, p, position_ids, from16).ok());
    ASSERT_TRUE(EmbeddingLookup(*table32, ids, 16.0f, p, position_ids, from32).ok());
    EXPECT_EQ(ToVector(from16), ToVector(from32)) << "positions " << with_positions;
  }
  Tensor out;
  absl::Status bad =
      EmbeddingLookup(Tensor::Allocate(DType::kS8, Shape{10, 6}), ids, 1.0f, Tensor(), {}, out);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("table dtype"), std::string::npos) << bad;
}

TEST(TopK, SortedWithLowerIndexFirstOnTies) {
  const Tensor x = Tensor::FromVector<float>(
      Shape{2, 6}, {1.0f, 5.0f, 3.0f, 5.0f, -1.0f, 3.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f});
  Tensor values, indices;
  ASSERT_TRUE(TopK(x, 3, values, indices).ok());
  ASSERT_EQ(indices.shape(), (Shape{2, 3}));
  EXPECT_EQ(std::vector<int32_t>(indices.data<int32_t>(), indices.data<int32_t>() + 6),
            (std::vector<int32_t>{1, 3, 2, 0, 1, 2}));
  EXPECT_EQ(ToVector(values), (std::vector<float>{5, 5, 3, 0, 0, 0}));
  EXPECT_FALSE(TopK(x, 0, values, indices).ok());
  EXPECT_FALSE(TopK(x, 7, values, indices).ok());
}

TEST(TopK, MatchesSortOnLargeRows) {
  const int64_t n = 32003, k = 10;
  const Tensor x = RandomTensor(Shape{3, n}, 11);
  Tensor values, indices;
  ASSERT_TRUE(TopK(x, k, values, indices).ok());
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const float* row = x.data<float>() + r * n;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
    for (int64_t i = 0; i < k; ++i) EXPECT_EQ(indices.data<int32_t>()[r * k + i], order[i]);
  }
}

TEST(Quantize, RowsSymmetricWithinHalfAStep) {
  const int64_t rows = 4, cols = 37;
  std::vector<float> x = RandomVector(rows * cols, 3);
  for (int64_t c = 0; c < cols; ++c) x[2 * cols + c] = 0.0f;  // an all-zero row
  std::vector<int8_t> q(rows * cols);
  std::vector<float> scales(rows);
  QuantizeRowsSymmetric(x.data(), rows, cols, q.data(), scales.data());
  EXPECT_EQ(scales[2], 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float max_abs = 0;
    for (int64_t c = 0; c < cols; ++c) max_abs = std::max(max_abs, std::fabs(x[r * cols + c]));
    if (r != 2) {
      EXPECT_FLOAT_EQ(scales[r], max_abs / 127.0f);
    }
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_LE(std::fabs(q[r * cols + c] * scales[r] - x[r * cols + c]), scales[r] * 0.5f + 1e-7f);
      EXPECT_GE(q[r * cols + c], -127);
    }
  }
  // The form our int8 kernel reads: the same values plus 128, in rows of a wider stride whose
  // padding holds 128 (zero); the same scales. (cols > 32: the vectorised loop and its tail.)
  const int64_t ldq = cols + 3;
  std::vector<uint8_t> shifted(rows * ldq, 0);
  std::vector<float> shifted_scales(rows);
  QuantizeRowsSymmetricShifted(x.data(), rows, cols, shifted.data(), ldq, shifted_scales.data());
  EXPECT_EQ(shifted_scales, scales);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ldq; ++c) {
      EXPECT_EQ(shifted[r * ldq + c], c < cols ? q[r * cols + c] + 128 : 128) << r << "," << c;
    }
  }
  std::vector<BFloat16> bf(3);
  const float src[3] = {1.0f, -0.1f, 65504.0f};
  ConvertToBFloat16(src, 3, bf.data());
  EXPECT_EQ(BFloat16ToFloat(bf[0]), 1.0f);
  EXPECT_NEAR(BFloat16ToFloat(bf[1]), -0.1f, 1e-3);
}

}  // namespace
}  // namespace taskmoe::kernels

namespace taskmoe::kernels {
namespace {

TEST(FastExp, MatchesStdExpToSinglePrecision) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(FastExp(x) - exact) / exact);
  }
  EXPECT_LT(worst, 2e-7);
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_LT(FastExp(-1000.0f), 1e-37f);
  EXPECT_GE(FastExp(-1000.0f), 0.0f);
}

// Found by fuzz/model_load_fuzzer.cc (huge weights overflow to NaN logits): FastExp(NaN)
// converted NaN to an integer, which is undefined (UBSan: float-cast-overflow).
TEST(FastExp, NanGivesNan) {
  EXPECT_TRUE(std::isnan(FastExp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(FastExp(std::numeric_limits<float>::infinity()), FastExp(88.7f));
  std::vector<float> row = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f};
  SoftmaxRow(row.data(), static_cast<int64_t>(row.size()));  // NaN in, NaN out, no UB
  EXPECT_TRUE(std::isnan(row[1]));
}

// Found by fuzz/model_load_fuzzer.cc: int8 quantisation converted NaN (a NaN activation, or an
// infinite one times the zero inverse scale) to int8, which is undefined. It now gives 0.
TEST(QuantizeRowsSymmetric, NonFiniteValuesHaveADefinedResult) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float x[] = {nan, 1.0f, -2.0f, inf, 1.0f, -inf};
  int8_t q[6];
  float scales[2];
  QuantizeRowsSymmetric(x, 2, 3, q, scales);
  EXPECT_EQ(q[0], 0);  // NaN
  EXPECT_EQ(q[2], -127);
  EXPECT_EQ(q[3], 0);  // inf * (1 / inf)
  EXPECT_EQ(q[4], 0);
  EXPECT_EQ(q[5], 0);
  uint8_t shifted[6];
  QuantizeRowsSymmetricShifted(x, 2, 3, shifted, 3, scales);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(shifted[i], q[i] + 128) << i;
}

}  // namespace
}  // namespace taskmoe::kernels
