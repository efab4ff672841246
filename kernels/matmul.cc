// PackedLinear: weight packing at load, per-thread primitive cache, and the int8 epilogue.
#include "kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu_dispatch.h"
#include "kernels/cpu_features.h"
#include "kernels/dequantize_row.h"
#include "kernels/f32_gemm.h"
#include "kernels/greedy_candidates.h"
#include "kernels/int8_gemm.h"
#include "kernels/quantize.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"
#include "kernels/work_sharing.h"
#include "util/status_macros.h"

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
// hundreds of values) run as blocks of kChunkRows plus a remainder padded to a multiple of
// kPaddedRows. That bounds the primitives per panel width to about 70 instead of one per
// row count ever seen, which grew a long-running server by ~40 KB per new encoder shape; and
// the blocks are further work items for the team.
constexpr int64_t kDirectRows = 64;
constexpr int64_t kChunkRows = 256;
constexpr int64_t kPaddedRows = 32;

// Column panels per thread, and their width's granule (oneDNN's widest column block, so
// panels split no block). Two per thread let the team even out a thread that is slow or
// descheduled, at the cost of a few microseconds of primitive launch per panel.
constexpr int64_t kPanelsPerThread = 2;
constexpr int64_t kPanelGranule = 64;
// Widest panel: brgemm's panels go through a dense per-thread block of rows x width floats,
// which for a 64,000-word vocabulary in four panels took 16 MB per thread at 256 rows; 2,048
// columns keep it at 2 MB (and give the team more items to even out).
constexpr int64_t kMaxPanelColumns = 2048;

// The width of W's column panels for `n` output columns under the current thread setting: all
// of W for one thread, else about kPanelsPerThread panels per thread in whole granules, at
// most kMaxPanelColumns.
int64_t PanelColumns(int64_t n) {
  const int64_t threads = NumThreads();
  if (threads <= 1) return n;
  const int64_t wanted = threads * kPanelsPerThread;
  const int64_t width = ((n + wanted - 1) / wanted + kPanelGranule - 1) / kPanelGranule;
  return std::min({n, std::max<int64_t>(1, width) * kPanelGranule, kMaxPanelColumns});
}

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
// padded to a multiple of kPaddedRows when it is too large to get a primitive of its own, and
// at least `min_rows` (PackedLinear::min_rows_).
int64_t RemainderRows(int64_t m, int64_t rest, int64_t min_rows) {
  if (rest == 0) return 0;
  if (m <= kDirectRows || rest <= kDirectRows) return std::max(rest, min_rows);
  return (rest + kPaddedRows - 1) / kPaddedRows * kPaddedRows;
}

// A matmul of [m, k] inputs by the [k, n] weights `weights_md` into f32 outputs whose rows
// are `ldc` floats apart (n: dense).
absl::StatusOr<dnnl::matmul::primitive_desc> MakeMatmulDesc(int64_t m, int64_t k, int64_t n,
                                                            int64_t ldc, Precision precision,
                                                            Activation activation, bool bias,
                                                            const memory::desc& weights_md) {
  const memory::desc src({m, k}, SourceType(precision), Tag::ab);
  const memory::desc dst = ldc == n ? memory::desc({m, n}, DataType::f32, Tag::ab)
                                    : memory::desc({m, n}, DataType::f32, memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  // Scratch memory comes from the caller, one buffer per team slot: oneDNN's own (this build
  // shares one between concurrent executions) gave wrong results when two threads ran one
  // primitive on two panels at once, and it allocated and freed it at every call.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
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
  int64_t m, k, n, ldc;
  Precision precision;
  Activation activation;
  bool bias;

  friend bool operator==(const PrimitiveKey&, const PrimitiveKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const PrimitiveKey& key) {
    return H::combine(std::move(h), key.m, key.k, key.n, key.ldc, key.precision, key.activation,
                      key.bias);
  }
};

// One thread's memory objects and argument list for a primitive, so that a call only swaps
// data handles. The list is in the C API's form: the C++ execute() would copy its map into a
// new vector at every call.
struct MatmulArguments {
  memory src, weights, bias, dst, scratchpad;
  std::vector<dnnl_exec_arg_t> args;
};

// A primitive (which oneDNN lets threads execute concurrently) with arguments for each slot of
// the calling thread's team (WorkSharingSlot()): its panels run on whichever team thread
// claims them, with the arguments of that thread's slot.
struct CachedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  int64_t scratchpad_bytes = 0;  // queried once: the C++ API's query allocates
  std::vector<MatmulArguments> slots;
};

