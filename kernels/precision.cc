// Names of precisions and matmul paths.
#include "kernels/precision.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace taskmoe::kernels {

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kF32:
      return "f32";
    case Precision::kBF16:
      return "bf16";
    case Precision::kInt8:
      return "int8";
  }
  return "?";
}

absl::StatusOr<Precision> ParsePrecision(std::string_view name) {
  if (name == "f32") return Precision::kF32;
  if (name == "bf16") return Precision::kBF16;
  if (name == "int8") return Precision::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", std::string(name), "' (expected f32, bf16 or int8)"));
}

const char* MatmulPathName(MatmulPath path) {
  switch (path) {
    case MatmulPath::kOneDnnF32:
      return "onednn_f32";
    case MatmulPath::kAvx2F32:
      return "avx2_f32";
    case MatmulPath::kOneDnnBF16:
      return "onednn_bf16";
    case MatmulPath::kBF16AsF32:
      return "bf16_as_f32";
    case MatmulPath::kOneDnnInt8:
      return "onednn_int8";
    case MatmulPath::kAvx2Int8:
      return "avx2_int8";
    case MatmulPath::kAvxVnniInt8:
      return "avx_vnni_int8";
    case MatmulPath::kAvx512VnniInt8:
      return "avx512_vnni_int8";
  }
  return "?";
}

absl::StatusOr<MatmulPath> ParseMatmulPath(std::string_view name) {
  std::vector<std::string> names;
  for (MatmulPath path : kAllMatmulPaths) {
    if (name == MatmulPathName(path)) return path;
    names.push_back(MatmulPathName(path));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown matmul path '", std::string(name),
                                                 "' (expected one of ", absl::StrJoin(names, ", "),
                                                 ")"));
}

Precision MatmulPathPrecision(MatmulPath path) {
  switch (path) {
    case MatmulPath::kOneDnnF32:
    case MatmulPath::kAvx2F32:
      return Precision::kF32;
    case MatmulPath::kOneDnnBF16:
    case MatmulPath::kBF16AsF32:
      return Precision::kBF16;
    case MatmulPath::kOneDnnInt8:
    case MatmulPath::kAvx2Int8:
    case MatmulPath::kAvxVnniInt8:
    case MatmulPath::kAvx512VnniInt8:
      return Precision::kInt8;
  }
  return Precision::kF32;
}

}  // namespace taskmoe::kernels
