// PackedLinear: weight packing at load, per-thread primitive cache, and the int8 epilogue.
#include "kernels/matmul.h"

#include <cmath>
#include <cstring>
#include <list>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/cpu_features.h"
#include "kernels/dequantize_row.h"
#include "kernels/int8_gemm.h"
#include "kernels/quantize.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"

namespace taskmoe::kernels {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;

// Batch size the packed weight layout is chosen for. oneDNN's brgemm kernels use one blocked
// weight layout whatever M is, so any M works; each per-M primitive is then created against
// that fixed layout, never "any", so a layout change can never silently repack per call.
constexpr int64_t kPackingReferenceRows = 64;

// Per-thread cap on cached primitives (one per distinct row count and weight shape). A
// primitive costs about 40 KB and 0.2 ms to create.
constexpr size_t kMaxCachedPrimitivesPerThread = 1024;

// Row counts that get a primitive of their own: up to kDirectRows (decoding batches) exactly;
// larger inputs (encoder batches, whose row count is sentences x padded length and takes
// hundreds of values) run as chunks of kChunkRows plus a remainder padded to a multiple of
// kPaddedRows. That bounds the primitives per weight shape to about 97 instead of one per
// row count ever seen, which grew a long-running server by ~40 KB per new encoder shape.
constexpr int64_t kDirectRows = 64;
constexpr int64_t kChunkRows = 1024;
constexpr int64_t kPaddedRows = 32;

DataType SourceType(Precision precision) {
  switch (precision) {
    case Precision::kF32:
      return DataType::f32;
    case Precision::kBF16:
      return DataType::bf16;
    case Precision::kInt8:
      return DataType::s8;
  }
  return DataType::undef;
}

// Rows the primitive for the remainder of an m-row input computes, after its full chunks
// (m / kChunkRows of them when m > kDirectRows, else none): the remainder itself, or that
// padded to a multiple of kPaddedRows when it is too large to get a primitive of its own.
int64_t RemainderRows(int64_t m, int64_t rest) {
  if (m <= kDirectRows || rest <= kDirectRows) return rest;
  return (rest + kPaddedRows - 1) / kPaddedRows * kPaddedRows;
}

absl::StatusOr<dnnl::matmul::primitive_desc> MakeMatmulDesc(int64_t m, int64_t k, int64_t n,
                                                            Precision precision,
                                                            Activation activation, bool bias,
                                                            const memory::desc& weights_md) {
  const memory::desc src({m, k}, SourceType(precision), Tag::ab);
  const memory::desc dst({m, n}, DataType::f32, Tag::ab);
  dnnl::primitive_attr attr;
  // int8 products come back as unscaled f32 sums; both scales (per weight column and per
  // input row), the bias and the activation follow in our own epilogue. oneDNN 2.6 cannot
  // scale by rows, and runtime per-column scales would rule out its brgemm kernels (it falls
  // back to gemm:jit, which repacks the weights at every call: 3x slower at one row).
  if (precision != Precision::kInt8 && activation != Activation::kNone) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f,
                       activation == Activation::kRelu ? dnnl::algorithm::eltwise_relu
                                                       : dnnl::algorithm::eltwise_gelu_erf,
                       0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  try {
    if (bias && precision != Precision::kInt8) {
      const memory::desc bias_md({1, n}, DataType::f32, Tag::ab);
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights_md, bias_md, dst), attr,
                                          Engine());
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights_md, dst), attr, Engine());
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul ", m, "x", k, "x", n, " ",
                                            PrecisionName(precision), ": ", e.what()));
  }
}

struct PrimitiveKey {
  int64_t m, k, n;
  Precision precision;
  Activation activation;
  bool bias;

  friend bool operator==(const PrimitiveKey&, const PrimitiveKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const PrimitiveKey& key) {
    return H::combine(std::move(h), key.m, key.k, key.n, key.precision, key.activation, key.bias);
  }
};

// A primitive with its memory objects and argument list, so that a call only swaps data
// handles. The list is in the C API's form: the C++ execute() would copy its map into a new
// vector at every call.
struct CachedMatmul {
  dnnl::matmul primitive;
  memory src, weights, bias, dst;
  std::vector<dnnl_exec_arg_t> args;
};

