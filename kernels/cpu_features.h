// What this CPU can run, as the kernels see it: its model name, oneDNN's instruction-set level,
// and the features our own int8 and bf16 paths depend on.
//
// oneDNN's level honours ONEDNN_MAX_CPU_ISA (e.g. ONEDNN_MAX_CPU_ISA=AVX2), and so do our own
// feature checks: one variable makes an AVX-512 machine choose every kernel path an AVX2-only
// CPU would, which is how the tests cover the AVX2 paths wherever they run. (The compiler's
// AVX-512 clones of a few elementwise loops, cpu_dispatch.h, are picked by the real CPU; they
// compute the same values, and sanitizer builds leave them out.)
#ifndef TASKMOE_KERNELS_CPU_FEATURES_H_
#define TASKMOE_KERNELS_CPU_FEATURES_H_

#include <string>

namespace taskmoe::kernels {

// The processor's model name from /proc/cpuinfo (e.g. "AMD EPYC 7B13"), or "unknown".
const std::string& CpuModelName();

// oneDNN's effective instruction-set level (e.g. "avx2", "avx512_core_amx").
const char* CpuIsaName();

// AVX2 (our int8 kernel's vpmaddubsw form), allowed by the oneDNN level.
bool CpuHasAvx2();
// AVX-512 F/BW/DQ/VL (our f32 kernel's 512-bit tiles, f32_gemm.h), allowed by the oneDNN level
// (avx512_core or above).
bool CpuHasAvx512();
// AVX-VNNI, the VEX-encoded vpdpbusd of Alder Lake, Sapphire Rapids and Zen 5 (our int8
// kernel's faster form), allowed by the oneDNN level (avx2_vnni or above).
bool CpuHasAvxVnni();
// AVX-512 VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4 and 5) with AVX-512 F/BW/VL: our
// int8 kernel's 512-bit form. Allowed by the oneDNN level (avx512_core_vnni or above).
bool CpuHasAvx512Vnni();
// oneDNN runs f32 matmuls on its brgemm kernels (AVX-512 and above). Elsewhere it runs
// gemm:jit, which packs the weights again at every call; our own f32 kernel (f32_gemm.h)
// takes over there.
bool OneDnnHasF32Brgemm();
// oneDNN can run a bf16 matmul here on the bf16 instructions (AVX512-BF16 or AMX; oneDNN 2.6
// has none on AVX2, and on plain AVX-512 only a slow emulation, which does not count).
bool OneDnnHasBF16Matmul();
// Whether bf16 arithmetic outruns f32 here, so that oneDNN's bf16 matmul is worth running:
// with AMX, or where AVX512-BF16's vdpbf16ps does at least 1.5x the multiply-adds per second of
// an f32 FMA (bf16_dot_rate.h; measured once: 0.6 on Intel Emerald Rapids without AMX).
// False wherever OneDnnHasBF16Matmul() is.
bool CpuBF16OutrunsF32();
// oneDNN runs int8 matmuls on its brgemm kernels over prepacked weights (AVX-512 VNNI, AMX).
// Elsewhere it falls back to gemm:jit, which repacks the weights at every call.
bool OneDnnHasInt8Brgemm();

// One line for logs and benchmarks: "cpu=<model> isa=<level> avx_vnni=<yes|no> ...", with the
// measured bf16/f32 multiply-add ratio where the CPU has AVX512-BF16 ("bf16_dot_rate=0.6x").
std::string CpuSummary();

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_CPU_FEATURES_H_
