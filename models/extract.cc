// Folding (or keeping apart) a task's experts, and writing model directories.
#include "models/extract.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "models/ffn.h"
#include "models/format/model_files.h"
#include "models/format/safetensors.h"
#include "models/format/sha256.h"

namespace taskmoe::models {
namespace {

absl::StatusOr<OwnedTensor> Copy(const SafetensorsFile& weights, const std::string& name) {
  absl::StatusOr<kernels::Tensor> t = weights.GetFloat(name);
  if (!t.ok()) return t.status();
  OwnedTensor out{name, std::vector<int64_t>(t->shape().dims().begin(), t->shape().dims().end()),
                  std::vector<float>(t->data<float>(), t->data<float>() + t->numel())};
  return out;
}

// Folds experts `choice` of the stacked expert tensors under `prefix` (".ffn") into a dense
// fc1/fc2 pair, per docs/model-format.md.
absl::StatusOr<std::vector<OwnedTensor>> FoldExperts(const SafetensorsFile& weights,
                                                     const std::string& prefix,
                                                     const ExpertChoice& choice, int64_t d,
                                                     int64_t ff) {
  absl::StatusOr<kernels::Tensor> w1 = weights.GetFloat(prefix + ".experts.fc1.weight");
  absl::StatusOr<kernels::Tensor> b1 = weights.GetFloat(prefix + ".experts.fc1.bias");
  absl::StatusOr<kernels::Tensor> w2 = weights.GetFloat(prefix + ".experts.fc2.weight");
  absl::StatusOr<kernels::Tensor> b2 = weights.GetFloat(prefix + ".experts.fc2.bias");
  for (const auto* t : {&w1, &b1, &w2, &b2}) {
    if (!t->ok()) return t->status();
  }
  const int64_t k = static_cast<int64_t>(choice.experts.size()), width = k * ff;
  OwnedTensor fc1_w{prefix + ".fc1.weight", {width, d}, std::vector<float>(width * d)};
  OwnedTensor fc1_b{prefix + ".fc1.bias", {width}, std::vector<float>(width)};
  OwnedTensor fc2_w{prefix + ".fc2.weight", {d, width}, std::vector<float>(d * width)};
  OwnedTensor fc2_b{prefix + ".fc2.bias", {d}, std::vector<float>(d, 0.0f)};
  for (int64_t i = 0; i < k; ++i) {
    const int64_t e = choice.experts[i];
    const float g = choice.gates[i];
    // fc1: the expert's hidden units stacked below the previous ones.
    std::copy_n(w1->data<float>() + e * ff * d, ff * d, fc1_w.values.begin() + i * ff * d);
    std::copy_n(b1->data<float>() + e * ff, ff, fc1_b.values.begin() + i * ff);
    // fc2: the expert's input columns placed side by side, scaled by its gate.
    for (int64_t row = 0; row < d; ++row) {
      const float* src = w2->data<float>() + (e * d + row) * ff;
      float* dst = fc2_w.values.data() + row * width + i * ff;
      for (int64_t c = 0; c < ff; ++c) dst[c] = g * src[c];
      fc2_b.values[row] += g * b2->data<float>()[e * d + row];
    }
  }
  return std::vector<OwnedTensor>{std::move(fc1_w), std::move(fc1_b), std::move(fc2_w),
                                  std::move(fc2_b)};
}

// Experts `choice` of the stacked expert tensors under `prefix` (".ffn"), unchanged and in the
// choice's order: the same stacked names with k experts instead of all.
absl::StatusOr<std::vector<OwnedTensor>> KeepExperts(const SafetensorsFile& weights,
                                                     const std::string& prefix,
                                                     const ExpertChoice& choice) {
  std::vector<OwnedTensor> kept;
  for (const char* part :
       {".experts.fc1.weight", ".experts.fc1.bias", ".experts.fc2.weight", ".experts.fc2.bias"}) {
    const std::string name = prefix + part;
    absl::StatusOr<kernels::Tensor> stacked = weights.GetFloat(name);
    if (!stacked.ok()) return stacked.status();
    const int64_t per_expert = stacked->numel() / stacked->dim(0);
    OwnedTensor t{name,
                  {static_cast<int64_t>(choice.experts.size())},
                  std::vector<float>(choice.experts.size() * per_expert)};
    for (int64_t axis = 1; axis < stacked->rank(); ++axis) t.shape.push_back(stacked->dim(axis));
    for (size_t i = 0; i < choice.experts.size(); ++i) {
      std::copy_n(stacked->data<float>() + choice.experts[i] * per_expert, per_expert,
                  t.values.begin() + i * per_expert);
    }
    kept.push_back(std::move(t));
  }
  return kept;
}

}  // namespace

absl::StatusOr<Subnetwork> ExtractSubnetwork(const ModelConfig& config,
                                             const SafetensorsFile& weights,
                                             std::string_view task_id,
                                             const std::string& parent_digest,
                                             const ExtractOptions& options) {
  const TaskInfo* task = config.FindTask(task_id);
  if (task == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("task '", std::string(task_id), "' is not in the model"));
  }
  if (config.extracted.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model is already a subnetwork (of task ", config.extracted->task, ")"));
  }
  Subnetwork sub;
  sub.config = config;
  sub.config.tasks = {*task};
  sub.config.file_digests.clear();  // the parent's files; WriteModelDirectory records its own
  ExtractedInfo info;
  info.task = task->id;
  info.parent_digest = parent_digest;
  for (const auto& [name, entry] : weights.tensors()) {
    int64_t n = 1;
    for (int64_t dim : entry.shape) n *= dim;
    info.parent_parameters += n;
  }