// Least-recently-used cache of primitives, one per thread: no locks, and oneDNN's own
// global cache still shares the generated kernels between threads.
class ThreadMatmulCache {
 public:
  absl::StatusOr<CachedMatmul*> Get(const PrimitiveKey& key, const memory::desc& weights_md) {
    if (auto it = index_.find(key); it != index_.end()) {
      entries_.splice(entries_.begin(), entries_, it->second);
      return &it->second->second;
    }
    absl::StatusOr<dnnl::matmul::primitive_desc> pd =
        MakeMatmulDesc(key.m, key.k, key.n, key.precision, key.activation, key.bias, weights_md);
    if (!pd.ok()) return pd.status();
    CachedMatmul entry;
    try {
      entry.primitive = dnnl::matmul(*pd);
      entry.src = memory(pd->src_desc(), Engine(), DNNL_MEMORY_NONE);
      entry.weights = memory(pd->weights_desc(), Engine(), DNNL_MEMORY_NONE);
      entry.dst = memory(pd->dst_desc(), Engine(), DNNL_MEMORY_NONE);
      entry.args = {{DNNL_ARG_SRC, entry.src.get()},
                    {DNNL_ARG_WEIGHTS, entry.weights.get()},
                    {DNNL_ARG_DST, entry.dst.get()}};
      if (key.bias && key.precision != Precision::kInt8) {
        entry.bias = memory(pd->bias_desc(), Engine(), DNNL_MEMORY_NONE);
        entry.args.push_back({DNNL_ARG_BIAS, entry.bias.get()});
      }
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("oneDNN matmul primitive: ", e.what()));
    }
    entries_.emplace_front(key, std::move(entry));
    index_[key] = entries_.begin();
    if (entries_.size() > kMaxCachedPrimitivesPerThread) {
      index_.erase(entries_.back().first);
      entries_.pop_back();
    }
    return &entries_.front().second;
  }

 private:
  using Entry = std::pair<PrimitiveKey, CachedMatmul>;
  std::list<Entry> entries_;
  absl::flat_hash_map<PrimitiveKey, std::list<Entry>::iterator> index_;
};

ThreadMatmulCache& MatmulCache() {
  thread_local ThreadMatmulCache cache;
  return cache;
}

// Per-thread buffers for the low-precision copy of the input (and its row scales), grown to
// the largest batch seen and then reused.
struct InputScratch {
  Tensor converted;
  Tensor row_scales;
  Tensor padded_input;  // a remainder's input, padded to kPaddedRows
};

InputScratch& Scratch() {
  thread_local InputScratch scratch;
  return scratch;
}

// One row of Int8Epilogue's dequantisation, compiled for AVX-512 too (cpu_dispatch.h).
TASKMOE_AVX512_CLONE void DequantizeRowInPlace(const Dequantisation& dequantisation, int64_t row,
                                               int64_t cols, float* values) {
  DequantizeRow(dequantisation, row, 0, cols, values, values);
}

// y = act(dequantised y) in place: the int8 path's epilogue, which oneDNN 2.6 cannot fuse
// without giving up its fast kernels.
void Int8Epilogue(const Dequantisation& dequantisation, Activation activation, int64_t rows,
                  int64_t cols, float* y) {
  ParallelFor(rows, rows * cols > (1 << 15), [&](int64_t r) {
    float* out = y + r * cols;
    DequantizeRowInPlace(dequantisation, r, cols, out);
    ApplyActivationInPlace(activation, out, cols);
  });
}

}  // namespace

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
      return Precision::kF32;
    case MatmulPath::kOneDnnBF16:
    case MatmulPath::kBF16AsF32:
      return Precision::kBF16;
    case MatmulPath::kOneDnnInt8:
    case MatmulPath::kAvx2Int8:
    case MatmulPath::kAvxVnniInt8:
      return Precision::kInt8;
  }
  return Precision::kF32;
}

