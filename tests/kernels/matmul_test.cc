// PackedLinear against a naive double-precision matmul, per precision, over odd shapes,
// with bias and fused activations; and its refusals of bad arguments.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_features.h"
#include "kernels/int8_gemm.h"
#include "kernels/quantize.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"
#include "tests/kernels/reference.h"

namespace taskmoe::kernels {
namespace {

using testing::NaiveLinear;
using testing::RandomTensor;
using testing::RoundToBFloat16;
using testing::ThreadSettingScope;
using testing::ToVector;
using testing::WorstToleranceRatio;

struct Problem {
  int64_t m, k, n;
};

// Weights scaled by 1/sqrt(K) keep outputs of unit size whatever K is, so one absolute
// tolerance fits every shape.
Tensor MakeWeight(int64_t n, int64_t k, uint32_t seed) {
  return RandomTensor(Shape{n, k}, seed, 1.0f / std::sqrt(static_cast<float>(k)));
}

// x and w as the int8 path sees them: quantised per row of x and per output channel of w,
// then dequantised. The int8 kernel multiplies exactly these values.
std::vector<float> QuantizeDequantizeRows(const std::vector<float>& values, int64_t rows,
                                          int64_t cols, int levels = 127) {
  std::vector<int8_t> q(values.size());
  std::vector<float> scales(rows);
  QuantizeRowsSymmetric(values.data(), rows, cols, q.data(), scales.data(), levels);
  std::vector<float> out(values.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = q[r * cols + c] * scales[r];
  }
  return out;
}

// Every path is tested wherever the CPU runs it; a path this CPU cannot run (e.g. oneDNN's bf16
// on AVX2) is skipped with the reason. ONEDNN_MAX_CPU_ISA=AVX2 makes any machine choose (and
// so test) what an AVX2-only CPU would; tools/test.sh runs the ASan suite that way.
#define SKIP_UNLESS_SUPPORTED(path)                                             \
  if (absl::Status supported = CheckMatmulPathSupported(path); !supported.ok()) \
  GTEST_SKIP() << supported.message()

class MatmulTest
    : public ::testing::TestWithParam<std::tuple<MatmulPath, Problem, Activation, bool>> {};

std::string MatmulTestName(
    const ::testing::TestParamInfo<std::tuple<MatmulPath, Problem, Activation, bool>>& param) {
  const auto& [path, problem, activation, bias] = param.param;
  return absl::StrCat(MatmulPathName(path), "_", problem.m, "x", problem.k, "x", problem.n, "_",
                      ActivationName(activation), bias ? "_bias" : "");
}

TEST_P(MatmulTest, MatchesNaiveReference) {
  const auto [path, problem, activation, with_bias] = GetParam();
  SKIP_UNLESS_SUPPORTED(path);
  const Precision precision = MatmulPathPrecision(path);
  const auto [m, k, n] = problem;
  const Tensor x = RandomTensor(Shape{m, k}, 1);
  const Tensor w = MakeWeight(n, k, 2);
  const Tensor b = with_bias ? RandomTensor(Shape{n}, 3, 0.5f) : Tensor();
  absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, b, path);
  ASSERT_TRUE(linear.ok()) << linear.status();
  Tensor y;
  ASSERT_TRUE(linear->Forward(x, activation, y).ok());
  ASSERT_EQ(y.shape(), (Shape{m, n}));