// Least-recently-used cache of primitives, one per calling control flow (ControlFlowLocal): no
// locks, and oneDNN's own global cache still shares the generated kernels between threads.
class ControlFlowMatmulCache {
 public:
  // The primitive for `key` with arguments for at least `slots` slots.
  absl::StatusOr<CachedMatmul*> Get(const PrimitiveKey& key, const memory::desc& weights_md,
                                    int slots) {
    CachedMatmul* entry = nullptr;
    if (auto it = index_.find(key); it != index_.end()) {
      entries_.splice(entries_.begin(), entries_, it->second);
      entry = &it->second->second;
      if (static_cast<int>(entry->slots.size()) >= slots) return entry;
    } else {
      absl::StatusOr<dnnl::matmul::primitive_desc> pd = MakeMatmulDesc(
          key.m, key.k, key.n, key.ldc, key.precision, key.activation, key.bias, weights_md);
      if (!pd.ok()) return pd.status();
      try {
        entries_.emplace_front(key, CachedMatmul{.pd = *pd,
                                                 .primitive = dnnl::matmul(*pd),
                                                 .scratchpad_bytes = static_cast<int64_t>(
                                                     pd->scratchpad_desc().get_size())});
      } catch (const dnnl::error& e) {
        return absl::InternalError(absl::StrCat("oneDNN matmul primitive: ", e.what()));
      }
      index_[key] = entries_.begin();
      if (entries_.size() > kMaxCachedPrimitivesPerThread) {
        index_.erase(entries_.back().first);
        entries_.pop_back();
      }
      entry = &entries_.front().second;
    }
    try {
      const dnnl::matmul::primitive_desc& pd = entry->pd;
      while (static_cast<int>(entry->slots.size()) < slots) {
        MatmulArguments& a = entry->slots.emplace_back();
        a.src = memory(pd.src_desc(), Engine(), DNNL_MEMORY_NONE);
        a.weights = memory(pd.weights_desc(), Engine(), DNNL_MEMORY_NONE);
        a.dst = memory(pd.dst_desc(), Engine(), DNNL_MEMORY_NONE);
        a.args = {{DNNL_ARG_SRC, a.src.get()},
                  {DNNL_ARG_WEIGHTS, a.weights.get()},
                  {DNNL_ARG_DST, a.dst.get()}};
        if (key.bias && key.precision != Precision::kInt8) {
          a.bias = memory(pd.bias_desc(), Engine(), DNNL_MEMORY_NONE);
          a.args.push_back({DNNL_ARG_BIAS, a.bias.get()});
        }
        if (entry->scratchpad_bytes > 0) {
          a.scratchpad = memory(pd.scratchpad_desc(), Engine(), DNNL_MEMORY_NONE);
          a.args.push_back({DNNL_ARG_SCRATCHPAD, a.scratchpad.get()});
        }
      }
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("oneDNN matmul arguments: ", e.what()));
    }
    return entry;
  }

 private:
  using Entry = std::pair<PrimitiveKey, CachedMatmul>;
  std::list<Entry> entries_;
  absl::flat_hash_map<PrimitiveKey, std::list<Entry>::iterator> index_;
};

ControlFlowMatmulCache& MatmulCache() { return ControlFlowLocal<ControlFlowMatmulCache>(); }

// The calling control flow's buffers (ControlFlowLocal) for the low-precision copy of the
// input (and its row scales), grown to the largest batch seen and then reused.
struct InputScratch {
  Tensor converted;
  Tensor row_scales;
  Tensor padded_input;  // a remainder's input, padded to kPaddedRows
  // Per team slot: a panel's dense outputs, where oneDNN cannot write y's rows itself, and
  // oneDNN's scratch memory.
  std::vector<Tensor> panel_outputs;
  std::vector<Tensor> scratchpads;
  // The greedy head's per-panel partial results, [panels, rows] (ForwardArgMaxAndLogSumExp).
  Tensor head_argmax, head_max, head_log_sum_exp;
  // The candidate filter's inputs where they must be rounded to bf16 first (bf16_as_f32), and
  // a row of upper bounds per team slot (greedy_candidates.h).
  Tensor candidate_inputs, candidate_upper_bounds;
};

InputScratch& Scratch() { return ControlFlowLocal<InputScratch>(); }

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

// True when every value of `weight` (f32 or bf16) is a bf16 value, so that the bf16 packing
// of our f32 kernel holds it exactly; a bf16 tensor is not scanned.
bool HoldsOnlyBFloat16Values(const Tensor& weight) {
  if (!weight.valid()) return false;
  if (weight.dtype() == DType::kBF16) return true;
  return weight.dtype() == DType::kF32 && AllBFloat16Values(weight.data<float>(), weight.numel());
}

// The form of our int8 kernel (int8_gemm.h) one of its paths runs.
Int8GemmIsa OwnInt8KernelIsa(MatmulPath path) {
  switch (path) {
    case MatmulPath::kAvx512VnniInt8:
      return Int8GemmIsa::kAvx512Vnni;
    case MatmulPath::kAvxVnniInt8:
      return Int8GemmIsa::kAvxVnni;
    default:
      return Int8GemmIsa::kAvx2;
  }
}

}  // namespace

absl::Status CheckMatmulPathSupported(MatmulPath path) {
  const auto refuse = [&](const char* needs) {
    return absl::FailedPreconditionError(absl::StrCat("matmul path ", MatmulPathName(path),
                                                      " needs ", needs, "; this CPU has ",
                                                      CpuIsaName(), " (", CpuModelName(), ")"));
  };
  switch (path) {
    case MatmulPath::kOneDnnF32:
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
    case MatmulPath::kAvx2F32:
    case MatmulPath::kBF16AsF32:
    case MatmulPath::kAvx2Int8:
      if (!CpuHasAvx2()) return refuse("AVX2");
      return absl::OkStatus();
    case MatmulPath::kAvxVnniInt8:
      if (!CpuHasAvxVnni()) return refuse("AVX-VNNI");
      return absl::OkStatus();
    case MatmulPath::kAvx512VnniInt8:
      if (!CpuHasAvx512Vnni()) return refuse("AVX-512 VNNI");
      return absl::OkStatus();
  }
  return refuse("a known path");
}

std::optional<MatmulPath> OwnInt8Path() {
  // Asked for every int8 layer at load: the CPU's answer, worked out (refusals and all) once.
  static const std::optional<MatmulPath> fastest = []() -> std::optional<MatmulPath> {
    for (MatmulPath path :
         {MatmulPath::kAvx512VnniInt8, MatmulPath::kAvxVnniInt8, MatmulPath::kAvx2Int8}) {
      if (CheckMatmulPathSupported(path).ok()) return path;
    }
    return std::nullopt;
  }();
  return fastest;
}