absl::Status CheckMatmulPathSupported(MatmulPath path) {
  const auto refuse = [&](const char* needs) {
    return absl::FailedPreconditionError(absl::StrCat("matmul path ", MatmulPathName(path),
                                                      " needs ", needs, "; this CPU has ",
                                                      CpuIsaName(), " (", CpuModelName(), ")"));
  };
  switch (path) {
    case MatmulPath::kOneDnnF32:
    case MatmulPath::kBF16AsF32:
      return absl::OkStatus();
    case MatmulPath::kOneDnnBF16:
      if (!OneDnnHasBF16Matmul()) return refuse("oneDNN's bf16 matmul (AVX512-BF16 or AMX)");
      return absl::OkStatus();
    case MatmulPath::kOneDnnInt8:
      // Without brgemm oneDNN 2.6 runs gemm:jit, which is slow (it repacks the weights at
      // every call) and, on AVX2, wrong: it shifts the inputs to u8, and vpmaddubsw's 16-bit
      // pair sums saturate (outputs off by up to 77x the tolerance in matmul_test).
      if (!OneDnnHasInt8Brgemm()) {
        return refuse("oneDNN's int8 brgemm kernels (AVX-512 VNNI or AMX)");
      }
      return absl::OkStatus();
    case MatmulPath::kAvx2Int8:
      if (!CpuHasAvx2()) return refuse("AVX2");
      return absl::OkStatus();
    case MatmulPath::kAvxVnniInt8:
      if (!CpuHasAvxVnni()) return refuse("AVX-VNNI");
      return absl::OkStatus();
  }
  return refuse("a known path");
}

MatmulPath DefaultMatmulPath(Precision precision) {
  switch (precision) {
    case Precision::kF32:
      return MatmulPath::kOneDnnF32;
    case Precision::kBF16:
      return OneDnnHasBF16Matmul() ? MatmulPath::kOneDnnBF16 : MatmulPath::kBF16AsF32;
    case Precision::kInt8:
      // Every binary targets x86-64-v3, so AVX2 is always there; ONEDNN_MAX_CPU_ISA below AVX2
      // leaves oneDNN's own int8, whatever it then runs.
      if (OneDnnHasInt8Brgemm()) return MatmulPath::kOneDnnInt8;
      if (CpuHasAvxVnni()) return MatmulPath::kAvxVnniInt8;
      if (CpuHasAvx2()) return MatmulPath::kAvx2Int8;
      return MatmulPath::kOneDnnInt8;
  }
  return MatmulPath::kOneDnnF32;
}

absl::StatusOr<PackedLinear> PackedLinear::Create(const Tensor& weight, const Tensor& bias,
                                                  Precision precision) {
  const MatmulPath path = DefaultMatmulPath(precision);
  absl::StatusOr<PackedLinear> linear = Create(weight, bias, path);
  if (!linear.ok() || path != MatmulPath::kOneDnnInt8 || !linear->RunsReferenceKernel()) {
    return linear;
  }
  // oneDNN 2.6's AMX int8 brgemm does not cover every shape: the demo model's 1 x 256 x 16000
  // head ran its reference kernel, 290 ms a call (decoding 2 tokens/s). Such a layer runs on
  // our own kernel instead, which every x86-64-v3 CPU has.
  for (MatmulPath own : {MatmulPath::kAvxVnniInt8, MatmulPath::kAvx2Int8}) {
    if (CheckMatmulPathSupported(own).ok()) return Create(weight, bias, own);
  }
  return linear;
}

bool PackedLinear::RunsReferenceKernel() const {
  if (OwnInt8Kernel()) return false;
  for (int64_t rows : {int64_t{1}, int64_t{3}, int64_t{8}, int64_t{16}, kPackingReferenceRows}) {
    absl::StatusOr<std::string> name = ImplementationName(rows);
    if (!name.ok() || name->find("ref") != std::string::npos) return true;
  }
  return false;
}

