// The greedy head's candidate filter: an f32 output projection on our own kernel (f32_gemm.h)
// picks each row's largest output without computing every output in f32.
//
// A greedy decoder needs, per row of y = x W^T + b, only the index of the largest output and
// its value; over a 16k-64k vocabulary the f32 product is a third to half of a decoding step.
// The filter computes y~, the same product in int8 (x quantised per row with scale a, W per
// column with scale s_c, int8_gemm.h), at a quarter of the bytes and about twice the
// multiply-adds per cycle, and bounds its distance to the f32 outputs y (as F32Gemm rounds
// them) per row and column:
//   |y[c] - y~[c]| <= E[c] = ||x||_1 * (s_c / 2 + k u max_i |W[c][i]|)
//                           + a / 2 * (||W[c]||_1 + k s_c / 2) + (rounding of y~ and b)
// (weight rounding, input rounding with |s_c q| <= |W| + s_c / 2, and F32Gemm's own rounding
// of a k-term dot product; u = 2^-24), with a margin for the float arithmetic of the bound
// itself. T, a lower bound of the row's largest y, starts at max_c (y~[c] - E[c]) and rises to
// every exact output computed; a column whose y~ + E stays below T cannot hold the largest y
// (nor tie with it), and every other column is recomputed exactly (F32GemmSelectedColumns, the
// f32 kernel's bits), the largest y~ first. So the arg-max (the first of equal values) and its
// value are exactly the f32 ones, for every input (the head then computes no log(sum exp(y)):
// a decoder that asks for scores gets the full product). How many columns a row recomputes
// depends on how far its best output stands out: about 2 of 16,000 on the trained demo model,
// 4 of 64,000 on random weights (docs/benchmarks.md).
#ifndef TASKMOE_KERNELS_GREEDY_CANDIDATES_H_
#define TASKMOE_KERNELS_GREEDY_CANDIDATES_H_

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace taskmoe::kernels {

// Per column c of W ([n, k] row-major, the nn.Linear layout) quantised with column scales
// `column_scales`: input_l1_factor[c] = s_c / 2 + k u max_i |W[c][i]| (times ||x||_1 in E)
// and row_scale_factor[c] = (||W[c]||_1 + k s_c / 2) / 2 (times the row's input scale a).
void ComputeGreedyCandidateBounds(const float* w, int64_t n, int64_t k, const float* column_scales,
                                  float* input_l1_factor, float* row_scale_factor);

// Writes the exact outputs of the `count` columns `columns` of the row being filtered into
// out[0, count).
using ExactColumnOutputs =
    absl::FunctionRef<void(const int32_t* columns, int64_t count, float* out)>;

// One row of the filter's product.
struct CandidateRow {
  // In: the n raw int8 products (integer sums, as int8_gemm.h writes them). Out: y~, with
  // every candidate column (see above) overwritten by its exact output, so that the row's
  // largest value, and the first column holding it, are those of the exact outputs.
  float* values = nullptr;
  int64_t n = 0;
  float input_l1 = 0;   // ||x||_1 of the row's input
  float row_scale = 0;  // the scale its input was quantised with
  const float* column_scales = nullptr;
  const float* bias = nullptr;              // or null
  const float* input_l1_factor = nullptr;   // ComputeGreedyCandidateBounds'
  const float* row_scale_factor = nullptr;  // ComputeGreedyCandidateBounds'
  float* upper_bounds = nullptr;            // scratch: n floats
};

// Dequantises the row and recomputes its candidates through `exact`. A row whose bound is not
// finite (an infinite or NaN input) gets every column exact. Returns how many columns were
// recomputed.
int64_t MakeCandidatesExact(const CandidateRow& row, ExactColumnOutputs exact);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_GREEDY_CANDIDATES_H_
