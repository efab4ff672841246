// The bounds and the per-row selection of the greedy head's candidate filter
// (greedy_candidates.h).
#include "kernels/greedy_candidates.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace taskmoe::kernels {
namespace {

// The unit roundoff of float.
constexpr float kUnitRoundoff = 1.0f / 16777216.0f;

// The bound's own arithmetic is in float: its sums of k terms round by at most k u relative
// (under 0.1 % up to k = 16,000); this factor covers that and the quantisers' last-bit slips
// (a value times the float inverse of its scale may round a hair past half a level).
constexpr float kBoundMargin = 1.002f;

// Relative rounding of y~ itself (s32 -> float, times two scales, plus the bias) and of the
// bias added to the exact chain: a few u of the values' magnitude.
constexpr float kValueRounding = 8.0f * kUnitRoundoff;

// Columns recomputed per call of the exact evaluator (whose chains run eight at a time); each
// call's exact values may raise the threshold for the columns after them.
constexpr int64_t kBatchColumns = 8;

}  // namespace

void ComputeGreedyCandidateBounds(const float* w, int64_t n, int64_t k, const float* column_scales,
                                  float* input_l1_factor, float* row_scale_factor) {
  const float kf = static_cast<float>(k);
  for (int64_t c = 0; c < n; ++c) {
    const float* row = w + c * k;
    float l1 = 0.0f, max_abs = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      l1 += std::fabs(row[i]);
      max_abs = std::max(max_abs, std::fabs(row[i]));
    }
    const float s = column_scales[c];
    // F32Gemm's chain of k FMAs rounds k times, each by at most u of a partial sum bounded by
    // sum_i |x_i| |W[c][i]| <= ||x||_1 max_i |W[c][i]|.
    input_l1_factor[c] = kBoundMargin * (s / 2.0f + 1.01f * kf * kUnitRoundoff * max_abs);
    row_scale_factor[c] = kBoundMargin * (l1 + kf * s / 2.0f) / 2.0f;
  }
}

int64_t MakeCandidatesExact(const CandidateRow& row, ExactColumnOutputs exact) {
  float* const values = row.values;
  float* const upper = row.upper_bounds;
  const int64_t n = row.n;
  const float l1 = row.input_l1, scale = row.row_scale;
  const float* const column_scales = row.column_scales;
  const float* const l1_factor = row.input_l1_factor;
  const float* const scale_factor = row.row_scale_factor;
  // One pass, vectorised: dequantise in place, each column's upper bound y~ + E, the best lower
  // bound max (y~ - E) and the largest y~. (NaN compares false and drops out of the maxima; an
  // infinite input gives an infinite or NaN threshold, caught below.)
  float threshold = -std::numeric_limits<float>::infinity();
  float largest = -std::numeric_limits<float>::infinity();
  if (row.bias != nullptr) {
    const float* const bias = row.bias;
#pragma omp simd reduction(max : threshold, largest)
    for (int64_t c = 0; c < n; ++c) {
      const float v = values[c] * scale * column_scales[c] + bias[c];
      const float bound = l1 * l1_factor[c] + scale * scale_factor[c] +
                          kValueRounding * (std::fabs(v) + std::fabs(bias[c]));
      values[c] = v;
      upper[c] = v + bound;
      threshold = std::max(threshold, v - bound);
      largest = std::max(largest, v);
    }
  } else {
#pragma omp simd reduction(max : threshold, largest)
    for (int64_t c = 0; c < n; ++c) {
      const float v = values[c] * scale * column_scales[c];
      const float bound =
          l1 * l1_factor[c] + scale * scale_factor[c] + kValueRounding * std::fabs(v);
      values[c] = v;
      upper[c] = v + bound;
      threshold = std::max(threshold, v - bound);
      largest = std::max(largest, v);
    }
  }
  const bool all = !std::isfinite(threshold) || !std::isfinite(l1) || !std::isfinite(scale);
  // Best first: the column of the largest approximation is most likely the winner, and its
  // exact value, a lower bound of the row's maximum too, raises the threshold from about
  // max y~ - 2E to max y~ (on the trained demo model, 1.7 columns per row recomputed instead
  // of 4.4). Later exact values raise it further.
  int64_t first_exact = -1;
  if (!all) {
    for (int64_t c = 0; c < n; ++c) {
      if (values[c] == largest) {
        first_exact = c;
        break;
      }
    }
  }
  int64_t recomputed = 0;
  if (first_exact >= 0) {
    const auto column = static_cast<int32_t>(first_exact);
    exact(&column, 1, &values[first_exact]);
    threshold = std::max(threshold, values[first_exact]);
    recomputed = 1;
  }
  int32_t columns[kBatchColumns];
  float exact_values[kBatchColumns];
  int64_t pending = 0;
  const auto flush = [&] {
    exact(columns, pending, exact_values);
    for (int64_t j = 0; j < pending; ++j) {
      values[columns[j]] = exact_values[j];
      threshold = std::max(threshold, exact_values[j]);
    }
    recomputed += pending;
    pending = 0;
  };
  // A column is a candidate unless its upper bound stays below the threshold. Blocks of 64 are
  // screened branch-free first: most hold none.
  constexpr int64_t kBlock = 64;
  for (int64_t first = 0; first < n; first += kBlock) {
    const int64_t last = std::min(n, first + kBlock);
    if (!all) {
      int any = 0;
#pragma omp simd reduction(| : any)
      for (int64_t c = first; c < last; ++c) any |= upper[c] >= threshold ? 1 : 0;
      if (any == 0) continue;
    }
    for (int64_t c = first; c < last; ++c) {
      if (c == first_exact || (!all && !(upper[c] >= threshold))) continue;
      columns[pending++] = static_cast<int32_t>(c);
      if (pending == kBatchColumns) flush();
    }
  }
  if (pending > 0) flush();
  return recomputed;
}

}  // namespace taskmoe::kernels