  std::vector<float> xs = ToVector(x), ws = ToVector(w);
  const std::vector<float> bs = with_bias ? ToVector(b) : std::vector<float>();
  // Tolerances: the same arithmetic as the kernel (inputs rounded as it rounds them) must
  // agree to f32 accumulation error; the low-precision paths must also stay near the exact
  // f32 answer, within their documented precision cost.
  double atol = 1e-4, rtol = 1e-4, exact_atol = 1e-4;
  if (precision == Precision::kBF16) {
    xs = RoundToBFloat16(xs);
    ws = RoundToBFloat16(ws);
    atol = rtol = 1e-3;
    exact_atol = 5e-2;
  } else if (precision == Precision::kInt8) {
    xs = QuantizeDequantizeRows(xs, m, k);
    // Our AVX2 kernel's weights have fewer levels (int8_gemm.h): 31 levels round four times as
    // coarsely as 127, and the worst output here strays up to about 0.12 from the exact answer
    // (within 0.1 with 127-level weights).
    const bool avx2 = path == MatmulPath::kAvx2Int8;
    ws = QuantizeDequantizeRows(ws, n, k, avx2 ? kInt8GemmAvx2WeightLevels : 127);
    atol = rtol = 1e-3;
    exact_atol = avx2 ? 2e-1 : 1e-1;
  }
  const std::vector<double> same_arithmetic = NaiveLinear(xs, ws, bs, m, k, n, activation);
  EXPECT_LE(WorstToleranceRatio(ToVector(y), same_arithmetic, atol, rtol), 1.0);
  const std::vector<double> exact = NaiveLinear(ToVector(x), ToVector(w), bs, m, k, n, activation);
  EXPECT_LE(WorstToleranceRatio(ToVector(y), exact, exact_atol, 0.0), 1.0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulTest,
    ::testing::Combine(::testing::ValuesIn(kAllMatmulPaths),
                       ::testing::Values(Problem{1, 64, 48}, Problem{3, 33, 17},
                                         Problem{17, 100, 250}, Problem{64, 512, 512},
                                         Problem{257, 96, 130}, Problem{100, 40, 24},
                                         Problem{1050, 40, 24}, Problem{2200, 40, 24}),
                       ::testing::Values(Activation::kNone, Activation::kRelu, Activation::kGelu),
                       ::testing::Bool()),
    MatmulTestName);

// The int8 paths multiply the same quantised values with exact integer sums, so they agree to
// the bit (all but avx2_int8, whose weights have 31 levels: MatchesNaiveReference checks it
// against that quantisation); f32 on oneDNN and on our kernel, and bf16 on oneDNN and emulated in
// f32, agree up to summation order. (oneDNN's int8 without brgemm, gemm:jit on AVX2, is left out:
// it shifts the inputs to u8 and vpmaddubsw's 16-bit pair sums then saturate, which made some
// outputs of this test wrong by 0.2-0.6.)
TEST(Matmul, PathsOfOnePrecisionAgree) {
  for (const Problem problem : {Problem{1, 512, 1000}, Problem{6, 35, 41}, Problem{40, 256, 72}}) {
    const auto [m, k, n] = problem;
    const Tensor x = RandomTensor(Shape{m, k}, 11);
    const Tensor w = MakeWeight(n, k, 12);
    const Tensor b = RandomTensor(Shape{n}, 13, 0.5f);
    std::vector<float> int8_first, bf16_first, f32_first;
    for (MatmulPath path : kAllMatmulPaths) {
      if (!CheckMatmulPathSupported(path).ok()) continue;
      if (path == MatmulPath::kOneDnnInt8 && !OneDnnHasInt8Brgemm()) continue;
      absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, b, path);
      ASSERT_TRUE(linear.ok()) << linear.status();
      Tensor y;
      ASSERT_TRUE(linear->Forward(x, Activation::kRelu, y).ok());
      const std::vector<float> got = ToVector(y);
      if (path == MatmulPath::kAvx2Int8) continue;
      if (MatmulPathPrecision(path) == Precision::kInt8) {
        if (int8_first.empty()) {
          int8_first = got;
        } else {
          EXPECT_EQ(got, int8_first) << MatmulPathName(path) << " M=" << m;
        }
      } else {
        std::vector<float>& first =
            MatmulPathPrecision(path) == Precision::kBF16 ? bf16_first : f32_first;
        if (first.empty()) {
          first = got;
        } else {
          const std::vector<double> reference(first.begin(), first.end());
          EXPECT_LE(WorstToleranceRatio(got, reference, 1e-5, 1e-5), 1.0) << MatmulPathName(path);
        }
      }
    }
  }
}

// The default path per precision is the fastest one this CPU runs, and a path it cannot run is
// refused with a message naming the missing instruction set, never an INTERNAL oneDNN error.
TEST(Matmul, ChoosesPathsThisCpuRuns) {
  for (Precision p : {Precision::kF32, Precision::kBF16, Precision::kInt8}) {
    const MatmulPath path = DefaultMatmulPath(p);
    EXPECT_EQ(MatmulPathPrecision(path), p);
    EXPECT_TRUE(CheckMatmulPathSupported(path).ok()) << MatmulPathName(path);
  }
  EXPECT_EQ(DefaultMatmulPath(Precision::kBF16),
            CpuBF16OutrunsF32() ? MatmulPath::kOneDnnBF16 : MatmulPath::kBF16AsF32);
  if (!OneDnnHasBF16Matmul()) {
    EXPECT_FALSE(CpuBF16OutrunsF32());
  }
  const std::string isa = CpuIsaName();
  if (isa == "avx512_core" || isa == "avx512_core_vnni" || isa.starts_with("avx2")) {
    // oneDNN 2.6 emulates bf16 on plain AVX-512, at under half f32's speed: not a bf16 matmul.
    EXPECT_FALSE(OneDnnHasBF16Matmul()) << CpuSummary();
  }
  EXPECT_EQ(CpuHasAvx512(), isa.starts_with("avx512")) << CpuSummary();
  if (!OneDnnHasInt8Brgemm() && CpuHasAvx2()) {
    // Not oneDNN's gemm:jit, which repacks the weights at every call.
    EXPECT_NE(DefaultMatmulPath(Precision::kInt8), MatmulPath::kOneDnnInt8);
  }
  EXPECT_EQ(DefaultMatmulPath(Precision::kF32),
            !OneDnnHasF32Brgemm() && CpuHasAvx2() ? MatmulPath::kAvx2F32 : MatmulPath::kOneDnnF32);
  // A path this CPU lacks is refused with FailedPrecondition naming the instruction set.
  auto expect_refused = [](MatmulPath path, const std::string& naming) {
    absl::StatusOr<PackedLinear> refused =
        PackedLinear::Create(MakeWeight(8, 16, 1), Tensor(), path);
    ASSERT_FALSE(refused.ok()) << MatmulPathName(path);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
    EXPECT_NE(refused.status().message().find(naming), std::string::npos) << refused.status();
  };
  if (!OneDnnHasBF16Matmul()) {
    expect_refused(MatmulPath::kOneDnnBF16, "AVX512-BF16");
    expect_refused(MatmulPath::kOneDnnBF16, CpuIsaName());
  }
  if (!CpuHasAvxVnni()) expect_refused(MatmulPath::kAvxVnniInt8, "AVX-VNNI");
  if (!CpuHasAvx512Vnni()) expect_refused(MatmulPath::kAvx512VnniInt8, "AVX-512 VNNI");
  for (MatmulPath path : kAllMatmulPaths) {
    EXPECT_EQ(*ParseMatmulPath(MatmulPathName(path)), path);
  }
  EXPECT_FALSE(ParseMatmulPath("avx9_int8").ok());
  EXPECT_FALSE(CpuModelName().empty());
  EXPECT_NE(CpuSummary().find(CpuIsaName()), std::string::npos);
}

TEST(Matmul, AcceptsHigherRankInputAndKeepsLeadingDims) {
  const Tensor x = RandomTensor(Shape{2, 5, 16}, 4);
  absl::StatusOr<PackedLinear> linear =
      PackedLinear::Create(MakeWeight(8, 16, 5), Tensor(), Precision::kF32);
  ASSERT_TRUE(linear.ok());
  Tensor y;
  ASSERT_TRUE(linear->Forward(x, Activation::kNone, y).ok());
  EXPECT_EQ(y.shape(), (Shape{2, 5, 8}));
}

TEST(Matmul, EmptyBatchGivesEmptyOutput) {
  for (Precision p : {Precision::kF32, Precision::kBF16, Precision::kInt8}) {
    absl::StatusOr<PackedLinear> linear = PackedLinear::Create(MakeWeight(8, 16, 5), Tensor(), p);
    ASSERT_TRUE(linear.ok());
    Tensor y;
    ASSERT_TRUE(
        linear->Forward(Tensor::Allocate(DType::kF32, Shape{0, 16}), Activation::kRelu, y).ok());
    EXPECT_EQ(y.shape(), (Shape{0, 8}));
  }
}

TEST(Matmul, AcceptsBFloat16Weights) {
  const Tensor w = MakeWeight(24, 40, 6);
  absl::StatusOr<Tensor> w16 = w.ConvertTo(DType::kBF16);
  ASSERT_TRUE(w16.ok());
  absl::StatusOr<PackedLinear> from16 = PackedLinear::Create(*w16, Tensor(), Precision::kF32);
  ASSERT_TRUE(from16.ok());
  const Tensor x = RandomTensor(Shape{4, 40}, 7);
  Tensor y;
  ASSERT_TRUE(from16->Forward(x, Activation::kNone, y).ok());
  const std::vector<double> expected =
      NaiveLinear(ToVector(x), RoundToBFloat16(ToVector(w)), {}, 4, 40, 24, Activation::kNone);
  EXPECT_LE(WorstToleranceRatio(ToVector(y), expected, 1e-4, 1e-4), 1.0);
}

TEST(Matmul, RefusesBadArguments) {
  const Tensor w = MakeWeight(8, 16, 5);
  EXPECT_FALSE(
      PackedLinear::Create(Tensor::Allocate(DType::kF32, Shape{2, 3, 4}), Tensor(), Precision::kF32)
          .ok());
  EXPECT_FALSE(
      PackedLinear::Create(Tensor::Allocate(DType::kS8, Shape{8, 16}), Tensor(), Precision::kF32)
          .ok());
  EXPECT_FALSE(
      PackedLinear::Create(Tensor::Allocate(DType::kF32, Shape{0, 16}), Tensor(), Precision::kF32)
          .ok());
  EXPECT_FALSE(PackedLinear::Create(w, RandomTensor(Shape{7}, 1), Precision::kF32).ok());

  absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, Tensor(), Precision::kBF16);
  ASSERT_TRUE(linear.ok());
  Tensor y;
  absl::Status wrong_width = linear->Forward(RandomTensor(Shape{3, 15}, 1), Activation::kNone, y);
  EXPECT_EQ(wrong_width.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_width.message().find("[3, 15]"), std::string::npos) << wrong_width;
  EXPECT_FALSE(
      linear->Forward(Tensor::Allocate(DType::kS32, Shape{3, 16}), Activation::kNone, y).ok());
  EXPECT_FALSE(linear->Forward(Tensor(), Activation::kNone, y).ok());
}