MatmulPath DefaultMatmulPath(Precision precision) {
  switch (precision) {
    case Precision::kF32:
      // oneDNN's AVX2 f32 (gemm:jit) packs the weights at every call: the 128 x 512 x 64,000
      // vocabulary projection ran at half the f32 peak, 1.7x our kernel's time.
      if (OneDnnHasF32Brgemm() || !CpuHasAvx2()) return MatmulPath::kOneDnnF32;
      return MatmulPath::kAvx2F32;
    case Precision::kBF16:
      // oneDNN's bf16 matmul only where bf16 arithmetic outruns f32: elsewhere our f32 kernel
      // on the same bf16 weights (the same bytes read, the same rounded inputs) was 1.5-2.4x
      // faster (Intel Emerald Rapids without AMX, docs/benchmarks.md, stop 53).
      return CpuBF16OutrunsF32() ? MatmulPath::kOneDnnBF16 : MatmulPath::kBF16AsF32;
    case Precision::kInt8:
      // AMX multiplies tiles of 16 rows at once: oneDNN's brgemm there (not measured here) is
      // left to it. With AVX-512 VNNI alone our 512-bit form read the weights faster at one
      // row and kept up from 8 rows (docs/benchmarks.md, stop 52).
      if (CpuIsaName() == std::string_view("avx512_core_amx") && OneDnnHasInt8Brgemm()) {
        return MatmulPath::kOneDnnInt8;
      }
      // Every binary targets x86-64-v3, so AVX2 is always there; ONEDNN_MAX_CPU_ISA below AVX2
      // leaves oneDNN's own int8, whatever it then runs.
      if (std::optional<MatmulPath> own = OwnInt8Path()) return *own;
      return MatmulPath::kOneDnnInt8;
  }
  return MatmulPath::kOneDnnF32;
}

absl::StatusOr<PackedLinear> PackedLinear::Create(const Tensor& weight, const Tensor& bias,
                                                  Precision precision) {
  return CreateOnDefaultPath(weight, bias, precision, /*greedy_head=*/false);
}

absl::StatusOr<PackedLinear> PackedLinear::CreateGreedyHead(const Tensor& weight,
                                                            const Tensor& bias,
                                                            Precision precision) {
  absl::StatusOr<PackedLinear> linear =
      CreateOnDefaultPath(weight, bias, precision, /*greedy_head=*/true);
  if (!linear.ok()) return linear;
  TASKMOE_RETURN_IF_ERROR(linear->AddGreedyCandidateFilter(weight));
  return linear;
}

absl::StatusOr<PackedLinear> PackedLinear::CreateOnDefaultPath(const Tensor& weight,
                                                               const Tensor& bias,
                                                               Precision precision,
                                                               bool greedy_head) {
  MatmulPath path = DefaultMatmulPath(precision);
  // oneDNN's f32 brgemm (AVX-512) reads f32 weights. Weights that are all bf16 values (a
  // bf16-stored model's) run on our kernel instead, packed in bf16: half the bytes per
  // product, 1.5-2.4x the tokens/s at batch 1 and on par at 128 (docs/benchmarks.md, stop
  // 40). So does a greedy head, whatever its weights, for the int8 candidate filter only our
  // kernel carries (2.07x at batch 1, 1.5-1.6x at 8-128 on the paper shape stored in f32;
  // stop 53). Other weights with full f32 mantissas stay on brgemm, which is faster on those
  // from 8 rows up. Either way one layer has one kernel, so a row's results never depend on
  // its batch.
  if (path == MatmulPath::kOneDnnF32 && (greedy_head || HoldsOnlyBFloat16Values(weight)) &&
      CheckMatmulPathSupported(MatmulPath::kAvx2F32).ok()) {
    path = MatmulPath::kAvx2F32;
  }
  absl::StatusOr<PackedLinear> linear = Create(weight, bias, path);
  if (!linear.ok() || path != MatmulPath::kOneDnnInt8 || !linear->RunsReferenceKernel()) {
    return linear;
  }
  // oneDNN 2.6's AMX int8 brgemm does not cover every shape: the demo model's 1 x 256 x 16000
  // head ran its reference kernel, 290 ms a call (decoding 2 tokens/s). Such a layer runs on
  // our own kernel instead, which every x86-64-v3 CPU has.
  if (std::optional<MatmulPath> own = OwnInt8Path()) return Create(weight, bias, *own);
  return linear;
}

bool PackedLinear::RunsReferenceKernel() const {
  if (RunsOwnKernel()) return false;
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
    // Our AVX2 kernel multiplies weights of at most 31 levels exactly (int8_gemm.h).
    Tensor plain = Tensor::Allocate(DType::kS8, Shape{n, k});
    linear.weight_scales_ = Tensor::Allocate(DType::kF32, Shape{n});
    QuantizeRowsSymmetric(
        weight32->data<float>(), n, k, plain.data<int8_t>(), linear.weight_scales_.data<float>(),
        path == MatmulPath::kAvx2Int8 ? kInt8GemmAvx2WeightLevels : kInt8GemmVnniWeightLevels);
    if (linear.OwnInt8Kernel()) {
      linear.packed_weight_ = Tensor::Allocate(DType::kS8, Shape{Int8GemmPackedBytes(n, k)});
      PackInt8GemmWeights(plain.data<int8_t>(), n, k, linear.packed_weight_.data<int8_t>());
      linear.shift_correction_ = Tensor::Allocate(DType::kS32, Shape{Int8GemmPaddedColumns(n)});
      Int8GemmShiftCorrection(plain.data<int8_t>(), n, k, linear.shift_correction_.data<int32_t>());
      return linear;
    }
    if (absl::Status s = linear.PackPanels(plain.raw_data(), DataType::s8); !s.ok()) return s;
    return linear;
  }

  if (path == MatmulPath::kBF16AsF32) {
    RoundToBFloat16Values(weight32->data<float>(), n * k, weight32->data<float>());
  }
  if (path == MatmulPath::kAvx2F32 || path == MatmulPath::kBF16AsF32) {
    // Weights that are all bf16 values (a bf16-stored model, or rounded just above) are packed
    // in bf16: the same products from half the bytes (f32_gemm.h).
    const float* w = weight32->data<float>();
    if (path == MatmulPath::kBF16AsF32 || HoldsOnlyBFloat16Values(weight)) {
      linear.packed_weight_ =
          Tensor::Allocate(DType::kBF16, Shape{F32GemmPackedBFloat16Values(n, k)});
      PackF32GemmWeightsAsBFloat16(w, n, k, linear.packed_weight_.data<BFloat16>());
    } else {
      linear.packed_weight_ = Tensor::Allocate(DType::kF32, Shape{F32GemmPackedFloats(n, k)});
      PackF32GemmWeights(w, n, k, linear.packed_weight_.data<float>());
    }
    return linear;
  }
  if (absl::Status s = linear.PackPanels(weight32->raw_data(), DataType::f32); !s.ok()) return s;
  return linear;
}

