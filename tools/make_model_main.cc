// taskmoe-make-model: writes a model repository of random weights at a given shape, for
// serving benchmarks (DESIGN.md §6: weights do not change speed). The kinds are the paper's
// comparison: TaskMoE (each task's extracted subnetwork), the TaskMoE full model routed by
// task at run time, TokenMoE, dense, and the hybrid (token-routed encoder, extracted decoder).
// Where the model cannot be reduced per task (every kind but taskmoe and hybrid), every task's
// subdirectory holds the same full model, hard-linked to one copy on disk; the server stores
// byte-identical tensors in memory once.
//
// The vocabulary size and the target-tag ids come from --spm (the SentencePiece model copied
// into every subdirectory), since the server checks them against it.
//
//   taskmoe-make-model --kind taskmoe --shape wmt --spm demo/taskmoe/spm.model
//                      --out build/paper/taskmoe [--tasks en-de,de-en]
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "models/extract.h"
#include "models/testing/random_model.h"
#include "models/text/sentencepiece_model.h"
#include "util/command_line.h"

ABSL_FLAG(std::string, kind, "taskmoe",
          "taskmoe: one extracted subnetwork per task; taskmoe-full: the whole TaskMoE model, "
          "routed by task at run time; tokenmoe: token-routed MoE; dense: no MoE; hybrid: "
          "token-routed encoder, task-routed decoder, extracted per task");
ABSL_FLAG(std::string, shape, "wmt",
          "wmt: the paper's Transformer Base (d_model 512, d_ff 2048, 8 heads, 6+6 layers, 32 "
          "experts top-2 in every other layer); small: 256/1024/4 heads/3+3 layers/8 experts; "
          "tiny: 32/64/4 heads/2+2 layers/4 experts (tests). The flags below override a preset");
ABSL_FLAG(int, d_model, 0, "Model width (0: the shape's)");
ABSL_FLAG(int, d_ff, 0, "Feed-forward width of a dense layer and of each expert (0: the shape's)");
ABSL_FLAG(int, heads, 0, "Attention heads (0: the shape's)");
ABSL_FLAG(int, layers, 0, "Encoder and decoder layers each (0: the shape's)");
ABSL_FLAG(int, experts, 0, "Experts per MoE layer (0: the shape's)");
ABSL_FLAG(int, top_k, 0, "Experts each token or task uses (0: the shape's)");
ABSL_FLAG(std::string, spm, "",
          "SentencePiece model to copy into the repository; sets the vocabulary size and the "
          "<2xx> tag ids (e.g. demo/taskmoe/spm.model, 16000 pieces). Required");
ABSL_FLAG(std::string, out, "", "Model repository to write: one subdirectory per task. Required");
ABSL_FLAG(std::string, tasks, "",
          "Comma-separated task ids to write (default: all 16, en<->de,fr,es,it,pt,nl,pl,ru)");
ABSL_FLAG(std::string, dtype, "f32", "Storage dtype: f32 or bf16");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random weights");
ABSL_FLAG(bool, keep_experts, false,
          "taskmoe and hybrid: extract with each task's experts kept apart (taskmoe-extract "
          "--keep_experts)");

