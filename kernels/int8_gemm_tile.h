// The register tile of our int8 GEMM (int8_gemm.h), written once and compiled once per
// instruction set: int8_gemm_avx2.cc includes it as it is, int8_gemm_vnni.cc with -mavxvnni,
// where DotAccumulate becomes one vpdpbusd. Everything here has internal linkage, so the two
// compilations never meet (no ODR clash between their instantiations). Include it only there.
#ifndef TASKMOE_KERNELS_INT8_GEMM_TILE_H_
#define TASKMOE_KERNELS_INT8_GEMM_TILE_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/int8_gemm.h"

namespace taskmoe::kernels {
namespace {

// Both forms multiply the inputs shifted to unsigned, a + 128, which the caller's
// quantisation wrote, by the signed weights, and the tile's store subtracts 128 * sum w per
// column (int8_gemm.h).

// acc[c] += sum over 4 shifted inputs u of u * w, per output column c (one int32 lane each).
inline __m256i DotAccumulate(__m256i acc, __m256i shifted_inputs, __m256i w) {
#if defined(__AVXVNNI__)
  // Four products summed straight into 32 bits: no saturation, any s8 weights.
  return _mm256_dpbusd_avx_epi32(acc, shifted_inputs, w);
#else
  // vpmaddubsw's 16-bit pair sums stay within 2 * 255 * 31 = 15810 < 32767 because this form's
  // weights lie in [-31, 31]; 8-bit weights would saturate them.
  const __m256i pairs = _mm256_maddubs_epi16(shifted_inputs, w);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

// The AVX2 form's DotAccumulate over two groups of inputs at once (8 products per column): the
// two groups' pair sums are added in 16 bits, at most 2 * 15810 = 31620, before one vpmaddwd
// widens them, so 64 multiply-adds take three multiplications instead of four (vpmaddubsw and
// vpmaddwd compete for the same ports: 1.18x the tile's rate on Zen 5 in its AVX2 form).
inline __m256i DotAccumulateTwo(__m256i acc, __m256i shifted_first, __m256i w_first,
                                __m256i shifted_second, __m256i w_second) {
  const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(shifted_first, w_first),
                                         _mm256_maddubs_epi16(shifted_second, w_second));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

// One step of Tile's loop: groups g .. g + kGroups - 1 of the inputs (one, or two for the
// AVX2 form's DotAccumulateTwo) of every row, times their units of the tile's weights
// (`unit` points at group g's), into the accumulators.
template <int kRows, int kBlocks, int kGroups>
inline void AccumulateGroups(const uint8_t* a, int64_t lda, const int8_t* unit, int64_t g,
                             __m256i (&acc)[kRows][kBlocks]) {
  __m256i weights[kGroups][kBlocks];
#pragma GCC unroll 2
  for (int j = 0; j < kGroups; ++j) {
    const int8_t* group_unit = unit + j * kInt8GemmUnitBytes;
    // The weights stream from memory once per product: ask for them early enough to hide
    // the latency of a line.
    _mm_prefetch(reinterpret_cast<const char*>(group_unit) + kInt8GemmPrefetchBytes, _MM_HINT_T0);
#pragma GCC unroll 2
    for (int b = 0; b < kBlocks; ++b) {
      weights[j][b] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(group_unit + b * kInt8GemmBlockBytes));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
    int32_t four[kGroups];  // inputs 4g .. 4(g + kGroups) - 1 of row r
    std::memcpy(four, a + r * lda + g * 4, sizeof(four));
    __m256i shifted[kGroups];
#pragma GCC unroll 2
    for (int j = 0; j < kGroups; ++j) shifted[j] = _mm256_set1_epi32(four[j]);
#pragma GCC unroll 2
    for (int b = 0; b < kBlocks; ++b) {
      if constexpr (kGroups == 1) {
        acc[r][b] = DotAccumulate(acc[r][b], shifted[0], weights[0][b]);
      } else {
        acc[r][b] =
            DotAccumulateTwo(acc[r][b], shifted[0], weights[0][b], shifted[1], weights[1][b]);
      }
    }
  }
}

// kRows rows x kBlocks blocks of 8 columns, over every input: y[r][c] = float(sum a * w) for
// the first `valid_cols` columns of the tile. `w` points at the tile's packed weights
// (int8_gemm.h has the layout), `correction` at the tile's first column's shift correction. The
// accumulators stay in registers: at most kMaxTileRows x 2 of them, plus the weights and broadcast
// inputs (two groups' worth in the AVX2 form, whose second group's weights GCC reads as memory
// operands) and AVX2's pair sums.
template <int kRows, int kBlocks>
inline void Tile(const uint8_t* a, int64_t lda, const int8_t* w, int64_t groups,
                 const int32_t* correction, float* y, int64_t ldy, int64_t valid_cols) {
  __m256i acc[kRows][kBlocks];
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int b = 0; b < kBlocks; ++b) acc[r][b] = _mm256_setzero_si256();
  }
  int64_t g = 0;
#if !defined(__AVXVNNI__)
  // Two groups per step, then the last one alone when their count is odd.
  for (; g + 1 < groups; g += 2) {
    AccumulateGroups<kRows, kBlocks, 2>(a, lda, w + g * kInt8GemmUnitBytes, g, acc);
  }
#endif
  for (; g < groups; ++g) {
    AccumulateGroups<kRows, kBlocks, 1>(a, lda, w + g * kInt8GemmUnitBytes, g, acc);
  }
  __m256i corrections[kBlocks];
#pragma GCC unroll 2
  for (int b = 0; b < kBlocks; ++b) {
    corrections[b] = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(correction + b * kInt8GemmBlockColumns));
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int b = 0; b < kBlocks; ++b) {
      const __m256 values = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][b], corrections[b]));
      float* out = y + r * ldy + b * kInt8GemmBlockColumns;
      const int64_t cols = valid_cols - b * kInt8GemmBlockColumns;
      if (cols >= kInt8GemmBlockColumns) {
        _mm256_storeu_ps(out, values);
      } else if (cols > 0) {
        alignas(32) float spill[kInt8GemmBlockColumns];
        _mm256_store_ps(spill, values);
        std::memcpy(out, spill, cols * sizeof(float));
      }
    }
  }
}