absl::StatusOr<PackedLinear> PackedLinear::Create(const Tensor& weight, const Tensor& bias,
                                                  MatmulPath path) {
  constexpr const char* kOp = "PackedLinear";
  if (absl::Status s = CheckMatmulPathSupported(path); !s.ok()) return s;
  const Precision precision = MatmulPathPrecision(path);
  if (!weight.valid() || weight.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": weight must be [out_features, in_features], got ", weight.shape().ToString()));
  }
  if (weight.dtype() != DType::kF32 && weight.dtype() != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": weight dtype ", DTypeName(weight.dtype()), " (need f32 or bf16)"));
  }
  const int64_t n = weight.dim(0), k = weight.dim(1);
  if (n == 0 || k == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": weight has an empty dimension: ", weight.shape().ToString()));
  }
  PackedLinear linear;
  linear.path_ = path;
  linear.in_features_ = k;
  linear.out_features_ = n;
  if (bias.valid()) {
    if (absl::Status s = CheckShape(bias, Shape{n}, kOp, "bias"); !s.ok()) return s;
    absl::StatusOr<Tensor> bias32 = bias.ConvertTo(DType::kF32);
    if (!bias32.ok()) return bias32.status();
    linear.bias_ = *std::move(bias32);
  }
  absl::StatusOr<Tensor> weight32 = weight.ConvertTo(DType::kF32);
  if (!weight32.ok()) return weight32.status();

  if (precision == Precision::kInt8) {
    // Quantise per output channel (per row of W, which is the K x N matrix in "ba"), then
    // pack: for our kernel into int8_gemm.h's layout, for oneDNN by a reorder into the blocked
    // layout its brgemm kernels read, which also appends the s8 x s8 compensation they need.
    Tensor plain = Tensor::Allocate(DType::kS8, Shape{n, k});
    linear.weight_scales_ = Tensor::Allocate(DType::kF32, Shape{n});
    QuantizeRowsSymmetric(weight32->data<float>(), n, k, plain.data<int8_t>(),
                          linear.weight_scales_.data<float>());
    if (linear.OwnInt8Kernel()) {
      linear.packed_weight_ = Tensor::Allocate(DType::kS8, Shape{Int8GemmPackedBytes(n, k)});
      PackInt8GemmWeights(plain.data<int8_t>(), n, k, linear.packed_weight_.data<int8_t>());
      return linear;
    }
    absl::StatusOr<dnnl::matmul::primitive_desc> reference =
        MakeMatmulDesc(kPackingReferenceRows, k, n, precision, Activation::kNone, false,
                       memory::desc({k, n}, DataType::s8, Tag::any));
    if (!reference.ok()) return reference.status();
    linear.packed_md_ = reference->weights_desc();
    linear.packed_weight_ =
        Tensor::Allocate(DType::kS8, Shape{static_cast<int64_t>(linear.packed_md_.get_size())});
    try {
      memory user(memory::desc({k, n}, DataType::s8, Tag::ba), Engine(), plain.raw_data());
      memory packed(linear.packed_md_, Engine(), linear.packed_weight_.raw_data());
      dnnl::reorder(user, packed).execute(ThreadStream(), user, packed);
      ThreadStream().wait();
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat(kOp, ": packing weights: ", e.what()));
    }
    return linear;
  }

  if (path == MatmulPath::kBF16AsF32) {
    RoundToBFloat16Values(weight32->data<float>(), n * k, weight32->data<float>());
  }
  const Precision compute = linear.OneDnnPrecision();
  absl::StatusOr<dnnl::matmul::primitive_desc> reference =
      MakeMatmulDesc(kPackingReferenceRows, k, n, compute, Activation::kNone, false,
                     memory::desc({k, n}, SourceType(compute), Tag::any));
  if (!reference.ok()) return reference.status();
  linear.packed_md_ = reference->weights_desc();
  linear.packed_weight_ =
      Tensor::Allocate(DType::kS8, Shape{static_cast<int64_t>(linear.packed_md_.get_size())});
  try {
    memory user(memory::desc({k, n}, DataType::f32, Tag::ba), Engine(), weight32->raw_data());
    memory packed(linear.packed_md_, Engine(), linear.packed_weight_.raw_data());
    dnnl::reorder(user, packed).execute(ThreadStream(), user, packed);
    ThreadStream().wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat(kOp, ": packing weights: ", e.what()));
  }
  return linear;
}

absl::Status PackedLinear::Forward(const Tensor& x, Activation activation, Tensor& y) const {
  if (absl::Status s = Multiply(x, activation, y); !s.ok()) return s;
  if (precision() == Precision::kInt8 && y.numel() > 0) {
    Int8Epilogue(Int8Dequantisation(), activation, y.numel() / out_features_, out_features_,
                 y.data<float>());
  }
  return absl::OkStatus();
}

absl::Status PackedLinear::ForwardArgMaxAndLogSumExp(const Tensor& x, Tensor& products,
                                                     Tensor& argmax, Tensor& max,
                                                     Tensor& log_sum_exp) const {
  if (absl::Status s = Multiply(x, Activation::kNone, products); !s.ok()) return s;
  const int64_t rows = products.numel() / out_features_;
  argmax.Resize(DType::kS32, Shape{rows});
  max.Resize(DType::kF32, Shape{rows});
  log_sum_exp.Resize(DType::kF32, Shape{rows});
  if (rows == 0) return absl::OkStatus();
  const Dequantisation dequantisation = Int8Dequantisation();
  ArgMaxAndLogSumExpRows(products.data<float>(), rows, out_features_,
                         precision() == Precision::kInt8 ? &dequantisation : nullptr,
                         argmax.data<int32_t>(), max.data<float>(), log_sum_exp.data<float>());
  return absl::OkStatus();
}

