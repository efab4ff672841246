// Loading the encoder-decoder Transformer: every tensor of the weight file checked against the
// shape the config implies, packed for the chosen precision (shared through the WeightStore),
// the task routes computed, and the model's size and kernel paths counted. Running it is
// transformer.cc.
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/embedding.h"
#include "kernels/quantize.h"
#include "models/format/model_files.h"
#include "models/format/safetensors.h"
#include "models/transformer.h"
#include "util/status_macros.h"

namespace taskmoe::models {

using kernels::Shape;
using kernels::Tensor;

namespace {

// Reads tensors by name from a model file, checking each against the shape the config
// implies, and remembers which it used so that leftovers can be reported. A tensor is read
// (converted to f32) only when the weight store does not hold its bytes already: the
// subnetworks of one model share most of their weights, so loading the second and later
// ones checks and hashes those bytes but converts and packs only their own.
class WeightLoader {
 public:
  WeightLoader(const SafetensorsFile& file, const LoadOptions& options)
      : file_(file), options_(options) {}

  // `name` is in the file with `shape`: counted as used, not read.
  absl::Status Check(const std::string& name, const Shape& shape) {
    auto it = file_.tensors().find(name);
    if (it == file_.tensors().end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing tensor '", name, "' (expected shape ", shape.ToString(), ")"));
    }
    absl::StatusOr<Shape> stored = Shape::Make(it->second.shape);
    if (!stored.ok()) return file_.GetFloat(name).status();  // the file's own message
    if (*stored != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ",
                                                     stored->ToString(), " but the config implies ",
                                                     shape.ToString()));
    }
    if (used_.insert(name).second) parameters_ += shape.numel();
    return absl::OkStatus();
  }

  // A tensor kept as f32 (norms, embeddings, router tables), shared through the store. It is
  // always a copy: a view would pin the whole weight file in memory after loading. With
  // `bf16_if_exact` (embedding tables, which only the lookup reads) it is kept in bf16 when
  // every value is a bf16 value (a bf16-stored model's): the same values in half the memory.
  absl::StatusOr<Tensor> Kept(const std::string& name, const Shape& shape,
                              bool bf16_if_exact = false) {
    TASKMOE_RETURN_IF_ERROR(Check(name, shape));
    auto copy = [&]() -> absl::StatusOr<Tensor> {
      TASKMOE_ASSIGN_OR_RETURN(Tensor t, file_.GetFloat(name));
      if (bf16_if_exact && kernels::AllBFloat16Values(t.data<float>(), t.numel())) {
        return t.ConvertTo(kernels::DType::kBF16);
      }
      return t.Clone();
    };
    if (options_.weight_store == nullptr) return copy();
    TASKMOE_ASSIGN_OR_RETURN(std::string_view bytes, file_.RawBytes(name));
    TASKMOE_ASSIGN_OR_RETURN(WeightStore::Use<Tensor> shared,
                             options_.weight_store->GetTensor(bytes, copy));
    KeepHandle(shared.handle);  // keeps the entry, and with it the stored tensor, alive
    return *shared.value;
  }

  // A linear layer `prefix`.weight [out, in] (+ `prefix`.bias [out]), packed; an output
  // projection (`greedy_head`) with the greedy head's candidate filter where its path has one
  // (PackedLinear::AddGreedyCandidateFilter).
  absl::StatusOr<LinearPtr> Linear(const std::string& prefix, int64_t out, int64_t in, bool bias,
                                   kernels::Precision precision, bool greedy_head = false) {
    const std::string w_name = prefix + ".weight", b_name = prefix + ".bias";
    TASKMOE_RETURN_IF_ERROR(Check(w_name, Shape{out, in}));
    std::string_view bias_bytes;
    if (bias) {
      TASKMOE_RETURN_IF_ERROR(Check(b_name, Shape{out}));
      bias_bytes = *file_.RawBytes(b_name);
    }
    auto make = [&]() -> absl::StatusOr<kernels::PackedLinear> {
      TASKMOE_ASSIGN_OR_RETURN(Tensor w, file_.GetFloat(w_name));
      Tensor b;
      if (bias) {
        TASKMOE_ASSIGN_OR_RETURN(b, file_.GetFloat(b_name));
      }
      return greedy_head ? kernels::PackedLinear::CreateGreedyHead(w, b, precision)
                         : kernels::PackedLinear::Create(w, b, precision);
    };
    return Pack(make, *file_.RawBytes(w_name), bias_bytes, precision);
  }

