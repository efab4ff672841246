// bf16 rounding and symmetric int8 quantisation loops (auto-vectorised).
#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>

namespace taskmoe::kernels {

void ConvertToBFloat16(const float* src, int64_t count, BFloat16* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = FloatToBFloat16(src[i]);
}

void QuantizeRowsSymmetric(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    float max_abs = 0.0f;
    for (int64_t c = 0; c < cols; ++c) max_abs = std::max(max_abs, std::fabs(row[c]));
    const float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
    const float inverse = 1.0f / scale;
    int8_t* out = q + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      // nearbyint rounds half to even under the default rounding mode; the clamp only
      // catches the rounding of values a hair above max_abs. NaN (a NaN input, or an infinite
      // one times a zero inverse) has no int8 value and converting it is undefined: it
      // becomes 0.
      const float v = std::nearbyint(row[c] * inverse);
      out[c] = static_cast<int8_t>(std::isnan(v) ? 0.0f : std::clamp(v, -127.0f, 127.0f));
    }
    scales[r] = scale;
  }
}

}  // namespace taskmoe::kernels
