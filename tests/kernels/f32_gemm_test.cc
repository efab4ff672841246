// Our f32 GEMM's two weight packings and two tile sets (f32_gemm.h): weights that are all bf16
// values, packed in bf16, must give bit for bit the outputs of the f32 packing (every tile
// shape, tails, row blocks, thread counts, bias and activation), the 512-bit tiles those of the
// 256-bit ones, and PackedLinear must choose the bf16 packing exactly when it loses nothing.
// Against a naive reference: matmul_test.cc.
#include "kernels/f32_gemm.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/runtime.h"
#include "tests/kernels/reference.h"

namespace taskmoe::kernels {
namespace {

using testing::RandomVector;
using testing::RoundToBFloat16;

#define SKIP_WITHOUT_AVX2_FMA()                                                                 \
  if (absl::Status supported = CheckMatmulPathSupported(MatmulPath::kAvx2F32); !supported.ok()) \
  GTEST_SKIP() << supported.message()

TEST(F32Gemm, TellsWhetherEveryValueIsABFloat16Value) {
  std::vector<float> values = RoundToBFloat16(RandomVector(1000, 1));
  values.push_back(0.0f);
  values.push_back(-0.0f);
  values.push_back(std::numeric_limits<float>::infinity());
  EXPECT_TRUE(AllBFloat16Values(values.data(), static_cast<int64_t>(values.size())));
  EXPECT_TRUE(AllBFloat16Values(values.data(), 0));
  // One low bit set anywhere is enough to keep the f32 packing.
  uint32_t bits;
  std::memcpy(&bits, &values[517], sizeof(bits));
  bits |= 1u;
  std::memcpy(&values[517], &bits, sizeof(bits));
  EXPECT_FALSE(AllBFloat16Values(values.data(), static_cast<int64_t>(values.size())));
  EXPECT_TRUE(AllBFloat16Values(values.data(), 517));
  const float third = 1.0f / 3.0f;
  EXPECT_FALSE(AllBFloat16Values(&third, 1));
}

// Rows: every tile height (1-6), several strips per tile (1-3 rows), several tiles and row
// blocks (13, 121, 250; 500 rows split among threads by row blocks). Columns: inside one strip, a
// strip and a bit, many strips (62.5).
TEST(F32Gemm, BFloat16PackingGivesTheF32PackingsBits) {
  SKIP_WITHOUT_AVX2_FMA();
  const int saved_threads = NumThreads();
  for (const int64_t k : {1, 67, 256}) {
    for (const int64_t n : {5, 17, 1000}) {
      const std::vector<float> w = RoundToBFloat16(RandomVector(n * k, 7, 0.2f));
      ASSERT_TRUE(AllBFloat16Values(w.data(), n * k));
      std::vector<float> packed(F32GemmPackedFloats(n, k));
      std::vector<BFloat16> packed_bf16(F32GemmPackedBFloat16Values(n, k));
      PackF32GemmWeights(w.data(), n, k, packed.data());
      PackF32GemmWeightsAsBFloat16(w.data(), n, k, packed_bf16.data());
      const std::vector<float> bias = RandomVector(n, 8, 0.5f);
      for (const int64_t m : {1, 2, 3, 4, 5, 6, 7, 13, 121, 250, 500}) {
        const std::vector<float> a = RandomVector(m * k, 9);
        for (const int threads : {1, 2}) {
          ASSERT_TRUE(SetNumThreads(threads).ok());
          for (const Activation activation : {Activation::kNone, Activation::kGelu}) {
            F32GemmArgs args{.a = a.data(),
                             .lda = k,
                             .m = m,
                             .packed = packed.data(),
                             .n = n,
                             .k = k,
                             .bias = activation == Activation::kGelu ? bias.data() : nullptr,
                             .activation = activation,
                             .ldy = n};
            std::vector<float> from_f32(m * n), from_bf16(m * n);
            args.y = from_f32.data();
            F32Gemm(args);
            args.packed = nullptr;
            args.packed_bf16 = packed_bf16.data();
            args.y = from_bf16.data();
            F32Gemm(args);
            ASSERT_EQ(std::memcmp(from_f32.data(), from_bf16.data(), m * n * sizeof(float)), 0)
                << absl::StrCat("m=", m, " k=", k, " n=", n, " threads=", threads, " ",
                                ActivationName(activation));
          }
        }
      }
    }
  }
  ASSERT_TRUE(SetNumThreads(saved_threads).ok());
}

// The 512-bit tiles give the 256-bit tiles' bits, in both packings: every tile height (1-8),
// several strips per tile (8 for one row, 4 for two to six, 3 for seven or eight, and a group
// of 3 run by a shorter tile: 13 rows are tiles of 7 and 6), tails of a strip (masked
// stores), many tiles and row blocks, one and two threads, with and without bias and
// activation. A CPU without AVX-512 has only the AVX2 tiles to run.
TEST(F32Gemm, Avx512TilesGiveTheAvx2TilesBits) {
  SKIP_WITHOUT_AVX2_FMA();
  if (!CpuHasAvx512()) {
    GTEST_SKIP() << "no AVX-512 here (or ONEDNN_MAX_CPU_ISA caps it): " << CpuSummary();
  }
  const int saved_threads = NumThreads();
  for (const int64_t k : {1, 67, 256}) {
    for (const int64_t n : {5, 16, 17, 200, 1000}) {
      const std::vector<float> w = RoundToBFloat16(RandomVector(n * k, 17, 0.2f));
      std::vector<float> packed(F32GemmPackedFloats(n, k));
      std::vector<BFloat16> packed_bf16(F32GemmPackedBFloat16Values(n, k));
      PackF32GemmWeights(w.data(), n, k, packed.data());
      PackF32GemmWeightsAsBFloat16(w.data(), n, k, packed_bf16.data());
      const std::vector<float> bias = RandomVector(n, 18, 0.5f);
      for (const int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 16, 25, 121, 250, 500}) {
        const std::vector<float> a = RandomVector(m * k, 19);
        for (const int threads : {1, 2}) {
          ASSERT_TRUE(SetNumThreads(threads).ok());
          for (const bool bf16 : {false, true}) {
            const Activation activation = bf16 ? Activation::kRelu : Activation::kNone;
            F32GemmArgs args{.a = a.data(),
                             .lda = k,
                             .m = m,
                             .packed = bf16 ? nullptr : packed.data(),
                             .packed_bf16 = bf16 ? packed_bf16.data() : nullptr,
                             .n = n,
                             .k = k,
                             .bias = bf16 ? bias.data() : nullptr,
                             .activation = activation,
                             .ldy = n};
            std::vector<float> narrow(m * n), wide(m * n);
            args.y = narrow.data();
            F32Gemm(args, F32GemmTiles::kAvx2);
            args.y = wide.data();
            F32Gemm(args, F32GemmTiles::kAvx512);
            ASSERT_EQ(std::memcmp(narrow.data(), wide.data(), m * n * sizeof(float)), 0)
                << absl::StrCat("m=", m, " k=", k, " n=", n, " threads=", threads,
                                bf16 ? " bf16 packing" : " f32 packing");
          }
        }
      }
    }
  }
  ASSERT_TRUE(SetNumThreads(saved_threads).ok());
}

// The tiles add the bias and apply ReLU in registers (GELU after the store); the outputs are
// bit for bit those of the bare product followed by F32GemmFinishOutputs' order of operations
// (bias, then ApplyActivationInPlace), on whole tiles and on tiles cut by the last column.
TEST(F32Gemm, BiasAndActivationGiveTheBitsOfASecondPass) {
  SKIP_WITHOUT_AVX2_FMA();
  const std::vector<F32GemmTiles> tile_sets =
      CpuHasAvx512() ? std::vector<F32GemmTiles>{F32GemmTiles::kAvx2, F32GemmTiles::kAvx512}
                     : std::vector<F32GemmTiles>{F32GemmTiles::kAvx2};
  constexpr int64_t k = 67;
  for (const int64_t n : {16, 40, 64, 130}) {
    const std::vector<float> w = RoundToBFloat16(RandomVector(n * k, 27, 0.2f));
    std::vector<BFloat16> packed(F32GemmPackedBFloat16Values(n, k));
    PackF32GemmWeightsAsBFloat16(w.data(), n, k, packed.data());
    const std::vector<float> bias = RandomVector(n, 28, 0.5f);
    for (const int64_t m : {1, 2, 3, 6, 7, 13}) {
      std::vector<float> a = RandomVector(m * k, 29);
      a[0] = std::numeric_limits<float>::quiet_NaN();  // row 0 all NaN: ReLU keeps NaN
      for (const F32GemmTiles tiles : tile_sets) {
        for (const Activation activation :
             {Activation::kNone, Activation::kRelu, Activation::kGelu}) {
          for (const bool with_bias : {false, true}) {
            F32GemmArgs args{.a = a.data(),
                             .lda = k,
                             .m = m,
                             .packed_bf16 = packed.data(),
                             .n = n,
                             .k = k,
                             .ldy = n};
            std::vector<float> expected(m * n), fused(m * n);
            args.y = expected.data();
            F32Gemm(args, tiles);
            for (int64_t r = 0; r < m; ++r) {
              float* row = expected.data() + r * n;
              if (with_bias) {
                for (int64_t c = 0; c < n; ++c) row[c] += bias[c];
              }
              ApplyActivationInPlace(activation, row, n);
            }
            args.bias = with_bias ? bias.data() : nullptr;
            args.activation = activation;
            args.y = fused.data();
            F32Gemm(args, tiles);
            ASSERT_EQ(std::memcmp(expected.data(), fused.data(), m * n * sizeof(float)), 0)
                << absl::StrCat("m=", m, " n=", n, " ", ActivationName(activation),
                                with_bias ? " with bias" : "",
                                tiles == F32GemmTiles::kAvx512 ? " 512-bit" : " 256-bit");
          }
        }
      }
    }
  }
}

// A bf16-stored model's weights (and bf16_as_f32's rounded ones) take half the memory on our
// f32 kernel (and a cache line); weights with any value that is not a bf16 value keep f32.
TEST(F32Gemm, PackedLinearPacksBFloat16ValuesInHalfTheBytes) {
  SKIP_WITHOUT_AVX2_FMA();
  constexpr int64_t n = 96, k = 128;
  const std::vector<float> values = RandomVector(n * k, 11, 0.1f);
  Tensor f32 = Tensor::Allocate(DType::kF32, Shape{n, k});
  std::memcpy(f32.data<float>(), values.data(), values.size() * sizeof(float));
  absl::StatusOr<Tensor> bf16 = f32.ConvertTo(DType::kBF16);
  ASSERT_TRUE(bf16.ok());
  absl::StatusOr<PackedLinear> from_f32 = PackedLinear::Create(f32, Tensor(), MatmulPath::kAvx2F32);
  absl::StatusOr<PackedLinear> from_bf16 =
      PackedLinear::Create(*bf16, Tensor(), MatmulPath::kAvx2F32);
  absl::StatusOr<PackedLinear> rounded =
      PackedLinear::Create(f32, Tensor(), MatmulPath::kBF16AsF32);
  ASSERT_TRUE(from_f32.ok() && from_bf16.ok() && rounded.ok());
  EXPECT_EQ(from_f32->memory_bytes(), static_cast<size_t>(n * k * 4));
  // Half, and the bf16 packing's lead of one cache line (f32_gemm.h).
  EXPECT_EQ(from_bf16->memory_bytes(), static_cast<size_t>(n * k * 2 + 64));
  EXPECT_EQ(rounded->memory_bytes(), static_cast<size_t>(n * k * 2 + 64));
  const std::string tiles = DefaultF32GemmTiles() == F32GemmTiles::kAvx512 ? ", 512-bit tiles" : "";
  EXPECT_EQ(*from_f32->ImplementationName(1), "taskmoe:avx2_f32" + tiles);
  EXPECT_EQ(*from_bf16->ImplementationName(1), "taskmoe:avx2_f32, bf16 weights" + tiles);
  EXPECT_EQ(*rounded->ImplementationName(1), "taskmoe:bf16_as_f32, bf16 weights" + tiles);
}

// Where the f32 default is oneDNN's brgemm (AVX-512), a layer whose weights are all bf16
// values runs on our kernel, packed in bf16; weights with full f32 mantissas stay on the
// default. Elsewhere every f32 layer runs the default (our kernel on AVX2).
TEST(F32Gemm, F32LayersOfBFloat16ValuesRunOurKernel) {
  SKIP_WITHOUT_AVX2_FMA();
  constexpr int64_t n = 48, k = 32;
  const Tensor full = testing::RandomTensor(Shape{n, k}, 31, 0.1f);
  absl::StatusOr<Tensor> bf16 = full.ConvertTo(DType::kBF16);
  ASSERT_TRUE(bf16.ok());
  absl::StatusOr<Tensor> rounded = bf16->ConvertTo(DType::kF32);
  ASSERT_TRUE(rounded.ok());
  const MatmulPath f32_default = DefaultMatmulPath(Precision::kF32);
  const MatmulPath expected_for_bf16_values =
      f32_default == MatmulPath::kOneDnnF32 ? MatmulPath::kAvx2F32 : f32_default;
  for (const Tensor* weight : {&*bf16, &*rounded}) {
    absl::StatusOr<PackedLinear> linear = PackedLinear::Create(*weight, Tensor(), Precision::kF32);
    ASSERT_TRUE(linear.ok()) << linear.status();
    EXPECT_EQ(linear->path(), expected_for_bf16_values) << DTypeName(weight->dtype());
    if (linear->path() == MatmulPath::kAvx2F32) {
      EXPECT_EQ(linear->memory_bytes(), static_cast<size_t>(n * k * 2 + 64));
    }
  }
  absl::StatusOr<PackedLinear> linear = PackedLinear::Create(full, Tensor(), Precision::kF32);
  ASSERT_TRUE(linear.ok()) << linear.status();
  EXPECT_EQ(linear->path(), f32_default);
}

}  // namespace
}  // namespace taskmoe::kernels
