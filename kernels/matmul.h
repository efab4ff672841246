// Linear layers: y = act(x @ W^T + b) with W prepacked once, at load, into the layout the
// chosen kernel wants, in one of three precisions:
//   f32   f32 weights and activations;
//   bf16  bf16 weights, activations rounded to bf16, f32 accumulation and output;
//   int8  s8 weights with one scale per output channel, activations quantised per row at run
//         time (symmetric s8), s32 accumulation, f32 output.
// Each precision has one or more paths (MatmulPath), and the loader takes the fastest this CPU
// runs (DefaultMatmulPath): oneDNN's brgemm kernels for f32 and bf16 with AVX-512 (BF16) or
// AMX, and for int8 with AMX; our own int8 kernel (int8_gemm.h) on every other CPU, in its
// 512-bit form with AVX-512 VNNI; on AVX2-only CPUs our own kernels throughout, weights
// packed once: int8, f32 (f32_gemm.h), and bf16
// computed by the f32 kernel on bf16-rounded values, since oneDNN 2.6 has no bf16 matmul
// there, and its int8 and f32 ones (gemm:jit) repack the weights at every call. The f32
// kernel keeps weights that are all bf16 values (a bf16-stored model's) in bf16: exactly the
// same products from half the memory, which is why such f32 layers run on it (with 512-bit
// tiles) on AVX-512 CPUs as well, where other f32 layers run oneDNN's brgemm.
// Threads: every path runs on the calling thread's WorkSharingTeam (work_sharing.h), never on
// oneDNN's OpenMP team, whose barriers stall a whole time slice whenever the OS deschedules one
// thread (shared cores, a CPU quota). oneDNN weights are packed as column panels, about two per
// thread, each a single-threaded oneDNN matmul of its own, which the team's threads claim.
// oneDNN primitives are created per row count and panel width on first use and cached per
// thread, so a steady decoding loop neither creates primitives nor allocates; inputs of more
// than 64 rows run in blocks of 256 plus a padded remainder, which bounds how many row counts
// ever get one.
// A greedy decoder's output projection on our f32 kernel may also carry an int8 copy of its
// weights, through which it finds each row's best output exactly at a fraction of the f32
// product's cost (AddGreedyCandidateFilter, greedy_candidates.h).
#ifndef TASKMOE_KERNELS_MATMUL_H_
#define TASKMOE_KERNELS_MATMUL_H_

#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "kernels/activation.h"
#include "kernels/f32_gemm.h"
#include "kernels/precision.h"
#include "kernels/quantize.h"
#include "kernels/tensor.h"