TEST(Matmul, ParsesNames) {
  EXPECT_EQ(*ParsePrecision("int8"), Precision::kInt8);
  EXPECT_EQ(*ParsePrecision("bf16"), Precision::kBF16);
  EXPECT_FALSE(ParsePrecision("fp64").ok());
  EXPECT_EQ(*ParseActivation("gelu"), Activation::kGelu);
  EXPECT_FALSE(ParseActivation("swish").ok());
}

// The same weights used from several threads at once (as server workers do) give the same
// results as from one thread: caches are per thread and the packed weights are read-only.
TEST(Matmul, ConcurrentCallersAgree) {
  for (MatmulPath path : kAllMatmulPaths) {
    if (!CheckMatmulPathSupported(path).ok()) continue;
    absl::StatusOr<PackedLinear> linear =
        PackedLinear::Create(MakeWeight(64, 128, 8), RandomTensor(Shape{64}, 9), path);
    ASSERT_TRUE(linear.ok());
    std::vector<Tensor> inputs, expected(4), actual(4);
    for (int i = 0; i < 4; ++i) {
      inputs.push_back(RandomTensor(Shape{i * 7 + 1, 128}, 10 + i));
      ASSERT_TRUE(linear->Forward(inputs[i], Activation::kRelu, expected[i]).ok());
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        for (int repeat = 0; repeat < 20; ++repeat) {
          ASSERT_TRUE(linear->Forward(inputs[i], Activation::kRelu, actual[i]).ok());
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(ToVector(actual[i]), ToVector(expected[i]));
  }
}

// oneDNN weights are split into column panels, about two per thread, in multiples of 64
// columns, that the team's threads run as single-threaded matmuls: whichever thread runs a
// panel, and however many panels there are, every call gives the same outputs, and those of
// one thread up to summation order. (Two threads running one primitive once shared oneDNN's
// scratch memory and returned wrong outputs in most calls; the repeats catch that.)
TEST(Matmul, ColumnPanelsGiveTheSameOutputsOnAnyThreadCount) {
  constexpr int64_t k = 64, n = 1000;
  const Tensor w = MakeWeight(n, k, 21);
  const Tensor b = RandomTensor(Shape{n}, 22, 0.5f);
  for (MatmulPath path : kAllMatmulPaths) {
    if (!CheckMatmulPathSupported(path).ok()) continue;
    if (absl::StatusOr<PackedLinear> probe = PackedLinear::Create(w, b, path);
        !probe.ok() || probe->ImplementationName(1)->starts_with("taskmoe:")) {
      continue;  // our own kernels: OwnKernelsComputeEachRowAloneOnAnyThreadCount
    }
    std::vector<std::vector<float>> one_thread;
    // Panel widths: all of W; 1000 / 4 -> 256 (256 x 3 + 232); 1000 / 6 -> 192 (192 x 5 + 40).
    for (const auto& [threads, panels] : {std::pair{1, 1}, std::pair{2, 4}, std::pair{3, 6}}) {
      ThreadSettingScope setting(threads);
      absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, b, path);
      ASSERT_TRUE(linear.ok()) << linear.status();
      const std::string impl = *linear->ImplementationName(8);
      if (panels > 1 && impl.find("ref") == std::string::npos) {
        EXPECT_NE(impl.find(absl::StrCat(", ", panels, " column panels")), std::string::npos)
            << MatmulPathName(path) << " threads=" << threads << ": " << impl;
      }
      int case_index = 0;
      for (int64_t m : {1, 38, 300}) {
        const Tensor x = RandomTensor(Shape{m, k}, 23 + static_cast<uint32_t>(m));
        Tensor first, again;
        ASSERT_TRUE(linear->Forward(x, Activation::kRelu, first).ok());
        const std::vector<float> expected = ToVector(first);
        for (int repeat = 0; repeat < 50; ++repeat) {
          ASSERT_TRUE(linear->Forward(x, Activation::kRelu, again).ok());
          ASSERT_EQ(ToVector(again), expected)
              << MatmulPathName(path) << " threads=" << threads << " M=" << m << " call " << repeat;
        }
        if (threads == 1) {
          one_thread.push_back(expected);
        } else {
          const std::vector<double> reference(one_thread[case_index].begin(),
                                              one_thread[case_index].end());
          EXPECT_LE(WorstToleranceRatio(expected, reference, 1e-5, 1e-5), 1.0)
              << MatmulPathName(path) << " threads=" << threads << " M=" << m;
        }
        ++case_index;
      }
    }
  }
}

// Our own kernels (f32_gemm.h, int8_gemm.h) compute each output as one chain over the inputs
// whatever the tile, so a row's outputs are bitwise those it gets alone, at every batch size
// (tiles of 1-8 rows, several strips or column tiles side by side, 120-row blocks, products of many
// blocks split among the threads by rows) and thread count, on either tile set: what keeps a
// sentence's translation the same alone and in any batch.
TEST(Matmul, OwnKernelsComputeEachRowAloneOnAnyThreadCount) {
  constexpr int64_t k = 67, n = 1000, most_rows = 500;  // n: 62.5 strips of 16 columns
  constexpr int64_t kBatchRows[] = {2, 3, 4, 5, 7, 8, 13, 16, 32, 64, 121, most_rows};
  const Tensor w = MakeWeight(n, k, 31);
  const Tensor b = RandomTensor(Shape{n}, 32, 0.5f);
  const Tensor x = RandomTensor(Shape{most_rows, k}, 33);
  for (MatmulPath path : {MatmulPath::kAvx2F32, MatmulPath::kBF16AsF32, MatmulPath::kAvx2Int8,
                          MatmulPath::kAvxVnniInt8, MatmulPath::kAvx512VnniInt8}) {
    if (!CheckMatmulPathSupported(path).ok()) continue;
    absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, b, path);
    ASSERT_TRUE(linear.ok()) << linear.status();
    ASSERT_TRUE(linear->ImplementationName(1)->starts_with("taskmoe:")) << MatmulPathName(path);
    std::vector<std::vector<float>> alone(most_rows);
    for (int64_t r = 0; r < most_rows; ++r) {
      Tensor row = Tensor::Allocate(DType::kF32, Shape{1, k}), y;
      std::copy_n(x.data<float>() + r * k, k, row.data<float>());
      ASSERT_TRUE(linear->Forward(row, Activation::kGelu, y).ok());
      alone[r] = ToVector(y);
    }
    for (int threads : {1, 2, 3}) {
      ThreadSettingScope setting(threads);
      for (int64_t m : kBatchRows) {
        Tensor batch = Tensor::Allocate(DType::kF32, Shape{m, k}), y;
        std::copy_n(x.data<float>(), m * k, batch.data<float>());
        ASSERT_TRUE(linear->Forward(batch, Activation::kGelu, y).ok());
        const std::vector<float> got = ToVector(y);
        for (int64_t r = 0; r < m; ++r) {
          ASSERT_TRUE(std::equal(alone[r].begin(), alone[r].end(), got.begin() + r * n))
              << MatmulPathName(path) << " threads=" << threads << " M=" << m << " row " << r;
        }
      }
    }
  }
}

