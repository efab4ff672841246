// The machine's own roofline, measured in the calling process (DESIGN.md §6): the best matmul
// throughput per precision over large square products, and STREAM-style triad memory
// bandwidth. Benchmarks report engine figures as fractions of these, measured in the same run,
// because the machine is shared and its speed drifts from run to run.
#ifndef TASKMOE_KERNELS_ROOFLINE_H_
#define TASKMOE_KERNELS_ROOFLINE_H_

#include <cstdint>

#include "kernels/matmul.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// Deterministic f32 [rows, cols] values in [-1/32, 1/32] for speed measurements: values do not
// change speed, but all-equal inputs could in principle hit special cases.
Tensor PseudoRandomMatrix(int64_t rows, int64_t cols);

// Best GFLOP/s of PackedLinear::Forward at M = K = N = 1024 and 2048, each timed for at least
// `min_seconds`, with the current thread setting.
double MeasureMatmulPeakGflops(Precision precision, double min_seconds = 0.5);

// Best of five triads a = b + s * c over three 128 MiB float arrays, in GB/s (bytes of the
// three arrays per pass), with the current thread setting.
double MeasureTriadGbps();

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_ROOFLINE_H_
