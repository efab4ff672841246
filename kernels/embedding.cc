// Embedding gather and the position table.
#include "kernels/embedding.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace taskmoe::kernels {

absl::StatusOr<Tensor> SinusoidalPositions(int64_t max_positions, int64_t d_model) {
  if (max_positions < 1 || d_model < 2 || d_model % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SinusoidalPositions: need max_positions >= 1 and an even d_model >= 2, got ",
                     max_positions, " and ", d_model));
  }
  Tensor table = Tensor::Allocate(DType::kF32, Shape{max_positions, d_model});
  float* data = table.data<float>();
  for (int64_t p = 0; p < max_positions; ++p) {
    for (int64_t i = 0; i < d_model / 2; ++i) {
      // Computed in double so that long positions keep their precision, then rounded once.
      const double angle =
          static_cast<double>(p) /
          std::pow(10000.0, 2.0 * static_cast<double>(i) / static_cast<double>(d_model));
      data[p * d_model + 2 * i] = static_cast<float>(std::sin(angle));
      data[p * d_model + 2 * i + 1] = static_cast<float>(std::cos(angle));
    }
  }
  return table;
}

namespace {

// The gather, on checked arguments; `positions` null for none.
template <typename Element>
void LookUp(const Element* table, int64_t d, absl::Span<const int32_t> ids, float scale,
            const Tensor* positions, absl::Span<const int32_t> position_ids, float* out) {
  for (size_t r = 0; r < ids.size(); ++r) {
    const Element* src = table + static_cast<int64_t>(ids[r]) * d;
    float* dst = out + static_cast<int64_t>(r) * d;
    if (positions != nullptr) {
      const float* pos = positions->data<float>() + static_cast<int64_t>(position_ids[r]) * d;
      for (int64_t i = 0; i < d; ++i) dst[i] = ToFloat(src[i]) * scale + pos[i];
    } else {
      for (int64_t i = 0; i < d; ++i) dst[i] = ToFloat(src[i]) * scale;
    }
  }
}

}  // namespace

absl::Status EmbeddingLookup(const Tensor& table, absl::Span<const int32_t> ids, float scale,
                             const Tensor& positions, absl::Span<const int32_t> position_ids,
                             Tensor& out) {
  constexpr const char* kOp = "EmbeddingLookup";
  if (table.valid() && table.dtype() != DType::kF32 && table.dtype() != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": table dtype ", DTypeName(table.dtype()), " (need f32 or bf16)"));
  }
  if (absl::Status s = CheckRank(table, 2, kOp, "table"); !s.ok()) return s;
  const int64_t vocab = table.dim(0), d = table.dim(1);
  const bool with_positions = positions.valid();
  if (with_positions) {
    if (absl::Status s = CheckDType(positions, DType::kF32, kOp, "positions"); !s.ok()) return s;
    if (positions.rank() != 2 || positions.dim(1) != d) {
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": positions has shape ", positions.shape().ToString(), ", expected [P, ", d, "]"));
    }
    if (position_ids.size() != ids.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": ", ids.size(), " ids but ", position_ids.size(), " position ids"));
    }
  }
  const int64_t rows = static_cast<int64_t>(ids.size());
  for (int64_t r = 0; r < rows; ++r) {
    if (ids[r] < 0 || ids[r] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": token id ", ids[r], " at row ", r, " outside [0, ", vocab, ")"));
    }
    if (with_positions && (position_ids[r] < 0 || position_ids[r] >= positions.dim(0))) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": position ", position_ids[r],
                                                     " at row ", r, " outside [0, ",
                                                     positions.dim(0), ")"));
    }
  }
  out.Resize(DType::kF32, Shape{rows, d});
  if (table.dtype() == DType::kBF16) {
    LookUp(table.data<BFloat16>(), d, ids, scale, with_positions ? &positions : nullptr,
           position_ids, out.data<float>());
  } else {
    LookUp(table.data<float>(), d, ids, scale, with_positions ? &positions : nullptr, position_ids,
           out.data<float>());
  }
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