// The packed layout must let oneDNN pick an optimised kernel at every batch size; its
// reference ("ref") implementation would be correct but orders of magnitude slower.
TEST(Matmul, UsesOptimisedImplementations) {
  for (Precision p : {Precision::kF32, Precision::kBF16, Precision::kInt8}) {
    // The demo model's head (256 -> 16000) once ran oneDNN's reference int8 kernel with AMX.
    absl::StatusOr<PackedLinear> head =
        PackedLinear::Create(MakeWeight(16000, 256, 1), Tensor(), p);
    ASSERT_TRUE(head.ok());
    EXPECT_FALSE(head->RunsReferenceKernel())
        << PrecisionName(p) << " " << *head->ImplementationName(1);
    absl::StatusOr<PackedLinear> linear =
        PackedLinear::Create(MakeWeight(512, 512, 1), Tensor(), p);
    ASSERT_TRUE(linear.ok());
    for (int64_t m : {1, 7, 32, 256}) {
      absl::StatusOr<std::string> impl = linear->ImplementationName(m);
      ASSERT_TRUE(impl.ok());
      EXPECT_EQ(impl->find("ref"), std::string::npos)
          << PrecisionName(p) << " M=" << m << " " << *impl;
      // With AVX-512 (VNNI, BF16) f32 and bf16 must run oneDNN's brgemm kernels on prepacked
      // weights, and int8 our kernel's 512-bit form, or brgemm with AMX (int8 once fell back
      // to oneDNN's gemm:jit, which repacks the weights per call); bf16 runs our f32 kernel
      // where bf16 arithmetic is slower than f32 (CpuBF16OutrunsF32). Without them (AVX2),
      // every precision runs our own kernels on weights packed once.
      if (p == Precision::kBF16 && DefaultMatmulPath(p) == MatmulPath::kBF16AsF32) {
        EXPECT_EQ(impl->rfind("taskmoe:bf16_as_f32", 0), 0u) << " M=" << m << " " << *impl;
      } else if (p == Precision::kInt8 && DefaultMatmulPath(p) != MatmulPath::kOneDnnInt8) {
        EXPECT_EQ(*impl, absl::StrCat("taskmoe:", MatmulPathName(DefaultMatmulPath(p))));
        if (CpuHasAvx512Vnni()) {
          EXPECT_EQ(DefaultMatmulPath(p), MatmulPath::kAvx512VnniInt8);
        }
      } else if (std::string(CpuIsaName()).starts_with("avx512_core_")) {
        EXPECT_EQ(impl->rfind("brg", 0), 0u) << PrecisionName(p) << " M=" << m << " " << *impl;
      } else if (!std::string(CpuIsaName()).starts_with("avx512") && CpuHasAvx2()) {
        EXPECT_EQ(impl->rfind("taskmoe:", 0), 0u) << PrecisionName(p) << " M=" << m << " " << *impl;
      }
    }
  }
}

