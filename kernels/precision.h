// The words for how linear layers compute: the precision (f32, bf16, int8) and the kernel path
// of each (MatmulPath), with their names as flags, logs, metrics and the API spell them. A
// header of its own, without oneDNN, so that the layers above (the server's options and
// metrics) can name them without pulling in the kernels.
#ifndef TASKMOE_KERNELS_PRECISION_H_
#define TASKMOE_KERNELS_PRECISION_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace taskmoe::kernels {

enum class Precision : uint8_t { kF32, kBF16, kInt8 };

const char* PrecisionName(Precision precision);
absl::StatusOr<Precision> ParsePrecision(std::string_view name);

// How a linear layer computes.
enum class MatmulPath : uint8_t {
  kOneDnnF32,    // "onednn_f32": f32 on oneDNN (brgemm with AVX-512, gemm:jit on AVX2)
  kAvx2F32,      // "avx2_f32": our f32 kernel (f32_gemm.h), FMA on 256-bit vectors, any AVX2
                 // CPU: weights packed once, where oneDNN's AVX2 gemm:jit packs them per call;
                 // weights that are all bf16 values packed in bf16 (same results, half the bytes)
  kOneDnnBF16,   // "onednn_bf16": bf16 on oneDNN; needs AVX512-BF16 or AMX (or oneDNN's
                 // AVX-512 emulation)
  kBF16AsF32,    // "bf16_as_f32": bf16 numerics without bf16 instructions: weights and inputs
                 // rounded to bf16 values, multiplied by our f32 kernel on weights packed in
                 // bf16 (so bf16's memory and results up to summation order, f32's speed);
                 // any AVX2 CPU
  kOneDnnInt8,   // "onednn_int8": s8 x s8 on oneDNN's brgemm over blocked weights (the default
                 // with AMX only): AVX-512
                 // VNNI or AMX (its gemm:jit elsewhere is slow and saturates on AVX2)
  kAvx2Int8,     // "avx2_int8": our kernel (int8_gemm.h) on vpmaddubsw, any AVX2 CPU; its
                 // weights have 31 levels (6 bits), so its results differ slightly from the
                 // other int8 paths'
  kAvxVnniInt8,  // "avx_vnni_int8": our kernel on AVX-VNNI's vpdpbusd
  kAvx512VnniInt8,  // "avx512_vnni_int8": our kernel on AVX-512 VNNI's vpdpbusd (512-bit)
};

inline constexpr MatmulPath kAllMatmulPaths[] = {
    MatmulPath::kOneDnnF32,   MatmulPath::kAvx2F32,       MatmulPath::kOneDnnBF16,
    MatmulPath::kBF16AsF32,   MatmulPath::kOneDnnInt8,    MatmulPath::kAvx2Int8,
    MatmulPath::kAvxVnniInt8, MatmulPath::kAvx512VnniInt8};

const char* MatmulPathName(MatmulPath path);
absl::StatusOr<MatmulPath> ParseMatmulPath(std::string_view name);
// The precision a path implements.
Precision MatmulPathPrecision(MatmulPath path);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_PRECISION_H_