namespace taskmoe::kernels {

// OK when this CPU (as capped by ONEDNN_MAX_CPU_ISA, cpu_features.h) runs `path`; otherwise
// FailedPrecondition naming the instruction set it lacks.
absl::Status CheckMatmulPathSupported(MatmulPath path);
// The fastest path for `precision` on this CPU: onednn_f32 where oneDNN has f32 brgemm, else
// avx2_f32; onednn_bf16 where bf16 arithmetic outruns f32 (CpuBF16OutrunsF32: AMX, or AMD's
// full-rate AVX512-BF16), else bf16_as_f32; onednn_int8 with AMX,
// else our own int8 kernel's fastest form (OwnInt8Path). Decided once per process.
MatmulPath DefaultMatmulPath(Precision precision);
// The fastest form of our own int8 kernel this CPU runs: avx512_vnni_int8, avx_vnni_int8 or
// avx2_int8 (none below AVX2, as ONEDNN_MAX_CPU_ISA may cap it).
std::optional<MatmulPath> OwnInt8Path();

// Whether a greedy head computes log(sum exp(y)) (PackedLinear::ForwardArgMaxAndLogSumExp):
// exactly, or not at all. A decoder that reports no scores needs only the arg-max and its
// value, which are exact either way; without the log-sum-exp the head takes no exponential,
// and one with a candidate filter skips most of its f32 products too.
enum class GreedyLogSumExp { kExact, kNone };

class PackedLinear {
 public:
  // `weight` is [out_features, in_features] (the nn.Linear layout), f32 or bf16. `bias` is
  // [out_features] f32/bf16, or an empty Tensor() for none. Both are copied; the caller may
  // release them afterwards.
  // On DefaultMatmulPath(precision), except: an f32 layer whose weights are all bf16 values
  // runs on our kernel (avx2_f32) where the default is onednn_f32; an int8 layer for whose
  // shape oneDNN would run its reference kernel (RunsReferenceKernel) runs on our own kernel.
  static absl::StatusOr<PackedLinear> Create(const Tensor& weight, const Tensor& bias,
                                             Precision precision);
  // The same on a given path (tests and benchmarks compare paths); a path this CPU cannot run
  // is refused (CheckMatmulPathSupported).
  static absl::StatusOr<PackedLinear> Create(const Tensor& weight, const Tensor& bias,
                                             MatmulPath path);
  // A decoder's output projection: as Create(weight, bias, precision), with the greedy head's
  // int8 candidate filter (AddGreedyCandidateFilter) wherever the layer runs our f32 kernel.
  // f32 weights with full mantissas run our kernel here too where the default would be
  // oneDNN's brgemm (AVX-512): the filter reads a quarter of the bytes at one row, and the
  // head is the largest layer of a step (a 64k vocabulary: half the paper shape's weights).
  static absl::StatusOr<PackedLinear> CreateGreedyHead(const Tensor& weight, const Tensor& bias,
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
  // reduction, so the 64k-wide output rows are never written out in f32. Where oneDNN's
  // weights are column panels it is left unwritten: each (row block, panel) is reduced on the
  // thread that computed it, and the panels' results are merged per row.
  // With kNone log_sum_exp gets each row's max (a step's log-probability, max - log_sum_exp,
  // reads 0), and a layer with a candidate filter (AddGreedyCandidateFilter) finds the
  // arg-max and the max, exactly the f32 ones, through it: products then holds int8
  // approximations of the columns that cannot win.
  absl::Status ForwardArgMaxAndLogSumExp(
      const Tensor& x, Tensor& products, Tensor& argmax, Tensor& max, Tensor& log_sum_exp,
      GreedyLogSumExp log_sum_exp_kind = GreedyLogSumExp::kExact) const;

  // Gives an f32 layer on our kernel (avx2_f32, bf16_as_f32) the greedy head's int8 candidate
  // filter (greedy_candidates.h), built from `weight`, the tensor Create packed: with it
  // ForwardArgMaxAndLogSumExp(..., kNone) finds the arg-max from an int8 product (on
  // avx_vnni_int8 where the CPU has AVX-VNNI, else avx2_int8) and recomputes only the
  // columns that could hold it in f32. Costs the int8 copy of the weights, a quarter of their
  // f32 packing. Does nothing on other paths, where the f32 products' rounding is oneDNN's and
  // cannot be reproduced column by column.
  absl::Status AddGreedyCandidateFilter(const Tensor& weight);
  // The filter's int8 path, if this layer has one.
  std::optional<MatmulPath> greedy_candidate_filter_path() const {
    if (candidate_filter_ == nullptr) return std::nullopt;
    return candidate_filter_->path();
  }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Precision precision() const { return MatmulPathPrecision(path_); }
  MatmulPath path() const { return path_; }
  bool has_bias() const { return bias_.valid(); }
  // Whether our f32 kernel reads the weights in bf16 (they are all bf16 values: a bf16-stored
  // model's, or bf16_as_f32's rounded ones), for the same products from half the bytes.
  bool bf16_weights() const;
  // Whether Forward runs one of our own kernels (int8_gemm.h, f32_gemm.h) rather than a
  // oneDNN primitive. oneDNN's are created and cached per calling thread (creating one takes
  // far longer than running it), so a caller that spreads whole layers over threads does so
  // only with our kernels.
  bool RunsOwnKernel() const;
  // Bytes of packed weights, scales and bias.
  size_t memory_bytes() const;
  // The implementation a batch of `rows` runs: oneDNN's name for it (e.g. "brg:avx512_core";
  // a reference kernel's name if any panel width runs one) with ", <n> column panels" where
  // there are several, or ours ("taskmoe:avx2_f32", "taskmoe:bf16_as_f32",
  // "taskmoe:avx2_int8", "taskmoe:avx_vnni_int8").
  absl::StatusOr<std::string> ImplementationName(int64_t rows) const;
  // Whether oneDNN would run its reference ("ref", orders of magnitude slower) kernel for some
  // decoding batch size (1, 3, 8, 16 or 64 rows).
  bool RunsReferenceKernel() const;

 private:
  // Create(weight, bias, precision)'s choice of path and its fallbacks; a `greedy_head` takes
  // our f32 kernel wherever Create would take oneDNN's f32 brgemm (CreateGreedyHead).
  static absl::StatusOr<PackedLinear> CreateOnDefaultPath(const Tensor& weight, const Tensor& bias,
                                                          Precision precision, bool greedy_head);

  // What becomes of one (row block, column panel) of outputs that oneDNN wrote to a dense
  // per-thread block (PanelsWriteIntoOutput() false): rows [first_row, first_row + rows) of
  // panel `panel`, `block` holding rows x that panel's columns. Runs on the team thread that
  // computed them, while they are in its cache.
  // (A FunctionRef: the decoding loop allocates nothing.)
  using PanelSink =
      absl::FunctionRef<void(int64_t first_row, int64_t rows, int64_t panel, const float* block)>;

  // Forward without the int8 dequantisation: y holds raw products in int8 (the per-row
  // scales stay in this thread's scratch until the next call). With a `sink`, panels that
  // oneDNN cannot write into y go to it instead of into y; with a `chunk_sink`, our f32
  // kernel reports each chunk of columns of y once it is final (f32_gemm.h).
  absl::Status Multiply(const Tensor& x, Activation activation, Tensor& y,
                        const PanelSink* sink = nullptr,
                        const F32GemmChunkSink* chunk_sink = nullptr) const;
  // How the raw products of this thread's last int8 Multiply become outputs.
  Dequantisation Int8Dequantisation() const;
  // Our f32 kernel's arguments for `m` rows of inputs at `a` (avx2_f32, bf16_as_f32): these
  // weights, in whichever packing they have, and the bias; no outputs.
  F32GemmArgs OwnF32GemmArgs(const float* a, int64_t m) const;
  // ForwardArgMaxAndLogSumExp's arg-max and max through the candidate filter (no log-sum-exp).
  absl::Status ArgMaxThroughCandidates(const Tensor& x, Tensor& products, Tensor& argmax,
                                       Tensor& max) const;

  // Packs W ([n, k] row-major, of `type`) into panels_ for oneDNN's kernels, in
  // PanelColumns' width or wider where oneDNN would run its reference kernel on that.
  absl::Status PackPanels(const void* weight, dnnl::memory::data_type type);
  // The same in panels of `width` columns (the last one narrower).
  absl::Status PackPanels(const void* weight, dnnl::memory::data_type type, int64_t width);
  // Multiply on oneDNN: every (row block, column panel) pair, across the team.
  absl::Status MultiplyOnOneDnn(const void* src, int64_t m, Activation activation, Tensor& y,
                                const PanelSink* sink) const;

  // Whether oneDNN writes each panel's outputs into y's rows (one panel, or strided outputs
  // oneDNN runs as fast), rather than into a per-thread dense block that is copied out.
  bool PanelsWriteIntoOutput() const;
  // Whether the path is our int8 kernel (int8_gemm.h) rather than a oneDNN primitive.
  bool OwnInt8Kernel() const;

  // Columns [first_column, first_column + columns) of W, packed for oneDNN. Every panel but
  // the last has the same width, so a thread's primitive cache holds at most two per shape.
  struct WeightPanel {
    int64_t first_column = 0;
    int64_t columns = 0;
    dnnl::memory::desc md;
    Tensor weight;  // raw bytes in md's layout
  };

  MatmulPath path_ = MatmulPath::kOneDnnF32;
  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  std::vector<WeightPanel> panels_;  // oneDNN paths
  // Whether oneDNN writes a panel's outputs straight into y's rows (its gemm:jit takes a row
  // stride) rather than into a dense scratch block that is then copied (brgemm needs dense).
  bool panels_write_strided_ = false;
  // Inputs of fewer rows run padded with zero rows to this many, where oneDNN would run its
  // reference kernel on fewer (AMX int8).
  int64_t min_rows_ = 1;
  Tensor packed_weight_;     // our kernels' weights, in int8_gemm.h's or f32_gemm.h's layout
  Tensor shift_correction_;  // our int8 kernel: s32 [padded n], Int8GemmShiftCorrection
  Tensor bias_;              // f32 [N], or empty
  Tensor weight_scales_;     // f32 [N], int8 only
  // The greedy head's candidate filter: the weights in int8, and per column the two factors
  // of its error bound (ComputeGreedyCandidateBounds), f32 [2, N]; shared by copies.
  std::shared_ptr<const PackedLinear> candidate_filter_;
  Tensor candidate_bounds_;
};

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_MATMUL_H_
