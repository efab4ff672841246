// Weight packing, the register tiles and the threaded driver of our f32 GEMM (f32_gemm.h).
#include "kernels/f32_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/cpu_features.h"
#include "kernels/f32_gemm_avx512.h"
#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

constexpr int64_t kVectorFloats = 8;

// Strip groups are handed to threads in this many contiguous runs at most: enough to balance
// two to a few dozen threads, few enough that the per-run call costs nothing.
constexpr int64_t kMaxStripRuns = 64;

// Every tile width in strips (1-4 for the 256-bit tiles, 4 and 8 for the 512-bit ones)
// divides a chunk's, so strip groups never straddle two chunks.
static_assert(kF32GemmChunkColumns % (kF32GemmStripColumns * 24) == 0);

// Inputs up to this size stay in L2 (1-2 MB a core on current servers, half of it left for the
// weights passing through).
constexpr int64_t kL2InputBytes = int64_t{512} << 10;

// Rows per tile at most: six rows x two vectors keep twelve accumulators, the strip's two
// weight vectors and one broadcast input in the sixteen vector registers.
constexpr int64_t kMaxTileRows = 6;

// The packed weights of `Weight`'s packing (f32_gemm.h).
template <typename Weight>
const Weight* PackedWeights(const F32GemmArgs& args) {
  if constexpr (std::is_same_v<Weight, BFloat16>) {
    return internal::F32GemmBFloat16Strips(args);
  } else {
    return args.packed;
  }
}

// Where column c's weight for input i lies in the f32 or the bf16 packing (f32_gemm.h), in
// values from the first strip: ColumnPlace(c) + InputPlace(i), for the packers and the exact
// columns of the greedy filter alike.
inline int64_t ColumnPlace(int64_t k, int64_t column, bool bf16) {
  const int64_t strip = column / kF32GemmStripColumns, lane = column % kF32GemmStripColumns;
  return strip * internal::F32GemmStripValues(k, bf16) + (bf16 ? 2 : 1) * lane;
}
inline int64_t InputPlace(int64_t i, bool bf16) {
  return bf16 ? (i - i % 2) * kF32GemmStripColumns + i % 2 : i * kF32GemmStripColumns;
}

// Input i's weights of an f32 strip at w as two 8-column vectors (columns 0-7, 8-15).
inline void LoadStripWeights(const float* w, int64_t i, __m256& low, __m256& high) {
  low = _mm256_loadu_ps(w + i * kF32GemmStripColumns);
  high = _mm256_loadu_ps(w + i * kF32GemmStripColumns + kVectorFloats);
}

// One input's weights of a bf16 strip (f32_gemm.h) as two 8-column vectors, from `at`: the
// input's pair for its second input, two bytes lower for its first. A bf16 value is the upper
// half of its float, so a mask widens either exactly (a shift, the other way to reach the low
// halves, would take one of the two ports that the fused multiply-adds need on Intel).
inline void LoadBFloat16StripWeights(const char* at, __m256& low, __m256& high) {
  const __m256i upper_halves = _mm256_set1_epi32(-65536);
  const auto* columns = reinterpret_cast<const __m256i*>(at);
  low = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(columns), upper_halves));
  high = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(columns + 1), upper_halves));
}

