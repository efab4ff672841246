// Tensor: shapes, storage, views, resizing and conversions.
#include "kernels/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace taskmoe::kernels {
namespace {

TEST(Shape, BasicsAndValidation) {
  const Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.ToString(), "[2, 3, 4]");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_EQ((Shape{5, 0}).numel(), 0);
  EXPECT_FALSE(Shape::Make(std::vector<int64_t>{1, -2}).ok());
  EXPECT_FALSE(Shape::Make(std::vector<int64_t>(7, 1)).ok());
  EXPECT_TRUE(Shape::Make(std::vector<int64_t>(6, 1)).ok());
}

TEST(Tensor, AllocatesAlignedStorage) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kS8, DType::kS32}) {
    Tensor t = Tensor::Allocate(dtype, Shape{3, 5});
    EXPECT_TRUE(t.valid());
    EXPECT_EQ(t.bytes(), 15 * DTypeSize(dtype));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % Tensor::kAlignment, 0u);
  }
  EXPECT_FALSE(Tensor().valid());
  Tensor z = Tensor::Zeros(DType::kS32, Shape{4});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(z.data<int32_t>()[i], 0);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::FromVector<float>(Shape{3, 2}, {0, 1, 2, 3, 4, 5});
  absl::StatusOr<Tensor> rows = t.Rows(1, 2);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->shape(), (Shape{2, 2}));
  EXPECT_EQ(rows->data<float>()[0], 2.0f);
  rows->data<float>()[0] = 42.0f;
  EXPECT_EQ(t.data<float>()[2], 42.0f);
  EXPECT_FALSE(t.Rows(2, 2).ok());
  EXPECT_FALSE(t.Rows(-1, 1).ok());

  absl::StatusOr<Tensor> flat = t.Reshape(Shape{6});
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(flat->data<float>()[2], 42.0f);
  EXPECT_FALSE(t.Reshape(Shape{4}).ok());

  Tensor copy = t.Clone();
  copy.data<float>()[0] = -1.0f;
  EXPECT_EQ(t.data<float>()[0], 0.0f);
}

TEST(Tensor, WrappedMemoryKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3});
  Tensor t = Tensor::Wrap(DType::kF32, Shape{3}, owner->data(), owner);
  std::weak_ptr<std::vector<float>> watch = owner;
  owner.reset();
  EXPECT_FALSE(watch.expired());
  EXPECT_EQ(t.data<float>()[2], 3.0f);
  t = Tensor();
  EXPECT_TRUE(watch.expired());
}

TEST(Tensor, ResizeReusesStorageWhenItFits) {
  Tensor t;
  t.Resize(DType::kF32, Shape{16, 16});
  const void* first = t.raw_data();
  t.Resize(DType::kF32, Shape{4, 8});
  EXPECT_EQ(t.raw_data(), first);
  EXPECT_EQ(t.shape(), (Shape{4, 8}));
  t.Resize(DType::kS8, Shape{1024});
  EXPECT_EQ(t.raw_data(), first);
  t.Resize(DType::kF32, Shape{32, 32});
  EXPECT_NE(t.raw_data(), nullptr);
  EXPECT_EQ(t.numel(), 1024);

  // Reshaping in place keeps the capacity: growing back within it does not allocate.
  Tensor w;
  w.Resize(DType::kF32, Shape{8, 8});
  const void* storage = w.raw_data();
  ASSERT_TRUE(w.ReshapeInPlace(Shape{64}).ok());
  EXPECT_FALSE(w.ReshapeInPlace(Shape{63}).ok());
  w.Resize(DType::kF32, Shape{2, 32});
  EXPECT_EQ(w.raw_data(), storage);

  // A live view pins the storage: resizing the owner must not scribble over it.
  Tensor owner;
  owner.Resize(DType::kF32, Shape{8});
  absl::StatusOr<Tensor> view = owner.Reshape(Shape{2, 4});
  ASSERT_TRUE(view.ok());
  owner.Resize(DType::kF32, Shape{4});
  EXPECT_NE(owner.raw_data(), view->raw_data());
}

TEST(Tensor, ConvertsBetweenDTypes) {
  Tensor t = Tensor::FromVector<float>(Shape{4}, {1.0f, -2.5f, 3.14159f, 1e-3f});
  absl::StatusOr<Tensor> bf = t.ConvertTo(DType::kBF16);
  ASSERT_TRUE(bf.ok());
  absl::StatusOr<Tensor> back = bf->ConvertTo(DType::kF32);
  ASSERT_TRUE(back.ok());
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(back->data<float>()[i], t.data<float>()[i],
                std::abs(t.data<float>()[i]) * (1.0 / 128));
  }
  EXPECT_EQ(back->data<float>()[0], 1.0f);
  EXPECT_FALSE(t.ConvertTo(DType::kS8).ok());
}

TEST(BFloat16, RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 1.0f / 256)), 1.0f);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd mantissa) and 1 + 2^-6 (even): up.
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(BFloat16ToFloat(FloatToBFloat16(INFINITY))));
}

}  // namespace
}  // namespace taskmoe::kernels
