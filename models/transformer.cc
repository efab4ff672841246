// Loading and running the encoder-decoder Transformer.
#include "models/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/layout.h"
#include "kernels/norm.h"
#include "models/format/safetensors.h"

namespace taskmoe::models {

using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

namespace {

// Reads tensors by name from a model file, checking each against the shape the config
// implies, and remembers which it used so that leftovers can be reported.
class WeightLoader {
 public:
  WeightLoader(const SafetensorsFile& file, const LoadOptions& options)
      : file_(file), options_(options) {}

  absl::StatusOr<Tensor> Fetch(const std::string& name, const Shape& shape) {
    if (!file_.Contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing tensor '", name, "' (expected shape ", shape.ToString(), ")"));
    }
    absl::StatusOr<Tensor> t = file_.GetFloat(name);
    if (!t.ok()) return t.status();
    if (t->shape() != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ",
                                                     t->shape().ToString(),
                                                     " but the config implies ", shape.ToString()));
    }
    if (used_.insert(name).second) parameters_ += t->numel();
    return t;
  }

  // A tensor kept as f32 (norms, embeddings, router tables), shared through the store. It is
  // always a copy: a view would pin the whole weight file in memory after loading.
  absl::StatusOr<Tensor> Kept(const std::string& name, const Shape& shape) {
    absl::StatusOr<Tensor> t = Fetch(name, shape);
    if (!t.ok()) return t;
    if (options_.weight_store == nullptr) return t->Clone();
    absl::StatusOr<std::string_view> bytes = file_.RawBytes(name);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<WeightStore::Use<Tensor>> shared = options_.weight_store->GetTensor(
        *bytes, [&]() -> absl::StatusOr<Tensor> { return t->Clone(); });
    if (!shared.ok()) return shared.status();
    KeepHandle(shared->handle);  // keeps the entry, and with it the stored tensor, alive
    return *shared->value;
  }

  // A linear layer `prefix`.weight [out, in] (+ `prefix`.bias [out]), packed.
  absl::StatusOr<LinearPtr> Linear(const std::string& prefix, int64_t out, int64_t in, bool bias,
                                   kernels::Precision precision) {
    absl::StatusOr<Tensor> w = Fetch(prefix + ".weight", Shape{out, in});
    if (!w.ok()) return w.status();
    Tensor b;
    std::string_view bias_bytes;
    if (bias) {
      absl::StatusOr<Tensor> fetched = Fetch(prefix + ".bias", Shape{out});
      if (!fetched.ok()) return fetched.status();
      b = *std::move(fetched);
      bias_bytes = *file_.RawBytes(prefix + ".bias");
    }
    return Pack(*w, b, *file_.RawBytes(prefix + ".weight"), bias_bytes, precision);
  }

  // Linear layers `prefixes` of [out, in] with biases, fused into one [n * out, in] layer whose
  // output is theirs side by side (in that order).
  absl::StatusOr<LinearPtr> FusedLinear(const std::vector<std::string>& prefixes, int64_t out,
                                        int64_t in, kernels::Precision precision) {
    const int64_t n = static_cast<int64_t>(prefixes.size());
    Tensor w = Tensor::Allocate(kernels::DType::kF32, Shape{n * out, in});
    Tensor b = Tensor::Allocate(kernels::DType::kF32, Shape{n * out});
    std::string w_bytes, b_bytes;  // the store's content key: all parts, in order
    for (int64_t i = 0; i < n; ++i) {
      absl::StatusOr<Tensor> part_w = Fetch(prefixes[i] + ".weight", Shape{out, in});
      if (!part_w.ok()) return part_w.status();
      absl::StatusOr<Tensor> part_b = Fetch(prefixes[i] + ".bias", Shape{out});
      if (!part_b.ok()) return part_b.status();
      absl::StatusOr<Tensor> w32 = part_w->ConvertTo(kernels::DType::kF32);
      if (!w32.ok()) return w32.status();
      absl::StatusOr<Tensor> b32 = part_b->ConvertTo(kernels::DType::kF32);
      if (!b32.ok()) return b32.status();
      std::copy_n(w32->data<float>(), out * in, w.data<float>() + i * out * in);
      std::copy_n(b32->data<float>(), out, b.data<float>() + i * out);
      w_bytes += *file_.RawBytes(prefixes[i] + ".weight");
      b_bytes += *file_.RawBytes(prefixes[i] + ".bias");
    }
    return Pack(w, b, w_bytes, b_bytes, precision);
  }