absl::Status PackedLinear::PackPanels(const void* weight, memory::data_type type) {
  // oneDNN 2.6's AMX int8 brgemm declines small shapes (one row by 512 x 128, say, or 3 rows
  // by 256 x 64) and leaves them to its reference kernel, 100x slower. Such inputs are padded
  // with zero rows to 8 or 16, which costs AMX (16-row tiles) next to nothing; where even that
  // runs it, panels are widened until none does (or W is one panel, which Create(precision)
  // may still move to our own kernel).
  for (int64_t width = PanelColumns(out_features_);; width = std::min(out_features_, 2 * width)) {
    if (absl::Status s = PackPanels(weight, type, width); !s.ok()) return s;
    for (int64_t min_rows : {1, 8, 16}) {
      min_rows_ = min_rows;
      if (!RunsReferenceKernel()) return absl::OkStatus();
    }
    min_rows_ = 1;
    if (width == out_features_) return absl::OkStatus();
    panels_.clear();
  }
}

absl::Status PackedLinear::PackPanels(const void* weight, memory::data_type type, int64_t width) {
  UseOneDnnOnCallingThread();
  const int64_t k = in_features_, n = out_features_;
  const Precision compute = precision();
  const size_t element_bytes = memory::data_type_size(type);
  panels_write_strided_ = false;
  for (int64_t first = 0; first < n; first += width) {
    WeightPanel panel{.first_column = first, .columns = std::min(width, n - first)};
    // The packed layout oneDNN's kernels choose for this panel's shape, used for every row
    // count: each per-M primitive is created against this fixed layout, never "any", so a
    // layout change can never silently repack per call.
    absl::StatusOr<dnnl::matmul::primitive_desc> reference = MakeMatmulDesc(
        kPackingReferenceRows, k, panel.columns, panel.columns, compute, Activation::kNone, false,
        memory::desc({k, panel.columns}, SourceType(compute), Tag::any));
    if (!reference.ok()) return reference.status();
    panel.md = reference->weights_desc();
    panel.weight = Tensor::Allocate(DType::kS8, Shape{static_cast<int64_t>(panel.md.get_size())});
    try {
      // W is [n, k] row-major, so the panel's [k, columns] view is "ba" with k-element rows.
      memory user(
          memory::desc({k, panel.columns}, type, memory::dims{1, k}), Engine(),
          const_cast<uint8_t*>(static_cast<const uint8_t*>(weight) + first * k * element_bytes));
      memory packed(panel.md, Engine(), panel.weight.raw_data());
      dnnl::reorder(user, packed).execute(ThreadStream(), user, packed);
      ThreadStream().wait();
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("PackedLinear: packing weights: ", e.what()));
    }
    panels_.push_back(std::move(panel));
  }
  // Panels write into y directly where oneDNN's kernel for strided outputs is as fast as for
  // dense ones (it is the same gemm:jit), not where that would be its reference kernel.
  if (panels_.size() > 1) {
    absl::StatusOr<dnnl::matmul::primitive_desc> strided =
        MakeMatmulDesc(kPackingReferenceRows, k, panels_[0].columns, n, compute, Activation::kNone,
                       false, panels_[0].md);
    absl::StatusOr<dnnl::matmul::primitive_desc> dense =
        MakeMatmulDesc(kPackingReferenceRows, k, panels_[0].columns, panels_[0].columns, compute,
                       Activation::kNone, false, panels_[0].md);
    panels_write_strided_ = strided.ok() && dense.ok() &&
                            std::string(strided->impl_info_str()) == dense->impl_info_str();
  }
  return absl::OkStatus();
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
                                                     Tensor& log_sum_exp,
                                                     GreedyLogSumExp log_sum_exp_kind) const {
  const bool want_log_sum_exp = log_sum_exp_kind == GreedyLogSumExp::kExact;
  // Without a log-sum-exp, each row's max stands in for it (kNone's contract, matmul.h).
  const auto max_for_log_sum_exp = [&] {
    log_sum_exp.Resize(DType::kF32, max.shape());
    std::copy_n(max.data<float>(), max.numel(), log_sum_exp.data<float>());
  };
  if (!want_log_sum_exp && candidate_filter_ != nullptr) {
    TASKMOE_RETURN_IF_ERROR(ArgMaxThroughCandidates(x, products, argmax, max));
    max_for_log_sum_exp();
    return absl::OkStatus();
  }
  const bool int8 = precision() == Precision::kInt8;
  // Where oneDNN's products land in y they are reduced there. Otherwise each (row block,
  // panel) is reduced where it was computed, from the thread's cache, rather than copied into
  // the [rows, vocabulary] products and read back (at batch 32 over a 64k vocabulary, 8 MB
  // written and read per decoding step), and the panels' partial results are merged per row.
  // Our f32 kernel writes y, but reports each fixed chunk of columns once computed, which is
  // reduced from cache the same way (the chunks, like oneDNN's panels, do not depend on the
  // batch, so neither does a row's rounding).
  const bool own_f32 = path_ == MatmulPath::kAvx2F32 || path_ == MatmulPath::kBF16AsF32;
  const bool per_panel = own_f32 || (!RunsOwnKernel() && !PanelsWriteIntoOutput());
  const int64_t rows = x.valid() && in_features_ > 0 ? x.numel() / in_features_ : 0;
  const int64_t panels = own_f32 ? (out_features_ + kF32GemmChunkColumns - 1) / kF32GemmChunkColumns
                                 : static_cast<int64_t>(panels_.size());
  const auto first_column = [&](int64_t panel) {
    return own_f32 ? panel * kF32GemmChunkColumns : panels_[panel].first_column;
  };
  InputScratch& scratch = Scratch();
  if (per_panel) {
    scratch.head_argmax.Resize(DType::kS32, Shape{panels, rows});
    scratch.head_max.Resize(DType::kF32, Shape{panels, rows});
    if (want_log_sum_exp) scratch.head_log_sum_exp.Resize(DType::kF32, Shape{panels, rows});
  }
  int32_t* const panel_argmax = per_panel ? scratch.head_argmax.data<int32_t>() : nullptr;
  float* const panel_max = per_panel ? scratch.head_max.data<float>() : nullptr;
  float* const panel_log_sum_exp =
      per_panel && want_log_sum_exp ? scratch.head_log_sum_exp.data<float>() : nullptr;
  // The panels' reductions write a log-sum-exp only where it is wanted.
  const auto panel_log_sum_exp_at = [&](int64_t at) {
    return panel_log_sum_exp != nullptr ? panel_log_sum_exp + at : nullptr;
  };
  // The sink runs on team threads: it uses the calling thread's scratch (the row scales
  // Multiply computes for int8 inputs, written before any panel runs), never its own.
  const auto reduce = [&](int64_t first_row, int64_t block_rows, int64_t panel,
                          const float* block) {
    const WeightPanel& p = panels_[panel];
    const int64_t at = panel * rows + first_row;
    Dequantisation dequantisation;
    if (int8) {
      dequantisation = {.row_scales = scratch.row_scales.data<float>() + first_row,
                        .column_scales = weight_scales_.data<float>() + p.first_column,
                        .bias = has_bias() ? bias_.data<float>() + p.first_column : nullptr};
    }
    ArgMaxAndLogSumExpRowsOnThisThread(block, block_rows, p.columns,
                                       int8 ? &dequantisation : nullptr, panel_argmax + at,
                                       panel_max + at, panel_log_sum_exp_at(at));
  };
  const PanelSink sink(reduce);
  const auto reduce_chunk = [&](int64_t chunk, int64_t first_row, int64_t block_rows) {
    const int64_t begin = chunk * kF32GemmChunkColumns;
    const int64_t columns = std::min(kF32GemmChunkColumns, out_features_ - begin);
    const float* values = products.data<float>() + first_row * out_features_ + begin;
    for (int64_t r = 0; r < block_rows; ++r) {
      const int64_t at = chunk * rows + first_row + r;
      ArgMaxAndLogSumExpRowsOnThisThread(values + r * out_features_, 1, columns, nullptr,
                                         panel_argmax + at, panel_max + at,
                                         panel_log_sum_exp_at(at));
    }
  };
  const F32GemmChunkSink chunk_sink(reduce_chunk);
  if (absl::Status s =
          Multiply(x, Activation::kNone, products, per_panel && !own_f32 ? &sink : nullptr,
                   own_f32 ? &chunk_sink : nullptr);
      !s.ok()) {
    return s;
  }
  argmax.Resize(DType::kS32, Shape{rows});
  max.Resize(DType::kF32, Shape{rows});
  log_sum_exp.Resize(DType::kF32, Shape{rows});
  if (rows == 0) return absl::OkStatus();
  int32_t* const out_argmax = argmax.data<int32_t>();
  float* const out_max = max.data<float>();
  float* const out_log_sum_exp = log_sum_exp.data<float>();
  if (!per_panel) {
    const Dequantisation dequantisation = Int8Dequantisation();
    ArgMaxAndLogSumExpRows(products.data<float>(), rows, out_features_,
                           int8 ? &dequantisation : nullptr, out_argmax, out_max,
                           want_log_sum_exp ? out_log_sum_exp : nullptr);
  } else {
    ParallelFor(rows, rows * panels > 4096, [&](int64_t r) {
      // The first panel holding the largest value (so the first of equal values wins, as in
      // one pass), skipping panels whose values are all NaN; log(sum exp) of the panels' ones.
      float best = panel_max[r];
      int64_t best_panel = 0;
      for (int64_t p = 1; p < panels; ++p) {
        const float v = panel_max[p * rows + r];
        if (!std::isnan(v) && (std::isnan(best) || v > best)) {
          best = v;
          best_panel = p;
        }
      }
      out_argmax[r] =
          static_cast<int32_t>(first_column(best_panel) + panel_argmax[best_panel * rows + r]);
      out_max[r] = best;
      if (!want_log_sum_exp) return;
      float largest_log_sum = panel_log_sum_exp[r];
      for (int64_t p = 1; p < panels; ++p) {
        largest_log_sum = std::max(largest_log_sum, panel_log_sum_exp[p * rows + r]);
      }
      float sum = 0.0f;
      for (int64_t p = 0; p < panels; ++p) {
        sum += std::exp(panel_log_sum_exp[p * rows + r] - largest_log_sum);
      }
      out_log_sum_exp[r] = largest_log_sum + std::log(sum);
    });
  }
  if (!want_log_sum_exp) max_for_log_sum_exp();
  return absl::OkStatus();
}

