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

// Values before the first strip of the bf16 packing: zeros, one cache line, so that the AVX2
// tiles may read two bytes before any pair and the pairs stay line-aligned (f32_gemm.h).
inline constexpr int64_t kF32GemmBFloat16LeadValues = 32;

// The first strip of args' bf16 packing (after its lead).
inline const BFloat16* F32GemmBFloat16Strips(const F32GemmArgs& args) {
  return args.packed_bf16 + kF32GemmBFloat16LeadValues;
}

// Values from one strip to the next: k x 16 in the f32 packing, k rounded up to even x 16 in
// the bf16 one (f32_gemm.h).
inline int64_t F32GemmStripValues(int64_t k, bool bf16) {
  return (bf16 ? k + k % 2 : k) * kF32GemmStripColumns;
}

// Adds the bias to, and applies the activation on, `count` outputs at `out` (columns starting
// at the bias' first). Compiled for the baseline ISA in f32_gemm.cc: an inline copy compiled
// with AVX-512 could be the one the linker keeps for every caller.
void F32GemmFinishOutputs(float* out, const float* bias, Activation activation, int64_t count);

// Strips a tile takes at once for a product of `m` rows: eight for one row (its accumulators
// in flight hide the fused multiply-add latency), three where the tiles have seven or eight
// rows, four for two to six.
int64_t F32GemmStripsPerTileAvx512(int64_t m);

// The part of a product one run computes: strip groups [first_group, last_group) of
// `group_strips` strips, over row blocks [first_block, last_block) of the product's `blocks`
// equal row blocks (of at most kF32GemmRowBlock rows). Blocks outer, so that a block's inputs
// stay in L2 while the run's strips pass over them, unless `groups_outer`: when all the rows'
// inputs fit in L2 anyway, each strip group is read from memory once, not once per block.
struct F32GemmRun {
  int64_t group_strips = 0;
  int64_t first_group = 0;
  int64_t last_group = 0;
  int64_t blocks = 0;
  int64_t first_block = 0;
  int64_t last_block = 0;
  bool groups_outer = false;
};

// Calls tile(rows, row, strip, width, first_row_tile) for every tile of `run`, in the run's
// order: blocks of equal height, tiles of equal height within a block (at most
// `max_tile_rows`; 32 rows in the AVX2 tiles of at most six: 6, 6, 5, 5, 5, 5, so that no
// tile of one or two rows is left to run at the latency of its few chains), `width` strips of
// a strip group from `strip`, first_row_tile for the first tile of a block. Each tile set's
// file instantiates it with its own lambda, a type of that file alone, so no instantiation is
// shared between files compiled for different instruction sets.
template <typename TileFn>
void ForEachTileOfRun(const F32GemmArgs& args, const F32GemmRun& run, int64_t max_tile_rows,
                      TileFn&& tile) {
  const int64_t strips = (args.n + kF32GemmStripColumns - 1) / kF32GemmStripColumns;
  const auto block_of_group = [&](int64_t b, int64_t group) {
    const int64_t block = args.m * b / run.blocks;
    const int64_t block_rows = args.m * (b + 1) / run.blocks - block;
    const int64_t tiles = (block_rows + max_tile_rows - 1) / max_tile_rows;
    const int64_t strip = group * run.group_strips;
    const int64_t width = strips - strip < run.group_strips ? strips - strip : run.group_strips;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t begin = block_rows * t / tiles, end = block_rows * (t + 1) / tiles;
      tile(end - begin, block + begin, strip, width, t == 0);
    }
  };
  if (run.groups_outer) {
    for (int64_t group = run.first_group; group < run.last_group; ++group) {
      for (int64_t b = run.first_block; b < run.last_block; ++b) block_of_group(b, group);
    }
  } else {
    for (int64_t b = run.first_block; b < run.last_block; ++b) {
      for (int64_t group = run.first_group; group < run.last_group; ++group) {
        block_of_group(b, group);
      }
    }
  }
}

// One run of a product on the 512-bit tiles (group_strips from F32GemmStripsPerTileAvx512).
// Only on CPUs with AVX-512.
void F32GemmRunAvx512(const F32GemmArgs& args, const F32GemmRun& run);

}  // namespace taskmoe::kernels::internal

#endif  // TASKMOE_KERNELS_F32_GEMM_AVX512_H_