  // Linear layers `prefixes` of [out, in] with biases, fused into one [n * out, in] layer whose
  // output is theirs side by side (in that order).
  absl::StatusOr<LinearPtr> FusedLinear(const std::vector<std::string>& prefixes, int64_t out,
                                        int64_t in, kernels::Precision precision) {
    const int64_t n = static_cast<int64_t>(prefixes.size());
    std::string w_bytes, b_bytes;  // the store's content key: all parts, in order
    for (const std::string& prefix : prefixes) {
      TASKMOE_RETURN_IF_ERROR(Check(prefix + ".weight", Shape{out, in}));
      TASKMOE_RETURN_IF_ERROR(Check(prefix + ".bias", Shape{out}));
      w_bytes += *file_.RawBytes(prefix + ".weight");
      b_bytes += *file_.RawBytes(prefix + ".bias");
    }
    auto make = [&]() -> absl::StatusOr<kernels::PackedLinear> {
      Tensor w = Tensor::Allocate(kernels::DType::kF32, Shape{n * out, in});
      Tensor b = Tensor::Allocate(kernels::DType::kF32, Shape{n * out});
      for (int64_t i = 0; i < n; ++i) {
        TASKMOE_ASSIGN_OR_RETURN(Tensor part_w, file_.GetFloat(prefixes[i] + ".weight"));
        TASKMOE_ASSIGN_OR_RETURN(Tensor part_b, file_.GetFloat(prefixes[i] + ".bias"));
        std::copy_n(part_w.data<float>(), out * in, w.data<float>() + i * out * in);
        std::copy_n(part_b.data<float>(), out, b.data<float>() + i * out);
      }
      return kernels::PackedLinear::Create(w, b, precision);
    };
    return Pack(make, w_bytes, b_bytes, precision);
  }

  // Expert `e` of `count` stacked in `prefix`.weight [count, rows, cols] and `prefix`.bias
  // [count, rows] (both checked by the caller). `stacked_w` and `stacked_b` hold those as f32
  // once some expert of the stack needed them, so that a stack is converted at most once.
  absl::StatusOr<LinearPtr> ExpertLinear(const std::string& prefix, int e, int64_t count,
                                         int64_t rows, int64_t cols,
                                         std::optional<Tensor>& stacked_w,
                                         std::optional<Tensor>& stacked_b,
                                         kernels::Precision precision) {
    const std::string w_name = prefix + ".weight", b_name = prefix + ".bias";
    auto make = [&]() -> absl::StatusOr<kernels::PackedLinear> {
      if (!stacked_w.has_value()) {
        TASKMOE_ASSIGN_OR_RETURN(stacked_w, file_.GetFloat(w_name));
      }
      if (!stacked_b.has_value()) {
        TASKMOE_ASSIGN_OR_RETURN(stacked_b, file_.GetFloat(b_name));
      }
      absl::StatusOr<Tensor> w = stacked_w->Rows(e, 1);
      absl::StatusOr<Tensor> b = stacked_b->Rows(e, 1);
      if (!w.ok() || !b.ok()) return absl::InternalError("expert slice");
      TASKMOE_ASSIGN_OR_RETURN(Tensor w2, w->Reshape(Shape{rows, cols}));
      TASKMOE_ASSIGN_OR_RETURN(Tensor b2, b->Reshape(Shape{rows}));
      return kernels::PackedLinear::Create(w2, b2, precision);
    };
    const std::string_view all_w = *file_.RawBytes(w_name);
    const std::string_view all_b = *file_.RawBytes(b_name);
    const size_t w_size = all_w.size() / count, b_size = all_b.size() / count;
    return Pack(make, all_w.substr(e * w_size, w_size), all_b.substr(e * b_size, b_size),
                precision);
  }

