// SequenceStarts, SplitLastDim, UnpackSequences and PackSequences: one pass over the input, rows
// (or sequences) in parallel when there are enough of them.
#include "kernels/layout.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"
#include "kernels/work_sharing.h"

namespace taskmoe::kernels {

namespace {

// Checks that `parts` are distinct tensors other than `source` (named `source_name` in errors
// of `op`) and makes each f32 `shape`, reusing its storage.
absl::Status ResizeParts(const char* op, const Tensor& source, const char* source_name,
                         const Shape& shape, absl::Span<Tensor* const> parts) {
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == nullptr || parts[i] == &source) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": part ", i, " is null or ", source_name, " itself"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (parts[j] == parts[i]) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": parts ", j, " and ", i, " alias"));
      }
    }
  }
  for (Tensor* part : parts) part->Resize(DType::kF32, shape);
  return absl::OkStatus();
}

// The calling control flow's buffer for SequenceStarts (work_sharing.h's ControlFlowLocal):
// kept, so that encoding batch after batch allocates nothing once it has seen the most
// sequences (loop bodies on other threads read it through the reference their caller took).
struct SequenceStartsBuffer {
  std::vector<int64_t> starts;
};
std::vector<int64_t>& StartsBuffer() { return ControlFlowLocal<SequenceStartsBuffer>().starts; }

}  // namespace

absl::Status SequenceStarts(absl::Span<const int32_t> lengths, int64_t max_len, const char* op,
                            std::vector<int64_t>& starts, int64_t& total) {
  starts.resize(lengths.size());
  total = 0;
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0 || (max_len >= 0 && lengths[b] > max_len)) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": sequence ", b, " has length ",
                                                     lengths[b], ", outside [0, ", max_len, "]"));
    }
    starts[b] = total;
    total += lengths[b];
  }
  return absl::OkStatus();
}

absl::Status SplitLastDim(const Tensor& x, absl::Span<Tensor* const> parts) {
  constexpr const char* kOp = "SplitLastDim";
  if (absl::Status s = CheckDType(x, DType::kF32, kOp, "x"); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(parts.size());
  if (n == 0 || x.rank() < 1 || x.dim(x.rank() - 1) % n != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": x of shape ", x.shape().ToString(),
                                                   " does not split into ", n, " parts"));
  }
  const int64_t cols = x.dim(x.rank() - 1), width = cols / n;
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (absl::Status s = ResizeParts(kOp, x, "x", x.shape().WithLastDim(width), parts); !s.ok()) {
    return s;
  }
  if (rows == 0 || width == 0) return absl::OkStatus();
  const float* in = x.data<float>();
  ParallelFor(rows, rows * cols > (1 << 16), [&](int64_t r) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(parts[i]->data<float>() + r * width, in + r * cols + i * width,
                  sizeof(float) * width);
    }
  });
  return absl::OkStatus();
}

absl::Status UnpackSequences(const Tensor& packed, absl::Span<const int32_t> lengths,
                             int64_t max_len, absl::Span<Tensor* const> parts) {
  constexpr const char* kOp = "UnpackSequences";
  if (absl::Status s = CheckDType(packed, DType::kF32, kOp, "packed"); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(parts.size());
  if (n == 0 || packed.rank() != 2 || packed.dim(1) % n != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": packed of shape ", packed.shape().ToString(), " does not split into ",
                     n, " parts (expected [tokens, parts * width])"));
  }
  if (max_len < 0) return absl::InvalidArgumentError(absl::StrCat(kOp, ": negative max_len"));
  std::vector<int64_t>& starts = StartsBuffer();
  int64_t total = 0;
  if (absl::Status s = SequenceStarts(lengths, max_len, kOp, starts, total); !s.ok()) return s;
  if (total != packed.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": lengths add up to ", total,
                                                   " but packed has ", packed.dim(0), " rows"));
  }
  const int64_t cols = packed.dim(1), width = cols / n;
  const auto batch = static_cast<int64_t>(lengths.size());
  if (absl::Status s = ResizeParts(kOp, packed, "packed", Shape{batch, max_len, width}, parts);
      !s.ok()) {
    return s;
  }
  if (batch == 0 || max_len == 0 || width == 0) return absl::OkStatus();
  const float* in = packed.data<float>();
  ParallelFor(batch, batch * max_len * cols > (1 << 16), [&](int64_t b) {
    const int64_t length = lengths[b];
    for (int64_t i = 0; i < n; ++i) {
      float* out = parts[i]->data<float>() + b * max_len * width;
      for (int64_t t = 0; t < length; ++t) {
        std::memcpy(out + t * width, in + (starts[b] + t) * cols + i * width,
                    sizeof(float) * width);
      }
      std::memset(out + length * width, 0, sizeof(float) * (max_len - length) * width);
    }
  });
  return absl::OkStatus();
}

absl::Status PackSequences(const Tensor& padded, absl::Span<const int32_t> lengths,
                           Tensor& packed) {
  constexpr const char* kOp = "PackSequences";
  if (absl::Status s = CheckDType(padded, DType::kF32, kOp, "padded"); !s.ok()) return s;
  const auto batch = static_cast<int64_t>(lengths.size());
  if (padded.rank() != 3 || padded.dim(0) != batch) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": padded of shape ",
                                                   padded.shape().ToString(), " for ", batch,
                                                   " sequences (expected [batch, max_len, w])"));
  }
  if (&packed == &padded) return absl::InvalidArgumentError(absl::StrCat(kOp, ": aliasing"));
  const int64_t max_len = padded.dim(1), width = padded.dim(2);
  std::vector<int64_t>& starts = StartsBuffer();
  int64_t total = 0;
  if (absl::Status s = SequenceStarts(lengths, max_len, kOp, starts, total); !s.ok()) return s;
  packed.Resize(DType::kF32, Shape{total, width});
  if (total == 0 || width == 0) return absl::OkStatus();
  const float* in = padded.data<float>();
  ParallelFor(batch, total * width > (1 << 16), [&](int64_t b) {
    std::memcpy(packed.data<float>() + starts[b] * width, in + b * max_len * width,
                sizeof(float) * lengths[b] * width);
  });
  return absl::OkStatus();
}

}  // namespace taskmoe::kernels
