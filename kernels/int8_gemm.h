// Our own s8 x s8 matrix product. Written for CPUs on which oneDNN 2.6 has no fast int8 matmul
// (AVX2 without AVX-512 VNNI: there oneDNN runs gemm:jit, which repacks the weights at every
// call and ran a 1 x 256 x 16000 product 5x slower than f32); its 512-bit form also replaces
// oneDNN's brgemm on AVX-512 VNNI CPUs without AMX, faster at one row (docs/benchmarks.md,
// stop 52). Weights are packed once, at load; each product then streams them once, which is
// what bounds a decoding step at small batches.
//
// Every form of the register tile (int8_gemm_tile.h, int8_gemm_avx512.cc) multiplies the
// inputs shifted to unsigned, (a + 128) * w, which the caller's quantisation writes
// (QuantizeRowsSymmetricShifted, quantize.h), and subtracts 128 * sum_i w[c][i] per column
// (Int8GemmShiftCorrection, computed once at load), exactly:
//   AVX2      vpmaddubsw on two groups of 4 inputs, their 16-bit pair sums added (vpaddw),
//             one vpmaddwd to widen them and one vpaddd: five instructions, three of them
//             multiplications, per 64 multiply-adds. vpmaddubsw's pair sums saturate above
//             32767, and two of them are added before widening, so the weights must lie in
//             [-31, 31] (2 * 2 * 255 * 31 = 31620): this path quantises its weights with 31
//             levels (kInt8GemmAvx2WeightLevels), not 127. (The sign trick |a| * (w * sign a)
//             kept 8-bit weights at four instructions per 32; 7-bit weights, one group at a
//             time, three per 32, gained 1.3x and cost the demo model no BLEU on its test
//             split, 47.34 -> 47.44; two groups at a time gain 1.2x more for 0.1 BLEU, 47.33.)
//   AVX-VNNI  vpdpbusd, which sums four products straight into 32 bits: one instruction,
//             weights in [-127, 127].
//   AVX-512 VNNI  the same on 512-bit vectors: one packed unit (below) is one register, 64
//             multiply-adds per instruction, and a tile of 6 rows x 4 units (8 x 3 below 64
//             rows) keeps 24 sums in registers (int8_gemm_avx512.cc).
// Inputs must lie in [-127, 127] (shifted: [1, 255]), which symmetric quantisation guarantees.
#ifndef TASKMOE_KERNELS_INT8_GEMM_H_
#define TASKMOE_KERNELS_INT8_GEMM_H_

#include <cstdint>