absl::Status PackedLinear::AddGreedyCandidateFilter(const Tensor& weight) {
  if (path_ != MatmulPath::kAvx2F32 && path_ != MatmulPath::kBF16AsF32) return absl::OkStatus();
  if (!weight.valid() || weight.shape() != Shape{out_features_, in_features_}) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackedLinear::AddGreedyCandidateFilter: weight has shape ",
                     weight.valid() ? weight.shape().ToString() : "none", ", the layer is [",
                     out_features_, ", ", in_features_, "]"));
  }
  absl::StatusOr<Tensor> weight32 = weight.ConvertTo(DType::kF32);
  if (!weight32.ok()) return weight32.status();
  // The filter bounds its distance to the products this layer computes, from the weights it
  // multiplies: bf16_as_f32's are rounded to bf16 (Create).
  if (path_ == MatmulPath::kBF16AsF32) {
    RoundToBFloat16Values(weight32->data<float>(), weight32->numel(), weight32->data<float>());
  }
  const MatmulPath int8_path = OwnInt8Path().value_or(MatmulPath::kAvx2Int8);
  // No bias of its own: the filter's raw products are dequantised with this layer's
  // (MakeCandidatesExact).
  absl::StatusOr<PackedLinear> filter = Create(*weight32, Tensor(), int8_path);
  if (!filter.ok()) return filter.status();
  const int64_t n = out_features_;
  candidate_bounds_ = Tensor::Allocate(DType::kF32, Shape{2, n});
  ComputeGreedyCandidateBounds(
      weight32->data<float>(), n, in_features_, filter->weight_scales_.data<float>(),
      candidate_bounds_.data<float>(), candidate_bounds_.data<float>() + n);
  candidate_filter_ = std::make_shared<const PackedLinear>(*std::move(filter));
  return absl::OkStatus();
}