// One row's product with a bf16 strip group, a pair of inputs per step (kStrips strips): the
// pair's first input of every strip, widened by a shift, then its second, by a mask (which GCC
// reads from the same cache line again). The taller tiles' masked reads (every weight read
// twice, half of the reads across two cache lines) cost a single row, which cannot hide them
// behind its few multiply-adds (0.75x at one row from L2, 0.92x from memory). Each accumulator's
// two multiply-adds of a pair back to back (one widening of each vector after the other) measured
// 0.84-0.88x of stop 53's one-row tile from L2 (1 x 1024 x 1024 with the AVX2 caps); apart, as
// here, 0.96-1.00x.
template <int kStrips>
inline void OneRowOfBFloat16Pairs(const float* a, const BFloat16* w, int64_t k,
                                  int64_t strip_values, __m256 (&acc)[2 * kStrips]) {
  // acc[2s + v] += input x the pair's first (kSecond false) or second inputs' weights, for
  // every strip s and vector v, the pair `pair_values` values into each strip.
  const auto multiply_add = [&]<bool kSecond>(__m256 input, int64_t pair_values) {
    const __m256i upper_halves = _mm256_set1_epi32(-65536);
#pragma GCC unroll 4
    for (int s = 0; s < kStrips; ++s) {
      const auto* pair = reinterpret_cast<const __m256i*>(w + s * strip_values + pair_values);
#pragma GCC unroll 2
      for (int v = 0; v < 2; ++v) {
        const __m256i columns = _mm256_loadu_si256(pair + v);
        const __m256i widened =
            kSecond ? _mm256_and_si256(columns, upper_halves) : _mm256_slli_epi32(columns, 16);
        acc[2 * s + v] = _mm256_fmadd_ps(input, _mm256_castsi256_ps(widened), acc[2 * s + v]);
      }
    }
  };
  for (int64_t p = 0; p < k / 2; ++p) {
    const int64_t pair_values = p * 2 * kF32GemmStripColumns;
    multiply_add.template operator()<false>(_mm256_broadcast_ss(a + 2 * p), pair_values);
    multiply_add.template operator()<true>(_mm256_broadcast_ss(a + 2 * p + 1), pair_values);
  }
  if (k % 2 != 0) {
    multiply_add.template operator()<false>(_mm256_broadcast_ss(a + k - 1),
                                            (k - 1) * kF32GemmStripColumns);
  }
}

// acc[r][v] += input i of row r x weights[v], for every row and vector of a tile.
template <int kRows, int kVectors>
inline void MultiplyAddInput(const float* const* a_rows, int64_t i,
                             const __m256 (&weights)[kVectors], __m256 (&acc)[kRows][kVectors]) {
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) {
    const __m256 input = _mm256_broadcast_ss(a_rows[r] + i);
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_fmadd_ps(input, weights[v], acc[r][v]);
  }
}

// kRows rows from `row` x kStrips strips from `strip`: y = act(a w^T + bias) for the tile's
// columns that exist. Each accumulator is one FMA chain over the inputs in order (f32_gemm.h).
template <typename Weight, int kRows, int kStrips, bool kPrefetchNextStrip = false>
inline void Tile(const F32GemmArgs& args, int64_t row, int64_t strip) {
  constexpr bool kBFloat16 = std::is_same_v<Weight, BFloat16>;
  constexpr int kVectors = 2 * kStrips;
  const int64_t k = args.k;
  const int64_t strip_values = internal::F32GemmStripValues(k, kBFloat16);
  // One pointer per row: the loop's broadcasts then address base + index alone, where an
  // offset recomputed per row and step costs an integer instruction each, on the ports the
  // fused multiply-adds use (Intel).
  const float* a_rows[kRows];
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) a_rows[r] = args.a + (row + r) * args.lda;
  const Weight* w = PackedWeights<Weight>(args) + strip * strip_values;
  __m256 acc[kRows][kVectors];
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  // The next strip is asked for at the pace this one is read: a line per input in f32, per
  // pair of inputs in bf16.
  const Weight* next_strip = w + strip_values;
  __m256 weights[kVectors];
  if constexpr (kBFloat16 && kRows == 1) {
    OneRowOfBFloat16Pairs<kStrips>(a_rows[0], w, k, strip_values, acc[0]);
  } else if constexpr (kBFloat16) {
    // One input per step, as in f32 (a step that took both inputs of a pair ran GCC out of
    // registers: it spilled two accumulators). A pair's first input is read two bytes lower
    // than its second (LoadBFloat16StripWeights), so the steps from one input to the next
    // alternate between 2 bytes and 62.
    constexpr int64_t kPairBytes = 2 * kF32GemmStripColumns * sizeof(BFloat16);
    const char* at = reinterpret_cast<const char*>(w) - sizeof(BFloat16);
    int64_t step = sizeof(BFloat16);
    for (int64_t i = 0; i < k; ++i) {
      if constexpr (kPrefetchNextStrip) {
        if (i % 2 == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(next_strip + i * kF32GemmStripColumns),
                       _MM_HINT_T1);
        }
      }
#pragma GCC unroll 4
      for (int s = 0; s < kStrips; ++s) {
        LoadBFloat16StripWeights(at + s * strip_values * sizeof(BFloat16), weights[2 * s],
                                 weights[2 * s + 1]);
      }
      at += step;
      step ^= sizeof(BFloat16) ^ (kPairBytes - sizeof(BFloat16));
      MultiplyAddInput(a_rows, i, weights, acc);
    }
  } else {
    for (int64_t i = 0; i < k; ++i) {
      if constexpr (kPrefetchNextStrip) {
        _mm_prefetch(reinterpret_cast<const char*>(next_strip + i * kF32GemmStripColumns),
                     _MM_HINT_T1);
      }
#pragma GCC unroll 4
      for (int s = 0; s < kStrips; ++s) {
        LoadStripWeights(w + s * strip_values, i, weights[2 * s], weights[2 * s + 1]);
      }
      MultiplyAddInput(a_rows, i, weights, acc);
    }
  }
  const int64_t first_column = strip * kF32GemmStripColumns;
  const int64_t columns = std::min<int64_t>(kVectors * kVectorFloats, args.n - first_column);
  const float* bias = args.bias != nullptr ? args.bias + first_column : nullptr;
  // A whole tile takes its bias and ReLU in registers (as f32_gemm_avx512.cc explains); a
  // tile cut by the last column goes through memory and F32GemmFinishOutputs, with the same
  // results.
  const bool relu = args.activation == Activation::kRelu;
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) {
    float* out = args.y + (row + r) * args.ldy + first_column;
    if (columns == kVectors * kVectorFloats) {
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v) {
        __m256 values = acc[r][v];
        if (bias != nullptr)
          values = _mm256_add_ps(values, _mm256_loadu_ps(bias + v * kVectorFloats));
        if (relu) values = _mm256_max_ps(_mm256_setzero_ps(), values);
        _mm256_storeu_ps(out + v * kVectorFloats, values);
      }
      if (args.activation == Activation::kGelu) {
        internal::F32GemmFinishOutputs(out, nullptr, args.activation, columns);
      }
    } else {
      alignas(32) float spill[kVectors * kVectorFloats];
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v) _mm256_store_ps(spill + v * kVectorFloats, acc[r][v]);
      std::memcpy(out, spill, columns * sizeof(float));
      internal::F32GemmFinishOutputs(out, bias, args.activation, columns);
    }
  }
}