namespace {

using namespace taskmoe::models;

constexpr int kUsageError = 2;
constexpr int kRunError = 1;

int Fail(int code, const absl::Status& status) {
  std::cerr << "taskmoe-make-model: " << status.message()
            << (code == kUsageError ? " (see --help)" : "") << "\n";
  return code;
}

absl::StatusOr<ModelShape> ShapeFromFlags() {
  ModelShape shape;  // the paper's WMT shape
  const std::string preset = absl::GetFlag(FLAGS_shape);
  if (preset == "small") {
    shape = {.d_model = 256,
             .num_heads = 4,
             .encoder_layers = 3,
             .decoder_layers = 3,
             .d_ff = 1024,
             .num_experts = 8,
             .top_k = 2};
  } else if (preset == "tiny") {
    shape = {.d_model = 32,
             .num_heads = 4,
             .encoder_layers = 2,
             .decoder_layers = 2,
             .d_ff = 64,
             .num_experts = 4,
             .top_k = 2,
             .max_positions = 512};
  } else if (preset != "wmt") {
    return absl::InvalidArgumentError(
        absl::StrCat("--shape: '", preset, "' is not wmt, small or tiny"));
  }
  auto override_with = [](const char* name, int value, auto& field) -> absl::Status {
    if (value < 0) return absl::InvalidArgumentError(absl::StrCat("--", name, " is negative"));
    if (value > 0) field = value;
    return absl::OkStatus();
  };
  int layers = 0;
  for (absl::Status s : {override_with("d_model", absl::GetFlag(FLAGS_d_model), shape.d_model),
                         override_with("d_ff", absl::GetFlag(FLAGS_d_ff), shape.d_ff),
                         override_with("heads", absl::GetFlag(FLAGS_heads), shape.num_heads),
                         override_with("layers", absl::GetFlag(FLAGS_layers), layers),
                         override_with("experts", absl::GetFlag(FLAGS_experts), shape.num_experts),
                         override_with("top_k", absl::GetFlag(FLAGS_top_k), shape.top_k)}) {
    if (!s.ok()) return s;
  }
  if (layers > 0) shape.encoder_layers = shape.decoder_layers = layers;
  if (shape.d_model % shape.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--d_model ", shape.d_model, " is not a multiple of --heads ", shape.num_heads));
  }
  if (shape.top_k > shape.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("--top_k ", shape.top_k, " exceeds --experts ", shape.num_experts));
  }
  return shape;
}

absl::StatusOr<ModelKind> KindFromFlag(const std::string& kind) {
  if (kind == "taskmoe" || kind == "taskmoe-full") return ModelKind::kTaskMoe;
  if (kind == "tokenmoe") return ModelKind::kTokenMoe;
  if (kind == "dense") return ModelKind::kDense;
  if (kind == "hybrid") return ModelKind::kHybrid;
  return absl::InvalidArgumentError(
      absl::StrCat("--kind: '", kind, "' is not taskmoe, taskmoe-full, tokenmoe, dense or hybrid"));
}

// Sets the vocabulary size and every task's tag id from the SentencePiece model, which the
// server checks config.json against.
absl::Status MatchVocabulary(const std::string& spm_path, ModelConfig& config) {
  absl::StatusOr<std::unique_ptr<SentencePieceModel>> spm = SentencePieceModel::Load(spm_path);
  if (!spm.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--spm: cannot load ", spm_path, ": ", spm.status().message()));
  }
  config.vocab_size = (*spm)->size();
  for (TaskInfo& task : config.tasks) {
    const int id = (*spm)->PieceToId(task.target_tag);
    if (id < 0 || (*spm)->IsUnknown(id)) {
      return absl::InvalidArgumentError(absl::StrCat("--spm: ", spm_path, " has no piece ",
                                                     task.target_tag, " (task ", task.id, ")"));
    }
    task.target_tag_id = id;
  }
  return absl::OkStatus();
}