  absl::Status CheckNothingLeft() const {
    for (const auto& [name, info] : file_.tensors()) {
      if (!used_.count(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected tensor '", name, "': the config has no place for it"));
      }
    }
    return absl::OkStatus();
  }

  int64_t parameters() const { return parameters_; }
  std::vector<std::shared_ptr<const void>> TakeKeepAlive() { return std::move(keep_alive_); }

 private:
  // The linear `make` packs, or the one the store holds for these bytes.
  absl::StatusOr<LinearPtr> Pack(const WeightStore::LinearFactory& make, std::string_view w_bytes,
                                 std::string_view b_bytes, kernels::Precision precision) {
    if (options_.weight_store == nullptr) {
      TASKMOE_ASSIGN_OR_RETURN(kernels::PackedLinear packed, make());
      return std::make_shared<const kernels::PackedLinear>(std::move(packed));
    }
    TASKMOE_ASSIGN_OR_RETURN(WeightStore::Use<kernels::PackedLinear> shared,
                             options_.weight_store->GetLinear(w_bytes, b_bytes, precision, make));
    KeepHandle(shared.handle);
    return shared.value;
  }

  // One handle per distinct store entry, so the store counts this model once per entry.
  void KeepHandle(const std::shared_ptr<const void>& handle) {
    if (kept_handles_.insert(handle.get()).second) keep_alive_.push_back(handle);
  }

  const SafetensorsFile& file_;
  const LoadOptions& options_;
  std::set<std::string> used_;
  int64_t parameters_ = 0;
  std::vector<std::shared_ptr<const void>> keep_alive_;
  std::set<const void*> kept_handles_;
};

absl::StatusOr<LayerNormWeights> LoadNorm(WeightLoader& loader, const std::string& prefix,
                                          int64_t d) {
  LayerNormWeights norm;
  TASKMOE_ASSIGN_OR_RETURN(norm.gamma, loader.Kept(prefix + ".weight", Shape{d}));
  TASKMOE_ASSIGN_OR_RETURN(norm.beta, loader.Kept(prefix + ".bias", Shape{d}));
  return norm;
}

// Self-attention (`cross` false) fuses q/k/v; cross-attention fuses k/v.
absl::StatusOr<AttentionWeights> LoadAttention(WeightLoader& loader, const std::string& prefix,
                                               bool cross, int64_t d,
                                               kernels::Precision precision) {
  AttentionWeights attn;
  if (cross) {
    TASKMOE_ASSIGN_OR_RETURN(attn.q, loader.Linear(prefix + ".q_proj", d, d, true, precision));
    TASKMOE_ASSIGN_OR_RETURN(
        attn.kv, loader.FusedLinear({prefix + ".k_proj", prefix + ".v_proj"}, d, d, precision));
  } else {
    TASKMOE_ASSIGN_OR_RETURN(
        attn.qkv, loader.FusedLinear({prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj"},
                                     d, d, precision));
  }
  TASKMOE_ASSIGN_OR_RETURN(attn.out, loader.Linear(prefix + ".out_proj", d, d, true, precision));
  return attn;
}

// The `count` experts stacked under `prefix` (".ffn"): {prefix}.experts.fc1/fc2, each expert
// packed on its own, so that the weight store shares an expert wherever its bytes recur.
absl::StatusOr<std::vector<DenseFfnWeights>> LoadStackedExperts(WeightLoader& loader,
                                                                const ModelConfig& config,
                                                                const std::string& prefix,
                                                                int64_t count,
                                                                kernels::Precision precision) {
  const int64_t d = config.d_model, ff = config.d_ff;
  const std::string fc1 = prefix + ".experts.fc1", fc2 = prefix + ".experts.fc2";
  TASKMOE_RETURN_IF_ERROR(loader.Check(fc1 + ".weight", Shape{count, ff, d}));
  TASKMOE_RETURN_IF_ERROR(loader.Check(fc1 + ".bias", Shape{count, ff}));
  TASKMOE_RETURN_IF_ERROR(loader.Check(fc2 + ".weight", Shape{count, d, ff}));
  TASKMOE_RETURN_IF_ERROR(loader.Check(fc2 + ".bias", Shape{count, d}));
  std::optional<Tensor> w1, b1, w2, b2;  // read when an expert is not in the store
  std::vector<DenseFfnWeights> experts;
  for (int e = 0; e < count; ++e) {
    DenseFfnWeights expert;
    TASKMOE_ASSIGN_OR_RETURN(expert.fc1,
                             loader.ExpertLinear(fc1, e, count, ff, d, w1, b1, precision));
    TASKMOE_ASSIGN_OR_RETURN(expert.fc2,
                             loader.ExpertLinear(fc2, e, count, d, ff, w2, b2, precision));
    experts.push_back(std::move(expert));
  }
  return experts;
}

absl::StatusOr<FfnWeights> LoadFfn(WeightLoader& loader, const ModelConfig& config, Stack stack,
                                   int layer, const std::string& prefix,
                                   kernels::Precision precision) {
  const int64_t d = config.d_model;
  const ExtractedLayer* extracted =
      config.extracted.has_value()
          ? config.extracted->FindLayer(absl::StrCat(StackName(stack), ".layers.", layer))
          : nullptr;
  if (extracted != nullptr && extracted->unfolded) {
    // The task's experts kept apart: a task-routed MoE layer of k experts whose choice (all of
    // them, with the recorded gates) is fixed (TaskRoute). Each expert goes through the weight
    // store on its own, so subnetworks sharing it hold one copy.
    MoeFfnWeights moe;
    moe.routing = Routing::kTask;
    moe.top_k = static_cast<int>(extracted->experts.size());
    TASKMOE_ASSIGN_OR_RETURN(moe.experts,
                             LoadStackedExperts(loader, config, prefix, moe.top_k, precision));
    return moe;
  }
  if (!config.is_moe_layer(stack, layer)) {
    const int64_t ff = config.ffn_dim(stack, layer);
    DenseFfnWeights dense;
    TASKMOE_ASSIGN_OR_RETURN(dense.fc1, loader.Linear(prefix + ".fc1", ff, d, true, precision));
    TASKMOE_ASSIGN_OR_RETURN(dense.fc2, loader.Linear(prefix + ".fc2", d, ff, true, precision));
    return dense;
  }
  const MoeConfig& moe_config = *config.moe;
  const int64_t experts = moe_config.num_experts;
  MoeFfnWeights moe;
  moe.routing = config.stack_moe(stack)->routing;
  moe.top_k = moe_config.top_k;
  TASKMOE_ASSIGN_OR_RETURN(moe.experts,
                           LoadStackedExperts(loader, config, prefix, experts, precision));
  if (moe.routing == Routing::kToken) {
    // The router stays f32 whatever the precision: it is tiny, and a flipped top-k choice
    // changes the output far more than rounding does.
    TASKMOE_ASSIGN_OR_RETURN(
        moe.router, loader.Linear(prefix + ".router", experts, d, false, kernels::Precision::kF32));
  } else {
    TASKMOE_ASSIGN_OR_RETURN(
        moe.task_logits,
        loader.Kept(prefix + ".router.task_logits", Shape{config.num_task_keys(stack), experts}));
  }
  return moe;
}

absl::StatusOr<LayerWeights> LoadLayer(WeightLoader& loader, const ModelConfig& config, Stack stack,
                                       int layer, kernels::Precision precision) {
  const std::string prefix = absl::StrCat(StackName(stack), ".layers.", layer);
  const int64_t d = config.d_model;
  LayerWeights w;
  TASKMOE_ASSIGN_OR_RETURN(w.self_attn_norm, LoadNorm(loader, prefix + ".self_attn_norm", d));
  TASKMOE_ASSIGN_OR_RETURN(
      w.self_attn, LoadAttention(loader, prefix + ".self_attn", /*cross=*/false, d, precision));
  if (stack == Stack::kDecoder) {
    TASKMOE_ASSIGN_OR_RETURN(w.cross_attn_norm, LoadNorm(loader, prefix + ".cross_attn_norm", d));
    TASKMOE_ASSIGN_OR_RETURN(
        w.cross_attn, LoadAttention(loader, prefix + ".cross_attn", /*cross=*/true, d, precision));
  }
  TASKMOE_ASSIGN_OR_RETURN(w.ffn_norm, LoadNorm(loader, prefix + ".ffn_norm", d));
  TASKMOE_ASSIGN_OR_RETURN(w.ffn,
                           LoadFfn(loader, config, stack, layer, prefix + ".ffn", precision));
  return w;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TransformerModel>> TransformerModel::Load(
    const std::string& dir, const LoadOptions& options) {
  TASKMOE_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  TASKMOE_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                           SafetensorsFile::Open(absl::StrCat(dir, "/", kWeightsFileName)));
  return Create(std::move(config), *file, options);
}

absl::StatusOr<std::shared_ptr<const TransformerModel>> TransformerModel::Create(
    ModelConfig config, const SafetensorsFile& weights, const LoadOptions& options) {
  // make_shared cannot reach the private constructor.
  std::shared_ptr<TransformerModel> model(new TransformerModel());
  model->precision_ = options.precision;
  WeightLoader loader(weights, options);
  const int64_t d = config.d_model, vocab = config.vocab_size;

  auto embedding = [&](const std::string& name) {
    return loader.Kept(name, Shape{vocab, d}, /*bf16_if_exact=*/true);
  };
  const std::string out_name =
      config.tie_embeddings ? "embedding.weight" : "decoder.output_projection.weight";
  if (config.tie_embeddings) {
    TASKMOE_ASSIGN_OR_RETURN(model->encoder_embedding_, embedding("embedding.weight"));
    model->decoder_embedding_ = model->encoder_embedding_;
  } else {
    TASKMOE_ASSIGN_OR_RETURN(model->encoder_embedding_, embedding("encoder.embedding.weight"));
    TASKMOE_ASSIGN_OR_RETURN(model->decoder_embedding_, embedding("decoder.embedding.weight"));
  }
  TASKMOE_ASSIGN_OR_RETURN(
      model->output_projection_,
      loader.Linear(config.tie_embeddings ? "embedding" : "decoder.output_projection", vocab, d,
                    false, options.precision, /*greedy_head=*/true));

  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    auto& layers = stack == Stack::kEncoder ? model->encoder_layers_ : model->decoder_layers_;
    for (int i = 0; i < config.num_layers(stack); ++i) {
      TASKMOE_ASSIGN_OR_RETURN(LayerWeights layer,
                               LoadLayer(loader, config, stack, i, options.precision));
      layers.push_back(std::move(layer));
    }
    TASKMOE_ASSIGN_OR_RETURN(
        (stack == Stack::kEncoder ? model->encoder_final_norm_ : model->decoder_final_norm_),
        LoadNorm(loader, absl::StrCat(StackName(stack), ".final_norm"), d));
  }
  TASKMOE_RETURN_IF_ERROR(loader.CheckNothingLeft());
  TASKMOE_ASSIGN_OR_RETURN(model->positions_,
                           kernels::SinusoidalPositions(config.max_positions, d));
  model->embedding_scale_ =
      config.scale_embeddings ? std::sqrt(static_cast<float>(config.d_model)) : 1.0f;

  // Each task's fixed expert choice in every task-routed layer.
  for (const TaskInfo& task : config.tasks) {
    TaskRoute route;
    for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
      const auto& layers =
          stack == Stack::kEncoder ? model->encoder_layers_ : model->decoder_layers_;
      auto& choices = stack == Stack::kEncoder ? route.encoder : route.decoder;
      choices.resize(layers.size());
      for (size_t i = 0; i < layers.size(); ++i) {
        const auto* moe = std::get_if<MoeFfnWeights>(&layers[i].ffn);
        if (moe == nullptr || moe->routing != Routing::kTask) continue;
        if (!moe->task_logits.valid()) {
          // A subnetwork's unfolded layer: its experts, in the recorded gate order.
          const ExtractedLayer* kept =
              config.extracted->FindLayer(absl::StrCat(StackName(stack), ".layers.", i));
          choices[i].gates = kept->gates;
          for (int e = 0; e < static_cast<int>(kept->experts.size()); ++e) {
            choices[i].experts.push_back(e);
          }
          continue;
        }
        TASKMOE_ASSIGN_OR_RETURN(const int key, config.TaskKeyIndex(stack, task));
        choices[i] = ChooseExperts(moe->task_logits.data<float>() + key * moe->experts.size(),
                                   static_cast<int>(moe->experts.size()), moe->top_k);
      }
    }
    model->task_routes_.push_back(std::move(route));
  }