namespace taskmoe::kernels {

// The packed layout: output columns in tiles of 16 (two blocks of 8, one AVX2 vector of int32
// sums each) and inputs in groups of 4. One 64-byte unit, one cache line, holds a tile's 16
// columns x group g's 4 inputs: column c's 4 inputs are bytes 4c .. 4c + 3 (block 0 in the
// first 32 bytes, block 1 in the second). A tile's units follow each other over all groups, so
// a tile is padded_in * 16 contiguous bytes and a product reads its weights as one sequential
// stream. (Blocks of 8 columns stored one after the other made each tile read two streams a
// block apart, 4 KiB = one page at 512 inputs; the hardware prefetcher restarts at every page,
// and a single row read weights from memory at half the bandwidth.) The input count is padded
// to a multiple of 4 and the column count to a multiple of 16, with zero weights.
inline constexpr int64_t kInt8GemmBlockColumns = 8;
inline constexpr int64_t kInt8GemmTileColumns = 2 * kInt8GemmBlockColumns;
inline constexpr int64_t kInt8GemmBlockBytes = 32;  // one block's 8 columns x 4 inputs
inline constexpr int64_t kInt8GemmUnitBytes = 2 * kInt8GemmBlockBytes;

// How far ahead of the unit being multiplied every form prefetches a tile's weights, which
// stream from memory once per product: 64 units. A 1 x 512 x 64000 product from memory (one
// thread, Zen 5 in AVX2 form) read 35-37 GB/s with the hardware prefetcher alone, 41 GB/s (the
// core's plain read bandwidth) with 4 KiB; 1-2 KiB gained nothing.
inline constexpr int64_t kInt8GemmPrefetchBytes = 4096;

int64_t Int8GemmPaddedInputs(int64_t in_features);
int64_t Int8GemmPackedBytes(int64_t out_features, int64_t in_features);

// Packs w, s8 [n, k] row-major (the nn.Linear layout, one row per output column), into
// `packed`, which holds Int8GemmPackedBytes(n, k) bytes.
void PackInt8GemmWeights(const int8_t* w, int64_t n, int64_t k, int8_t* packed);

// Output columns rounded up to whole tiles, as packed.
int64_t Int8GemmPaddedColumns(int64_t out_features);
// The correction for inputs shifted to unsigned: correction[c] = 128 * sum_i w[c][i] for the
// Int8GemmPaddedColumns(n) columns (0 for padding ones). With the shift, sums reach
// 255 * 127 * k, so k must stay below 66,000 inputs (int32).
void Int8GemmShiftCorrection(const int8_t* w, int64_t n, int64_t k, int32_t* correction);

enum class Int8GemmIsa : uint8_t { kAvx2, kAvxVnni, kAvx512Vnni };

// The column tiles one step of a form's loop multiplies side by side (the threads' shares of
// a product start at multiples of it): for the AVX-512 form on several rows 4, or 3 where its
// row tiles have seven or eight rows; else 1.
int64_t Int8GemmTilesPerStep(Int8GemmIsa isa, int64_t m);

// The largest weight magnitude each form multiplies exactly.
inline constexpr int kInt8GemmAvx2WeightLevels = 31;
inline constexpr int kInt8GemmVnniWeightLevels = 127;

// One product: y[r][c] = float(sum_i a[r][i] * w[c][i]) for r < m, c < n.
struct Int8GemmArgs {
  // [m] rows of padded_in inputs shifted to unsigned, a + 128 (128 past in_features), lda apart.
  const uint8_t* a = nullptr;
  int64_t lda = 0;
  int64_t m = 0;
  const int8_t* packed = nullptr;  // PackInt8GemmWeights' output
  int64_t n = 0;
  int64_t padded_in = 0;  // Int8GemmPaddedInputs(in_features)
  float* y = nullptr;     // [m] rows of n floats, ldy apart
  int64_t ldy = 0;
  // Int8GemmShiftCorrection's output for these weights.
  const int32_t* shift_correction = nullptr;
};

// Runs the product across the kernel threads (runtime.h) when it is large enough to pay for
// waking them. The caller checks that the CPU has the instruction set (cpu_features.h).
void Int8Gemm(Int8GemmIsa isa, const Int8GemmArgs& args);

// The single-threaded bodies, one per instruction set (int8_gemm_avx2.cc, int8_gemm_vnni.cc):
// column tiles [first_tile, first_tile + tile_count) of kInt8GemmTileColumns columns.
void Int8GemmColumnTilesAvx2(const Int8GemmArgs& args, int64_t first_tile, int64_t tile_count);
void Int8GemmColumnTilesAvxVnni(const Int8GemmArgs& args, int64_t first_tile, int64_t tile_count);
void Int8GemmColumnTilesAvx512Vnni(const Int8GemmArgs& args, int64_t first_tile,
                                   int64_t tile_count);

// Int8GemmTilesPerStep for the AVX-512 form, which splits the rows into register tiles of
// equal heights (at most 8 rows below 64 rows, 6 from there) and takes three column tiles at
// once where a tile has seven or eight rows. Defined with that form (int8_gemm_avx512.cc):
// call it only where it runs.
int64_t Int8GemmAvx512TilesPerStep(int64_t m);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_INT8_GEMM_H_
