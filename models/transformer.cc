// Running the encoder-decoder Transformer: encoding, the decoder's steps and their cost.
// Loading it is transformer_loader.cc.
#include "models/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/layout.h"
#include "kernels/norm.h"
#include "util/status_macros.h"

namespace taskmoe::models {

using kernels::DType;
using kernels::Shape;
using kernels::Tensor;

namespace {

// Self-attention, cross-attention and FFN sublayers share this shape: x += f(LayerNorm(x)).
absl::Status ResidualAdd(const Tensor& delta, Tensor& x) { return kernels::AddInPlace(delta, x); }

}  // namespace

absl::Status DecoderState::SelectRows(absl::Span<const int32_t> rows) {
  for (kernels::KvCache& cache : self_cache) {
    TASKMOE_RETURN_IF_ERROR(cache.SelectRows(rows));
  }
  for (kernels::KvCache& cache : cross_cache) {
    TASKMOE_RETURN_IF_ERROR(cache.SelectRows(rows));
  }
  selected_lengths.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) selected_lengths[i] = source_lengths[rows[i]];
  std::swap(source_lengths, selected_lengths);
  batch = static_cast<int64_t>(rows.size());
  return absl::OkStatus();
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
  TASKMOE_RETURN_IF_ERROR(kernels::EmbeddingLookup(encoder_embedding_, ids, embedding_scale_,
                                                   positions_, positions, x));
  TASKMOE_RETURN_IF_ERROR(x.ReshapeInPlace(Shape{batch, max_len, d}));
  const kernels::AttentionOptions attention{.num_heads = config_.num_heads};
  for (size_t i = 0; i < encoder_layers_.size(); ++i) {
    const LayerWeights& layer = encoder_layers_[i];
    const float eps = config_.layer_norm_eps;
    TASKMOE_RETURN_IF_ERROR(
        kernels::LayerNorm(x, layer.self_attn_norm.gamma, layer.self_attn_norm.beta, eps, normed));
    TASKMOE_RETURN_IF_ERROR(layer.self_attn.qkv->Forward(normed, kernels::Activation::kNone, qkv));
    TASKMOE_RETURN_IF_ERROR(kernels::SplitLastDim(qkv, qkv_parts));
    TASKMOE_RETURN_IF_ERROR(kernels::MultiHeadAttention(q, k, v, out.lengths, attention, attn));
    TASKMOE_RETURN_IF_ERROR(layer.self_attn.out->Forward(attn, kernels::Activation::kNone, delta));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(delta, x));
    TASKMOE_RETURN_IF_ERROR(
        kernels::LayerNorm(x, layer.ffn_norm.gamma, layer.ffn_norm.beta, eps, normed));
    TASKMOE_RETURN_IF_ERROR(RunFfn(layer.ffn, route.encoder[i], normed, ffn_ws, delta));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(delta, x));
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
    TASKMOE_RETURN_IF_ERROR(state.self_cache[i].Reset(batch, max_steps, d, cache_dtype));
    TASKMOE_RETURN_IF_ERROR(state.cross_cache[i].Reset(batch, source_len, d, cache_dtype));
    if (batch == 0) continue;
    Tensor* const kv_parts[] = {&state.k, &state.v};
    TASKMOE_RETURN_IF_ERROR(
        cross.kv->Forward(encoder.states, kernels::Activation::kNone, state.qkv));
    TASKMOE_RETURN_IF_ERROR(kernels::SplitLastDim(state.qkv, kv_parts));
    TASKMOE_RETURN_IF_ERROR(state.cross_cache[i].Append(state.k, state.v));
  }
  return absl::OkStatus();
}

absl::Status TransformerModel::DecodeStep(absl::Span<const int32_t> tokens, const TaskRoute& route,
                                          DecoderState& state, Tensor& logits) const {
  TASKMOE_RETURN_IF_ERROR(DecoderLayers(tokens, route, state));
  TASKMOE_RETURN_IF_ERROR(
      output_projection_->Forward(state.normed, kernels::Activation::kNone, logits));
  TASKMOE_RETURN_IF_ERROR(logits.ReshapeInPlace(Shape{state.batch, config_.vocab_size}));
  ++state.steps;
  return absl::OkStatus();
}

