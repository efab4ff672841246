// Models with random weights at any shape: the paper's WMT shape for throughput benchmarks
// (weights do not change speed; DESIGN.md §6) and tiny ones for tests.
#ifndef TASKMOE_MODELS_TESTING_RANDOM_MODEL_H_
#define TASKMOE_MODELS_TESTING_RANDOM_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/extract.h"
#include "models/format/config.h"
#include "models/format/safetensors.h"

namespace taskmoe::models {

enum class ModelKind : uint8_t {
  kDense,     // no MoE
  kTaskMoe,   // task-routed MoE in both stacks (target-language key)
  kTokenMoe,  // token-routed MoE in both stacks
  kHybrid,    // token-routed encoder, target-language-routed decoder (the paper's best)
};

struct ModelShape {
  int64_t d_model = 512;
  int num_heads = 8;
  int encoder_layers = 6;
  int decoder_layers = 6;
  int64_t d_ff = 2048;
  int64_t vocab_size = 64000;
  int num_experts = 32;
  int top_k = 2;
  int64_t max_positions = 1024;
  kernels::Activation activation = kernels::Activation::kRelu;
  // Languages "en" plus `num_languages - 1` others; tasks en->xx and xx->en for each.
  int num_languages = 9;
};

// The smallest shape that still has every part (MoE layers, several heads, several tasks):
// d_model 32, 4 heads, 2 + 2 layers, d_ff 48, a 50-piece vocabulary, 4 experts (top 2), 64
// positions, 3 languages. Tests build it in milliseconds.
ModelShape TinyModelShape();

// A config for `kind` at `shape`: MoE in every other layer (1, 3, 5, ...), special tokens
// 0..3, target tags at ids 4.. (one per language).
ModelConfig MakeRandomModelConfig(const ModelShape& shape, ModelKind kind);

// Every tensor the config calls for, filled with N(0, sigma)-like values (sigma chosen per
// tensor so activations stay of unit size; norms near 1), deterministic in `seed`.
std::vector<OwnedTensor> MakeRandomTensors(const ModelConfig& config, uint64_t seed);

// The tensors serialised into an in-memory safetensors file, stored as `dtype` (bf16: rounded,
// as a model trained and shipped in bf16 is).
absl::StatusOr<std::shared_ptr<const SafetensorsFile>> MakeRandomWeights(
    const ModelConfig& config, uint64_t seed, StoredDType dtype = StoredDType::kF32);

// Any tensors (an extracted subnetwork's, say) as an in-memory safetensors file.
absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SerializeTensors(
    const std::vector<OwnedTensor>& tensors, StoredDType dtype = StoredDType::kF32);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TESTING_RANDOM_MODEL_H_