// Rows per tile. Three rows x two blocks keep the six accumulators, both weight vectors and
// the temporaries in the 16 vector registers; four rows (with the sign trick the AVX2 form
// used before its inputs were shifted) made GCC spill accumulators to the stack at every step
// and ran the 128 x 512 x 64000 head 20-30 % slower; five rows in the AVX-VNNI form ran it
// 5-10 % slower than three.
constexpr int kMaxTileRows = 3;

template <int kBlocks>
inline void TileRows(int64_t rows, const uint8_t* a, int64_t lda, const int8_t* w, int64_t groups,
                     const int32_t* correction, float* y, int64_t ldy, int64_t valid_cols) {
  switch (rows) {
    case 1:
      return Tile<1, kBlocks>(a, lda, w, groups, correction, y, ldy, valid_cols);
    case 2:
      return Tile<2, kBlocks>(a, lda, w, groups, correction, y, ldy, valid_cols);
    default:
      return Tile<kMaxTileRows, kBlocks>(a, lda, w, groups, correction, y, ldy, valid_cols);
  }
}

// Column tiles [first_tile, first_tile + tile_count) of 16 columns, each over all m rows
// (kMaxTileRows at a time, so a tile's weights are read from memory once and then from L1).
inline void GemmColumnTiles(const Int8GemmArgs& args, int64_t first_tile, int64_t tile_count) {
  const int64_t tile_bytes = args.padded_in * kInt8GemmTileColumns;
  const int64_t groups = args.padded_in / 4;
  for (int64_t tile = first_tile; tile < first_tile + tile_count; ++tile) {
    const int64_t col = tile * kInt8GemmTileColumns;
    const int64_t valid_cols = std::min(kInt8GemmTileColumns, args.n - col);
    const int8_t* w = args.packed + tile * tile_bytes;
    const int32_t* correction = args.shift_correction + col;
    for (int64_t r = 0; r < args.m; r += kMaxTileRows) {
      const int64_t rows = std::min<int64_t>(kMaxTileRows, args.m - r);
      const uint8_t* a = args.a + r * args.lda;
      float* y = args.y + r * args.ldy + col;
      if (valid_cols > kInt8GemmBlockColumns) {
        TileRows<2>(rows, a, args.lda, w, groups, correction, y, args.ldy, valid_cols);
      } else {
        TileRows<1>(rows, a, args.lda, w, groups, correction, y, args.ldy, valid_cols);
      }
    }
  }
}

}  // namespace
}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_INT8_GEMM_TILE_H_
