// The CPU budget (cgroup quota and affinity parsing) and our int8 GEMM on its own, against a
// naive integer product, on each instruction set this CPU has.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "kernels/bf16_dot_rate.h"
#include "kernels/cpu_budget.h"
#include "kernels/cpu_features.h"
#include "kernels/int8_gemm.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

TEST(CpuBudget, ParsesCgroupV2CpuMax) {
  EXPECT_EQ(ParseCgroupV2CpuMax("max 100000\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("150000 100000\n"), 1.5);
  EXPECT_EQ(ParseCgroupV2CpuMax("50000 100000"), 0.5);
  EXPECT_EQ(ParseCgroupV2CpuMax(""), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("abc 100000"), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("100000 0"), std::nullopt);
  EXPECT_EQ(ParseCgroupV2CpuMax("100000"), std::nullopt);
}

TEST(CpuBudget, ParsesCgroupV1Quota) {
  EXPECT_EQ(ParseCgroupV1Quota("-1\n", "100000\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupV1Quota("200000\n", "100000\n"), 2.0);
  EXPECT_EQ(ParseCgroupV1Quota("x", "100000"), std::nullopt);
}

// A fake /sys/fs/cgroup: the process's own cgroup (from /proc/self/cgroup's line) and its
// ancestors are read, and the smallest quota among them wins.
TEST(CpuBudget, ReadsQuotaFilesOfTheProcessCgroupAndItsAncestors) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("cpu_budget_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "cpu" / "pod" / "app");
  const std::string v1 = "5:cpu,cpuacct:/pod/app\n4:memory:/pod/app\n";
  EXPECT_EQ(CgroupCpuQuota(dir.string(), v1), std::nullopt);  // no files: no quota
  std::ofstream(dir / "cpu" / "pod" / "app" / "cpu.cfs_quota_us") << "-1\n";
  std::ofstream(dir / "cpu" / "pod" / "app" / "cpu.cfs_period_us") << "100000\n";
  EXPECT_EQ(CgroupCpuQuota(dir.string(), v1), std::nullopt);
  std::ofstream(dir / "cpu" / "pod" / "cpu.cfs_quota_us") << "250000\n";
  std::ofstream(dir / "cpu" / "pod" / "cpu.cfs_period_us") << "100000\n";
  EXPECT_EQ(CgroupCpuQuota(dir.string(), v1), 2.5);
  std::ofstream(dir / "cpu" / "pod" / "app" / "cpu.cfs_quota_us") << "150000\n";
  EXPECT_EQ(CgroupCpuQuota(dir.string(), v1), 1.5);

  std::filesystem::create_directories(dir / "v2" / "kubepods" / "pod1");
  const std::string v2 = "0::/kubepods/pod1\n";
  const std::string v2_root = (dir / "v2").string();
  EXPECT_EQ(CgroupCpuQuota(v2_root, v2), std::nullopt);
  std::ofstream(dir / "v2" / "kubepods" / "pod1" / "cpu.max") << "max 100000\n";
  EXPECT_EQ(CgroupCpuQuota(v2_root, v2), std::nullopt);
  std::ofstream(dir / "v2" / "kubepods" / "cpu.max") << "300000 100000\n";
  EXPECT_EQ(CgroupCpuQuota(v2_root, v2), 3.0);
  std::ofstream(dir / "v2" / "kubepods" / "pod1" / "cpu.max") << "50000 100000\n";
  EXPECT_EQ(CgroupCpuQuota(v2_root, v2), 0.5);
  EXPECT_EQ(CgroupCpuQuota(v2_root, "garbage"), std::nullopt);
  std::filesystem::remove_all(dir);
}

TEST(CpuBudget, DefaultThreadsWithinAffinity) {
  EXPECT_GE(DefaultComputeThreads(), 1);
  EXPECT_LE(DefaultComputeThreads(), AffinityCpuCount());
  EXPECT_NE(DescribeComputeThreadBudget().find("affinity"), std::string::npos);
}

// The vdpbf16ps / FMA probe behind the bf16 path's choice: where the CPU has AVX512-BF16 it
// reports a plausible ratio (0.6 on Intel Emerald Rapids, about 2 expected on AMD Zen 4/5) and the
// summary names it; elsewhere the probe never runs and bf16 arithmetic never counts as faster.
TEST(CpuFeatures, MeasuresBF16DotRateWhereTheCpuHasIt) {
  const std::string isa = CpuIsaName();
  if (isa != "avx512_core_bf16" && isa != "avx512_core_amx") {
    EXPECT_EQ(CpuSummary().find("bf16_dot_rate"), std::string::npos) << CpuSummary();
    EXPECT_FALSE(CpuBF16OutrunsF32());
    GTEST_SKIP() << "no AVX512-BF16 here (or ONEDNN_MAX_CPU_ISA caps it): " << CpuSummary();
  }
  const double ratio = BF16DotToFmaRatio();
  EXPECT_GT(ratio, 0.2);
  EXPECT_LT(ratio, 4.0);
  EXPECT_NE(CpuSummary().find("bf16_dot_rate="), std::string::npos) << CpuSummary();
  if (isa == "avx512_core_bf16") {
    EXPECT_EQ(CpuBF16OutrunsF32(), ratio >= 1.5) << ratio;
  }
}

struct GemmShape {
  int64_t m, k, n;
};

// Naive s32 sums of products, as floats.
std::vector<float> NaiveInt8Product(const std::vector<int8_t>& a, const std::vector<int8_t>& w,
                                    int64_t m, int64_t k, int64_t n) {
  std::vector<float> y(m * n);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      int64_t sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += int64_t{a[r * k + i]} * w[c * k + i];
      y[r * n + c] = static_cast<float>(sum);
    }
  }
  return y;
}

// Exact agreement (the sums are integers well within float's 24 bits), including the extreme
// values: inputs +-127 (shifted to unsigned: 1 and 255) and weights +-127 (+-31 in the AVX2
// form, whose two groups' vpmaddubsw pair sums then reach 2 * 2 * 255 * 31 without saturating),
// odd shapes (inputs not a multiple of 4 or of 8, so that the AVX2 form's last group of 4 goes
// alone; columns not a multiple of 8 or 16; rows not a multiple of 4) and a row stride wider
// than the row.
TEST(Int8Gemm, MatchesNaiveIntegerProduct) {
  std::vector<Int8GemmIsa> isas;
  if (CpuHasAvx2()) isas.push_back(Int8GemmIsa::kAvx2);
  if (CpuHasAvxVnni()) isas.push_back(Int8GemmIsa::kAvxVnni);
  if (CpuHasAvx512Vnni()) isas.push_back(Int8GemmIsa::kAvx512Vnni);
  if (isas.empty()) GTEST_SKIP() << "this CPU has no AVX2 (" << CpuSummary() << ")";
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> value(-127, 127);
  // (1 x 22 and 2 x 10: input groups left over from the 512-bit form's alternating
  // accumulators of one and two rows; 2 x 70, 3 x 17 and 5 x 109: its 4, 3, 2 and 1 column
  // tiles side by side, the last one partial; 7, 8, 13 and 16 rows: its tiles of seven and
  // eight rows, three column tiles at a time (13 rows: a tile of six among them), 200 columns
  // ending in half a tile alone; 63 and 64 rows: the last product in tiles of up to eight rows
  // and the first in tiles of up to six; 130 rows: tiles of six and five.)
  for (const GemmShape shape :
       {GemmShape{1, 512, 1000}, GemmShape{1, 22, 33}, GemmShape{2, 10, 70}, GemmShape{3, 33, 17},
        GemmShape{5, 7, 9}, GemmShape{5, 20, 109}, GemmShape{7, 20, 109}, GemmShape{8, 36, 200},
        GemmShape{9, 64, 24}, GemmShape{13, 12, 200}, GemmShape{16, 40, 100}, GemmShape{63, 24, 90},
        GemmShape{64, 24, 90}, GemmShape{130, 100, 40}}) {
    for (bool extremes : {false, true}) {
      const auto [m, k, n] = shape;
      std::vector<int8_t> a(m * k), w(n * k);
      for (int8_t& v : a)
        v = static_cast<int8_t>(extremes ? (value(rng) > 0 ? 127 : -127) : value(rng));
      for (int8_t& v : w)
        v = static_cast<int8_t>(extremes ? (value(rng) > 0 ? 127 : -127) : value(rng));
      // The AVX2 form's weights have fewer levels (int8_gemm.h): the same weights scaled to
      // them, extremes to extremes.
      std::vector<int8_t> w_avx2(w.size());
      for (size_t i = 0; i < w.size(); ++i) {
        w_avx2[i] = static_cast<int8_t>(w[i] * kInt8GemmAvx2WeightLevels / 127);
      }
      // The kernel's input: a + 128 (128, a zero, up to padded_in), with bytes past padded_in
      // in each row's stride that it must not read into any sum.
      const int64_t padded_in = Int8GemmPaddedInputs(k);
      const int64_t lda = padded_in + 4;
      std::vector<uint8_t> a_shifted(m * lda, 77);
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t i = 0; i < padded_in; ++i) {
          a_shifted[r * lda + i] = static_cast<uint8_t>(i < k ? a[r * k + i] + 128 : 128);
        }
      }
      for (Int8GemmIsa isa : isas) {
        const std::vector<int8_t>& weights = isa == Int8GemmIsa::kAvx2 ? w_avx2 : w;
        std::vector<int8_t> packed(Int8GemmPackedBytes(n, k));
        PackInt8GemmWeights(weights.data(), n, k, packed.data());
        // Every form multiplies inputs shifted to unsigned and subtract this.
        std::vector<int32_t> correction(Int8GemmPaddedColumns(n));
        Int8GemmShiftCorrection(weights.data(), n, k, correction.data());
        const std::vector<float> want = NaiveInt8Product(a, weights, m, k, n);
        const int64_t ldy = n + 3;
        std::vector<float> y(m * ldy, -1.0f);
        Int8Gemm(isa, {.a = a_shifted.data(),
                       .lda = lda,
                       .m = m,
                       .packed = packed.data(),
                       .n = n,
                       .padded_in = padded_in,
                       .y = y.data(),
                       .ldy = ldy,
                       .shift_correction = correction.data()});
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t c = 0; c < n; ++c) {
            ASSERT_EQ(y[r * ldy + c], want[r * n + c])
                << "isa " << static_cast<int>(isa) << " shape " << m << "x" << k << "x" << n
                << " at " << r << "," << c;
          }
          // Past the row's n columns nothing is written.
          for (int64_t c = n; c < ldy; ++c) ASSERT_EQ(y[r * ldy + c], -1.0f);
        }
      }
    }
  }
}

}  // namespace
}  // namespace taskmoe::kernels
