// The 512-bit register tiles of our f32 GEMM (f32_gemm.h), for CPUs with AVX-512 F/BW/DQ/VL
// (CpuHasAvx512). Internal to f32_gemm.cc, which hands them a product when the CPU has them.
//
// Same packed weights, same order of operations: each output is one chain of fused multiply-
// adds over the inputs in order, then the bias, exactly as in the 256-bit tiles. A strip's 16
// columns are one 512-bit vector instead of two 256-bit ones, so results are bit for bit those
// of the AVX2 tiles, on any machine, whichever tiles ran.
#ifndef TASKMOE_KERNELS_F32_GEMM_AVX512_H_
#define TASKMOE_KERNELS_F32_GEMM_AVX512_H_

#include <cstdint>

#include "kernels/f32_gemm.h"

namespace taskmoe::kernels::internal {

// Rows taken through a run's strips before the next rows, at most (both tile sets): 120 rows of
// up to 1,024 inputs stay in L2 while every strip passes over them (encoder batches have
// hundreds of rows).
inline constexpr int64_t kF32GemmRowBlock = 120;

// Adds the bias to, and applies the activation on, `count` outputs at `out` (columns starting
// at the bias' first). Compiled for the baseline ISA in f32_gemm.cc: an inline copy compiled
// with AVX-512 could be the one the linker keeps for every caller.
void F32GemmFinishOutputs(float* out, const float* bias, Activation activation, int64_t count);

// Strips a tile takes at once for a product of `m` rows: eight for one row (its accumulators
// in flight hide the fused multiply-add latency), four for more.
int64_t F32GemmStripsPerTileAvx512(int64_t m);

// Strip groups [first_group, last_group) of `group_strips` strips
// (F32GemmStripsPerTileAvx512(args.m)), over every row of args. Only on CPUs with AVX-512.
void F32GemmStripGroupsAvx512(const F32GemmArgs& args, int64_t group_strips, int64_t first_group,
                              int64_t last_group);

}  // namespace taskmoe::kernels::internal

#endif  // TASKMOE_KERNELS_F32_GEMM_AVX512_H_