  model->parameter_count_ = loader.parameters();
  model->keep_alive_ = loader.TakeKeepAlive();
  // Bytes of every weight, and the kernel path each linear layer of the model's precision runs.
  size_t bytes = model->encoder_embedding_.bytes();
  std::map<kernels::MatmulPath, int> paths;
  auto add_linear = [&](const LinearPtr& l) {
    bytes += l->memory_bytes();
    if (l->precision() == options.precision) ++paths[l->path()];
  };
  add_linear(model->output_projection_);
  if (!config.tie_embeddings) bytes += model->decoder_embedding_.bytes();
  for (const auto* layers : {&model->encoder_layers_, &model->decoder_layers_}) {
    for (const LayerWeights& layer : *layers) {
      for (const AttentionWeights* attn : {&layer.self_attn, &layer.cross_attn}) {
        for (const LinearPtr& l : {attn->qkv, attn->q, attn->kv, attn->out}) {
          if (l) add_linear(l);
        }
      }
      for (const LayerNormWeights* n :
           {&layer.self_attn_norm, &layer.cross_attn_norm, &layer.ffn_norm}) {
        if (n->gamma.valid()) bytes += n->gamma.bytes() + n->beta.bytes();
      }
      if (const auto* dense = std::get_if<DenseFfnWeights>(&layer.ffn)) {
        add_linear(dense->fc1);
        add_linear(dense->fc2);
      } else {
        const auto& moe = std::get<MoeFfnWeights>(layer.ffn);
        for (const DenseFfnWeights& e : moe.experts) {
          add_linear(e.fc1);
          add_linear(e.fc2);
        }
        if (moe.router) add_linear(moe.router);
        if (moe.task_logits.valid()) bytes += moe.task_logits.bytes();
      }
    }
  }
  model->memory_bytes_ = bytes;
  // The path most of them run: one for all but a few layers oneDNN cannot run well on AMX.
  model->matmul_path_ = kernels::DefaultMatmulPath(options.precision);
  int most = paths.contains(model->matmul_path_) ? paths.at(model->matmul_path_) : 0;
  for (const auto& [path, count] : paths) {
    if (count > most) {
      most = count;
      model->matmul_path_ = path;
    }
  }
  model->config_ = std::move(config);
  return std::shared_ptr<const TransformerModel>(std::move(model));
}

}  // namespace taskmoe::models
