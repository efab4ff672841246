// Roofline measurements: square matmuls per precision and a memory triad.
#include "kernels/roofline.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "kernels/runtime.h"

namespace taskmoe::kernels {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Tensor PseudoRandomMatrix(int64_t rows, int64_t cols) {
  Tensor t = Tensor::Allocate(DType::kF32, Shape{rows, cols});
  uint32_t state = 12345;
  for (int64_t i = 0; i < t.numel(); ++i) {
    state = state * 1664525u + 1013904223u;
    t.data<float>()[i] =
        static_cast<float>(static_cast<int32_t>(state >> 8) % 2001 - 1000) / 32000.0f;
  }
  return t;
}

double MeasureMatmulPeakGflops(Precision precision, double min_seconds) {
  double best = 0;
  for (int64_t size : {1024, 2048}) {
    absl::StatusOr<PackedLinear> linear =
        PackedLinear::Create(PseudoRandomMatrix(size, size), Tensor(), precision);
    if (!linear.ok()) continue;
    const Tensor x = PseudoRandomMatrix(size, size);
    Tensor y;
    for (int i = 0; i < 2; ++i) (void)linear->Forward(x, Activation::kNone, y);
    int iterations = 0;
    const auto start = std::chrono::steady_clock::now();
    do {
      (void)linear->Forward(x, Activation::kNone, y);
      ++iterations;
    } while (Seconds(start) < min_seconds);
    best = std::max(best, 2.0 * size * size * size * iterations / Seconds(start) / 1e9);
  }
  return best;
}

double MeasureTriadGbps() {
  constexpr int64_t kElements = int64_t{32} << 20;  // 128 MiB per array: far beyond the caches
  constexpr int64_t kBlock = int64_t{1} << 16;
  std::vector<float> a(kElements, 0.0f), b(kElements, 1.0f), c(kElements, 2.0f);
  double best_seconds = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    ParallelFor(kElements / kBlock, true, [&](int64_t block) {
      float* out = a.data() + block * kBlock;
      const float* in1 = b.data() + block * kBlock;
      const float* in2 = c.data() + block * kBlock;
      for (int64_t i = 0; i < kBlock; ++i) out[i] = in1[i] + 0.5f * in2[i];
    });
    best_seconds = std::min(best_seconds, Seconds(start));
  }
  // Read the result so that the stores cannot be dropped.
  volatile float sink = a[kElements / 2];
  (void)sink;
  return 3.0 * kElements * sizeof(float) / best_seconds / 1e9;
}

}  // namespace taskmoe::kernels