// Strips per tile for inputs of `m` rows: one or two rows are too few to hide the FMA latency
// with one strip's two chains each, so they take several strips at once.
int64_t StripsPerTile(int64_t m) {
  if (m == 1) return 4;
  if (m == 2) return 3;
  if (m == 3) return 2;
  return 1;
}

// Rows [row, row + rows) x `strips` strips from `strip`, in tiles as wide as StripsPerTile
// allows for that many rows. Tall tiles are compute-bound once their strip is in cache, but
// the first of a strip's row tiles waits for it to come from memory: that one
// (`first_row_tile`) asks, a line per step of its loop, for the next strip, into L2.
template <typename Weight>
void TileAt(const F32GemmArgs& args, int64_t rows, int64_t row, int64_t strip, int64_t strips,
            bool first_row_tile) {
  const int64_t widest = StripsPerTile(rows);
  for (int64_t s = strip; s < strip + strips; s += widest) {
    const int64_t width = std::min(widest, strip + strips - s);
    switch (rows) {
      case 1:
        if (width == 4) Tile<Weight, 1, 4>(args, row, s);
        if (width == 3) Tile<Weight, 1, 3>(args, row, s);
        if (width == 2) Tile<Weight, 1, 2>(args, row, s);
        if (width == 1) Tile<Weight, 1, 1>(args, row, s);
        break;
      case 2:
        if (width == 3) Tile<Weight, 2, 3>(args, row, s);
        if (width == 2) Tile<Weight, 2, 2>(args, row, s);
        if (width == 1) Tile<Weight, 2, 1>(args, row, s);
        break;
      case 3:
        if (width == 2) Tile<Weight, 3, 2>(args, row, s);
        if (width == 1) Tile<Weight, 3, 1>(args, row, s);
        break;
      case 4:
        first_row_tile ? Tile<Weight, 4, 1, true>(args, row, s) : Tile<Weight, 4, 1>(args, row, s);
        break;
      case 5:
        first_row_tile ? Tile<Weight, 5, 1, true>(args, row, s) : Tile<Weight, 5, 1>(args, row, s);
        break;
      default:
        first_row_tile ? Tile<Weight, 6, 1, true>(args, row, s) : Tile<Weight, 6, 1>(args, row, s);
        break;
    }
  }
}

