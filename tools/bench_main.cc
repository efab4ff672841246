// taskmoe-bench: decoding throughput of the engine on random-weight models (DESIGN.md §6:
// weights do not change speed), side by side in one run: dense, TaskMoE extracted
// subnetwork, TaskMoE full model routed by task, TokenMoE full model. Prints generated
// tokens/s per batch size with a forced output length, the ratios, and each model's memory.
//
// With --roofline (the default) it first measures the machine's matmul peak for the precision
// and its triad bandwidth, then reports each decoder step (timed alone, without the encoder)
// as a fraction of that peak and as a multiple of the time to read its weights once.
//
// With --workers N (as the server's --workers), N batches decode at once, each on
// threads / N compute threads: the same cores used across batches instead of within one.
//
//   taskmoe-bench [--shape wmt|small] [--batches 1,8,32,128,512] [--threads 2] [--workers 1]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu_features.h"
#include "kernels/f32_gemm.h"
#include "kernels/roofline.h"
#include "kernels/runtime.h"
#include "models/decoding.h"
#include "models/testing/random_model.h"
#include "util/command_line.h"

ABSL_FLAG(std::string, shape, "wmt",
          "wmt: the paper's Transformer Base (d 512, ff 2048, 8 heads, 6+6 layers, vocab 64k, "
          "32 experts top-2 every other layer); small: a quick check shape");
ABSL_FLAG(std::string, models, "dense,taskmoe-extracted,taskmoe-full,tokenmoe",
          "comma-separated models to run");
ABSL_FLAG(std::string, batches, "1,8,32,128,512", "comma-separated batch sizes (sentences)");
ABSL_FLAG(int, source_tokens, 24, "source length of every sentence");
ABSL_FLAG(int, output_tokens, 24, "forced output length (EOS ignored)");
ABSL_FLAG(std::string, precision, "f32", "f32, bf16 or int8");
ABSL_FLAG(std::string, stored_dtype, "f32",
          "how the random weights are stored: f32, or bf16 (rounded, as a model trained and "
          "shipped in bf16 is, like the demo; our f32 kernel then reads them in bf16)");
ABSL_FLAG(int, threads, 0, "compute threads (0: OMP_NUM_THREADS or all cores)");
ABSL_FLAG(int, workers, 1,
          "batches decoded at the same time, each on threads / workers compute threads (every "
          "worker decodes its own batch of the given size)");
ABSL_FLAG(double, min_seconds, 2.0, "repeat each measurement until this much time has passed");
ABSL_FLAG(bool, roofline, true,
          "measure the machine's matmul peak (this precision) and triad bandwidth first, and "
          "report each decoder step against them (DESIGN.md §6)");

namespace {

using namespace taskmoe;

// Resident set size now and its peak since the last ResetPeakRss(), from /proc.
int64_t ReadStatusKb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) {
      int64_t kb = 0;
      std::sscanf(line.c_str() + field.size() + 1, "%ld", &kb);
      return kb;
    }
  }
  return -1;
}
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct ModelUnderTest {
  std::string name;
  std::shared_ptr<const models::TransformerModel> model;
  double load_peak_mb = 0;
};

absl::StatusOr<std::shared_ptr<const models::TransformerModel>> Build(
    const std::string& name, const models::ModelShape& shape, kernels::Precision precision,
    models::StoredDType stored) {
  using models::ModelKind;
  const ModelKind kind = name == "dense"      ? ModelKind::kDense
                         : name == "tokenmoe" ? ModelKind::kTokenMoe
                                              : ModelKind::kTaskMoe;
  models::ModelConfig config = models::MakeRandomModelConfig(shape, kind);
  absl::StatusOr<std::shared_ptr<const models::SafetensorsFile>> weights =
      models::MakeRandomWeights(config, 1, stored);
  if (!weights.ok()) return weights.status();
  if (name != "taskmoe-extracted") {
    return models::TransformerModel::Create(config, **weights, {.precision = precision});
  }
  absl::StatusOr<models::Subnetwork> sub =
      models::ExtractSubnetwork(config, **weights, config.tasks[0].id, "");
  if (!sub.ok()) return sub.status();
  weights->reset();
  std::vector<models::TensorToWrite> tensors;
  for (const models::OwnedTensor& t : sub->tensors)
    tensors.push_back({t.name, t.shape, t.values.data()});
  absl::StatusOr<std::string> bytes = models::SerializeSafetensors(tensors, stored);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<std::shared_ptr<const models::SafetensorsFile>> sub_weights =
      models::SafetensorsFile::FromBytes(*std::move(bytes));
  if (!sub_weights.ok()) return sub_weights.status();
  return models::TransformerModel::Create(sub->config, **sub_weights, {.precision = precision});
}

