// Runtime choice of instruction set for hot elementwise loops.
//
// First-party code is compiled for TASKMOE_MARCH (x86-64-v3, AVX2, by default) so that one
// binary runs on any recent x86 server. Loops that are bound by vector arithmetic rather than
// by oneDNN (the greedy head's exp/max reduction over a 64k vocabulary) run about 1.7x faster
// with AVX-512 on machines that have it; marking them TASKMOE_AVX512_CLONE makes the compiler
// emit an AVX-512 copy as well, picked once at load time by the dynamic linker (GNU ifunc).
#ifndef TASKMOE_KERNELS_CPU_DISPATCH_H_
#define TASKMOE_KERNELS_CPU_DISPATCH_H_

#include "util/sanitizer.h"

// Sanitizer builds keep only the default versions: the ifunc resolvers run while the program
// is being relocated, before a sanitizer's runtime is initialised, and instrumented resolvers
// crash there (ThreadSanitizer builds segfaulted at start-up).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(TASKMOE_NO_CPU_DISPATCH) && !defined(TASKMOE_SANITIZER_BUILD)
#define TASKMOE_AVX512_CLONE __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define TASKMOE_AVX512_CLONE
#endif

#endif  // TASKMOE_KERNELS_CPU_DISPATCH_H_
