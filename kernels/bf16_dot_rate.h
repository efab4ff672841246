// How fast this CPU's bf16 dot-product instruction (AVX512-BF16's vdpbf16ps) multiplies and
// adds against its f32 FMA, measured once on the calling core.
//
// AVX512-BF16 does not make bf16 fast everywhere. Where vdpbf16ps issues as often as an f32
// FMA, each does twice the FMA's multiply-adds (as expected of AMD Zen 4 and 5; not measured
// here). On Intel's Emerald Rapids without AMX it does 0.5-0.6x the FMA's multiply-adds per
// second, and oneDNN's bf16 matmul, which also converts every input to bf16, decoded the
// paper-shape subnetwork at 0.56-0.63x the speed of our f32 kernel computing the same bf16
// numerics (docs/benchmarks.md, stop 53). DefaultMatmulPath uses the ratio to choose.
#ifndef TASKMOE_KERNELS_BF16_DOT_RATE_H_
#define TASKMOE_KERNELS_BF16_DOT_RATE_H_

namespace taskmoe::kernels {

// Multiply-adds per second of vdpbf16ps on 512-bit vectors over those of vfmadd231ps, from a
// few microseconds of each instruction alone in registers (best of several alternating runs,
// so that a run the OS interrupted does not count). Needs AVX512-BF16: only call it where
// cpu_features.h found it (oneDNN's avx512_core_bf16 level or above). About 2 where the bf16
// instruction issues as often as the FMA; 0.5-0.6 on Intel Emerald Rapids.
double BF16DotToFmaRatio();

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_BF16_DOT_RATE_H_