  // Expert `e` of a stacked [E, rows, cols] weight and [E, rows] bias.
  absl::StatusOr<LinearPtr> ExpertLinear(const Tensor& stacked_w, const Tensor& stacked_b,
                                         const std::string& prefix, int e,
                                         kernels::Precision precision) {
    const int64_t rows = stacked_w.dim(1), cols = stacked_w.dim(2);
    absl::StatusOr<Tensor> w = stacked_w.Rows(e, 1);
    absl::StatusOr<Tensor> b = stacked_b.Rows(e, 1);
    if (!w.ok() || !b.ok()) return absl::InternalError("expert slice");
    absl::StatusOr<Tensor> w2 = w->Reshape(Shape{rows, cols});
    absl::StatusOr<Tensor> b2 = b->Reshape(Shape{rows});
    const std::string_view all_w = *file_.RawBytes(prefix + ".weight");
    const std::string_view all_b = *file_.RawBytes(prefix + ".bias");
    const size_t w_size = all_w.size() / stacked_w.dim(0), b_size = all_b.size() / stacked_b.dim(0);
    return Pack(*w2, *b2, all_w.substr(e * w_size, w_size), all_b.substr(e * b_size, b_size),
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
  absl::StatusOr<LinearPtr> Pack(const Tensor& w, const Tensor& b, std::string_view w_bytes,
                                 std::string_view b_bytes, kernels::Precision precision) {
    auto make = [&]() { return kernels::PackedLinear::Create(w, b, precision); };
    if (options_.weight_store == nullptr) {
      absl::StatusOr<kernels::PackedLinear> packed = make();
      if (!packed.ok()) return packed.status();
      return std::make_shared<const kernels::PackedLinear>(*std::move(packed));
    }
    absl::StatusOr<WeightStore::Use<kernels::PackedLinear>> shared =
        options_.weight_store->GetLinear(w_bytes, b_bytes, precision, make);
    if (!shared.ok()) return shared.status();
    KeepHandle(shared->handle);
    return shared->value;
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
  absl::StatusOr<Tensor> gamma = loader.Kept(prefix + ".weight", Shape{d});
  if (!gamma.ok()) return gamma.status();
  absl::StatusOr<Tensor> beta = loader.Kept(prefix + ".bias", Shape{d});
  if (!beta.ok()) return beta.status();
  norm.gamma = *std::move(gamma);
  norm.beta = *std::move(beta);
  return norm;
}

// Self-attention (`cross` false) fuses q/k/v; cross-attention fuses k/v.
absl::StatusOr<AttentionWeights> LoadAttention(WeightLoader& loader, const std::string& prefix,
                                               bool cross, int64_t d,
                                               kernels::Precision precision) {
  AttentionWeights attn;
  absl::StatusOr<LinearPtr> linear;
  if (cross) {
    linear = loader.Linear(prefix + ".q_proj", d, d, true, precision);
    if (!linear.ok()) return linear.status();
    attn.q = *std::move(linear);
    linear = loader.FusedLinear({prefix + ".k_proj", prefix + ".v_proj"}, d, d, precision);
    if (!linear.ok()) return linear.status();
    attn.kv = *std::move(linear);
  } else {
    linear = loader.FusedLinear({prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj"}, d, d,
                                precision);
    if (!linear.ok()) return linear.status();
    attn.qkv = *std::move(linear);
  }
  linear = loader.Linear(prefix + ".out_proj", d, d, true, precision);
  if (!linear.ok()) return linear.status();
  attn.out = *std::move(linear);
  return attn;
}

absl::StatusOr<FfnWeights> LoadFfn(WeightLoader& loader, const ModelConfig& config, Stack stack,
                                   int layer, const std::string& prefix,
                                   kernels::Precision precision) {
  const int64_t d = config.d_model;
  if (!config.is_moe_layer(stack, layer)) {
    const int64_t ff = config.ffn_dim(stack, layer);
    DenseFfnWeights dense;
    absl::StatusOr<LinearPtr> fc1 = loader.Linear(prefix + ".fc1", ff, d, true, precision);
    if (!fc1.ok()) return fc1.status();
    absl::StatusOr<LinearPtr> fc2 = loader.Linear(prefix + ".fc2", d, ff, true, precision);
    if (!fc2.ok()) return fc2.status();
    dense.fc1 = *std::move(fc1);
    dense.fc2 = *std::move(fc2);
    return dense;
  }
  const MoeConfig& moe_config = *config.moe;
  const int64_t experts = moe_config.num_experts, ff = config.d_ff;
  MoeFfnWeights moe;
  moe.routing = config.stack_moe(stack)->routing;
  moe.top_k = moe_config.top_k;
  const std::string fc1 = prefix + ".experts.fc1", fc2 = prefix + ".experts.fc2";
  absl::StatusOr<Tensor> w1 = loader.Fetch(fc1 + ".weight", Shape{experts, ff, d});
  if (!w1.ok()) return w1.status();
  absl::StatusOr<Tensor> b1 = loader.Fetch(fc1 + ".bias", Shape{experts, ff});
  if (!b1.ok()) return b1.status();
  absl::StatusOr<Tensor> w2 = loader.Fetch(fc2 + ".weight", Shape{experts, d, ff});
  if (!w2.ok()) return w2.status();
  absl::StatusOr<Tensor> b2 = loader.Fetch(fc2 + ".bias", Shape{experts, d});
  if (!b2.ok()) return b2.status();
  for (int e = 0; e < experts; ++e) {
    DenseFfnWeights expert;
    absl::StatusOr<LinearPtr> l1 = loader.ExpertLinear(*w1, *b1, fc1, e, precision);
    if (!l1.ok()) return l1.status();
    absl::StatusOr<LinearPtr> l2 = loader.ExpertLinear(*w2, *b2, fc2, e, precision);
    if (!l2.ok()) return l2.status();
    expert.fc1 = *std::move(l1);
    expert.fc2 = *std::move(l2);
    moe.experts.push_back(std::move(expert));
  }
  if (moe.routing == Routing::kToken) {
    // The router stays f32 whatever the precision: it is tiny, and a flipped top-k choice
    // changes the output far more than rounding does.
    absl::StatusOr<LinearPtr> router =
        loader.Linear(prefix + ".router", experts, d, false, kernels::Precision::kF32);
    if (!router.ok()) return router.status();
    moe.router = *std::move(router);
  } else {
    absl::StatusOr<Tensor> table =
        loader.Kept(prefix + ".router.task_logits", Shape{config.num_task_keys(stack), experts});
    if (!table.ok()) return table.status();
    moe.task_logits = *std::move(table);
  }
  return moe;
}

absl::StatusOr<LayerWeights> LoadLayer(WeightLoader& loader, const ModelConfig& config, Stack stack,
                                       int layer, kernels::Precision precision) {
  const std::string prefix = absl::StrCat(StackName(stack), ".layers.", layer);
  const int64_t d = config.d_model;
  LayerWeights w;
  absl::StatusOr<LayerNormWeights> norm = LoadNorm(loader, prefix + ".self_attn_norm", d);
  if (!norm.ok()) return norm.status();
  w.self_attn_norm = *std::move(norm);
  absl::StatusOr<AttentionWeights> attn =
      LoadAttention(loader, prefix + ".self_attn", /*cross=*/false, d, precision);
  if (!attn.ok()) return attn.status();
  w.self_attn = *std::move(attn);
  if (stack == Stack::kDecoder) {
    norm = LoadNorm(loader, prefix + ".cross_attn_norm", d);
    if (!norm.ok()) return norm.status();
    w.cross_attn_norm = *std::move(norm);
    attn = LoadAttention(loader, prefix + ".cross_attn", /*cross=*/true, d, precision);
    if (!attn.ok()) return attn.status();
    w.cross_attn = *std::move(attn);
  }
  norm = LoadNorm(loader, prefix + ".ffn_norm", d);
  if (!norm.ok()) return norm.status();
  w.ffn_norm = *std::move(norm);
  absl::StatusOr<FfnWeights> ffn =
      LoadFfn(loader, config, stack, layer, prefix + ".ffn", precision);
  if (!ffn.ok()) return ffn.status();
  w.ffn = *std::move(ffn);
  return w;
}

// Self-attention, cross-attention and FFN sublayers share this shape: x += f(LayerNorm(x)).
absl::Status ResidualAdd(const Tensor& delta, Tensor& x) { return kernels::AddInPlace(delta, x); }

}  // namespace

absl::Status DecoderState::SelectRows(absl::Span<const int32_t> rows) {
  for (kernels::KvCache& cache : self_cache) {
    if (absl::Status s = cache.SelectRows(rows); !s.ok()) return s;
  }
  for (kernels::KvCache& cache : cross_cache) {
    if (absl::Status s = cache.SelectRows(rows); !s.ok()) return s;
  }
  selected_lengths.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) selected_lengths[i] = source_lengths[rows[i]];
  std::swap(source_lengths, selected_lengths);
  batch = static_cast<int64_t>(rows.size());
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const TransformerModel>> TransformerModel::Load(
    const std::string& dir, const LoadOptions& options) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file =
      SafetensorsFile::Open(dir + "/model.safetensors");
  if (!file.ok()) return file.status();
  return Create(*std::move(config), **file, options);
}

absl::StatusOr<std::shared_ptr<const TransformerModel>> TransformerModel::Create(
    ModelConfig config, const SafetensorsFile& weights, const LoadOptions& options) {
  // make_shared cannot reach the private constructor.
  std::shared_ptr<TransformerModel> model(new TransformerModel());
  model->precision_ = options.precision;
  WeightLoader loader(weights, options);
  const int64_t d = config.d_model, vocab = config.vocab_size;

  auto embedding = [&](const std::string& name) { return loader.Kept(name, Shape{vocab, d}); };
  const std::string out_name =
      config.tie_embeddings ? "embedding.weight" : "decoder.output_projection.weight";
  if (config.tie_embeddings) {
    absl::StatusOr<Tensor> shared = embedding("embedding.weight");
    if (!shared.ok()) return shared.status();
    model->encoder_embedding_ = *shared;
    model->decoder_embedding_ = *shared;
  } else {
    absl::StatusOr<Tensor> enc = embedding("encoder.embedding.weight");
    if (!enc.ok()) return enc.status();
    absl::StatusOr<Tensor> dec = embedding("decoder.embedding.weight");
    if (!dec.ok()) return dec.status();
    model->encoder_embedding_ = *std::move(enc);
    model->decoder_embedding_ = *std::move(dec);
  }
  absl::StatusOr<LinearPtr> projection =
      loader.Linear(config.tie_embeddings ? "embedding" : "decoder.output_projection", vocab, d,
                    false, options.precision);
  if (!projection.ok()) return projection.status();
  model->output_projection_ = *std::move(projection);

  for (Stack stack : {Stack::kEncoder, Stack::kDecoder}) {
    auto& layers = stack == Stack::kEncoder ? model->encoder_layers_ : model->decoder_layers_;
    for (int i = 0; i < config.num_layers(stack); ++i) {
      absl::StatusOr<LayerWeights> layer = LoadLayer(loader, config, stack, i, options.precision);
      if (!layer.ok()) return layer.status();
      layers.push_back(*std::move(layer));
    }
    absl::StatusOr<LayerNormWeights> final_norm =
        LoadNorm(loader, absl::StrCat(StackName(stack), ".final_norm"), d);
    if (!final_norm.ok()) return final_norm.status();
    (stack == Stack::kEncoder ? model->encoder_final_norm_ : model->decoder_final_norm_) =
        *std::move(final_norm);
  }
  if (absl::Status s = loader.CheckNothingLeft(); !s.ok()) return s;

  absl::StatusOr<Tensor> positions = kernels::SinusoidalPositions(config.max_positions, d);
  if (!positions.ok()) return positions.status();
  model->positions_ = *std::move(positions);
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
        absl::StatusOr<int> key = config.TaskKeyIndex(stack, task);
        if (!key.ok()) return key.status();
        choices[i] = ChooseExperts(moe->task_logits.data<float>() + *key * moe->experts.size(),
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

absl::StatusOr<const TaskRoute*> TransformerModel::RouteForTask(int task_position) const {
  if (task_position < 0 || task_position >= static_cast<int>(task_routes_.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task position ", task_position, " outside the model's ", task_routes_.size(), " tasks"));
  }
  return &task_routes_[task_position];
}

StepCost TransformerModel::DecoderStepCost(const TaskRoute& route) const {
  StepCost cost;
  auto add = [&cost](const LinearPtr& linear, bool runs_for_every_row) {
    if (runs_for_every_row) cost.macs_per_row += linear->in_features() * linear->out_features();
    cost.weight_bytes += linear->memory_bytes();
    ++cost.linears_per_path[linear->path()];
  };
  auto add_ffn = [&](const DenseFfnWeights& ffn, bool runs_for_every_row) {
    add(ffn.fc1, runs_for_every_row);
    add(ffn.fc2, runs_for_every_row);
  };
  for (size_t i = 0; i < decoder_layers_.size(); ++i) {
    const LayerWeights& layer = decoder_layers_[i];
    for (const LinearPtr& l :
         {layer.self_attn.qkv, layer.self_attn.out, layer.cross_attn.q, layer.cross_attn.out}) {
      add(l, true);
    }
    if (const auto* dense = std::get_if<DenseFfnWeights>(&layer.ffn)) {
      add_ffn(*dense, true);
      continue;
    }
    const auto& moe = std::get<MoeFfnWeights>(layer.ffn);
    if (moe.routing == Routing::kTask) {
      for (int e : route.decoder[i].experts) add_ffn(moe.experts[e], true);
      continue;
    }
    // Token routing: each row runs top_k experts, and the step may read all of them.
    add(moe.router, true);
    for (const DenseFfnWeights& expert : moe.experts) add_ffn(expert, false);
    const DenseFfnWeights& any = moe.experts.front();
    cost.macs_per_row += moe.top_k * (any.fc1->in_features() * any.fc1->out_features() +
                                      any.fc2->in_features() * any.fc2->out_features());
  }
  add(output_projection_, true);
  return cost;
}

absl::Status TransformerModel::RunFfn(const FfnWeights& ffn, const ExpertChoice& choice,
                                      const Tensor& x, FfnWorkspace& ws, Tensor& y) const {
  if (const auto* dense = std::get_if<DenseFfnWeights>(&ffn)) {
    return DenseFfnForward(*dense, config_.activation, x, ws, y);
  }
  const auto& moe = std::get<MoeFfnWeights>(ffn);
  if (moe.routing == Routing::kToken) return TokenMoeForward(moe, config_.activation, x, ws, y);
  return TaskMoeForward(moe, choice, config_.activation, x, ws, y);
}

absl::Status TransformerModel::Encode(const std::vector<std::vector<int32_t>>& sources,
                                      const TaskRoute& route, EncoderOutput& out) const {
  const int64_t batch = static_cast<int64_t>(sources.size());
  const int64_t d = config_.d_model;
  int64_t max_len = 0;
  for (size_t b = 0; b < sources.size(); ++b) {
    const int64_t len = static_cast<int64_t>(sources[b].size());
    if (len == 0 || len > config_.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat(
          "source ", b, " has ", len, " tokens; the model takes 1 to ", config_.max_positions));
    }
    max_len = std::max(max_len, len);
  }
  out.lengths.resize(batch);
  std::vector<int32_t>& ids = out.ids;
  std::vector<int32_t>& positions = out.positions;
  ids.assign(batch * max_len, config_.special_tokens.pad);
  positions.resize(batch * max_len);
  for (int64_t b = 0; b < batch; ++b) {
    out.lengths[b] = static_cast<int32_t>(sources[b].size());
    std::copy(sources[b].begin(), sources[b].end(), ids.begin() + b * max_len);
    for (int64_t t = 0; t < max_len; ++t) positions[b * max_len + t] = static_cast<int32_t>(t);
  }
  Tensor &x = out.x, &normed = out.normed, &qkv = out.qkv, &q = out.q, &k = out.k, &v = out.v,
         &attn = out.attn, &delta = out.delta;
  Tensor* const qkv_parts[] = {&q, &k, &v};
  FfnWorkspace& ffn_ws = out.ffn_ws;
  if (absl::Status s = kernels::EmbeddingLookup(encoder_embedding_, ids, embedding_scale_,
                                                positions_, positions, x);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = x.ReshapeInPlace(Shape{batch, max_len, d}); !s.ok()) return s;
  const kernels::AttentionOptions attention{.num_heads = config_.num_heads};
  for (size_t i = 0; i < encoder_layers_.size(); ++i) {
    const LayerWeights& layer = encoder_layers_[i];
    const float eps = config_.layer_norm_eps;
    absl::Status s =
        kernels::LayerNorm(x, layer.self_attn_norm.gamma, layer.self_attn_norm.beta, eps, normed);
    if (s.ok()) s = layer.self_attn.qkv->Forward(normed, kernels::Activation::kNone, qkv);
    if (s.ok()) s = kernels::SplitLastDim(qkv, qkv_parts);
    if (s.ok()) s = kernels::MultiHeadAttention(q, k, v, out.lengths, attention, attn);
    if (s.ok()) s = layer.self_attn.out->Forward(attn, kernels::Activation::kNone, delta);
    if (s.ok()) s = ResidualAdd(delta, x);
    if (s.ok()) s = kernels::LayerNorm(x, layer.ffn_norm.gamma, layer.ffn_norm.beta, eps, normed);
    if (s.ok()) s = RunFfn(layer.ffn, route.encoder[i], normed, ffn_ws, delta);
    if (s.ok()) s = ResidualAdd(delta, x);
    if (!s.ok()) return s;
  }
  return kernels::LayerNorm(x, encoder_final_norm_.gamma, encoder_final_norm_.beta,
                            config_.layer_norm_eps, out.states);
}

absl::Status TransformerModel::StartDecoding(const EncoderOutput& encoder, int64_t max_steps,
                                             const TaskRoute& route, DecoderState& state) const {
  const int64_t batch = static_cast<int64_t>(encoder.lengths.size());
  const int64_t d = config_.d_model;
  if (max_steps < 1 || max_steps > config_.max_positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps ", max_steps, " outside [1, ", config_.max_positions, "]"));
  }
  const int64_t source_len = batch == 0 ? 0 : encoder.states.dim(1);
  state.batch = batch;
  state.steps = 0;
  state.source_lengths = encoder.lengths;
  state.self_cache.resize(decoder_layers_.size());
  state.cross_cache.resize(decoder_layers_.size());
  // Reduced-precision models keep their caches in bf16: attention over them is bound by
  // reading keys and values, and the linear layers already round far more than bf16 does.
  const DType cache_dtype = precision_ == kernels::Precision::kF32 ? DType::kF32 : DType::kBF16;
  for (size_t i = 0; i < decoder_layers_.size(); ++i) {
    const AttentionWeights& cross = decoder_layers_[i].cross_attn;
    absl::Status s = state.self_cache[i].Reset(batch, max_steps, d, cache_dtype);
    if (s.ok()) s = state.cross_cache[i].Reset(batch, source_len, d, cache_dtype);
    if (batch == 0) continue;
    Tensor* const kv_parts[] = {&state.k, &state.v};
    if (s.ok()) s = cross.kv->Forward(encoder.states, kernels::Activation::kNone, state.qkv);
    if (s.ok()) s = kernels::SplitLastDim(state.qkv, kv_parts);
    if (s.ok()) s = state.cross_cache[i].Append(state.k, state.v);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TransformerModel::DecodeStep(absl::Span<const int32_t> tokens, const TaskRoute& route,
                                          DecoderState& state, Tensor& logits) const {
  absl::Status s = DecoderLayers(tokens, route, state);
  if (s.ok()) s = output_projection_->Forward(state.normed, kernels::Activation::kNone, logits);
  if (s.ok()) s = logits.ReshapeInPlace(Shape{state.batch, config_.vocab_size});
  if (s.ok()) ++state.steps;
  return s;
}

absl::Status TransformerModel::DecodeStepGreedy(absl::Span<const int32_t> tokens,
                                                const TaskRoute& route, DecoderState& state,
                                                GreedyHead& head) const {
  absl::Status s = DecoderLayers(tokens, route, state);
  if (s.ok()) {
    s = output_projection_->ForwardArgMaxAndLogSumExp(state.normed, state.logits, head.best,
                                                      head.best_logit, head.log_sum_exp);
  }
  if (s.ok()) ++state.steps;
  return s;
}

absl::Status TransformerModel::DecoderLayers(absl::Span<const int32_t> tokens,
                                             const TaskRoute& route, DecoderState& state) const {
  const int64_t batch = state.batch, d = config_.d_model;
  if (static_cast<int64_t>(tokens.size()) != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeStep: ", tokens.size(), " tokens for a batch of ", batch));
  }
  if (batch > 0 && state.steps >= state.self_cache[0].capacity()) {
    return absl::OutOfRangeError(
        absl::StrCat("DecodeStep: the ", state.steps, " steps reserved are used up"));
  }
  state.position_ids.assign(batch, static_cast<int32_t>(state.steps));
  absl::Status s = kernels::EmbeddingLookup(decoder_embedding_, tokens, embedding_scale_,
                                            positions_, state.position_ids, state.x);
  if (!s.ok()) return s;
  if (s.ok()) s = state.x.ReshapeInPlace(Shape{batch, 1, d});
  Tensor* const qkv_parts[] = {&state.q, &state.k, &state.v};
  const kernels::AttentionOptions attention{.num_heads = config_.num_heads};
  const float eps = config_.layer_norm_eps;
  state.self_lengths.assign(batch, static_cast<int32_t>(state.steps + 1));
  for (size_t i = 0; i < decoder_layers_.size() && s.ok(); ++i) {
    const LayerWeights& layer = decoder_layers_[i];
    kernels::KvCache& self_cache = state.self_cache[i];
    kernels::KvCache& cross_cache = state.cross_cache[i];
    s = kernels::LayerNorm(state.x, layer.self_attn_norm.gamma, layer.self_attn_norm.beta, eps,
                           state.normed);
    if (s.ok()) {
      s = layer.self_attn.qkv->Forward(state.normed, kernels::Activation::kNone, state.qkv);
    }
    if (s.ok()) s = kernels::SplitLastDim(state.qkv, qkv_parts);
    if (s.ok()) s = self_cache.Append(state.k, state.v);
    if (s.ok()) {
      s = kernels::MultiHeadAttention(state.q, self_cache.keys(), self_cache.values(),
                                      state.self_lengths, attention, state.attn);
    }
    if (s.ok())
      s = layer.self_attn.out->Forward(state.attn, kernels::Activation::kNone, state.proj);
    if (s.ok()) s = ResidualAdd(state.proj, state.x);
    if (s.ok()) {
      s = kernels::LayerNorm(state.x, layer.cross_attn_norm.gamma, layer.cross_attn_norm.beta, eps,
                             state.normed);
    }
    if (s.ok()) s = layer.cross_attn.q->Forward(state.normed, kernels::Activation::kNone, state.q);
    if (s.ok()) {
      s = kernels::MultiHeadAttention(state.q, cross_cache.keys(), cross_cache.values(),
                                      state.source_lengths, attention, state.attn);
    }
    if (s.ok())
      s = layer.cross_attn.out->Forward(state.attn, kernels::Activation::kNone, state.proj);
    if (s.ok()) s = ResidualAdd(state.proj, state.x);
    if (s.ok()) {
      s = kernels::LayerNorm(state.x, layer.ffn_norm.gamma, layer.ffn_norm.beta, eps, state.normed);
    }
    if (s.ok()) s = RunFfn(layer.ffn, route.decoder[i], state.normed, state.ffn_ws, state.ffn_out);
    if (s.ok()) s = ResidualAdd(state.ffn_out, state.x);
  }
  if (s.ok()) {
    s = kernels::LayerNorm(state.x, decoder_final_norm_.gamma, decoder_final_norm_.beta, eps,
                           state.normed);
  }
  return s;
}

}  // namespace taskmoe::models
