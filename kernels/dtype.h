// Element types a Tensor can hold, and the bfloat16 scalar with its conversions.
#ifndef TASKMOE_KERNELS_DTYPE_H_
#define TASKMOE_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace taskmoe::kernels {

enum class DType : uint8_t { kF32, kBF16, kS8, kS32 };

constexpr size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kS32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kS8:
      return 1;
  }
  return 0;
}

constexpr const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kS8:
      return "s8";
    case DType::kS32:
      return "s32";
  }
  return "?";
}

// Brain float: the upper 16 bits of an IEEE float. A distinct type so that templates over
// element types can tell it from uint16_t.
struct BFloat16 {
  uint16_t bits = 0;
};

// Round-to-nearest-even, as AVX512-BF16's vcvtneps2bf16 does; NaN stays a (quiet) NaN.
inline BFloat16 FloatToBFloat16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<uint16_t>((u >> 16) | 0x40)};
  const uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>((u + rounding_bias) >> 16)};
}

inline float BFloat16ToFloat(BFloat16 value) {
  const uint32_t u = static_cast<uint32_t>(value.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// An f32 or bf16 element as a float (exact), for loops templated over the element type.
inline float ToFloat(float value) { return value; }
inline float ToFloat(BFloat16 value) { return BFloat16ToFloat(value); }

template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() {
  return DType::kF32;
}
template <>
constexpr DType DTypeOf<BFloat16>() {
  return DType::kBF16;
}
template <>
constexpr DType DTypeOf<int8_t>() {
  return DType::kS8;
}
template <>
constexpr DType DTypeOf<int32_t>() {
  return DType::kS32;
}

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_DTYPE_H_
