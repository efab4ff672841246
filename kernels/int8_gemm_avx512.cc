// The int8 GEMM tile in its AVX-512 VNNI form: one 64-byte unit of the packed weights (a tile's
// 16 columns x 4 inputs, int8_gemm.h) is one zmm register, and one vpdpbusd multiplies it by
// 4 inputs of a row broadcast to every column: 64 multiply-adds per instruction, twice the
// AVX-VNNI form's. This file alone is compiled with AVX-512 (kernels/CMakeLists.txt) and runs
// only where cpu_features.h finds AVX-512 VNNI. The layout, the inputs (shifted to unsigned by
// the caller's quantisation) and the correction of that shift are the other forms'
// (int8_gemm.h), so the three forms' sums are the same integers.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/int8_gemm.h"

#if !defined(__AVX512VNNI__) || !defined(__AVX512BW__)
#error "int8_gemm_avx512.cc must be compiled with -mavx512f -mavx512bw -mavx512vnni"
#endif

namespace taskmoe::kernels {
namespace {

// Group g's 4 inputs of a row (shifted to unsigned by the caller) in every column's lane.
inline __m512i BroadcastGroup(const uint8_t* row, int64_t g) {
  int32_t four;
  std::memcpy(&four, row + g * 4, sizeof(four));
  return _mm512_set1_epi32(four);
}

// kRows rows x kTiles column tiles (16 columns each, kTiles separate weight streams) over every
// input; with one row, kChains accumulators per tile take alternate groups, so that consecutive
// vpdpbusd do not wait on each other's sums (the instruction's latency is several cycles, and
// one row has nothing else to interleave). y[r][c] = float(sum a * w) for the first
// `valid_cols` columns, counted from the first tile's. kPrefetch for a tile's first block of
// rows only: later blocks find its weights in cache, and prefetching there cost load slots
// the broadcasts need (one thread, 128 x 1024 x 1024: 0.75x oneDNN's brgemm with it, on par
// without).
template <int kRows, int kTiles, int kChains, bool kPrefetch>
inline void Tile(const uint8_t* a, int64_t lda, const int8_t* w, int64_t tile_bytes, int64_t groups,
                 const int32_t* correction, float* y, int64_t ldy, int64_t valid_cols) {
  __m512i acc[kChains][kRows][kTiles];
#pragma GCC unroll 16
  for (int j = 0; j < kChains; ++j) {
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
      for (int t = 0; t < kTiles; ++t) acc[j][r][t] = _mm512_setzero_si512();
    }
  }
  int64_t g = 0;
  for (; g + kChains <= groups; g += kChains) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains; ++j) {
      __m512i weights[kTiles];
#pragma GCC unroll 16
      for (int t = 0; t < kTiles; ++t) {
        const int8_t* unit = w + t * tile_bytes + (g + j) * kInt8GemmUnitBytes;
        if constexpr (kPrefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(unit) + kInt8GemmPrefetchBytes, _MM_HINT_T0);
        }
        weights[t] = _mm512_loadu_si512(unit);
      }
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) {
        const __m512i inputs = BroadcastGroup(a + r * lda, g + j);
#pragma GCC unroll 16
        for (int t = 0; t < kTiles; ++t) {
          acc[j][r][t] = _mm512_dpbusd_epi32(acc[j][r][t], inputs, weights[t]);
        }
      }
    }
  }
  // The groups left over when their count is not a multiple of kChains.
  for (; g < groups; ++g) {
#pragma GCC unroll 16
    for (int t = 0; t < kTiles; ++t) {
      const __m512i weights = _mm512_loadu_si512(w + t * tile_bytes + g * kInt8GemmUnitBytes);
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) {
        acc[0][r][t] = _mm512_dpbusd_epi32(acc[0][r][t], BroadcastGroup(a + r * lda, g), weights);
      }
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < kTiles; ++t) {
    const int64_t cols =
        std::min<int64_t>(valid_cols - t * kInt8GemmTileColumns, kInt8GemmTileColumns);
    if (cols <= 0) break;
    const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
    const __m512i corrections = _mm512_loadu_si512(correction + t * kInt8GemmTileColumns);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      __m512i sum = acc[0][r][t];
#pragma GCC unroll 16
      for (int j = 1; j < kChains; ++j) sum = _mm512_add_epi32(sum, acc[j][r][t]);
      const __m512 values = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, corrections));
      _mm512_mask_storeu_ps(y + r * ldy + t * kInt8GemmTileColumns, mask, values);
    }
  }
}

