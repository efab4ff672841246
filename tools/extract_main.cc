// taskmoe-extract: turns a TaskMoE checkpoint into a model repository with one subnetwork per
// task (docs/model-format.md "Extraction"), and reports each one's size against the full
// model.
//
//   taskmoe-extract --checkpoint DIR --out REPO [--tasks en-de,de-en] [--dtype bf16]
//                   [--keep_experts]
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "models/extract.h"
#include "models/format/sha256.h"
#include "util/command_line.h"

ABSL_FLAG(std::string, checkpoint, "",
          "full model directory (config.json, model.safetensors, spm.model)");
ABSL_FLAG(std::string, out, "", "model repository to write: one subdirectory per task");
ABSL_FLAG(std::string, tasks, "", "comma-separated task ids (default: every task)");
ABSL_FLAG(std::string, dtype, "", "storage dtype F32 or BF16 (default: the checkpoint's)");
ABSL_FLAG(bool, keep_experts, false,
          "keep each task's experts apart (gates applied at run time) rather than folded into "
          "one FFN: the server then holds an expert shared by tasks once and runs it once per "
          "step for all of them; the trainer reads only folded subnetworks");

int main(int argc, char** argv) {
  taskmoe::util::ParseCommandLine(
      argc, argv,
      "Extracts per-task subnetworks of a TaskMoE model into a model repository.\n"
      "  taskmoe-extract --checkpoint DIR --out REPO [--tasks en-de,de-en]",
      "tools/extract_main.cc");
  using namespace taskmoe::models;
  const std::string checkpoint = absl::GetFlag(FLAGS_checkpoint);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (checkpoint.empty() || out.empty()) {
    std::cerr << "taskmoe-extract: --checkpoint and --out are required (see --help)\n";
    return 2;
  }
  absl::StatusOr<ModelConfig> config = LoadModelConfig(checkpoint);
  if (!config.ok()) {
    std::cerr << "taskmoe-extract: " << config.status().message() << "\n";
    return 1;
  }
  const std::string weights_path = checkpoint + "/model.safetensors";
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> weights =
      SafetensorsFile::Open(weights_path);
  if (!weights.ok()) {
    std::cerr << "taskmoe-extract: " << weights.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<std::string> digest = FileSha256(weights_path);
  if (!digest.ok()) {
    std::cerr << "taskmoe-extract: " << digest.status().message() << "\n";
    return 1;
  }
  StoredDType dtype = StoredDType::kF32;
  const std::string dtype_flag = absl::GetFlag(FLAGS_dtype);
  if (dtype_flag == "BF16" || dtype_flag == "bf16") {
    dtype = StoredDType::kBF16;
  } else if (dtype_flag.empty()) {
    // Keep the checkpoint's storage: BF16 if any tensor is BF16.
    for (const auto& [name, info] : (*weights)->tensors()) {
      if (info.dtype == StoredDType::kBF16) dtype = StoredDType::kBF16;
    }
  } else if (dtype_flag != "F32" && dtype_flag != "f32") {
    std::cerr << "taskmoe-extract: --dtype must be F32 or BF16, got " << dtype_flag << "\n";
    return 2;
  }
  std::vector<std::string> tasks;
  if (absl::GetFlag(FLAGS_tasks).empty()) {
    for (const TaskInfo& t : config->tasks) tasks.push_back(t.id);
  } else {
    tasks = absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty());
  }
  int64_t full_parameters = 0;
  for (const auto& [name, info] : (*weights)->tensors()) {
    int64_t n = 1;
    for (int64_t d : info.shape) n *= d;
    full_parameters += n;
  }
  const size_t bytes_per_value = dtype == StoredDType::kBF16 ? 2 : 4;
  std::printf("%-8s %14s %12s %10s\n", "task", "parameters", "MB", "of full");
  std::printf("%-8s %14lld %12.1f %9.1f%%\n", "(full)", static_cast<long long>(full_parameters),
              (*weights)->file_size() / 1e6, 100.0);
  for (const std::string& task : tasks) {
    absl::StatusOr<Subnetwork> sub = ExtractSubnetwork(
        *config, **weights, task, *digest, {.keep_experts = absl::GetFlag(FLAGS_keep_experts)});
    if (!sub.ok()) {
      std::cerr << "taskmoe-extract: " << task << ": " << sub.status().message() << "\n";
      return 1;
    }
    if (absl::Status s =
            WriteModelDirectory(out + "/" + task, *sub, dtype, checkpoint + "/spm.model");
        !s.ok()) {
      std::cerr << "taskmoe-extract: " << task << ": " << s.message() << "\n";
      return 1;
    }
    std::printf("%-8s %14lld %12.1f %9.1f%%\n", task.c_str(),
                static_cast<long long>(sub->parameters), sub->parameters * bytes_per_value / 1e6,
                100.0 * static_cast<double>(sub->parameters) / full_parameters);
  }
  return 0;
}