// The greedy head (ArgMaxAndLogSumExp fused into the linear, int8 dequantising inside the
// reduction) against Forward followed by ArgMaxAndLogSumExp, per precision.
TEST(Matmul, ArgMaxAndLogSumExpHeadMatchesForward) {
  for (MatmulPath path : kAllMatmulPaths) {
    if (!CheckMatmulPathSupported(path).ok()) continue;
    // With more than one thread oneDNN's weights are column panels, each reduced on the
    // thread that computed it and merged per row; 300 rows are a 256-row block and a padded
    // remainder.
    for (const Problem problem : {Problem{1, 64, 3000}, Problem{5, 96, 1100}, Problem{70, 32, 513},
                                  Problem{300, 32, 2100}}) {
      const auto [m, k, n] = problem;
      absl::StatusOr<PackedLinear> linear =
          PackedLinear::Create(MakeWeight(n, k, 4), RandomTensor(Shape{n}, 5, 0.5f), path);
      ASSERT_TRUE(linear.ok());
      const Tensor x = RandomTensor(Shape{m, k}, 6, 2.0f);
      Tensor y, want_best, want_lse;
      ASSERT_TRUE(linear->Forward(x, Activation::kNone, y).ok());
      ASSERT_TRUE(ArgMaxAndLogSumExp(y, want_best, want_lse).ok());
      Tensor products, best, max, lse;
      ASSERT_TRUE(linear->ForwardArgMaxAndLogSumExp(x, products, best, max, lse).ok());
      ASSERT_EQ(best.shape(), Shape{m});
      for (int64_t r = 0; r < m; ++r) {
        const float* row = y.data<float>() + r * n;
        const int32_t got = best.data<int32_t>()[r];
        ASSERT_GE(got, 0);
        ASSERT_LT(got, n);
        // The same products, dequantised in another order: equal up to rounding, so a
        // near-tie may flip; the chosen value must then still be the maximum.
        EXPECT_NEAR(row[got], row[want_best.data<int32_t>()[r]], 1e-5f)
            << MatmulPathName(path) << " row " << r;
        EXPECT_NEAR(max.data<float>()[r], row[got], 1e-5f * (1 + std::fabs(row[got])));
        EXPECT_NEAR(lse.data<float>()[r], want_lse.data<float>()[r],
                    1e-5f * (1 + std::fabs(want_lse.data<float>()[r])))
            << MatmulPathName(path) << " row " << r;
      }
      // Without the log-sum-exp (a decoder that reports no scores): the same arg-max and max,
      // bit for bit, and the max in place of the log-sum-exp.
      Tensor no_lse_best, no_lse_max, no_lse;
      ASSERT_TRUE(linear
                      ->ForwardArgMaxAndLogSumExp(x, products, no_lse_best, no_lse_max, no_lse,
                                                  GreedyLogSumExp::kNone)
                      .ok());
      ASSERT_EQ(no_lse_best.shape(), Shape{m});
      ASSERT_EQ(no_lse.shape(), Shape{m});
      for (int64_t r = 0; r < m; ++r) {
        EXPECT_EQ(no_lse_best.data<int32_t>()[r], best.data<int32_t>()[r])
            << MatmulPathName(path) << " row " << r;
        EXPECT_EQ(std::memcmp(no_lse_max.data<float>() + r, max.data<float>() + r, sizeof(float)),
                  0);
        EXPECT_EQ(std::memcmp(no_lse.data<float>() + r, max.data<float>() + r, sizeof(float)), 0);
      }
    }
  }
  absl::StatusOr<PackedLinear> linear =
      PackedLinear::Create(MakeWeight(8, 4, 1), Tensor(), Precision::kInt8);
  ASSERT_TRUE(linear.ok());
  Tensor products, best, max, lse;
  EXPECT_FALSE(
      linear->ForwardArgMaxAndLogSumExp(RandomTensor(Shape{2, 5}, 1), products, best, max, lse)
          .ok());
  const absl::Status no_scores = linear->ForwardArgMaxAndLogSumExp(
      RandomTensor(Shape{2, 5}, 1), products, best, max, lse, GreedyLogSumExp::kNone);
  EXPECT_EQ(no_scores.code(), absl::StatusCode::kInvalidArgument) << no_scores;
  ASSERT_TRUE(linear
                  ->ForwardArgMaxAndLogSumExp(Tensor::Allocate(DType::kF32, Shape{0, 4}), products,
                                              best, max, lse)
                  .ok());
  EXPECT_EQ(best.shape(), Shape{0});
}