// Makes `dir` hold the same three files as `source_dir`: hard links, or copies where the
// file system refuses links.
absl::Status LinkModelDirectory(const std::string& source_dir, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  for (const char* file : {"config.json", "model.safetensors", "spm.model"}) {
    const fs::path from = fs::path(source_dir) / file;
    const fs::path to = fs::path(dir) / file;
    fs::remove(to, ec);
    fs::create_hard_link(from, to, ec);
    if (ec) fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot link or copy ", from.string(), " to ",
                                              to.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

int64_t CountParameters(const std::vector<OwnedTensor>& tensors) {
  int64_t n = 0;
  for (const OwnedTensor& t : tensors) n += static_cast<int64_t>(t.values.size());
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<char*> positional = taskmoe::util::ParseCommandLine(
      argc, argv,
      "Writes a model repository of random weights for serving benchmarks.\n"
      "  taskmoe-make-model --kind taskmoe|taskmoe-full|tokenmoe|dense|hybrid --shape wmt "
      "--spm SPM --out REPO [--tasks en-de]",
      "tools/make_model_main.cc");
  if (positional.size() > 1) {
    return Fail(kUsageError, absl::InvalidArgumentError(
                                 absl::StrCat("unexpected argument '", positional[1], "'")));
  }
  const std::string kind_name = absl::GetFlag(FLAGS_kind);
  const std::string spm_path = absl::GetFlag(FLAGS_spm);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (spm_path.empty() || out.empty()) {
    return Fail(kUsageError, absl::InvalidArgumentError("--spm and --out are required"));
  }
  absl::StatusOr<ModelKind> kind = KindFromFlag(kind_name);
  if (!kind.ok()) return Fail(kUsageError, kind.status());
  absl::StatusOr<ModelShape> shape = ShapeFromFlags();
  if (!shape.ok()) return Fail(kUsageError, shape.status());
  StoredDType dtype = StoredDType::kF32;
  if (absl::GetFlag(FLAGS_dtype) == "bf16") {
    dtype = StoredDType::kBF16;
  } else if (absl::GetFlag(FLAGS_dtype) != "f32") {
    return Fail(kUsageError, absl::InvalidArgumentError("--dtype must be f32 or bf16"));
  }

  ModelConfig config = MakeRandomModelConfig(*shape, *kind);
  if (absl::Status s = MatchVocabulary(spm_path, config); !s.ok()) return Fail(kUsageError, s);
  std::vector<std::string> tasks;
  if (absl::GetFlag(FLAGS_tasks).empty()) {
    for (const TaskInfo& t : config.tasks) tasks.push_back(t.id);
  } else {
    tasks = absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty());
    for (const std::string& t : tasks) {
      if (config.FindTask(t) == nullptr) {
        return Fail(kUsageError, absl::InvalidArgumentError(absl::StrCat(
                                     "--tasks: no task ", t, " (the model has en<->xx tasks)")));
      }
    }
  }
  if (tasks.empty()) return Fail(kUsageError, absl::InvalidArgumentError("--tasks: empty"));

  std::printf(
      "taskmoe-make-model: %s d_model=%lld d_ff=%lld heads=%d layers=%d+%d experts=%d "
      "top_k=%d vocab=%lld, %zu tasks -> %s\n",
      kind_name.c_str(), static_cast<long long>(shape->d_model),
      static_cast<long long>(shape->d_ff), shape->num_heads, shape->encoder_layers,
      shape->decoder_layers, config.moe ? shape->num_experts : 0, config.moe ? shape->top_k : 0,
      static_cast<long long>(config.vocab_size), tasks.size(), out.c_str());
  const bool extract = kind_name == "taskmoe" || kind_name == "hybrid";
  if (!extract) {
    // One full model, written once and linked into every task's subdirectory.
    Subnetwork full{.config = config,
                    .tensors = MakeRandomTensors(config, absl::GetFlag(FLAGS_seed))};
    full.parameters = CountParameters(full.tensors);
    const std::string first = out + "/" + tasks.front();
    if (absl::Status s = WriteModelDirectory(first, full, dtype, spm_path); !s.ok()) {
      return Fail(kRunError, s);
    }
    for (size_t i = 1; i < tasks.size(); ++i) {
      if (absl::Status s = LinkModelDirectory(first, out + "/" + tasks[i]); !s.ok()) {
        return Fail(kRunError, s);
      }
    }
    std::printf("  full model: %.1fM parameters, shared by every task\n", full.parameters / 1e6);
    return 0;
  }
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> weights =
      MakeRandomWeights(config, absl::GetFlag(FLAGS_seed));
  if (!weights.ok()) return Fail(kRunError, weights.status());
  for (const std::string& task : tasks) {
    absl::StatusOr<Subnetwork> sub = ExtractSubnetwork(
        config, **weights, task, "", {.keep_experts = absl::GetFlag(FLAGS_keep_experts)});
    if (!sub.ok()) return Fail(kRunError, sub.status());
    if (absl::Status s = WriteModelDirectory(out + "/" + task, *sub, dtype, spm_path); !s.ok()) {
      return Fail(kRunError, s);
    }
    std::printf("  %-6s %.1fM parameters (extracted)\n", task.c_str(), sub->parameters / 1e6);
  }
  return 0;
}
