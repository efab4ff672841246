// Tensor storage, views and conversions.
#include "kernels/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace taskmoe::kernels {

Shape::Shape(std::initializer_list<int64_t> dims) {
  assert(dims.size() <= kMaxRank);
  for (int64_t d : dims) {
    assert(d >= 0);
    dims_[rank_++] = d;
  }
}

absl::StatusOr<Shape> Shape::Make(absl::Span<const int64_t> dims) {
  if (dims.size() > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape has rank ", dims.size(), "; at most ", kMaxRank, " is supported"));
  }
  Shape shape;
  for (int64_t d : dims) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("shape has negative dimension ", d));
    }
    shape.dims_[shape.rank_++] = d;
  }
  return shape;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

Shape Shape::WithLastDim(int64_t last) const {
  assert(rank_ >= 1 && last >= 0);
  Shape shape = *this;
  shape.dims_[rank_ - 1] = last;
  return shape;
}

Shape Shape::WithFirstDim(int64_t first) const {
  assert(rank_ >= 1 && first >= 0);
  Shape shape = *this;
  shape.dims_[0] = first;
  return shape;
}

std::string Shape::ToString() const { return absl::StrCat("[", absl::StrJoin(dims(), ", "), "]"); }

namespace {

std::shared_ptr<void> AllocateAligned(size_t bytes) {
  // operator new with an alignment never returns null; a zero-byte request still yields a
  // unique pointer, which keeps valid() simple.
  void* p = ::operator new (std::max<size_t>(bytes, 1), std::align_val_t{Tensor::kAlignment});
  return std::shared_ptr<void>(
      p, [](void* q) { ::operator delete (q, std::align_val_t{Tensor::kAlignment}); });
}

}  // namespace

Tensor::Tensor(DType dtype, const Shape& shape, std::shared_ptr<void> storage, void* data,
               size_t capacity_bytes)
    : dtype_(dtype),
      shape_(shape),
      storage_(std::move(storage)),
      data_(data),
      capacity_bytes_(capacity_bytes) {}

Tensor Tensor::Allocate(DType dtype, const Shape& shape) {
  const size_t bytes = static_cast<size_t>(shape.numel()) * DTypeSize(dtype);
  std::shared_ptr<void> storage = AllocateAligned(bytes);
  void* data = storage.get();
  return Tensor(dtype, shape, std::move(storage), data, bytes);
}

Tensor Tensor::Zeros(DType dtype, const Shape& shape) {
  Tensor t = Allocate(dtype, shape);
  std::memset(t.data_, 0, t.bytes());
  return t;
}

Tensor Tensor::Wrap(DType dtype, const Shape& shape, void* data,
                    std::shared_ptr<const void> owner) {
  // The aliasing constructor shares ownership of `owner` while pointing at `data`.
  std::shared_ptr<void> storage(std::const_pointer_cast<void>(owner), data);
  return Tensor(dtype, shape, std::move(storage), data, 0);
}

void Tensor::Resize(DType dtype, const Shape& shape) {
  const size_t bytes = static_cast<size_t>(shape.numel()) * DTypeSize(dtype);
  if (capacity_bytes_ > 0 && bytes <= capacity_bytes_ && storage_.use_count() == 1) {
    dtype_ = dtype;
    shape_ = shape;
    return;
  }
  *this = Allocate(dtype, shape);
}

absl::StatusOr<Tensor> Tensor::Reshape(const Shape& shape) const {
  if (shape.numel() != numel()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot reshape ", shape_.ToString(), " to ",
                                                   shape.ToString(), ": element counts differ"));
  }
  return Tensor(dtype_, shape, storage_, data_, 0);
}

absl::Status Tensor::ReshapeInPlace(const Shape& shape) {
  if (shape.numel() != numel()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot reshape ", shape_.ToString(), " to ",
                                                   shape.ToString(), ": element counts differ"));
  }
  shape_ = shape;
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Tensor::Rows(int64_t begin, int64_t count) const {
  if (rank() == 0) return absl::InvalidArgumentError("Rows of a rank-0 tensor");
  if (begin < 0 || count < 0 || begin + count > dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat("rows [", begin, ", ", begin + count,
                                                   ") out of range for ", shape_.ToString()));
  }
  const size_t row_bytes = dim(0) == 0 ? 0 : bytes() / static_cast<size_t>(dim(0));
  auto* start = static_cast<std::byte*>(data_) + static_cast<size_t>(begin) * row_bytes;
  return Tensor(dtype_, shape_.WithFirstDim(count), storage_, start, 0);
}

Tensor Tensor::Clone() const {
  Tensor copy = Allocate(dtype_, shape_);
  if (bytes() > 0) std::memcpy(copy.data_, data_, bytes());
  return copy;
}

absl::StatusOr<Tensor> Tensor::ConvertTo(DType dtype) const {
  if (dtype == dtype_) return Clone();
  Tensor out = Allocate(dtype, shape_);
  const int64_t n = numel();
  if (dtype_ == DType::kF32 && dtype == DType::kBF16) {
    const float* src = data<float>();
    BFloat16* dst = out.data<BFloat16>();
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBFloat16(src[i]);
    return out;
  }
  if (dtype == DType::kF32) {
    float* dst = out.data<float>();
    switch (dtype_) {
      case DType::kBF16:
        for (int64_t i = 0; i < n; ++i) dst[i] = BFloat16ToFloat(data<BFloat16>()[i]);
        return out;
      case DType::kS8:
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(data<int8_t>()[i]);
        return out;
      case DType::kS32:
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(data<int32_t>()[i]);
        return out;
      case DType::kF32:
        break;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no conversion from ", DTypeName(dtype_), " to ", DTypeName(dtype)));
}

absl::Status CheckDType(const Tensor& t, DType want, const char* op, const char* what) {
  if (t.dtype() == want) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": ", what, " has dtype ", DTypeName(t.dtype()), ", expected ", DTypeName(want)));
}

absl::Status CheckRank(const Tensor& t, int want, const char* op, const char* what) {
  if (t.rank() == want) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", what, " has shape ", t.shape().ToString(), ", expected rank ", want));
}

absl::Status CheckShape(const Tensor& t, const Shape& want, const char* op, const char* what) {
  if (t.shape() == want) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": ", what, " has shape ", t.shape().ToString(), ", expected ", want.ToString()));
}

}  // namespace taskmoe::kernels