// One run of a product (f32_gemm_avx512.h) on the 256-bit tiles.
template <typename Weight>
void RunTiles(const F32GemmArgs& args, const internal::F32GemmRun& run) {
  internal::ForEachTileOfRun(
      args, run, kMaxTileRows,
      [&](int64_t rows, int64_t row, int64_t strip, int64_t width, bool first) {
        TileAt<Weight>(args, rows, row, strip, width, first);
      });
}

}  // namespace

namespace internal {

void F32GemmFinishOutputs(float* out, const float* bias, Activation activation, int64_t count) {
  if (bias != nullptr) {
    for (int64_t c = 0; c < count; ++c) out[c] += bias[c];
  }
  if (activation != Activation::kNone) ApplyActivationInPlace(activation, out, count);
}

}  // namespace internal

int64_t F32GemmPackedFloats(int64_t out_features, int64_t in_features) {
  const int64_t strips = (out_features + kF32GemmStripColumns - 1) / kF32GemmStripColumns;
  return strips * kF32GemmStripColumns * in_features;
}

void PackF32GemmWeights(const float* w, int64_t n, int64_t k, float* packed) {
  std::memset(packed, 0, F32GemmPackedFloats(n, k) * sizeof(float));
  for (int64_t c = 0; c < n; ++c) {
    float* column = packed + ColumnPlace(k, c, /*bf16=*/false);
    for (int64_t i = 0; i < k; ++i) column[InputPlace(i, /*bf16=*/false)] = w[c * k + i];
  }
}

int64_t F32GemmPackedBFloat16Values(int64_t out_features, int64_t in_features) {
  const int64_t strips = (out_features + kF32GemmStripColumns - 1) / kF32GemmStripColumns;
  return internal::kF32GemmBFloat16LeadValues +
         strips * internal::F32GemmStripValues(in_features, /*bf16=*/true);
}

void PackF32GemmWeightsAsBFloat16(const float* w, int64_t n, int64_t k, BFloat16* packed) {
  std::fill_n(packed, F32GemmPackedBFloat16Values(n, k), BFloat16{});
  packed += internal::kF32GemmBFloat16LeadValues;
  for (int64_t c = 0; c < n; ++c) {
    BFloat16* column = packed + ColumnPlace(k, c, /*bf16=*/true);
    for (int64_t i = 0; i < k; ++i) {
      uint32_t bits;
      std::memcpy(&bits, w + c * k + i, sizeof(bits));
      column[InputPlace(i, /*bf16=*/true)] = BFloat16{static_cast<uint16_t>(bits >> 16)};
    }
  }
}

F32GemmTiles DefaultF32GemmTiles() {
  // The oneDNN level caps this too, so ONEDNN_MAX_CPU_ISA=AVX2 runs what an AVX2-only CPU runs.
  static const F32GemmTiles tiles = CpuHasAvx512() ? F32GemmTiles::kAvx512 : F32GemmTiles::kAvx2;
  return tiles;
}

void F32Gemm(const F32GemmArgs& args) { F32Gemm(args, DefaultF32GemmTiles()); }