absl::Status PackedLinear::ArgMaxThroughCandidates(const Tensor& x, Tensor& products,
                                                   Tensor& argmax, Tensor& max) const {
  // The f32 kernel of bf16_as_f32 multiplies the inputs rounded to bf16: the filter, its bound
  // and the recomputed columns all take those.
  const Tensor* input = &x;
  InputScratch& scratch = Scratch();
  if (path_ == MatmulPath::kBF16AsF32 && x.valid() && x.dtype() == DType::kF32) {
    scratch.candidate_inputs.Resize(DType::kF32, x.shape());
    RoundToBFloat16Values(x.data<float>(), x.numel(), scratch.candidate_inputs.data<float>());
    input = &scratch.candidate_inputs;
  }
  // The raw int8 products (checking the input); the input scale of each row stays in this
  // thread's scratch.
  TASKMOE_RETURN_IF_ERROR(candidate_filter_->Multiply(*input, Activation::kNone, products));
  const int64_t rows = products.numel() / out_features_, n = out_features_, k = in_features_;
  argmax.Resize(DType::kS32, Shape{rows});
  max.Resize(DType::kF32, Shape{rows});
  if (rows == 0) return absl::OkStatus();
  const F32GemmArgs exact_args = OwnF32GemmArgs(input->data<float>(), rows);
  const float* row_scales = scratch.row_scales.data<float>();
  const float* bounds = candidate_bounds_.data<float>();
  float* values = products.data<float>();
  // A row of upper bounds per team slot, sized here by the calling thread: a buffer of the
  // running thread's own grew when a helper first took a row, an allocation in a warm
  // decoding loop whenever the warm-up had left every row to the owner (allocation_test,
  // under load).
  scratch.candidate_upper_bounds.Resize(DType::kF32, Shape{NumThreads(), n});
  float* const upper_bounds_of_slots = scratch.candidate_upper_bounds.data<float>();
  // Each row start to end on one thread, while its products are in that core's cache.
  ParallelFor(rows, rows > 1, [&](int64_t r) {
    float* const upper_bounds = upper_bounds_of_slots + WorkSharingSlot() * n;
    const float* row = exact_args.a + r * k;
    float input_l1 = 0.0f;
    for (int64_t i = 0; i < k; ++i) input_l1 += std::fabs(row[i]);
    MakeCandidatesExact({.values = values + r * n,
                         .n = n,
                         .input_l1 = input_l1,
                         .row_scale = row_scales[r],
                         .column_scales = candidate_filter_->weight_scales_.data<float>(),
                         .bias = exact_args.bias,
                         .input_l1_factor = bounds,
                         .row_scale_factor = bounds + n,
                         .upper_bounds = upper_bounds},
                        [&](const int32_t* columns, int64_t count, float* out) {
                          F32GemmSelectedColumns(exact_args, r, columns, count, out);
                        });
    ArgMaxAndLogSumExpRowsOnThisThread(values + r * n, 1, n, nullptr, argmax.data<int32_t>() + r,
                                       max.data<float>() + r, nullptr);
  });
  return absl::OkStatus();
}

F32GemmArgs PackedLinear::OwnF32GemmArgs(const float* a, int64_t m) const {
  const bool bf16 = bf16_weights();
  return {.a = a,
          .lda = in_features_,
          .m = m,
          .packed = bf16 ? nullptr : packed_weight_.data<float>(),
          .packed_bf16 = bf16 ? packed_weight_.data<BFloat16>() : nullptr,
          .n = out_features_,
          .k = in_features_,
          .bias = has_bias() ? bias_.data<float>() : nullptr};
}

Dequantisation PackedLinear::Int8Dequantisation() const {
  return {.row_scales = Scratch().row_scales.data<float>(),
          .column_scales = weight_scales_.data<float>(),
          .bias = has_bias() ? bias_.data<float>() : nullptr};
}

