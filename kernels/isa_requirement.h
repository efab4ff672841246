// The instruction set a build of taskmoe-serve needs, and the check every program runs on it
// before anything else.
//
// First-party code is compiled for TASKMOE_MARCH (x86-64-v3 by default: AVX2, FMA, BMI1/2,
// F16C, LZCNT, MOVBE; cmake/TaskmoeOptions.cmake), so on an older CPU, or in a virtual machine
// whose CPU model hides AVX2, a program would die of SIGILL somewhere in its start-up, with
// nothing in its log but a crash loop. isa_requirement.cc, linked into every executable, checks
// CPUID first (an ELF constructor that runs before any other first-party code) and, where a
// feature of the build's level is missing, writes which ones and exits with status 1.
//
// That file is compiled for the x86-64 baseline and uses no inline function or template that
// other translation units instantiate (those may come from a copy compiled for the build's
// level); this header is what tests see of it.
#ifndef TASKMOE_KERNELS_ISA_REQUIREMENT_H_
#define TASKMOE_KERNELS_ISA_REQUIREMENT_H_

#include <cstddef>
#include <cstdint>

namespace taskmoe::kernels {

// The CPUID words (and the XCR0 register) that decide whether an x86-64 microarchitecture
// level's features are present and enabled by the operating system.
struct X86FeatureWords {
  uint32_t leaf1_ecx;      // CPUID 1: ECX
  uint32_t leaf7_ebx;      // CPUID 7, sub-leaf 0: EBX (0 where leaf 7 is absent)
  uint32_t ext_leaf1_ecx;  // CPUID 0x80000001: ECX
  uint64_t xcr0;           // XGETBV(0) where CPUID 1 reports OSXSAVE, else 0
};  // A plain aggregate (no member initialisers): no inline constructor shared across files.

// This CPU's words.
X86FeatureWords ReadX86FeatureWords();

// The x86-64 level this build was compiled for (2, 3 or 4; TASKMOE_MARCH).
int BuildIsaLevel();

// Writes the names of the features of x86-64 level `level` (2, 3 or 4; each level includes the
// ones below) that `words` lacks into `out` as a NUL-terminated, comma-separated list (e.g.
// "AVX, AVX2, FMA"), truncated to `out_size`. Register state the operating system has not
// enabled counts as missing ("AVX state (XCR0)"). Returns how many are missing.
int MissingIsaFeatures(const X86FeatureWords& words, int level, char* out, size_t out_size);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_ISA_REQUIREMENT_H_
