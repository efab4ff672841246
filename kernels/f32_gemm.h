// Our own f32 matrix product (FMA on 256-bit vectors, or 512-bit ones where the CPU has
// AVX-512) for CPUs on which oneDNN 2.6 has no brgemm f32 kernel (AVX2 without AVX-512). There
// oneDNN runs gemm:jit, which packs the weights again at every call: the 128 x 512 x 64,000
// vocabulary projection reached half of the f32 peak, and each of its column panels was a separate
// packing pass. Here the weights are packed once, at load, into strips of 16 columns that a
// register tile streams from L1.
//
// Every output is one chain of fused multiply-adds over the inputs in order (then the bias),
// whatever the tile shape, the row count or the thread that computes it: a row's result never
// depends on the other rows of its batch, which keeps a sentence's translation the same
// whether it is decoded alone or in any batch.
//
// Weights whose every value is a bf16 value (a model stored in bf16, as the demo is, or the
// bf16_as_f32 path's rounded ones) may be packed in bf16: half the memory and half the bytes
// each product reads, which is what a product of few rows waits for. The tile widens them to
// f32 exactly (a shift or a mask), so the products are bit for bit those of the f32 packing.
#ifndef TASKMOE_KERNELS_F32_GEMM_H_
#define TASKMOE_KERNELS_F32_GEMM_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "kernels/activation.h"
#include "kernels/dtype.h"

namespace taskmoe::kernels {

// The packed layout: output columns in strips of 16, the strips one after another, each
// holding its 16 columns' weights for input 0, then input 1, ... (k x 16 floats, row-major),
// so a tile reads two 8-float vectors (or one 16-float one) per input. The column count is
// padded to a multiple of 16 with zero weights.
inline constexpr int64_t kF32GemmStripColumns = 16;

// Floats of the f32 packing for an [n, k] weight matrix (the bf16 packing's size is
// F32GemmPackedBFloat16Values, below).
int64_t F32GemmPackedFloats(int64_t out_features, int64_t in_features);

// Packs w, f32 [n, k] row-major (the nn.Linear layout, one row per output column), into
// `packed`, which holds F32GemmPackedFloats(n, k) floats.
void PackF32GemmWeights(const float* w, int64_t n, int64_t k, float* packed);

// The bf16 packing: the same strips of 16 columns, each holding its columns' weights for
// inputs 0 and 1, then 2 and 3, ...: a pair of inputs is 32 values (64 bytes) whose 32-bit
// lane j holds column j's weight for the pair's first input in its low half and for its second
// in its high half. A shift gives the first input's f32 weights and a mask the second's, one
// instruction per input and 16 columns on 512-bit vectors (the 16 bf16 values of one input
// would need a widening shuffle and a shift, and on Intel the shuffle competes with the fused
// multiply-adds for their port). An odd input count ends with a pair whose second half is
// zero and never multiplied. The strips follow a lead of one cache line of zeros (the AVX2
// tiles read a pair's first input two bytes before it: a mask then widens it, as it does the
// second input, without a shift).
//
// Every value of w must be a bf16 value (AllBFloat16Values, quantize.h); `packed` holds
// F32GemmPackedBFloat16Values(n, k) values.
int64_t F32GemmPackedBFloat16Values(int64_t out_features, int64_t in_features);
void PackF32GemmWeightsAsBFloat16(const float* w, int64_t n, int64_t k, BFloat16* packed);

// Columns per chunk of F32GemmArgs::on_chunk_done: the smallest multiple of every tile's width
// (1, 2, 3, 4 or 8 strips of 16), so that no tile straddles two chunks and a 16k vocabulary
// still makes 42 runs to share among the threads; fixed, so that a reduction per chunk rounds
// the same whatever the row count and the thread count.
inline constexpr int64_t kF32GemmChunkColumns = 384;

// Told that the outputs of rows [first_row, first_row + rows) in columns
// [chunk * kF32GemmChunkColumns, (chunk + 1) * kF32GemmChunkColumns) (the last chunk narrower)
// are final, on the thread that computed them, while they are in its cache.
using F32GemmChunkSink = absl::FunctionRef<void(int64_t chunk, int64_t first_row, int64_t rows)>;

// One product: y[r][c] = act(sum_i a[r][i] * w[c][i] + bias[c]) for r < m, c < n.
struct F32GemmArgs {
  const float* a = nullptr;  // [m] rows of k floats, lda apart
  int64_t lda = 0;
  int64_t m = 0;
  // PackF32GemmWeights' output, or PackF32GemmWeightsAsBFloat16's in `packed_bf16` (exactly
  // one of the two is set).
  const float* packed = nullptr;
  const BFloat16* packed_bf16 = nullptr;
  int64_t n = 0;
  int64_t k = 0;
  const float* bias = nullptr;  // [n], or null for none
  Activation activation = Activation::kNone;
  float* y = nullptr;  // [m] rows of n floats, ldy apart
  int64_t ldy = 0;
  // Optional: each chunk of columns is reported as soon as it is final (the greedy head
  // reduces the 64k-wide products chunk by chunk from cache instead of reading them back).
  const F32GemmChunkSink* on_chunk_done = nullptr;
};

// The register tiles a product runs on: 256-bit (AVX2 and FMA, every x86-64-v3 CPU) or 512-bit
// (AVX-512 F/BW/DQ/VL). Both compute every output as the same chain of operations, so they
// give the same bits; the 512-bit ones do twice the work per instruction.
enum class F32GemmTiles { kAvx2, kAvx512 };

// kAvx512 where the CPU has AVX-512 (CpuHasAvx512, which honours ONEDNN_MAX_CPU_ISA), else kAvx2.
F32GemmTiles DefaultF32GemmTiles();

// Runs the product across the kernel threads (runtime.h) when it is large enough to pay for
// waking them, on DefaultF32GemmTiles(). Needs AVX2 and FMA (every x86-64-v3 CPU).
void F32Gemm(const F32GemmArgs& args);

// The same on the given tiles (tests and benchmarks compare the two); kAvx512 on a CPU without
// AVX-512 runs the AVX2 tiles.
void F32Gemm(const F32GemmArgs& args, F32GemmTiles tiles);

// Row `row`'s outputs in the `count` columns `columns` (each < args.n), into out[0, count):
// bit for bit what F32Gemm writes there before the activation (the same FMA chain over the
// inputs in order, then the bias), on the calling thread. The greedy head recomputes its few
// candidate columns with it (greedy_candidates.h). args.y, activation and on_chunk_done are
// not used.
void F32GemmSelectedColumns(const F32GemmArgs& args, int64_t row, const int32_t* columns,
                            int64_t count, float* out);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_F32_GEMM_H_