absl::Status PackedLinear::Multiply(const Tensor& x, Activation activation, Tensor& y,
                                    const PanelSink* sink,
                                    const F32GemmChunkSink* chunk_sink) const {
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
  y.Resize(DType::kF32, x.shape().WithLastDim(out_features_));
  if (m == 0) return absl::OkStatus();

  const void* src = x.raw_data();
  InputScratch& scratch = Scratch();
  if (OwnInt8Kernel()) {
    // Rows padded to a multiple of 4 inputs with zeros, as the kernel reads 4 at a time, and
    // shifted to unsigned, as it multiplies them (int8_gemm.h).
    const int64_t padded_in = Int8GemmPaddedInputs(in_features_);
    scratch.converted.Resize(DType::kS8, Shape{m, padded_in});  // holding bytes a + 128
    scratch.row_scales.Resize(DType::kF32, Shape{m});
    uint8_t* q = reinterpret_cast<uint8_t*>(scratch.converted.data<int8_t>());
    QuantizeRowsSymmetricShifted(x.data<float>(), m, in_features_, q, padded_in,
                                 scratch.row_scales.data<float>());
    Int8Gemm(OwnInt8KernelIsa(path_), {.a = q,
                                       .lda = padded_in,
                                       .m = m,
                                       .packed = packed_weight_.data<int8_t>(),
                                       .n = out_features_,
                                       .padded_in = padded_in,
                                       .y = y.data<float>(),
                                       .ldy = out_features_,
                                       .shift_correction = shift_correction_.data<int32_t>()});
    return absl::OkStatus();
  }
  if (path_ == MatmulPath::kAvx2F32 || path_ == MatmulPath::kBF16AsF32) {
    const float* a = x.data<float>();
    if (path_ == MatmulPath::kBF16AsF32) {
      scratch.converted.Resize(DType::kF32, Shape{m, in_features_});
      RoundToBFloat16Values(a, m * in_features_, scratch.converted.data<float>());
      a = scratch.converted.data<float>();
    }
    F32GemmArgs args = OwnF32GemmArgs(a, m);
    args.activation = activation;
    args.y = y.data<float>();
    args.ldy = out_features_;
    args.on_chunk_done = chunk_sink;
    F32Gemm(args);
    return absl::OkStatus();
  }
  if (precision() == Precision::kBF16) {
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
  return MultiplyOnOneDnn(src, m, activation, y, sink);
}

absl::Status PackedLinear::MultiplyOnOneDnn(const void* src, int64_t m, Activation activation,
                                            Tensor& y, const PanelSink* sink) const {
  constexpr const char* kOp = "PackedLinear::Forward";
  UseOneDnnOnCallingThread();
  InputScratch& scratch = Scratch();
  const int64_t n = out_features_;
  const int64_t full_blocks = m > kDirectRows ? m / kChunkRows : 0;
  const int64_t rest = m - full_blocks * kChunkRows;
  const int64_t rest_rows = RemainderRows(m, rest, min_rows_);
  const int64_t blocks = full_blocks + (rest > 0 ? 1 : 0);
  const size_t src_row_bytes = in_features_ * memory::data_type_size(SourceType(precision()));
  const auto* src_bytes = static_cast<const uint8_t*>(src);
  const uint8_t* rest_src = src_bytes + full_blocks * kChunkRows * src_row_bytes;
  if (rest_rows > rest) {
    // The remainder's input through a zero-padded copy; the padding rows' results land in
    // y's spare storage (or the panel scratch) and are never read.
    scratch.padded_input.Resize(DType::kS8, Shape{rest_rows * static_cast<int64_t>(src_row_bytes)});
    auto* in = static_cast<uint8_t*>(scratch.padded_input.raw_data());
    std::memcpy(in, rest_src, rest * src_row_bytes);
    std::memset(in + rest * src_row_bytes, 0, (rest_rows - rest) * src_row_bytes);
    rest_src = in;
  }

  const bool strided = PanelsWriteIntoOutput();
  if (strided && rest_rows > rest) {
    // A padded remainder is written straight into y, past its last row: size y's storage for
    // that (Resize keeps the storage, and its contents, when shrinking back to the shape).
    const Shape shape = y.shape();
    y.Resize(DType::kF32, Shape{full_blocks * kChunkRows + rest_rows, n});
    y.Resize(DType::kF32, shape);
  }

  // Everything the loop's bodies use, prepared here by the calling thread for every team slot:
  // the primitives for each row count (full blocks, remainder) and panel width (all but the
  // last, the last), oneDNN's scratch memory and the dense output blocks.
  const int slots = NumThreads();
  const int64_t block_rows[2] = {kChunkRows, rest_rows};
  CachedMatmul* primitives[2][2] = {{nullptr, nullptr}, {nullptr, nullptr}};
  int64_t scratchpad_bytes = 0;
  for (int r = 0; r < 2; ++r) {
    if ((r == 0 && full_blocks == 0) || (r == 1 && rest == 0)) continue;
    for (int w = 0; w < 2; ++w) {
      const WeightPanel& panel = w == 0 ? panels_.front() : panels_.back();
      const PrimitiveKey key{
          block_rows[r], in_features_, panel.columns, strided ? n : panel.columns,
          precision(),   activation,   has_bias()};
      absl::StatusOr<CachedMatmul*> cached = MatmulCache().Get(key, panel.md, slots);
      if (!cached.ok()) return cached.status();
      primitives[r][w] = *cached;
      scratchpad_bytes = std::max(scratchpad_bytes, (*cached)->scratchpad_bytes);
    }
  }
  if (!strided) {
    if (static_cast<int>(scratch.panel_outputs.size()) < slots) scratch.panel_outputs.resize(slots);
    const int64_t most_rows = full_blocks > 0 ? std::max(kChunkRows, rest_rows) : rest_rows;
    for (Tensor& t : scratch.panel_outputs) {
      t.Resize(DType::kF32, Shape{most_rows, panels_.front().columns});
    }
  }
  if (static_cast<int>(scratch.scratchpads.size()) < slots) scratch.scratchpads.resize(slots);
  if (scratchpad_bytes > 0) {
    for (Tensor& t : scratch.scratchpads) t.Resize(DType::kS8, Shape{scratchpad_bytes});
  }
  Tensor* const panel_outputs = scratch.panel_outputs.data();
  Tensor* const scratchpads = scratch.scratchpads.data();
  float* const y_data = y.data<float>();

  // Runs one row block through one panel, on whichever team thread claimed it.
  const auto run = [&](int64_t block, int64_t panel_index) -> absl::Status {
    const WeightPanel& panel = panels_[panel_index];
    const bool last = block == full_blocks;
    const int64_t real_rows = last ? rest : kChunkRows;
    const int64_t first_row = block * kChunkRows;
    const void* block_src = last ? rest_src : src_bytes + first_row * src_row_bytes;
    const int slot = WorkSharingSlot();
    CachedMatmul& mm =
        *primitives[last ? 1 : 0][panel_index + 1 == static_cast<int64_t>(panels_.size()) ? 1 : 0];
    MatmulArguments& a = mm.slots[slot];
    float* const rows_out = y_data + first_row * n + panel.first_column;
    float* const out = strided ? rows_out : panel_outputs[slot].data<float>();
    // oneDNN takes non-const handles even for inputs it only reads.
    a.src.set_data_handle(const_cast<void*>(block_src));
    a.weights.set_data_handle(const_cast<void*>(panel.weight.raw_data()));
    a.dst.set_data_handle(out);
    if (has_bias() && precision() != Precision::kInt8) {
      a.bias.set_data_handle(const_cast<float*>(bias_.data<float>() + panel.first_column));
    }
    if (mm.scratchpad_bytes > 0) a.scratchpad.set_data_handle(scratchpads[slot].raw_data());
    const dnnl_status_t executed = dnnl_primitive_execute(
        mm.primitive.get(), ThreadStream().get(), static_cast<int>(a.args.size()), a.args.data());
    if (executed != dnnl_success) {
      return absl::InternalError(
          absl::StrCat(kOp, ": oneDNN matmul failed with status ", static_cast<int>(executed)));
    }
    // CPU streams run in order, so the result is complete; kept for other engines' sake.
    if (dnnl_stream_wait(ThreadStream().get()) != dnnl_success) {
      return absl::InternalError(absl::StrCat(kOp, ": oneDNN stream wait failed"));
    }
    if (!strided && sink != nullptr) {
      (*sink)(first_row, real_rows, panel_index, out);
    } else if (!strided) {
      for (int64_t r = 0; r < real_rows; ++r) {
        std::memcpy(rows_out + r * n, out + r * panel.columns, sizeof(float) * panel.columns);
      }
    }
    return absl::OkStatus();
  };

  const int64_t panels = static_cast<int64_t>(panels_.size());
  absl::Status failure;
  std::mutex failure_mutex;
  ParallelFor(blocks * panels, m * n * in_features_ >= kParallelMacs, [&](int64_t item) {
    absl::Status s = run(item / panels, item % panels);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (failure.ok()) failure = std::move(s);
    }
  });
  return failure;
}