  std::set<std::string> folded_prefixes;  // "{stack}.layers.{i}.ffn" of folded layers
  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    const StackMoe* moe = config.stack_moe(stack);
    if (moe == nullptr || moe->layers.empty()) continue;
    std::vector<int64_t>& dims =
        stack == Stack::kEncoder ? sub.config.encoder_ffn_dims : sub.config.decoder_ffn_dims;
    if (dims.empty()) dims.assign(config.num_layers(stack), config.d_ff);
    for (int layer : moe->layers) {
      const std::string layer_name = absl::StrCat(StackName(stack), ".layers.", layer);
      if (moe->routing == Routing::kToken) {
        info.layers.push_back({layer_name, true, {}, {}});
        continue;
      }
      absl::StatusOr<int> key = config.TaskKeyIndex(stack, *task);
      if (!key.ok()) return key.status();
      absl::StatusOr<kernels::Tensor> table =
          weights.GetFloat(layer_name + ".ffn.router.task_logits");
      if (!table.ok()) return table.status();
      const int experts = config.moe->num_experts;
      if (table->rank() != 2 || table->dim(1) != experts || *key >= table->dim(0)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", layer_name,
                                                       ".ffn.router.task_logits' has shape ",
                                                       table->shape().ToString()));
      }
      const ExpertChoice choice =
          ChooseExperts(table->data<float>() + *key * experts, experts, config.moe->top_k);
      absl::StatusOr<std::vector<OwnedTensor>> replaced =
          options.keep_experts
              ? KeepExperts(weights, layer_name + ".ffn", choice)
              : FoldExperts(weights, layer_name + ".ffn", choice, config.d_model, config.d_ff);
      if (!replaced.ok()) return replaced.status();
      for (OwnedTensor& t : *replaced) sub.tensors.push_back(std::move(t));
      folded_prefixes.insert(layer_name + ".ffn");
      dims[layer] = config.moe->top_k * config.d_ff;
      info.layers.push_back(
          {layer_name, false, choice.experts, choice.gates, options.keep_experts});
    }
  }
  for (const auto& [name, entry] : weights.tensors()) {
    const size_t ffn = name.find(".ffn.");
    if (ffn != std::string::npos && folded_prefixes.count(name.substr(0, ffn + 4))) continue;
    absl::StatusOr<OwnedTensor> copy = Copy(weights, name);
    if (!copy.ok()) return copy.status();
    sub.tensors.push_back(*std::move(copy));
  }
  // Folded stacks become dense; the MoE section keeps only token-routed stacks.
  if (sub.config.moe.has_value()) {
    for (StackMoe* stack_moe : {&sub.config.moe->encoder, &sub.config.moe->decoder}) {
      if (stack_moe->routing == Routing::kTask) *stack_moe = StackMoe{};
    }
    if (sub.config.moe->encoder.layers.empty() && sub.config.moe->decoder.layers.empty()) {
      sub.config.moe.reset();
    }
  }
  sub.config.extracted = std::move(info);
  for (const OwnedTensor& t : sub.tensors) sub.parameters += static_cast<int64_t>(t.values.size());
  std::sort(sub.tensors.begin(), sub.tensors.end(),
            [](const OwnedTensor& a, const OwnedTensor& b) { return a.name < b.name; });
  return sub;
}

absl::Status WriteModelDirectory(const std::string& dir, const Subnetwork& subnetwork,
                                 StoredDType dtype, const std::string& spm_path) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));
  std::vector<TensorToWrite> tensors;
  for (const OwnedTensor& t : subnetwork.tensors)
    tensors.push_back({t.name, t.shape, t.values.data()});
  const std::string weights = absl::StrCat(dir, "/", kWeightsFileName);
  const std::string tokenizer = absl::StrCat(dir, "/", kTokenizerFileName);
  if (absl::Status s = WriteSafetensors(weights, tensors, dtype); !s.ok()) return s;
  std::filesystem::copy_file(spm_path, tokenizer, std::filesystem::copy_options::overwrite_existing,
                             error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot copy ", spm_path, ": ", error.message()));
  }
  // config.json last, recording the other two files' digests (model_files.h), and renamed
  // into place so that a reader never sees half of it.
  ModelConfig config = subnetwork.config;
  for (const auto& [name, path] :
       {std::pair{kWeightsFileName, weights}, {kTokenizerFileName, tokenizer}}) {
    absl::StatusOr<std::string> digest = FileSha256(path);
    if (!digest.ok()) return digest.status();
    config.file_digests[name] = *std::move(digest);
  }
  const std::string config_path = absl::StrCat(dir, "/", kConfigFileName);
  const std::string config_tmp = config_path + ".tmp";
  {
    std::ofstream out(config_tmp, std::ios::binary | std::ios::trunc);
    out << ModelConfigToJson(config) << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", config_tmp));
  }
  std::filesystem::rename(config_tmp, config_path, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot write ", config_path, ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace taskmoe::models
