// Linear layers on oneDNN matmul: y = act(x @ W^T + b) with W prepacked once, at load, into
// the layout oneDNN's fastest kernel wants, in one of three precisions:
//   f32   f32 weights and activations;
//   bf16  bf16 weights, activations rounded to bf16, f32 accumulation and output
//         (AVX512-BF16);
//   int8  s8 weights with one scale per output channel, activations quantised per row at run
//         time (symmetric s8), s32 accumulation (VNNI), f32 output.
// Primitives are created per row count on first use and cached per thread, so a steady
// decoding loop neither creates primitives nor allocates; inputs of more than 64 rows run in
// chunks of 1024 plus a padded remainder, which bounds how many row counts ever get one.
#ifndef TASKMOE_KERNELS_MATMUL_H_
#define TASKMOE_KERNELS_MATMUL_H_

#include <oneapi/dnnl/dnnl.hpp>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/activation.h"
#include "kernels/quantize.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

enum class Precision : uint8_t { kF32, kBF16, kInt8 };

const char* PrecisionName(Precision precision);
absl::StatusOr<Precision> ParsePrecision(std::string_view name);

class PackedLinear {
 public:
  // `weight` is [out_features, in_features] (the nn.Linear layout), f32 or bf16. `bias` is
  // [out_features] f32/bf16, or an empty Tensor() for none. Both are copied; the caller may
  // release them afterwards.
  static absl::StatusOr<PackedLinear> Create(const Tensor& weight, const Tensor& bias,
                                             Precision precision);

  // An empty linear (0 x 0) that refuses every input; a placeholder until assigned.
  PackedLinear() = default;

  // x: f32 [..., in_features] (any rank >= 1, contiguous). y becomes f32 [..., out_features]
  // (resized in place, reusing its storage when large enough). x and y must not overlap.
  absl::Status Forward(const Tensor& x, Activation activation, Tensor& y) const;

  // A greedy decoder's head: per row of y = x W^T + b, the index of its largest value (the
  // first of equal ones), that value and log(sum exp(y)) (see ArgMaxAndLogSumExp in
  // softmax.h); argmax s32, max and log_sum_exp f32, all [rows]. `products` is scratch: in
  // int8 it holds the raw products, which are dequantised block by block inside the
  // reduction, so the 64k-wide output rows are never written out in f32.
  absl::Status ForwardArgMaxAndLogSumExp(const Tensor& x, Tensor& products, Tensor& argmax,
                                         Tensor& max, Tensor& log_sum_exp) const;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Precision precision() const { return precision_; }
  bool has_bias() const { return bias_.valid(); }
  // Bytes of packed weights, scales and bias.
  size_t memory_bytes() const;
  // oneDNN's name for the implementation it runs for a batch of `rows` (e.g. "brg:avx512_core").
  absl::StatusOr<std::string> ImplementationName(int64_t rows) const;

 private:
  // Forward without the int8 dequantisation: y holds raw products in int8 (the per-row
  // scales stay in this thread's scratch until the next call).
  absl::Status Multiply(const Tensor& x, Activation activation, Tensor& y) const;
  // How the raw products of this thread's last int8 Multiply become outputs.
  Dequantisation Int8Dequantisation() const;

  Precision precision_ = Precision::kF32;
  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  dnnl::memory::desc packed_md_;
  Tensor packed_weight_;  // raw bytes in packed_md_'s layout
  Tensor bias_;           // f32 [N], or empty
  Tensor weight_scales_;  // f32 [N], int8 only
};

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_MATMUL_H_