absl::Status TransformerModel::DecodeStepGreedy(absl::Span<const int32_t> tokens,
                                                const TaskRoute& route, DecoderState& state,
                                                GreedyHead& head) const {
  TASKMOE_RETURN_IF_ERROR(DecoderLayers(tokens, route, state));
  TASKMOE_RETURN_IF_ERROR(output_projection_->ForwardArgMaxAndLogSumExp(
      state.normed, state.logits, head.best, head.best_logit, head.log_sum_exp));
  ++state.steps;
  return absl::OkStatus();
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
  TASKMOE_RETURN_IF_ERROR(kernels::EmbeddingLookup(decoder_embedding_, tokens, embedding_scale_,
                                                   positions_, state.position_ids, state.x));
  TASKMOE_RETURN_IF_ERROR(state.x.ReshapeInPlace(Shape{batch, 1, d}));
  Tensor* const qkv_parts[] = {&state.q, &state.k, &state.v};
  const kernels::AttentionOptions attention{.num_heads = config_.num_heads};
  const float eps = config_.layer_norm_eps;
  constexpr kernels::Activation kNone = kernels::Activation::kNone;
  state.self_lengths.assign(batch, static_cast<int32_t>(state.steps + 1));
  for (size_t i = 0; i < decoder_layers_.size(); ++i) {
    const LayerWeights& layer = decoder_layers_[i];
    kernels::KvCache& self_cache = state.self_cache[i];
    kernels::KvCache& cross_cache = state.cross_cache[i];
    TASKMOE_RETURN_IF_ERROR(kernels::LayerNorm(state.x, layer.self_attn_norm.gamma,
                                               layer.self_attn_norm.beta, eps, state.normed));
    TASKMOE_RETURN_IF_ERROR(layer.self_attn.qkv->Forward(state.normed, kNone, state.qkv));
    TASKMOE_RETURN_IF_ERROR(kernels::SplitLastDim(state.qkv, qkv_parts));
    TASKMOE_RETURN_IF_ERROR(self_cache.Append(state.k, state.v));
    TASKMOE_RETURN_IF_ERROR(kernels::MultiHeadAttention(state.q, self_cache.keys(),
                                                        self_cache.values(), state.self_lengths,
                                                        attention, state.attn));
    TASKMOE_RETURN_IF_ERROR(layer.self_attn.out->Forward(state.attn, kNone, state.proj));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(state.proj, state.x));
    TASKMOE_RETURN_IF_ERROR(kernels::LayerNorm(state.x, layer.cross_attn_norm.gamma,
                                               layer.cross_attn_norm.beta, eps, state.normed));
    TASKMOE_RETURN_IF_ERROR(layer.cross_attn.q->Forward(state.normed, kNone, state.q));
    TASKMOE_RETURN_IF_ERROR(kernels::MultiHeadAttention(state.q, cross_cache.keys(),
                                                        cross_cache.values(), state.source_lengths,
                                                        attention, state.attn));
    TASKMOE_RETURN_IF_ERROR(layer.cross_attn.out->Forward(state.attn, kNone, state.proj));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(state.proj, state.x));
    TASKMOE_RETURN_IF_ERROR(
        kernels::LayerNorm(state.x, layer.ffn_norm.gamma, layer.ffn_norm.beta, eps, state.normed));
    TASKMOE_RETURN_IF_ERROR(
        RunFfn(layer.ffn, route.decoder[i], state.normed, state.ffn_ws, state.ffn_out));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(state.ffn_out, state.x));
  }
  return kernels::LayerNorm(state.x, decoder_final_norm_.gamma, decoder_final_norm_.beta, eps,
                            state.normed);
}

}  // namespace taskmoe::models
