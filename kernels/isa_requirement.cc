// The start-up check of isa_requirement.h: CPUID against the build's x86-64 level, before any
// other first-party code runs.
//
// Compiled for the x86-64 baseline (kernels/CMakeLists.txt), so that this file itself runs on
// any x86-64 CPU. It calls only C library functions and compiler builtins: an inline function
// or template shared with other files (std::string, absl) might be linked from a copy compiled
// for TASKMOE_MARCH, which is exactly what must not run before the check.
#include "kernels/isa_requirement.h"

#include <cpuid.h>
#include <errno.h>
#include <unistd.h>

#include <cstring>

#ifndef TASKMOE_BUILD_ISA_LEVEL
#error "TASKMOE_BUILD_ISA_LEVEL (the x86-64 level of TASKMOE_MARCH) comes from CMake"
#endif

namespace taskmoe::kernels {
namespace {

enum class Word { kLeaf1Ecx, kLeaf7Ebx, kExtLeaf1Ecx, kXcr0 };

struct Feature {
  int level;  // the lowest x86-64 level that needs it
  Word word;
  uint64_t mask;  // every bit of the mask must be set
  const char* name;
};

// The x86-64 psABI's microarchitecture levels (x86-64-v2, -v3, -v4), feature by feature.
constexpr Feature kFeatures[] = {
    {2, Word::kLeaf1Ecx, 1u << 0, "SSE3"},
    {2, Word::kLeaf1Ecx, 1u << 9, "SSSE3"},
    {2, Word::kLeaf1Ecx, 1u << 13, "CMPXCHG16B"},
    {2, Word::kLeaf1Ecx, 1u << 19, "SSE4.1"},
    {2, Word::kLeaf1Ecx, 1u << 20, "SSE4.2"},
    {2, Word::kLeaf1Ecx, 1u << 23, "POPCNT"},
    {2, Word::kExtLeaf1Ecx, 1u << 0, "LAHF/SAHF"},
    {3, Word::kLeaf1Ecx, 1u << 28, "AVX"},
    {3, Word::kLeaf7Ebx, 1u << 5, "AVX2"},
    {3, Word::kLeaf7Ebx, 1u << 3, "BMI1"},
    {3, Word::kLeaf7Ebx, 1u << 8, "BMI2"},
    {3, Word::kLeaf1Ecx, 1u << 29, "F16C"},
    {3, Word::kLeaf1Ecx, 1u << 12, "FMA"},
    {3, Word::kExtLeaf1Ecx, 1u << 5, "LZCNT"},
    {3, Word::kLeaf1Ecx, 1u << 22, "MOVBE"},
    // The operating system must save the 256-bit registers (XCR0 bits 1 and 2): a hypervisor
    // or kernel may leave AVX off on a CPU that has it.
    {3, Word::kXcr0, (1u << 1) | (1u << 2), "AVX state (XCR0)"},
    {4, Word::kLeaf7Ebx, 1u << 16, "AVX512F"},
    {4, Word::kLeaf7Ebx, 1u << 17, "AVX512DQ"},
    {4, Word::kLeaf7Ebx, 1u << 28, "AVX512CD"},
    {4, Word::kLeaf7Ebx, 1u << 30, "AVX512BW"},
    {4, Word::kLeaf7Ebx, 1u << 31, "AVX512VL"},
    // Opmask, upper halves of ZMM0-15 and ZMM16-31.
    {4, Word::kXcr0, (1u << 5) | (1u << 6) | (1u << 7), "AVX-512 state (XCR0)"},
};

uint64_t WordValue(const X86FeatureWords& words, Word word) {
  switch (word) {
    case Word::kLeaf1Ecx:
      return words.leaf1_ecx;
    case Word::kLeaf7Ebx:
      return words.leaf7_ebx;
    case Word::kExtLeaf1Ecx:
      return words.ext_leaf1_ecx;
    case Word::kXcr0:
      return words.xcr0;
  }
  return 0;
}

// Appends `text` to the NUL-terminated string in out[0, size), keeping it terminated.
void Append(char* out, size_t size, const char* text) {
  if (size == 0) return;
  size_t used = std::strlen(out);
  while (*text != '\0' && used + 1 < size) out[used++] = *text++;
  out[used] = '\0';
}

void WriteStderr(const char* text) {
  size_t left = std::strlen(text);
  while (left > 0) {
    const ssize_t written = write(STDERR_FILENO, text, left);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return;
    text += written;
    left -= static_cast<size_t>(written);
  }
}

// The processor's brand string (CPUID 0x80000002-4), e.g. "AMD EPYC 7B13 64-Core Processor",
// into out[0, 49); "unknown" where the CPU has none.
void BrandString(char (&out)[49]) {
  std::memset(out, 0, sizeof(out));
  unsigned regs[12] = {};
  // (GCC's cpuid.h returns unsigned, clang's int.)
  if (static_cast<unsigned>(__get_cpuid_max(0x80000000u, nullptr)) < 0x80000004u) {
    Append(out, sizeof(out), "unknown");
    return;
  }
  for (unsigned i = 0; i < 3; ++i) {
    __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2],
                &regs[4 * i + 3]);
  }
  std::memcpy(out, regs, sizeof(regs));
  const char* start = out;
  while (*start == ' ') ++start;  // some brand strings are right-aligned
  std::memmove(out, start, std::strlen(start) + 1);
}

