// Random models for benchmarks and tests.
#include "models/testing/random_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace taskmoe::models {

ModelShape TinyModelShape() {
  return {.d_model = 32,
          .num_heads = 4,
          .encoder_layers = 2,
          .decoder_layers = 2,
          .d_ff = 48,
          .vocab_size = 50,
          .num_experts = 4,
          .top_k = 2,
          .max_positions = 64,
          .num_languages = 3};
}
namespace {

// xorshift64*: fast enough to fill half a billion weights in a few seconds.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  // Uniform in [-1, 1): variance 1/3.
  float Uniform() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    const uint64_t bits = (state_ * 2685821657736338717ull) >> 40;  // 24 bits
    return static_cast<float>(bits) / static_cast<float>(1 << 23) - 1.0f;
  }

 private:
  uint64_t state_;
};

void Add(std::vector<OwnedTensor>& out, Random& rng, const std::string& name,
         std::vector<int64_t> shape, float stddev, float mean = 0.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> values(n);
  const float scale = stddev * std::sqrt(3.0f);  // uniform [-1,1) has stddev 1/sqrt(3)
  for (float& v : values) v = mean + scale * rng.Uniform();
  out.push_back({name, std::move(shape), std::move(values)});
}

const char* kLanguages[] = {"en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "cs",
                            "sv", "da", "fi", "hu", "ro", "tr", "el", "bg", "uk", "ja"};

}  // namespace

ModelConfig MakeRandomModelConfig(const ModelShape& shape, ModelKind kind) {
  ModelConfig config;
  config.d_model = shape.d_model;
  config.num_heads = shape.num_heads;
  config.encoder_layers = shape.encoder_layers;
  config.decoder_layers = shape.decoder_layers;
  config.d_ff = shape.d_ff;
  config.activation = shape.activation;
  config.vocab_size = shape.vocab_size;
  config.max_positions = shape.max_positions;
  const int languages = std::min<int>(shape.num_languages, std::size(kLanguages));
  for (int l = 0; l < languages; ++l) config.languages.push_back(kLanguages[l]);
  int index = 0;
  for (int l = 1; l < languages; ++l) {
    for (auto [src, tgt] : {std::pair{0, l}, {l, 0}}) {
      TaskInfo task;
      task.source = kLanguages[src];
      task.target = kLanguages[tgt];
      task.id = task.source + "-" + task.target;
      task.index = index++;
      task.target_tag = absl::StrCat("<2", task.target, ">");
      task.target_tag_id = 4 + tgt;
      config.tasks.push_back(task);
    }
  }
  if (kind != ModelKind::kDense) {
    MoeConfig moe;
    moe.num_experts = shape.num_experts;
    moe.top_k = shape.top_k;
    for (int i = 1; i < shape.encoder_layers; i += 2) moe.encoder.layers.push_back(i);
    for (int i = 1; i < shape.decoder_layers; i += 2) moe.decoder.layers.push_back(i);
    const bool token_encoder = kind == ModelKind::kTokenMoe || kind == ModelKind::kHybrid;
    const bool token_decoder = kind == ModelKind::kTokenMoe;
    moe.encoder.routing = token_encoder ? Routing::kToken : Routing::kTask;
    moe.encoder.task_key = token_encoder ? TaskKey::kNone : TaskKey::kTarget;
    moe.decoder.routing = token_decoder ? Routing::kToken : Routing::kTask;
    moe.decoder.task_key = token_decoder ? TaskKey::kNone : TaskKey::kTarget;
    config.moe = moe;
  }
  return config;
}

std::vector<OwnedTensor> MakeRandomTensors(const ModelConfig& config, uint64_t seed) {
  Random rng(seed);
  std::vector<OwnedTensor> out;
  const int64_t d = config.d_model, vocab = config.vocab_size;
  const float linear_in_d = 1.0f / std::sqrt(static_cast<float>(d));
  // Embeddings are scaled by sqrt(d) in the model: entries of 1/sqrt(d) give unit size.
  if (config.tie_embeddings) {
    Add(out, rng, "embedding.weight", {vocab, d}, linear_in_d);
  } else {
    Add(out, rng, "encoder.embedding.weight", {vocab, d}, linear_in_d);
    Add(out, rng, "decoder.embedding.weight", {vocab, d}, linear_in_d);
    Add(out, rng, "decoder.output_projection.weight", {vocab, d}, linear_in_d);
  }
  auto norm = [&](const std::string& prefix) {
    Add(out, rng, prefix + ".weight", {d}, 0.1f, 1.0f);
    Add(out, rng, prefix + ".bias", {d}, 0.1f);
  };
  auto linear = [&](const std::string& prefix, int64_t rows, int64_t cols, bool bias) {
    Add(out, rng, prefix + ".weight", {rows, cols}, 1.0f / std::sqrt(static_cast<float>(cols)));
    if (bias) Add(out, rng, prefix + ".bias", {rows}, 0.1f);
  };
  auto attention = [&](const std::string& prefix) {
    for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      linear(prefix + "." + p, d, d, true);
    }
  };
  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    for (int i = 0; i < config.num_layers(stack); ++i) {
      const std::string prefix = absl::StrCat(StackName(stack), ".layers.", i);
      norm(prefix + ".self_attn_norm");
      attention(prefix + ".self_attn");
      if (stack == Stack::kDecoder) {
        norm(prefix + ".cross_attn_norm");
        attention(prefix + ".cross_attn");
      }
      norm(prefix + ".ffn_norm");
      if (!config.is_moe_layer(stack, i)) {
        const int64_t ff = config.ffn_dim(stack, i);
        linear(prefix + ".ffn.fc1", ff, d, true);
        linear(prefix + ".ffn.fc2", d, ff, true);
        continue;
      }
      const int64_t e = config.moe->num_experts, ff = config.d_ff;
      Add(out, rng, prefix + ".ffn.experts.fc1.weight", {e, ff, d}, linear_in_d);
      Add(out, rng, prefix + ".ffn.experts.fc1.bias", {e, ff}, 0.1f);
      Add(out, rng, prefix + ".ffn.experts.fc2.weight", {e, d, ff},
          1.0f / std::sqrt(static_cast<float>(ff)));
      Add(out, rng, prefix + ".ffn.experts.fc2.bias", {e, d}, 0.1f);
      if (config.stack_moe(stack)->routing == Routing::kToken) {
        Add(out, rng, prefix + ".ffn.router.weight", {e, d}, linear_in_d);
      } else {
        Add(out, rng, prefix + ".ffn.router.task_logits", {config.num_task_keys(stack), e}, 2.0f);
      }
    }
    norm(absl::StrCat(StackName(stack), ".final_norm"));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> MakeRandomWeights(const ModelConfig& config,
                                                                         uint64_t seed,
                                                                         StoredDType dtype) {
  return SerializeTensors(MakeRandomTensors(config, seed), dtype);
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SerializeTensors(
    const std::vector<OwnedTensor>& tensors, StoredDType dtype) {
  std::vector<TensorToWrite> to_write;
  for (const OwnedTensor& t : tensors) to_write.push_back({t.name, t.shape, t.values.data()});
  absl::StatusOr<std::string> bytes = SerializeSafetensors(to_write, dtype);
  if (!bytes.ok()) return bytes.status();
  return SafetensorsFile::FromBytes(*std::move(bytes));
}

}  // namespace taskmoe::models