// Our f32 kernel's greedy head reduces fixed chunks of columns from cache and merges them:
// a row's argmax, maximum and log-sum-exp are bitwise those it gets alone, at every batch
// size and thread count (beam search ranks hypotheses by them).
TEST(Matmul, OwnF32HeadReducesEachRowAsAlone) {
  constexpr int64_t k = 48, n = 2100, most_rows = 500;  // n: two chunks and a part
  const Tensor w = MakeWeight(n, k, 41);
  const Tensor b = RandomTensor(Shape{n}, 42, 0.5f);
  const Tensor x = RandomTensor(Shape{most_rows, k}, 43, 2.0f);
  for (MatmulPath path : {MatmulPath::kAvx2F32, MatmulPath::kBF16AsF32}) {
    if (!CheckMatmulPathSupported(path).ok()) continue;
    absl::StatusOr<PackedLinear> linear = PackedLinear::Create(w, b, path);
    ASSERT_TRUE(linear.ok()) << linear.status();
    struct Head {
      int32_t best;
      float max, lse;
    };
    std::vector<Head> alone(most_rows);
    for (int64_t r = 0; r < most_rows; ++r) {
      Tensor row = Tensor::Allocate(DType::kF32, Shape{1, k}), products, best, max, lse;
      std::copy_n(x.data<float>() + r * k, k, row.data<float>());
      ASSERT_TRUE(linear->ForwardArgMaxAndLogSumExp(row, products, best, max, lse).ok());
      alone[r] = {best.data<int32_t>()[0], max.data<float>()[0], lse.data<float>()[0]};
    }
    for (int threads : {1, 2, 3}) {
      ThreadSettingScope setting(threads);
      for (int64_t m : {int64_t{2}, int64_t{7}, int64_t{32}, int64_t{130}, most_rows}) {
        Tensor batch = Tensor::Allocate(DType::kF32, Shape{m, k}), products, best, max, lse;
        std::copy_n(x.data<float>(), m * k, batch.data<float>());
        ASSERT_TRUE(linear->ForwardArgMaxAndLogSumExp(batch, products, best, max, lse).ok());
        for (int64_t r = 0; r < m; ++r) {
          ASSERT_EQ(best.data<int32_t>()[r], alone[r].best) << "M=" << m << " row " << r;
          ASSERT_EQ(std::memcmp(max.data<float>() + r, &alone[r].max, sizeof(float)), 0);
          ASSERT_EQ(std::memcmp(lse.data<float>() + r, &alone[r].lse, sizeof(float)), 0)
              << MatmulPathName(path) << " threads=" << threads << " M=" << m << " row " << r;
        }
      }
    }
  }
}

TEST(Matmul, ReportsMemory) {
  absl::StatusOr<PackedLinear> f32 =
      PackedLinear::Create(MakeWeight(64, 128, 1), RandomTensor(Shape{64}, 2), Precision::kF32);
  absl::StatusOr<PackedLinear> int8 =
      PackedLinear::Create(MakeWeight(64, 128, 1), RandomTensor(Shape{64}, 2), Precision::kInt8);
  ASSERT_TRUE(f32.ok() && int8.ok());
  EXPECT_GE(f32->memory_bytes(), 64u * 128 * 4);
  // s8 weights (blocked, with oneDNN's s8 x s8 compensation and padding), scales and bias.
  EXPECT_GE(int8->memory_bytes(), 64u * 128 + 64 * 4 + 64 * 4);
  EXPECT_LT(int8->memory_bytes(), f32->memory_bytes() / 2);
}

}  // namespace
}  // namespace taskmoe::kernels
