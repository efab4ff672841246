// Branch-free float exp that compilers vectorise: glibc's expf is a scalar call, and softmax
// over a 64k vocabulary for hundreds of rows per decoding step spends most of its time there.
#ifndef TASKMOE_KERNELS_FAST_MATH_H_
#define TASKMOE_KERNELS_FAST_MATH_H_

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace taskmoe::kernels {

// exp(x) with relative error below 2e-7 for x in [-87, 88] (tests check it against std::exp).
// Inputs below -87.3 give about 1e-38 instead of 0, which no softmax can tell apart; NaN gives
// NaN.
inline float FastExp(float x) {
  x = std::clamp(x, -87.3f, 88.7f);
  // exp(x) = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2 in [-0.35, 0.35]; ln 2
  // is split in two (Cody-Waite) so that r keeps full precision even for large |x|.
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  // Taylor series of e^r to degree 7 (truncation error below 1e-8 on that interval).
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // std::clamp keeps a NaN x, so n is NaN too, and converting NaN to an integer is undefined
  // (NaN logits come from a model whose weights hold NaN or overflow): give the exponent any
  // defined value, the result is NaN through p anyway.
  const int32_t exponent = (static_cast<int32_t>(std::isnan(n) ? 0.0f : n) + 127) << 23;
  return p * std::bit_cast<float>(exponent);
}

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_FAST_MATH_H_