// Rows per tile at most, for kTiles column tiles side by side: 6 rows x 4 tiles keep 24
// accumulators, the four weight vectors and a broadcast input in the 32 registers, and so do
// 8 rows x 3 tiles, which let a step of eight rows read each weight once.
constexpr int MaxTileRows(int tiles) { return tiles <= 3 ? 8 : 6; }

// Products of fewer rows than this take tiles of up to eight rows (RowTiles).
constexpr int64_t kEightRowTilesBelow = 64;

// The register tiles m rows are split into, of equal heights. Eight-row tiles read a decoding
// step's weights once (8 x 2,048 x 2,048, one thread: 0.78x the time of tiles of six and two);
// from 64 rows, where most tiles find the weights in cache anyway, they took up to 1.18x the
// time of tiles of six (256 x 512 x 2,048, two threads).
int64_t RowTiles(int64_t m) {
  const int64_t tallest = m < kEightRowTilesBelow ? 8 : 6;
  return (m + tallest - 1) / tallest;
}

template <int kTiles, bool kPrefetch>
inline void TileRows(int64_t rows, const uint8_t* a, int64_t lda, const int8_t* w,
                     int64_t tile_bytes, int64_t groups, const int32_t* correction, float* y,
                     int64_t ldy, int64_t valid_cols) {
  const auto tile = [&]<int kRows, int kChains>() {
    Tile<kRows, kTiles, kChains, kPrefetch>(a, lda, w, tile_bytes, groups, correction, y, ldy,
                                            valid_cols);
  };
  switch (rows) {
    case 1:
      return tile.template operator()<1, 4>();
    case 2:
      return tile.template operator()<2, 2>();
    case 3:
      return tile.template operator()<3, 1>();
    case 4:
      return tile.template operator()<4, 1>();
    case 5:
      return tile.template operator()<5, 1>();
    case 6:
      return tile.template operator()<6, 1>();
  }
  // Seven or eight rows come only with three column tiles or fewer
  // (Int8GemmAvx512TilesPerStep).
  if constexpr (MaxTileRows(kTiles) == 8) {
    if (rows == 7) return tile.template operator()<7, 1>();
    return tile.template operator()<8, 1>();
  }
}

}  // namespace

void Int8GemmColumnTilesAvx512Vnni(const Int8GemmArgs& args, int64_t first_tile,
                                   int64_t tile_count) {
  const int64_t tile_bytes = args.padded_in * kInt8GemmTileColumns;
  const int64_t groups = args.padded_in / 4;
  // One tile at a time for a single row, whose product streams the weights once from memory
  // (one sequential stream); three or four at a time when rows reuse them from cache (a run's
  // remainder in fewer).
  const int64_t step = Int8GemmTilesPerStep(Int8GemmIsa::kAvx512Vnni, args.m);
  const int64_t row_tiles = RowTiles(args.m);
  for (int64_t tile = first_tile; tile < first_tile + tile_count;) {
    const int64_t tiles = std::min(step, first_tile + tile_count - tile);
    const int64_t col = tile * kInt8GemmTileColumns;
    const int64_t valid_cols = std::min(tiles * kInt8GemmTileColumns, args.n - col);
    const int8_t* w = args.packed + tile * tile_bytes;
    const int32_t* correction = args.shift_correction + col;
    for (int64_t t = 0; t < row_tiles; ++t) {
      const int64_t r = args.m * t / row_tiles;
      const int64_t rows = args.m * (t + 1) / row_tiles - r;
      const uint8_t* a = args.a + r * args.lda;
      float* y = args.y + r * args.ldy + col;
      const auto run = [&]<int kTiles>() {
        if (t == 0) {
          TileRows<kTiles, true>(rows, a, args.lda, w, tile_bytes, groups, correction, y, args.ldy,
                                 valid_cols);
        } else {
          TileRows<kTiles, false>(rows, a, args.lda, w, tile_bytes, groups, correction, y, args.ldy,
                                  valid_cols);
        }
      };
      if (tiles == 4) {
        run.template operator()<4>();
      } else if (tiles == 3) {
        run.template operator()<3>();
      } else if (tiles == 2) {
        run.template operator()<2>();
      } else {
        run.template operator()<1>();
      }
    }
    tile += tiles;
  }
}

int64_t Int8GemmAvx512TilesPerStep(int64_t m) {
  if (m <= 1) return 1;
  const int64_t tiles = RowTiles(m);
  const int64_t tallest = (m + tiles - 1) / tiles;
  return tallest > MaxTileRows(4) ? 3 : 4;
}

}  // namespace taskmoe::kernels