Dequantisation PackedLinear::Int8Dequantisation() const {
  return {.row_scales = Scratch().row_scales.data<float>(),
          .column_scales = weight_scales_.data<float>(),
          .bias = has_bias() ? bias_.data<float>() : nullptr};
}

absl::Status PackedLinear::Multiply(const Tensor& x, Activation activation, Tensor& y) const {
  constexpr const char* kOp = "PackedLinear::Forward";
  if (in_features_ == 0) {
    return absl::FailedPreconditionError(absl::StrCat(kOp, ": the linear layer is empty"));
  }
  if (absl::Status s = CheckDType(x, DType::kF32, kOp, "input"); !s.ok()) return s;
  if (!x.valid() || x.rank() < 1 || x.dim(x.rank() - 1) != in_features_) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": input has shape ", x.shape().ToString(),
                                                   ", expected [..., ", in_features_, "]"));
  }
  const int64_t m = x.numel() / in_features_;
  const int64_t chunked = m > kDirectRows ? m / kChunkRows * kChunkRows : 0;
  const int64_t rest = m - chunked;
  const int64_t rest_rows = RemainderRows(m, rest);
  // A padded remainder is written straight into y, past its last row: size y's storage for
  // that first (Resize keeps the storage, and its contents, when shrinking the shape after).
  if (rest_rows > rest) y.Resize(DType::kF32, Shape{chunked + rest_rows, out_features_});
  y.Resize(DType::kF32, x.shape().WithLastDim(out_features_));
  if (m == 0) return absl::OkStatus();
  ApplyThreadSetting();

  const void* src = x.raw_data();
  InputScratch& scratch = Scratch();
  NoteMatmulRuntime(!OwnInt8Kernel());
  if (OwnInt8Kernel()) {
    // Rows padded to a multiple of 4 inputs with zeros, as the kernel reads 4 at a time.
    const int64_t padded_in = Int8GemmPaddedInputs(in_features_);
    scratch.converted.Resize(DType::kS8, Shape{m, padded_in});
    scratch.row_scales.Resize(DType::kF32, Shape{m});
    int8_t* q = scratch.converted.data<int8_t>();
    if (padded_in == in_features_) {
      QuantizeRowsSymmetric(x.data<float>(), m, in_features_, q, scratch.row_scales.data<float>());
    } else {
      for (int64_t r = 0; r < m; ++r) {
        QuantizeRowsSymmetric(x.data<float>() + r * in_features_, 1, in_features_,
                              q + r * padded_in, scratch.row_scales.data<float>() + r);
        std::memset(q + r * padded_in + in_features_, 0, padded_in - in_features_);
      }
    }
    Int8Gemm(path_ == MatmulPath::kAvxVnniInt8 ? Int8GemmIsa::kAvxVnni : Int8GemmIsa::kAvx2,
             {.a = q,
              .lda = padded_in,
              .m = m,
              .packed = packed_weight_.data<int8_t>(),
              .n = out_features_,
              .padded_in = padded_in,
              .y = y.data<float>(),
              .ldy = out_features_});
    return absl::OkStatus();
  }
  if (path_ == MatmulPath::kBF16AsF32) {
    scratch.converted.Resize(DType::kF32, Shape{m, in_features_});
    RoundToBFloat16Values(x.data<float>(), m * in_features_, scratch.converted.data<float>());
    src = scratch.converted.raw_data();
  } else if (precision() == Precision::kBF16) {
    scratch.converted.Resize(DType::kBF16, Shape{m, in_features_});
    ConvertToBFloat16(x.data<float>(), m * in_features_, scratch.converted.data<BFloat16>());
    src = scratch.converted.raw_data();
  } else if (precision() == Precision::kInt8) {
    scratch.converted.Resize(DType::kS8, Shape{m, in_features_});
    scratch.row_scales.Resize(DType::kF32, Shape{m});
    QuantizeRowsSymmetric(x.data<float>(), m, in_features_, scratch.converted.data<int8_t>(),
                          scratch.row_scales.data<float>());
    src = scratch.converted.raw_data();
  }

  // Runs `rows` rows from `rows_src` into `rows_dst` with the primitive for that row count.
  auto run = [&](int64_t rows, const void* rows_src, float* rows_dst) -> absl::Status {
    const PrimitiveKey key{rows,       in_features_, out_features_, OneDnnPrecision(),
                           activation, has_bias()};
    absl::StatusOr<CachedMatmul*> cached = MatmulCache().Get(key, packed_md_);
    if (!cached.ok()) return cached.status();
    CachedMatmul& mm = **cached;
    // oneDNN takes non-const handles even for inputs it only reads.
    mm.src.set_data_handle(const_cast<void*>(rows_src));
    mm.weights.set_data_handle(const_cast<void*>(packed_weight_.raw_data()));
    mm.dst.set_data_handle(rows_dst);
    if (key.bias && precision() != Precision::kInt8) {
      mm.bias.set_data_handle(const_cast<void*>(bias_.raw_data()));
    }
    const dnnl_status_t executed = dnnl_primitive_execute(
        mm.primitive.get(), ThreadStream().get(), static_cast<int>(mm.args.size()), mm.args.data());
    if (executed != dnnl_success) {
      return absl::InternalError(
          absl::StrCat(kOp, ": oneDNN matmul failed with status ", static_cast<int>(executed)));
    }
    // CPU streams run in order, so the result is complete; kept for other engines' sake.
    if (dnnl_stream_wait(ThreadStream().get()) != dnnl_success) {
      return absl::InternalError(absl::StrCat(kOp, ": oneDNN stream wait failed"));
    }
    return absl::OkStatus();
  };

  const size_t src_row_bytes = in_features_ * memory::data_type_size(SourceType(OneDnnPrecision()));
  const auto* src_bytes = static_cast<const uint8_t*>(src);
  float* dst = y.data<float>();
  for (int64_t done = 0; done < chunked; done += kChunkRows) {
    if (absl::Status s =
            run(kChunkRows, src_bytes + done * src_row_bytes, dst + done * out_features_);
        !s.ok()) {
      return s;
    }
  }
  if (rest > 0) {
    const void* rest_src = src_bytes + chunked * src_row_bytes;
    if (rest_rows > rest) {
      // The remainder's input through a zero-padded copy; the padding rows' results land in
      // y's spare storage and are never read.
      scratch.padded_input.Resize(DType::kS8,
                                  Shape{rest_rows * static_cast<int64_t>(src_row_bytes)});
      auto* in = static_cast<uint8_t*>(scratch.padded_input.raw_data());
      std::memcpy(in, rest_src, rest * src_row_bytes);
      std::memset(in + rest * src_row_bytes, 0, (rest_rows - rest) * src_row_bytes);
      rest_src = in;
    }
    if (absl::Status s = run(rest_rows, rest_src, dst + chunked * out_features_); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

size_t PackedLinear::memory_bytes() const {
  return (packed_weight_.valid() ? packed_weight_.bytes() : 0) +
         (bias_.valid() ? bias_.bytes() : 0) +
         (weight_scales_.valid() ? weight_scales_.bytes() : 0);
}

bool PackedLinear::OwnInt8Kernel() const {
  return path_ == MatmulPath::kAvx2Int8 || path_ == MatmulPath::kAvxVnniInt8;
}

Precision PackedLinear::OneDnnPrecision() const {
  return path_ == MatmulPath::kBF16AsF32 ? Precision::kF32 : precision();
}

absl::StatusOr<std::string> PackedLinear::ImplementationName(int64_t rows) const {
  if (OwnInt8Kernel()) return absl::StrCat("taskmoe:", MatmulPathName(path_));
  absl::StatusOr<dnnl::matmul::primitive_desc> pd =
      MakeMatmulDesc(rows, in_features_, out_features_, OneDnnPrecision(), Activation::kNone,
                     has_bias(), packed_md_);
  if (!pd.ok()) return pd.status();
  if (path_ == MatmulPath::kBF16AsF32) return absl::StrCat("bf16_as_f32 on ", pd->impl_info_str());
  return std::string(pd->impl_info_str());
}

}  // namespace taskmoe::kernels
