// Kernel benchmark: matmul throughput at decoder shapes (M = 1..512 rows, K = N = 512..4096)
// per precision, as GFLOP/s and as a fraction of the machine's own measured peak
// (DESIGN.md §6). Peaks are measured first, in the same run, with large square products;
// memory bandwidth with a triad, for the batch-1 (weight-streaming) bound. Also the rest of a
// decoding step's own kernels: the greedy head's argmax/log-sum-exp, attention over f32 or bf16
// keys, and int8 activation quantisation.
//
//   build/bench/kernels_bench [--threads=N] [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "kernels/roofline.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"

namespace taskmoe::kernels {
namespace {

Tensor Filled(const Shape& shape, float value) {
  Tensor t = Tensor::Allocate(DType::kF32, shape);
  std::fill_n(t.data<float>(), t.numel(), value);
  return t;
}

// Peak GFLOP/s per precision and triad bandwidth, measured once before the benchmarks run.
std::map<Precision, double>& PeakGflops() {
  static std::map<Precision, double> peaks;
  return peaks;
}
double& TriadGBps() {
  static double bandwidth = 0;
  return bandwidth;
}

void MeasurePeaks() {
  for (Precision p : {Precision::kF32, Precision::kBF16, Precision::kInt8}) {
    PeakGflops()[p] = MeasureMatmulPeakGflops(p);
  }
  TriadGBps() = MeasureTriadGbps();
}

// GFLOP/s and the fraction of the precision's peak, from the work of one iteration.
void SetMatmulRates(benchmark::State& state, double flops, Precision precision) {
  state.counters["GFLOPs"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_frac"] = benchmark::Counter(flops * 1e-9 / PeakGflops()[precision],
                                                   benchmark::Counter::kIsIterationInvariantRate);
}

// `bf16_values`: weights rounded to bf16 values first, as a bf16-stored model's are, which our
// f32 kernel packs in bf16 (f32_gemm.h).
void BM_Matmul(benchmark::State& state, MatmulPath path, bool bf16_values) {
  const Precision precision = MatmulPathPrecision(path);
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Tensor weight = PseudoRandomMatrix(n, k);
  if (bf16_values) RoundToBFloat16Values(weight.data<float>(), n * k, weight.data<float>());
  absl::StatusOr<PackedLinear> linear = PackedLinear::Create(weight, Tensor(), path);
  if (!linear.ok()) {
    state.SkipWithError(std::string(linear.status().message()).c_str());
    return;
  }
  const Tensor x = Filled(Shape{m, k}, 0.5f);
  Tensor y;
  for (auto _ : state) {
    absl::Status s = linear->Forward(x, Activation::kNone, y);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(y.raw_data());
  }
  SetMatmulRates(state, 2.0 * m * k * n, precision);
  state.counters["weight_MB"] = static_cast<double>(linear->memory_bytes()) / 1e6;
  state.SetLabel(*linear->ImplementationName(m));
}

// The greedy decoding head: the vocabulary projection reduced to each row's argmax and
// log-sum-exp (PackedLinear::ForwardArgMaxAndLogSumExp), against the same product written out
// in full (Forward), to show what the reduction costs on top of the matmul.
// With `scores` false, the arg-max alone (GreedyLogSumExp::kNone), as a decoder that reports no
// scores asks for it; with `filtered` too, through the int8 candidate filter of our f32 kernel
// (greedy_candidates.h), whose cost depends on how many columns each row must recompute, which
// the weights decide: these random ones are harder on it than a trained model's
// (docs/benchmarks.md).
void BM_GreedyHead(benchmark::State& state, MatmulPath path, bool scores, bool filtered) {
  const Precision precision = MatmulPathPrecision(path);
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor weight = PseudoRandomMatrix(n, k);
  absl::StatusOr<PackedLinear> linear = PackedLinear::Create(weight, Filled(Shape{n}, 0.25f), path);
  if (!linear.ok()) {
    state.SkipWithError(std::string(linear.status().message()).c_str());
    return;
  }
  if (filtered) {
    if (absl::Status s = linear->AddGreedyCandidateFilter(weight); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      return;
    }
  }
  const GreedyLogSumExp kind = scores ? GreedyLogSumExp::kExact : GreedyLogSumExp::kNone;
  const Tensor x = PseudoRandomMatrix(m, k);
  Tensor products, argmax, max, log_sum_exp;
  for (auto _ : state) {
    absl::Status s = linear->ForwardArgMaxAndLogSumExp(x, products, argmax, max, log_sum_exp, kind);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(log_sum_exp.raw_data());
  }
  SetMatmulRates(state, 2.0 * m * k * n, precision);
}

// The same reduction over logits already in memory (beam search's rows, or the f32 path).
void BM_ArgMaxAndLogSumExp(benchmark::State& state) {
  const Tensor logits = PseudoRandomMatrix(state.range(0), state.range(1));
  Tensor argmax, log_sum_exp;
  for (auto _ : state) {
    absl::Status s = ArgMaxAndLogSumExp(logits, argmax, log_sum_exp);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(log_sum_exp.raw_data());
  }
  state.counters["Gvalues_per_s"] = benchmark::Counter(
      static_cast<double>(logits.numel()) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Attention of `batch` rows, `queries` each, over `keys` cached positions, at the model width
// of Transformer Base (512, 8 heads): a decoder step's cross-attention (1 query, 24 keys; f32
// or bf16 keys and values) and a 24-token encoder's self-attention.
void BM_Attention(benchmark::State& state) {
  const int64_t batch = state.range(0), queries = state.range(1), keys = state.range(2);
  constexpr int64_t kWidth = 512;
  Tensor q3 = PseudoRandomMatrix(batch * queries, kWidth);
  Tensor k3 = PseudoRandomMatrix(batch * keys, kWidth);
  Tensor v3 = PseudoRandomMatrix(batch * keys, kWidth);
  Tensor out;
  for (Tensor* t : {&q3, &k3, &v3}) {
    if (!t->ReshapeInPlace(Shape{batch, t->dim(0) / batch, kWidth}).ok()) {
      state.SkipWithError("reshape");
      return;
    }
  }
  if (state.range(3) != 0) {  // a bf16 cache, as reduced-precision models keep
    for (Tensor* t : {&k3, &v3}) {
      Tensor rounded = Tensor::Allocate(DType::kBF16, t->shape());
      ConvertToBFloat16(t->data<float>(), t->numel(), rounded.data<BFloat16>());
      *t = std::move(rounded);
    }
  }
  const std::vector<int32_t> lengths(batch, static_cast<int32_t>(keys));
  for (auto _ : state) {
    absl::Status s = MultiHeadAttention(q3, k3, v3, lengths, {.num_heads = 8}, out);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(out.raw_data());
  }
}

// Per-row int8 quantisation of an activation matrix, which every int8 linear layer runs on its
// input: a decoder step's (rows = batch) and a 24-token encoder's (rows = 24 x batch).
void BM_QuantizeRows(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const Tensor x = PseudoRandomMatrix(rows, cols);
  std::vector<int8_t> quantised(rows * cols);
  std::vector<float> scales(rows);
  for (auto _ : state) {
    QuantizeRowsSymmetric(x.data<float>(), rows, cols, quantised.data(), scales.data());
    benchmark::DoNotOptimize(quantised.data());
  }
}

// Matmuls and greedy heads on every path this CPU runs (matmul.h), so that the paths of one
// precision are compared side by side in one run; peak_frac is against the precision's peak,
// which is measured on its default path.
void RegisterBenchmarks() {
  for (MatmulPath p : kAllMatmulPaths) {
    if (!CheckMatmulPathSupported(p).ok()) continue;
    auto* b = benchmark::RegisterBenchmark((std::string("matmul/") + MatmulPathName(p)).c_str(),
                                           [p](benchmark::State& s) { BM_Matmul(s, p, false); });
    // f32 on a bf16-stored model's weights: our kernel reads them in bf16.
    auto* bf16_values = p == MatmulPath::kAvx2F32
                            ? benchmark::RegisterBenchmark(
                                  (std::string("matmul_bf16_values/") + MatmulPathName(p)).c_str(),
                                  [p](benchmark::State& s) { BM_Matmul(s, p, true); })
                            : nullptr;
    for (benchmark::internal::Benchmark* bench : {b, bf16_values}) {
      if (bench == nullptr) continue;
      for (int64_t m : {1, 8, 32, 128, 256, 512}) {
        for (int64_t kn : {512, 1024, 2048, 4096}) bench->Args({m, kn, kn});
      }
      // The Transformer-Base FFN shapes: 512 -> 2048 and 2048 -> 512.
      for (int64_t m : {1, 32, 256}) {
        bench->Args({m, 512, 2048});
        bench->Args({m, 2048, 512});
      }
      // The output projection onto the 64k vocabulary: over half of a decoder step's work.
      for (int64_t m : {1, 32, 128}) bench->Args({m, 512, 64000});
      // Fused self-attention queries, keys and values.
      for (int64_t m : {1, 32, 128}) bench->Args({m, 512, 1536});
      bench->ArgNames({"M", "K", "N"})->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
    struct HeadVariant {
      const char* name;
      bool scores, filtered;
    };
    for (const HeadVariant& v : {HeadVariant{"greedy_head/", true, false},
                                 HeadVariant{"greedy_head_no_scores/", false, false},
                                 HeadVariant{"greedy_head_filtered/", false, true}}) {
      if (v.filtered && p != MatmulPath::kAvx2F32 && p != MatmulPath::kBF16AsF32) continue;
      auto* head = benchmark::RegisterBenchmark(
          (std::string(v.name) + MatmulPathName(p)).c_str(),
          [p, v](benchmark::State& s) { BM_GreedyHead(s, p, v.scores, v.filtered); });
      // The paper shape's head, and the demo model's (d_model 256, 16k vocabulary).
      for (int64_t m : {1, 32, 128}) head->Args({m, 512, 64000});
      for (int64_t m : {1, 32, 128}) head->Args({m, 256, 16000});
      head->ArgNames({"M", "K", "N"})->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
  }
  benchmark::RegisterBenchmark("attention", BM_Attention)
      ->Args({32, 1, 24, 0})
      ->Args({32, 1, 24, 1})
      ->Args({128, 1, 24, 0})
      ->Args({128, 1, 24, 1})
      ->Args({1, 24, 24, 0})
      ->Args({32, 24, 24, 0})
      ->ArgNames({"batch", "queries", "keys", "bf16"})
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("quantize_rows", BM_QuantizeRows)
      ->Args({32, 512})
      ->Args({32, 2048})
      ->Args({128, 512})
      ->Args({768, 512})
      ->ArgNames({"rows", "cols"})
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("argmax_logsumexp", BM_ArgMaxAndLogSumExp)
      ->Args({32, 64000})
      ->Args({128, 64000})
      ->ArgNames({"rows", "N"})
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
}

}  // namespace
}  // namespace taskmoe::kernels

int main(int argc, char** argv) {
  int threads = 0;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (threads > 0 && !taskmoe::kernels::SetNumThreads(threads).ok()) {
    std::fprintf(stderr, "bad --threads\n");
    return 2;
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 2;

  using namespace taskmoe::kernels;
  std::printf("threads=%d %s\ndefault paths: f32 %s, bf16 %s, int8 %s\n", NumThreads(),
              CpuSummary().c_str(), MatmulPathName(DefaultMatmulPath(Precision::kF32)),
              MatmulPathName(DefaultMatmulPath(Precision::kBF16)),
              MatmulPathName(DefaultMatmulPath(Precision::kInt8)));
  MeasurePeaks();
  std::printf("measured peak GFLOP/s: f32 %.0f, bf16 %.0f, int8 %.0f; triad %.1f GB/s\n",
              PeakGflops()[Precision::kF32], PeakGflops()[Precision::kBF16],
              PeakGflops()[Precision::kInt8], TriadGBps());
  std::fflush(stdout);
  RegisterBenchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