size_t PackedLinear::memory_bytes() const {
  size_t bytes = (packed_weight_.valid() ? packed_weight_.bytes() : 0) +
                 (shift_correction_.valid() ? shift_correction_.bytes() : 0) +
                 (bias_.valid() ? bias_.bytes() : 0) +
                 (weight_scales_.valid() ? weight_scales_.bytes() : 0);
  for (const WeightPanel& panel : panels_) bytes += panel.weight.bytes();
  if (candidate_filter_ != nullptr) {
    bytes += candidate_filter_->memory_bytes() + candidate_bounds_.bytes();
  }
  return bytes;
}

bool PackedLinear::bf16_weights() const {
  return (path_ == MatmulPath::kAvx2F32 || path_ == MatmulPath::kBF16AsF32) &&
         packed_weight_.dtype() == DType::kBF16;
}

bool PackedLinear::RunsOwnKernel() const {
  return path_ == MatmulPath::kAvx2F32 || path_ == MatmulPath::kBF16AsF32 || OwnInt8Kernel();
}

bool PackedLinear::PanelsWriteIntoOutput() const {
  return panels_write_strided_ || panels_.size() == 1;
}

bool PackedLinear::OwnInt8Kernel() const {
  return path_ == MatmulPath::kAvx2Int8 || path_ == MatmulPath::kAvxVnniInt8 ||
         path_ == MatmulPath::kAvx512VnniInt8;
}

absl::StatusOr<std::string> PackedLinear::ImplementationName(int64_t rows) const {
  if (RunsOwnKernel()) {
    const bool wide = !OwnInt8Kernel() && DefaultF32GemmTiles() == F32GemmTiles::kAvx512;
    return absl::StrCat("taskmoe:", MatmulPathName(path_), bf16_weights() ? ", bf16 weights" : "",
                        wide ? ", 512-bit tiles" : "");
  }
  if (panels_.empty()) return absl::FailedPreconditionError("the linear layer is empty");
  // The first panel and the last (the only other width); a reference kernel wins the report.
  std::string name;
  for (const WeightPanel* panel : {&panels_.front(), &panels_.back()}) {
    const int64_t ldc = PanelsWriteIntoOutput() ? out_features_ : panel->columns;
    absl::StatusOr<dnnl::matmul::primitive_desc> pd =
        MakeMatmulDesc(std::max(rows, min_rows_), in_features_, panel->columns, ldc, precision(),
                       Activation::kNone, has_bias(), panel->md);
    if (!pd.ok()) return pd.status();
    if (name.empty() || std::string(pd->impl_info_str()).find("ref") != std::string::npos) {
      name = pd->impl_info_str();
    }
  }
  if (panels_.size() > 1) absl::StrAppend(&name, ", ", panels_.size(), " column panels");
  return name;
}

}  // namespace taskmoe::kernels
