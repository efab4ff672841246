// Tensor: a dense row-major n-d array of one DType, owning aligned storage or viewing memory
// owned elsewhere (an mmap'd model file, another tensor). Copies are shallow and share
// storage, like a shared_ptr; Clone() copies the elements.
#ifndef TASKMOE_KERNELS_TENSOR_H_
#define TASKMOE_KERNELS_TENSOR_H_

#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/dtype.h"

namespace taskmoe::kernels {

// Dimensions of a tensor, stored inline so that building a shape never allocates.
class Shape {
 public:
  static constexpr int kMaxRank = 6;

  Shape() = default;
  // Precondition: at most kMaxRank dims, none negative (use Shape::Make to validate).
  Shape(std::initializer_list<int64_t> dims);
  static absl::StatusOr<Shape> Make(absl::Span<const int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int axis) const { return dims_[axis]; }
  absl::Span<const int64_t> dims() const { return {dims_.data(), static_cast<size_t>(rank_)}; }
  int64_t numel() const;
  std::string ToString() const;
  // The same shape with the last dimension replaced (rank >= 1). Never allocates.
  Shape WithLastDim(int64_t last) const;
  // The same with the first dimension replaced (rank >= 1). Never allocates.
  Shape WithFirstDim(int64_t first) const;

  friend bool operator==(const Shape& a, const Shape& b) { return a.dims() == b.dims(); }

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

class Tensor {
 public:
  // Alignment of owned storage: one cache line, what AVX-512 loads and oneDNN prefer.
  static constexpr size_t kAlignment = 64;

  // An empty tensor: rank 0, no storage. valid() is false.
  Tensor() = default;

  // Owned, 64-byte aligned, uninitialised storage.
  static Tensor Allocate(DType dtype, const Shape& shape);
  static Tensor Zeros(DType dtype, const Shape& shape);
  // A view of memory owned elsewhere. `owner` (may be null) is kept alive as long as any
  // tensor that shares this storage.
  static Tensor Wrap(DType dtype, const Shape& shape, void* data,
                     std::shared_ptr<const void> owner = nullptr);
  template <typename T>
  static Tensor FromVector(const Shape& shape, const std::vector<T>& values);

  bool valid() const { return data_ != nullptr || shape_.numel() == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int axis) const { return shape_[axis]; }
  int64_t numel() const { return shape_.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  // Bytes this tensor may grow to without reallocating (owned storage only).
  size_t capacity_bytes() const { return capacity_bytes_; }

  void* raw_data() { return data_; }
  const void* raw_data() const { return data_; }
  template <typename T>
  T* data() {
    assert(DTypeOf<T>() == dtype_);
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    assert(DTypeOf<T>() == dtype_);
    return static_cast<const T*>(data_);
  }

  // Gives the tensor `shape` and `dtype`, reusing its storage when it is owned and large
  // enough (the bytes then stay as they were, read with the new shape) and allocating
  // otherwise (uninitialised). Used for
  // workspace buffers so that a decoding loop stops allocating once buffers reach their
  // peak size.
  void Resize(DType dtype, const Shape& shape);

  // A view with another shape over the same elements.
  absl::StatusOr<Tensor> Reshape(const Shape& shape) const;
  // Gives this tensor another shape with the same element count, keeping its storage and
  // capacity (unlike assigning a Reshape view, which would make the next Resize allocate).
  absl::Status ReshapeInPlace(const Shape& shape);
  // A view of rows [begin, begin + count) along axis 0. Never allocates.
  absl::StatusOr<Tensor> Rows(int64_t begin, int64_t count) const;
  // A deep copy into new owned storage.
  Tensor Clone() const;
  // Converts to another dtype into new owned storage: f32 <-> bf16, and s8/s32 -> f32.
  absl::StatusOr<Tensor> ConvertTo(DType dtype) const;

 private:
  Tensor(DType dtype, const Shape& shape, std::shared_ptr<void> storage, void* data,
         size_t capacity_bytes);

  DType dtype_ = DType::kF32;
  Shape shape_;
  std::shared_ptr<void> storage_;  // keeps `data_` alive; null for an empty tensor
  void* data_ = nullptr;
  size_t capacity_bytes_ = 0;  // 0 for views: they never grow in place
};

template <typename T>
Tensor Tensor::FromVector(const Shape& shape, const std::vector<T>& values) {
  assert(static_cast<int64_t>(values.size()) == shape.numel());
  Tensor t = Allocate(DTypeOf<T>(), shape);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

// Shape checks shared by the kernels: each returns InvalidArgument naming `op` and `what`.
absl::Status CheckDType(const Tensor& t, DType want, const char* op, const char* what);
absl::Status CheckRank(const Tensor& t, int want, const char* op, const char* what);
absl::Status CheckShape(const Tensor& t, const Shape& want, const char* op, const char* what);

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_TENSOR_H_
