// The 512-bit register tiles of our f32 GEMM (f32_gemm_avx512.h). This file alone is compiled
// with AVX-512 enabled, and it keeps everything but its two entry points in an anonymous
// namespace and calls no inline library code, so that no AVX-512 instruction can reach a
// function that an AVX2-only CPU runs.
#include "kernels/f32_gemm_avx512.h"

#include <immintrin.h>

#include <type_traits>

namespace taskmoe::kernels::internal {
namespace {

// Rows per tile at most: eight rows x three strips keep 24 accumulators, the three strips'
// weight vectors and a broadcast input in the 32 vector registers, and the eight row pointers
// in general registers (twelve rows x two strips ran out of those and spilled accumulators).
// Eight rows, not six, so that a decoding step of eight rows reads each weight once: in two
// tiles of four, the second read the strips again from L2 (8 x 2,048 x 2,048, one thread: the
// single tile took 0.74x the time, docs/benchmarks.md, stop 56).
constexpr int kMaxTileRows = 8;

// Strips per tile: one row needs eight accumulators in flight to hide the FMA latency; seven
// or eight rows take three strips, fewer rows four (24 accumulators at most).
constexpr int kStripsFor(int rows) { return rows == 1 ? 8 : rows >= 7 ? 3 : 4; }

inline int64_t Smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// Input i's weights of an f32 strip at w as one 16-column vector.
inline __m512 LoadStripWeights(const float* w, int64_t i) {
  return _mm512_loadu_ps(w + i * kF32GemmStripColumns);
}

// The weights of input pair p of a bf16 strip at w (f32_gemm.h) for the pair's first input
// (kSecond false) or its second, as one 16-column vector: one shift or one mask.
template <bool kSecond>
inline __m512 LoadStripWeightsOfPair(const BFloat16* w, int64_t p) {
  const __m512i pair = _mm512_loadu_si512(w + p * 2 * kF32GemmStripColumns);
  if constexpr (kSecond) {
    return _mm512_castsi512_ps(_mm512_and_si512(pair, _mm512_set1_epi32(-65536)));
  } else {
    return _mm512_castsi512_ps(_mm512_slli_epi32(pair, 16));
  }
}

// acc[r][s] += input i of row r x weights[s], for every row and strip of a tile.
template <int kRows, int kStrips>
inline void MultiplyAddInput(const float* a, int64_t lda, int64_t i,
                             const __m512 (&weights)[kStrips], __m512 (&acc)[kRows][kStrips]) {
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    const __m512 input = _mm512_set1_ps(a[r * lda + i]);
#pragma GCC unroll 8
    for (int s = 0; s < kStrips; ++s) acc[r][s] = _mm512_fmadd_ps(input, weights[s], acc[r][s]);
  }
}

// kRows rows from `row` x kStrips strips from `strip`: y = act(a w^T + bias) for the tile's
// columns that exist. Each accumulator lane is one FMA chain over the inputs in order.
template <typename Weight, int kRows, int kStrips, bool kPrefetchNextStrip>
void Tile(const F32GemmArgs& args, const Weight* packed, int64_t row, int64_t strip) {
  constexpr bool kBFloat16 = std::is_same_v<Weight, BFloat16>;
  const int64_t k = args.k;
  const int64_t strip_values = F32GemmStripValues(k, kBFloat16);
  const float* a = args.a + row * args.lda;
  const Weight* w = packed + strip * strip_values;
  __m512 acc[kRows][kStrips];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 8
    for (int s = 0; s < kStrips; ++s) acc[r][s] = _mm512_setzero_ps();
  }
  // The strips of the next tile to the right, asked for at the pace these are read (a line
  // per input in f32, per pair of inputs in bf16).
  const Weight* next_strips = w + kStrips * strip_values;
  const auto prefetch_line = [&](int64_t line) {
#pragma GCC unroll 8
    for (int s = 0; s < kStrips; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(next_strips + s * strip_values) + 64 * line,
                   _MM_HINT_T1);
    }
  };
  __m512 weights[kStrips];
  if constexpr (kBFloat16) {
    const int64_t pairs = k / 2;
    for (int64_t p = 0; p < pairs; ++p) {
      if constexpr (kPrefetchNextStrip) prefetch_line(p);
#pragma GCC unroll 8
      for (int s = 0; s < kStrips; ++s) {
        weights[s] = LoadStripWeightsOfPair<false>(w + s * strip_values, p);
      }
      MultiplyAddInput<kRows, kStrips>(a, args.lda, 2 * p, weights, acc);
#pragma GCC unroll 8
      for (int s = 0; s < kStrips; ++s) {
        weights[s] = LoadStripWeightsOfPair<true>(w + s * strip_values, p);
      }
      MultiplyAddInput<kRows, kStrips>(a, args.lda, 2 * p + 1, weights, acc);
    }
    if (k % 2 != 0) {
#pragma GCC unroll 8
      for (int s = 0; s < kStrips; ++s) {
        weights[s] = LoadStripWeightsOfPair<false>(w + s * strip_values, pairs);
      }
      MultiplyAddInput<kRows, kStrips>(a, args.lda, k - 1, weights, acc);
    }
  } else {
    for (int64_t i = 0; i < k; ++i) {
      if constexpr (kPrefetchNextStrip) prefetch_line(i);
#pragma GCC unroll 8
      for (int s = 0; s < kStrips; ++s) weights[s] = LoadStripWeights(w + s * strip_values, i);
      MultiplyAddInput<kRows, kStrips>(a, args.lda, i, weights, acc);
    }
  }
  const int64_t first_column = strip * kF32GemmStripColumns;
  const int64_t columns = Smaller(kStrips * kF32GemmStripColumns, args.n - first_column);
  const float* bias = args.bias != nullptr ? args.bias + first_column : nullptr;
  // Bias and ReLU are applied in registers, in F32GemmFinishOutputs' order and with its
  // semantics (max(0, x) keeps -0 and NaN as std::max(x, 0.0f) does): a second pass over the
  // stored row read it back through narrower loads that the store could not forward: a
  // 512-deep product with bias and ReLU took 1.26x as long (docs/benchmarks.md, stop 40).
  const bool relu = args.activation == Activation::kRelu;
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    float* out = args.y + (row + r) * args.ldy + first_column;
#pragma GCC unroll 8
    for (int s = 0; s < kStrips; ++s) {
      __m512 values = acc[r][s];
      const int64_t left = columns - s * kF32GemmStripColumns;
      if (left <= 0) continue;
      const __mmask16 mask = left >= kF32GemmStripColumns
                                 ? static_cast<__mmask16>(0xFFFF)
                                 : static_cast<__mmask16>((1u << left) - 1);
      if (bias != nullptr) {
        values =
            _mm512_add_ps(values, _mm512_maskz_loadu_ps(mask, bias + s * kF32GemmStripColumns));
      }
      if (relu) values = _mm512_max_ps(_mm512_setzero_ps(), values);
      _mm512_mask_storeu_ps(out + s * kF32GemmStripColumns, mask, values);
    }
    if (args.activation == Activation::kGelu) {
      F32GemmFinishOutputs(out, nullptr, args.activation, columns);
    }
  }
}

