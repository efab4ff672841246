// ModelConfig: the architecture, MoE section, tasks and provenance of a model directory's
// config.json (docs/model-format.md), parsed and validated.
#ifndef TASKMOE_MODELS_FORMAT_CONFIG_H_
#define TASKMOE_MODELS_FORMAT_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/activation.h"

namespace taskmoe::models {

enum class Routing : uint8_t { kNone, kToken, kTask };
enum class TaskKey : uint8_t { kNone, kTarget, kSource, kPair };
enum class Stack : uint8_t { kEncoder, kDecoder };

const char* RoutingName(Routing routing);
const char* TaskKeyName(TaskKey key);
const char* StackName(Stack stack);  // "encoder" / "decoder", as in tensor names
// "decoder.layers.1": the prefix of a layer's tensor names and its key in `experts_kept`.
std::string LayerName(Stack stack, int layer);

struct TaskInfo {
  std::string id;          // "en-de"
  std::string source;      // "en"
  std::string target;      // "de"
  int index = 0;           // the task's `pair` key
  std::string target_tag;  // "<2de>"
  int32_t target_tag_id = 0;

  friend bool operator==(const TaskInfo&, const TaskInfo&) = default;
};

// The MoE settings of one stack.
struct StackMoe {
  Routing routing = Routing::kNone;
  TaskKey task_key = TaskKey::kNone;
  std::vector<int> layers;  // sorted, unique, 0-based

  friend bool operator==(const StackMoe&, const StackMoe&) = default;
};

struct MoeConfig {
  int num_experts = 0;
  int top_k = 0;
  StackMoe encoder, decoder;

  friend bool operator==(const MoeConfig&, const MoeConfig&) = default;
};

// One layer folded or kept by extraction.
struct ExtractedLayer {
  std::string layer;         // "decoder.layers.1"
  bool all_experts = false;  // token-routed: kept whole
  std::vector<int> experts;  // the task's experts, largest gate first
  std::vector<float> gates;
  // false: the experts are folded into one dense FFN ({layer}.ffn.fc1/fc2). true: they are
  // kept apart ({layer}.ffn.experts.*, in gate order) and their gates applied at run time, so
  // subnetworks sharing an expert hold the same bytes ("form": "unfolded" in the file).
  bool unfolded = false;

  friend bool operator==(const ExtractedLayer&, const ExtractedLayer&) = default;
};

struct ExtractedInfo {
  std::string task;
  std::string parent_digest;  // "sha256:<hex>"; empty when unknown (null in the file)
  int64_t parent_parameters = 0;
  std::vector<ExtractedLayer> layers;  // in the order of the file's `experts_kept`

  const ExtractedLayer* FindLayer(std::string_view layer) const;  // null when absent

  friend bool operator==(const ExtractedInfo&, const ExtractedInfo&) = default;
};

struct SpecialTokens {
  int32_t pad = 0, unk = 1, bos = 2, eos = 3;

  friend bool operator==(const SpecialTokens&, const SpecialTokens&) = default;
};

struct ModelConfig {
  int format_version = 1;
  int64_t d_model = 0;
  int num_heads = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int64_t d_ff = 0;
  // Per-layer widths of dense FFN layers; empty means d_ff everywhere.
  std::vector<int64_t> encoder_ffn_dims, decoder_ffn_dims;
  kernels::Activation activation = kernels::Activation::kRelu;
  float layer_norm_eps = 1e-6f;
  int64_t vocab_size = 0;
  int64_t max_positions = 0;
  bool scale_embeddings = true;
  bool tie_embeddings = true;
  SpecialTokens special_tokens;
  std::vector<std::string> languages;
  std::vector<TaskInfo> tasks;
  std::optional<MoeConfig> moe;  // absent for a dense model
  std::optional<ExtractedInfo> extracted;
  // `files`: the SHA-256 ("sha256:<64 hex digits>") of the directory's other files, by name
  // (kModelFileNames' weights and tokenizer), which binds them to this config; empty when the
  // file records none (null or absent: written before digests were recorded).
  std::map<std::string, std::string> file_digests;
  // The free-form `training` object, kept as JSON text so that extraction can copy it.
  std::string training_json = "null";

  // Derived helpers.
  int num_layers(Stack stack) const {
    return stack == Stack::kEncoder ? encoder_layers : decoder_layers;
  }
  const StackMoe* stack_moe(Stack stack) const;  // null when the model has no MoE
  bool is_moe_layer(Stack stack, int layer) const;
  // Width of a dense FFN layer (d_ff unless *_ffn_dims says otherwise).
  int64_t ffn_dim(Stack stack, int layer) const;
  // Rows of a task-routed stack's task_logits table: languages or tasks, per its key.
  int num_task_keys(Stack stack) const;
  // The task-key row of `task` for a stack routed by task; error for other stacks.
  absl::StatusOr<int> TaskKeyIndex(Stack stack, const TaskInfo& task) const;
  const TaskInfo* FindTask(std::string_view id) const;

  // Field-for-field equality (training_json compared as text).
  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// The largest `max_positions` a config may declare. The loader builds the [max_positions,
// d_model] table of position encodings whatever the weights hold, so without a bound a few
// bytes of config could make it allocate gigabytes; sentence-level translation needs far fewer.
inline constexpr int64_t kMaxPositionsLimit = 1 << 16;

// Parses and validates config.json text. Every failure names the field and the problem.
// Required: every field of the spec's example except `encoder_ffn_dims`, `decoder_ffn_dims`,
// `moe`, `extracted` and `training`, for which a missing field means null (and, inside `moe`,
// the `*_task_key` fields). Unknown fields are ignored, for forward compatibility.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text);
// The semantic checks ParseModelConfig applies after reading the fields (sizes, languages,
// task indices, MoE layers and routing, the extracted section), for configs built in code,
// e.g. by extraction before it writes one.
absl::Status ValidateModelConfig(const ModelConfig& config);
// Reads and parses `<model_dir>/config.json`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// Serialises a config back to JSON (used by extraction), in the field order of the spec.
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_FORMAT_CONFIG_H_