void F32Gemm(const F32GemmArgs& args, F32GemmTiles tiles) {
  if (args.m == 0 || args.n == 0) return;
  const int64_t strips = (args.n + kF32GemmStripColumns - 1) / kF32GemmStripColumns;
  const bool wide = tiles == F32GemmTiles::kAvx512 && CpuHasAvx512();
  const int64_t group_strips =
      wide ? internal::F32GemmStripsPerTileAvx512(args.m) : StripsPerTile(args.m);
  const int64_t groups = (strips + group_strips - 1) / group_strips;
  const int64_t blocks = (args.m + internal::kF32GemmRowBlock - 1) / internal::kF32GemmRowBlock;
  const bool bf16 = args.packed_bf16 != nullptr;
  const auto compute = [&](const internal::F32GemmRun& run) {
    if (wide) {
      internal::F32GemmRunAvx512(args, run);
    } else if (bf16) {
      RunTiles<BFloat16>(args, run);
    } else {
      RunTiles<float>(args, run);
    }
  };
  const bool parallel = args.m * args.n * args.k >= kParallelMacs;
  const bool inputs_fit_l2 = args.m * args.k * static_cast<int64_t>(sizeof(float)) <= kL2InputBytes;
  if (args.on_chunk_done != nullptr) {
    // Runs of whole chunks over every row, each chunk reported once computed.
    const int64_t chunks = (args.n + kF32GemmChunkColumns - 1) / kF32GemmChunkColumns;
    const int64_t chunk_groups = kF32GemmChunkColumns / kF32GemmStripColumns / group_strips;
    ParallelFor(chunks, parallel, [&](int64_t chunk) {
      compute({.group_strips = group_strips,
               .first_group = chunk * chunk_groups,
               .last_group = std::min(groups, (chunk + 1) * chunk_groups),
               .blocks = blocks,
               .first_block = 0,
               .last_block = blocks,
               .groups_outer = inputs_fit_l2});
      (*args.on_chunk_done)(chunk, 0, args.m);
    });
    return;
  }
  const int64_t threads = NumThreads();
  if (blocks >= 2 * threads) {
    // Many row blocks (an encoder pass over a batch): runs of one block each (and of a share
    // of the strip groups, so that there are runs enough to balance the threads), so the
    // block's inputs stay in L2 while the weights pass; split by columns alone, every run read
    // all the inputs again (3,072 x 2,048 x 512, two threads: 0.87-0.92x the time now).
    const int64_t shares = std::min(groups, (8 * threads + blocks - 1) / blocks);
    ParallelFor(blocks * shares, parallel, [&](int64_t run) {
      const int64_t block = run / shares, share = run % shares;
      compute({.group_strips = group_strips,
               .first_group = groups * share / shares,
               .last_group = groups * (share + 1) / shares,
               .blocks = blocks,
               .first_block = block,
               .last_block = block + 1});
    });
    return;
  }
  const int64_t runs = std::min(groups, kMaxStripRuns);
  ParallelFor(runs, parallel, [&](int64_t run) {
    compute({.group_strips = group_strips,
             .first_group = groups * run / runs,
             .last_group = groups * (run + 1) / runs,
             .blocks = blocks,
             .first_block = 0,
             .last_block = blocks,
             .groups_outer = inputs_fit_l2});
  });
}

namespace {

inline float WeightAsFloat(float w) { return w; }
inline float WeightAsFloat(BFloat16 w) {
  const uint32_t bits = static_cast<uint32_t>(w.bits) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

template <typename Weight>
void SelectedColumns(const F32GemmArgs& args, int64_t row, const int32_t* columns, int64_t count,
                     float* out) {
  constexpr bool kBFloat16 = std::is_same_v<Weight, BFloat16>;
  const Weight* packed = PackedWeights<Weight>(args);
  const float* a = args.a + row * args.lda;
  // Eight columns at a time: eight independent chains hide the FMA latency. std::fma rounds
  // once, as the tiles' vfmadd does, so each chain gives the tiles' bits.
  constexpr int64_t kGroup = 8;
  for (int64_t first = 0; first < count; first += kGroup) {
    const int64_t group = std::min(kGroup, count - first);
    const Weight* weights[kGroup];
    for (int64_t c = 0; c < group; ++c)
      weights[c] = packed + ColumnPlace(args.k, columns[first + c], kBFloat16);
    float acc[kGroup] = {};
    for (int64_t i = 0; i < args.k; ++i) {
      const float input = a[i];
      const int64_t at = InputPlace(i, kBFloat16);
      for (int64_t c = 0; c < group; ++c) {
        acc[c] = std::fma(input, WeightAsFloat(weights[c][at]), acc[c]);
      }
    }
    for (int64_t c = 0; c < group; ++c) {
      out[first + c] = args.bias != nullptr ? acc[c] + args.bias[columns[first + c]] : acc[c];
    }
  }
}

}  // namespace

void F32GemmSelectedColumns(const F32GemmArgs& args, int64_t row, const int32_t* columns,
                            int64_t count, float* out) {
  if (args.packed_bf16 != nullptr) {
    SelectedColumns<BFloat16>(args, row, columns, count, out);
  } else {
    SelectedColumns<float>(args, row, columns, count, out);
  }
}

}  // namespace taskmoe::kernels