// Runs before the C++ constructors of every first-party file (101 is the first priority
// programs may use; shared libraries' constructors, which are compiled for the baseline, run
// earlier still).
__attribute__((constructor(101))) void CheckBuildIsaLevel() {
  char missing[256] = {};
  const X86FeatureWords words = ReadX86FeatureWords();
  if (MissingIsaFeatures(words, BuildIsaLevel(), missing, sizeof(missing)) == 0) return;
  char brand[49];
  BrandString(brand);
  char level[2] = {static_cast<char>('0' + BuildIsaLevel()), '\0'};
  WriteStderr(program_invocation_short_name);
  WriteStderr(": this CPU (");
  WriteStderr(brand);
  WriteStderr(") lacks ");
  WriteStderr(missing);
  WriteStderr(", which this build of taskmoe-serve needs: it was compiled for x86-64-v");
  WriteStderr(level);
  WriteStderr(" (TASKMOE_MARCH). Run it on a CPU with ");
  WriteStderr(BuildIsaLevel() >= 4 ? "AVX-512 (x86-64-v4)"
                                   : "AVX2 and FMA (Intel Haswell or AMD Zen and later)");
  WriteStderr(", or give the virtual machine a CPU model that passes these features on.\n");
  _exit(1);
}

}  // namespace

X86FeatureWords ReadX86FeatureWords() {
  X86FeatureWords words{};
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0) words.leaf1_ecx = ecx;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    words.leaf7_ebx = ebx;
  }
  if (__get_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx) != 0) words.ext_leaf1_ecx = ecx;
  constexpr uint32_t kOsXsave = 1u << 27;
  if ((words.leaf1_ecx & kOsXsave) != 0) {
    uint32_t low = 0, high = 0;
    // XGETBV with ECX = 0 (XCR0); spelled as an instruction, not _xgetbv(), whose header
    // function needs -mxsave.
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    words.xcr0 = (static_cast<uint64_t>(high) << 32) | low;
  }
  return words;
}

int BuildIsaLevel() { return TASKMOE_BUILD_ISA_LEVEL; }

int MissingIsaFeatures(const X86FeatureWords& words, int level, char* out, size_t out_size) {
  if (out_size > 0) out[0] = '\0';
  int missing = 0;
  for (const Feature& feature : kFeatures) {
    if (feature.level > level) continue;
    if ((WordValue(words, feature.word) & feature.mask) == feature.mask) continue;
    if (missing > 0) Append(out, out_size, ", ");
    Append(out, out_size, feature.name);
    ++missing;
  }
  return missing;
}

}  // namespace taskmoe::kernels
