// The start-up instruction-set check (kernels/isa_requirement.h): which features each x86-64
// level needs, read from made-up CPUID words. The check's exit on a CPU that lacks them runs
// for real under QEMU in tools/test.sh ("a CPU without AVX2").
#include "kernels/isa_requirement.h"

#include <gtest/gtest.h>

#include <string>

namespace taskmoe::kernels {
namespace {

// The words of a CPU with every x86-64-v3 feature (Haswell, Zen 1-3) and an operating system
// that saves the x87, SSE and AVX registers.
X86FeatureWords Avx2Cpu() {
  X86FeatureWords words{};
  words.leaf1_ecx = (1u << 0) | (1u << 9) | (1u << 12) | (1u << 13) | (1u << 19) | (1u << 20) |
                    (1u << 22) | (1u << 23) | (1u << 27) | (1u << 28) | (1u << 29);
  words.leaf7_ebx = (1u << 3) | (1u << 5) | (1u << 8);
  words.ext_leaf1_ecx = (1u << 0) | (1u << 5);
  words.xcr0 = 0x7;
  return words;
}

// Adds AVX-512 F/DQ/CD/BW/VL and the operating system's AVX-512 state.
X86FeatureWords Avx512Cpu() {
  X86FeatureWords words = Avx2Cpu();
  words.leaf7_ebx |= (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
  words.xcr0 |= 0xe0;
  return words;
}

struct Missing {
  int count;
  std::string names;
};

Missing Check(const X86FeatureWords& words, int level) {
  char out[256];
  const int count = MissingIsaFeatures(words, level, out, sizeof(out));
  return {count, out};
}

TEST(IsaRequirement, AnAvx2CpuHasLevelThreeButNotFour) {
  EXPECT_EQ(Check(Avx2Cpu(), 2).count, 0);
  const Missing v3 = Check(Avx2Cpu(), 3);
  EXPECT_EQ(v3.count, 0) << v3.names;
  EXPECT_EQ(v3.names, "");
  const Missing v4 = Check(Avx2Cpu(), 4);
  EXPECT_EQ(v4.count, 6);
  EXPECT_EQ(v4.names, "AVX512F, AVX512DQ, AVX512CD, AVX512BW, AVX512VL, AVX-512 state (XCR0)");
  EXPECT_EQ(Check(Avx512Cpu(), 4).count, 0);
}

TEST(IsaRequirement, NamesEachMissingFeature) {
  X86FeatureWords words = Avx2Cpu();
  words.leaf7_ebx &= ~(1u << 5);   // no AVX2
  words.leaf1_ecx &= ~(1u << 12);  // no FMA
  const Missing missing = Check(words, 3);
  EXPECT_EQ(missing.count, 2);
  EXPECT_EQ(missing.names, "AVX2, FMA");
  // A pre-AVX CPU (Nehalem, Westmere) lacks all of level 3 and none of level 2.
  X86FeatureWords nehalem = Avx2Cpu();
  nehalem.leaf1_ecx &= ~((1u << 12) | (1u << 22) | (1u << 27) | (1u << 28) | (1u << 29));
  nehalem.leaf7_ebx = 0;
  nehalem.ext_leaf1_ecx &= ~(1u << 5);
  nehalem.xcr0 = 0;
  EXPECT_EQ(Check(nehalem, 2).count, 0);
  EXPECT_EQ(Check(nehalem, 3).names,
            "AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, AVX state (XCR0)");
  // Nothing at all: every feature of levels 2 and 3.
  EXPECT_EQ(Check(X86FeatureWords{}, 3).count, 16);
}

// A hypervisor or kernel may leave the AVX registers unsaved on a CPU that has AVX2: the
// instructions then fault, so the state counts as a missing feature.
TEST(IsaRequirement, AvxStateTheOperatingSystemDoesNotSaveIsMissing) {
  X86FeatureWords words = Avx2Cpu();
  words.xcr0 = 0x3;  // x87 and SSE only
  EXPECT_EQ(Check(words, 3).names, "AVX state (XCR0)");
  words = Avx512Cpu();
  words.xcr0 = 0x7;
  EXPECT_EQ(Check(words, 4).names, "AVX-512 state (XCR0)");
}

TEST(IsaRequirement, TruncatesTheListToTheBufferButCountsEveryFeature) {
  char out[8];
  EXPECT_EQ(MissingIsaFeatures(X86FeatureWords{}, 3, out, sizeof(out)), 16);
  EXPECT_STREQ(out, "SSE3, S");
  EXPECT_EQ(MissingIsaFeatures(X86FeatureWords{}, 3, nullptr, 0), 16);
}

// This test runs, so the start-up check found the build's level here.
TEST(IsaRequirement, ThisCpuHasTheBuildsLevel) {
  const int level = BuildIsaLevel();
  EXPECT_GE(level, 2);
  EXPECT_LE(level, 4);
  const Missing missing = Check(ReadX86FeatureWords(), level);
  EXPECT_EQ(missing.count, 0) << missing.names;
}

}  // namespace
}  // namespace taskmoe::kernels
