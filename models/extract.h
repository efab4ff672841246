// Extraction of a task's subnetwork from a TaskMoE model (DESIGN.md §1, docs/model-format.md
// "Extraction"): in every task-routed MoE layer, the task's top-k experts are folded into one
// dense FFN of width top_k * d_ff with the gates multiplied into fc2 (or, with keep_experts,
// kept apart unchanged with their gates recorded, so that subnetworks sharing an expert share
// its bytes), and the other experts and the router table are dropped. Token-routed stacks are
// kept whole. Everything else is copied unchanged, so the result is a model directory our
// engine loads like any other.
#ifndef TASKMOE_MODELS_EXTRACT_H_
#define TASKMOE_MODELS_EXTRACT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/format/config.h"
#include "models/format/safetensors.h"

namespace taskmoe::models {

struct OwnedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct Subnetwork {
  ModelConfig config;
  std::vector<OwnedTensor> tensors;
  int64_t parameters = 0;
};

struct ExtractOptions {
  // Keep each task-routed layer's chosen experts apart (the "unfolded" form) rather than
  // folding them into one dense FFN. A server loading many such subnetworks of one parent
  // through a weight store holds each expert once, and a step over several tasks runs each
  // distinct expert once. The trainer (PyTorch) reads only the folded form.
  bool keep_experts = false;
};

// Extracts `task_id`'s subnetwork. `parent_digest` is recorded as provenance.
absl::StatusOr<Subnetwork> ExtractSubnetwork(const ModelConfig& config,
                                             const SafetensorsFile& weights,
                                             std::string_view task_id,
                                             const std::string& parent_digest,
                                             const ExtractOptions& options = {});

// Writes a model directory: config.json, model.safetensors (in `dtype`) and a copy of
// `spm_path` as spm.model. Creates `dir` if needed; files are replaced atomically.
absl::Status WriteModelDirectory(const std::string& dir, const Subnetwork& subnetwork,
                                 StoredDType dtype, const std::string& spm_path);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_EXTRACT_H_