// One worker's repeated decoding of one batch: whole decodes, and the decoder steps alone.
struct Measurement {
  int runs = 0;
  double seconds = 0;       // wall time of the runs
  double step_seconds = 0;  // decoder steps only: from step 0 to the last step's start
  int64_t steps_timed = 0;
};

absl::StatusOr<Measurement> Measure(const models::TransformerModel& model,
                                    const models::TaskRoute& route,
                                    const std::vector<std::vector<int32_t>>& sources,
                                    int output_tokens, double min_seconds) {
  models::DecodeOptions options;
  options.max_output_tokens = output_tokens;
  options.ignore_eos = true;
  std::chrono::steady_clock::time_point first_step, last_step;
  int64_t last_step_index = 0;
  options.on_step = [&](int64_t step, int) {
    (step == 0 ? first_step : last_step) = std::chrono::steady_clock::now();
    last_step_index = step;
  };
  Measurement m;
  models::DecodeWorkspace workspace;  // as a server worker keeps one
  // One untimed run creates this thread's primitives and sizes the workspace.
  if (absl::StatusOr<std::vector<models::Hypothesis>> warm =
          models::Decode(model, route, sources, options, &workspace);
      !warm.ok()) {
    return warm.status();
  }
  last_step_index = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    absl::StatusOr<std::vector<models::Hypothesis>> out =
        models::Decode(model, route, sources, options, &workspace);
    if (!out.ok()) return out.status();
    ++m.runs;
    if (last_step_index > 0) {
      m.step_seconds += std::chrono::duration<double>(last_step - first_step).count();
      m.steps_timed += last_step_index;
    }
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (m.seconds < min_seconds);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  util::ParseCommandLine(argc, argv, "Decoding throughput of dense, TaskMoE and TokenMoE models.",
                         "tools/bench_main.cc");
  if (absl::GetFlag(FLAGS_threads) > 0 &&
      !kernels::SetNumThreads(absl::GetFlag(FLAGS_threads)).ok()) {
    std::cerr << "taskmoe-bench: bad --threads\n";
    return 2;
  }
  absl::StatusOr<kernels::Precision> precision =
      kernels::ParsePrecision(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) {
    std::cerr << "taskmoe-bench: " << precision.status().message() << "\n";
    return 2;
  }
  models::StoredDType stored = models::StoredDType::kF32;
  if (absl::GetFlag(FLAGS_stored_dtype) == "bf16") {
    stored = models::StoredDType::kBF16;
  } else if (absl::GetFlag(FLAGS_stored_dtype) != "f32") {
    std::cerr << "taskmoe-bench: --stored_dtype must be f32 or bf16\n";
    return 2;
  }
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1 || workers > kernels::NumThreads()) {
    std::cerr << "taskmoe-bench: --workers must be between 1 and the thread count ("
              << kernels::NumThreads() << ")\n";
    return 2;
  }
  const int total_threads = kernels::NumThreads();
  models::ModelShape shape;
  if (absl::GetFlag(FLAGS_shape) == "small") {
    shape = {.d_model = 256,
             .num_heads = 4,
             .encoder_layers = 3,
             .decoder_layers = 3,
             .d_ff = 1024,
             .vocab_size = 8000,
             .num_experts = 8,
             .top_k = 2};
  } else if (absl::GetFlag(FLAGS_shape) != "wmt") {
    std::cerr << "taskmoe-bench: --shape must be wmt or small\n";
    return 2;
  }
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',', absl::SkipEmpty())) {
    int value = 0;
    if (!absl::SimpleAtoi(b, &value) || value < 1) {
      std::cerr << "taskmoe-bench: bad batch size '" << b << "'\n";
      return 2;
    }
    batches.push_back(value);
  }
  const int source_tokens = absl::GetFlag(FLAGS_source_tokens);
  const int output_tokens = absl::GetFlag(FLAGS_output_tokens);
  std::printf(
      "taskmoe-bench: shape=%s stored=%s precision=%s matmul_path=%s threads=%d workers=%d "
      "source=%d output=%d tokens\n%s\n",
      absl::GetFlag(FLAGS_shape).c_str(), models::StoredDTypeName(stored),
      kernels::PrecisionName(*precision),
      kernels::MatmulPathName(kernels::DefaultMatmulPath(*precision)), total_threads, workers,
      source_tokens, output_tokens, kernels::CpuSummary().c_str());

  // The roofline of this machine, now, on all the threads: the precision's matmul peak and
  // memory bandwidth.
  double peak_gflops = 0, triad_gbps = 0;
  if (absl::GetFlag(FLAGS_roofline)) {
    peak_gflops = kernels::MeasureMatmulPeakGflops(*precision);
    triad_gbps = kernels::MeasureTriadGbps();
    std::printf("roofline: %s matmul peak %.0f GFLOP/s, triad %.1f GB/s\n",
                kernels::PrecisionName(*precision), peak_gflops, triad_gbps);
  }
  if (!kernels::SetNumThreads(total_threads / workers).ok()) return 2;

  std::map<std::string, std::map<int, double>> tokens_per_second;
  std::vector<std::string> names =
      absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty());
  for (const std::string& name : names) {
    const int64_t rss_before = ReadStatusKb("VmRSS");
    ResetPeakRss();
    absl::StatusOr<std::shared_ptr<const models::TransformerModel>> model =
        Build(name, shape, *precision, stored);
    if (!model.ok()) {
      std::cerr << "taskmoe-bench: " << name << ": " << model.status().message() << "\n";
      return 1;
    }
    const int64_t rss_loaded = ReadStatusKb("VmRSS");
    const int64_t peak_load = ReadStatusKb("VmHWM");
    const models::TaskRoute& route = **(*model)->RouteForTask(0);
    const models::StepCost cost = (*model)->DecoderStepCost(route);
    ResetPeakRss();
    std::printf(
        "\n%-18s params %7.1fM  weights %7.1f MB  RSS after load +%.0f MB (load peak %.0f MB)\n"
        "  decoder step: %.1fM multiply-adds per row, %.1f MB of weights read\n",
        name.c_str(), (*model)->parameter_count() / 1e6, (*model)->memory_bytes() / 1e6,
        (rss_loaded - rss_before) / 1024.0, peak_load / 1024.0, cost.macs_per_row / 1e6,
        cost.weight_bytes / 1e6);
    std::string paths;
    for (const auto& [path, count] : cost.linears_per_path) {
      absl::StrAppend(&paths, paths.empty() ? "" : ", ", count, " ", kernels::MatmulPathName(path));
    }
    if (cost.linears_on_bf16_weights > 0) {
      absl::StrAppend(&paths, " (", cost.linears_on_bf16_weights, " of them on bf16 weights)");
    }
    if (cost.linears_per_path.contains(kernels::MatmulPath::kAvx2F32) ||
        cost.linears_per_path.contains(kernels::MatmulPath::kBF16AsF32)) {
      absl::StrAppend(
          &paths, "; our f32 kernel on ",
          kernels::DefaultF32GemmTiles() == kernels::F32GemmTiles::kAvx512 ? "512" : "256",
          "-bit tiles");
    }
    if (const auto filter = (*model)->greedy_head_filter_path(); filter.has_value()) {
      absl::StrAppend(&paths, "; greedy head through an int8 candidate filter on ",
                      kernels::MatmulPathName(*filter));
    }
    std::printf("  decoder step's linear layers by kernel path: %s\n", paths.c_str());
    for (int batch : batches) {
      std::vector<std::vector<int32_t>> sources(batch);
      for (int b = 0; b < batch; ++b) {
        sources[b].push_back(4 + 1);
        for (int t = 1; t < source_tokens - 1; ++t)
          sources[b].push_back(10 + (b * 131 + t * 17) % 5000);
        sources[b].push_back(3);
      }
      // Every worker decodes its own copy of the batch, all at once, as server workers do.
      std::vector<absl::StatusOr<Measurement>> measured(workers, Measurement{});
      auto run = [&](int w) {
        measured[w] =
            Measure(**model, route, sources, output_tokens, absl::GetFlag(FLAGS_min_seconds));
      };
      std::vector<std::thread> threads;
      for (int w = 1; w < workers; ++w) threads.emplace_back(run, w);
      run(0);
      for (std::thread& t : threads) t.join();
      double tps = 0, seconds_per_run = 0, step = 0, gflops = 0;
      for (const absl::StatusOr<Measurement>& m : measured) {
        if (!m.ok()) {
          std::cerr << "taskmoe-bench: " << name << ": " << m.status().message() << "\n";
          return 1;
        }
        tps += static_cast<double>(batch) * output_tokens * m->runs / m->seconds;
        seconds_per_run += m->seconds / m->runs / workers;
        if (m->steps_timed > 0) {
          const double worker_step = m->step_seconds / static_cast<double>(m->steps_timed);
          step += worker_step / workers;
          gflops += 2.0 * batch * static_cast<double>(cost.macs_per_row) / worker_step / 1e9;
        }
      }
      tokens_per_second[name][batch] = tps;
      std::printf("  batch %4d  %10.1f tokens/s  %8.2f ms/step  peak RSS %.0f MB", batch, tps,
                  1e3 * seconds_per_run / output_tokens, ReadStatusKb("VmHWM") / 1024.0);
      if (peak_gflops > 0 && step > 0) {
        // Roofline accounting over the whole decoder step, linear-layer work only; with
        // several workers their rates add up against the peak of all threads.
        const double bandwidth_bound = static_cast<double>(cost.weight_bytes) / (triad_gbps * 1e9);
        std::printf(
            "  | decoder step %.2f ms: %.0f GFLOP/s = %.2f of peak; %.2fx the %.2f ms "
            "weight-read bound",
            1e3 * step, gflops, gflops / peak_gflops, step / bandwidth_bound,
            1e3 * bandwidth_bound);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }

  std::printf("\n%-8s", "batch");
  for (const std::string& name : names) std::printf(" %18s", name.c_str());
  std::printf("\n");
  for (int batch : batches) {
    std::printf("%-8d", batch);
    for (const std::string& name : names) std::printf(" %18.1f", tokens_per_second[name][batch]);
    std::printf("\n");
  }
  if (tokens_per_second.count("taskmoe-extracted") && tokens_per_second.count("tokenmoe")) {
    std::printf("\nTaskMoE-extracted / TokenMoE:");
    double peak_task = 0, peak_token = 0;
    for (int batch : batches) {
      std::printf(
          " %d:%.2fx", batch,
          tokens_per_second["taskmoe-extracted"][batch] / tokens_per_second["tokenmoe"][batch]);
      peak_task = std::max(peak_task, tokens_per_second["taskmoe-extracted"][batch]);
      peak_token = std::max(peak_token, tokens_per_second["tokenmoe"][batch]);
    }
    std::printf("\npeak tokens/s: TaskMoE-extracted %.1f, TokenMoE %.1f, ratio %.2fx\n", peak_task,
                peak_token, peak_task / peak_token);
  }
  return 0;
}