// A tile of `width` <= kStrips strips.
template <typename Weight, int kRows, int kStrips>
void TileOfWidth(const F32GemmArgs& args, const Weight* packed, int64_t row, int64_t strip,
                 int64_t width, bool prefetch) {
  if constexpr (kStrips > 1) {
    if (width < kStrips) {
      TileOfWidth<Weight, kRows, kStrips - 1>(args, packed, row, strip, width, prefetch);
      return;
    }
  }
  if (prefetch) {
    Tile<Weight, kRows, kStrips, true>(args, packed, row, strip);
  } else {
    Tile<Weight, kRows, kStrips, false>(args, packed, row, strip);
  }
}

// `rows` <= kRows rows from `row` x `strips` strips from `strip`, in tiles as wide as kStripsFor
// allows for that many rows. As in the AVX2 tiles, only the first row tile of a strip (which
// waits for the strip to come from memory) of four rows or more asks for the next strip.
template <typename Weight, int kRows>
void TileRows(const F32GemmArgs& args, const Weight* packed, int64_t rows, int64_t row,
              int64_t strip, int64_t strips, bool first_row_tile) {
  if constexpr (kRows > 1) {
    if (rows < kRows) {
      TileRows<Weight, kRows - 1>(args, packed, rows, row, strip, strips, first_row_tile);
      return;
    }
  }
  constexpr int kWidest = kStripsFor(kRows);
  const bool prefetch = first_row_tile && kRows >= 4;
  for (int64_t s = strip; s < strip + strips; s += kWidest) {
    TileOfWidth<Weight, kRows, kWidest>(args, packed, row, s, Smaller(kWidest, strip + strips - s),
                                        prefetch);
  }
}

template <typename Weight>
void RunTiles(const F32GemmArgs& args, const F32GemmRun& run, const Weight* packed) {
  ForEachTileOfRun(args, run, kMaxTileRows,
                   [&](int64_t rows, int64_t row, int64_t strip, int64_t width, bool first) {
                     TileRows<Weight, kMaxTileRows>(args, packed, rows, row, strip, width, first);
                   });
}

}  // namespace

int64_t F32GemmStripsPerTileAvx512(int64_t m) {
  // The tiles of the tallest row block (ForEachTileOfRun's split): blocks of a product differ
  // by a row at most, and from two blocks on every tile has seven or eight rows.
  const int64_t blocks = (m + kF32GemmRowBlock - 1) / kF32GemmRowBlock;
  const int64_t block_rows = (m + blocks - 1) / blocks;
  const int64_t tiles = (block_rows + kMaxTileRows - 1) / kMaxTileRows;
  return kStripsFor(static_cast<int>((block_rows + tiles - 1) / tiles));
}

void F32GemmRunAvx512(const F32GemmArgs& args, const F32GemmRun& run) {
  if (args.packed_bf16 != nullptr) {
    RunTiles(args, run, F32GemmBFloat16Strips(args));
  } else {
    RunTiles(args, run, args.packed);
  }
}

}  // namespace taskmoe::kernels::internal
