// Running the encoder-decoder Transformer: encoding, the decoder's steps and their cost.
// Loading it is transformer_loader.cc.
#include "models/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/functional/function_ref.h"
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

constexpr kernels::Activation kNone = kernels::Activation::kNone;

// Self-attention, cross-attention and FFN sublayers share this shape: x += f(LayerNorm(x)).
absl::Status ResidualAdd(const Tensor& delta, Tensor& x) { return kernels::AddInPlace(delta, x); }

using SameWeights = absl::FunctionRef<bool(const RowGroup&, const RowGroup&)>;
using RunOp = absl::FunctionRef<absl::Status(const RowGroup&, const Tensor&, Tensor&)>;

// Sorts the groups of a batch into runs sharing the weight of the operation at hand (`same`
// holds between a run's first group and each of its others); groups without rows are skipped.
// Neighbours are compared first: in the common batch they share.
void PlanRuns(absl::Span<const RowGroup> groups, SameWeights same, GroupedRuns& plan) {
  plan.runs.clear();
  plan.run_of_group.assign(groups.size(), -1);
  int64_t begin = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const RowGroup& group = groups[g];
    if (group.rows == 0) continue;
    int32_t run = -1;
    if (!plan.runs.empty() && same(*plan.runs.back().group, group)) {
      run = static_cast<int32_t>(plan.runs.size()) - 1;
    } else {
      for (size_t r = 0; r + 1 < plan.runs.size(); ++r) {
        if (same(*plan.runs[r].group, group)) {
          run = static_cast<int32_t>(r);
          break;
        }
      }
    }
    if (run < 0) {
      plan.runs.push_back({begin, group.rows, &group, true});
      run = static_cast<int32_t>(plan.runs.size()) - 1;
    } else {
      RowRun& joined = plan.runs[run];
      joined.contiguous = joined.contiguous && joined.begin + joined.count == begin;
      joined.count += group.rows;
    }
    plan.run_of_group[g] = run;
    begin += group.rows;
  }
}

// Copies the rows of run `run` between `all` (axis 0, the whole batch) and `part` (the run's
// rows in group order): gathered into `part` (resized) or scattered back into `all`.
enum class Direction { kGather, kScatter };
void CopyRun(absl::Span<const RowGroup> groups, const GroupedRuns& plan, int32_t run,
             Direction direction, const Tensor& from, Tensor& to) {
  if (direction == Direction::kGather) {
    to.Resize(from.dtype(), from.shape().WithFirstDim(plan.runs[run].count));
  }
  const size_t row_bytes = from.dim(0) == 0 ? 0 : from.bytes() / from.dim(0);
  const auto* source = static_cast<const char*>(from.raw_data());
  auto* target = static_cast<char*>(to.raw_data());
  int64_t begin = 0, at = 0;  // row in the batch, row in the run
  for (size_t g = 0; g < groups.size(); ++g) {
    if (plan.run_of_group[g] == run) {
      const size_t bytes = groups[g].rows * row_bytes;
      if (direction == Direction::kGather) {
        std::memcpy(target + at * row_bytes, source + begin * row_bytes, bytes);
      } else {
        std::memcpy(target + begin * row_bytes, source + at * row_bytes, bytes);
      }
      at += groups[g].rows;
    }
    begin += groups[g].rows;
  }
}

// out = op(in) where op may differ between runs: one call on the whole batch when one run
// covers it (a batch of one task, or a weight every task shares), else one per run: on a view
// of its rows when they are contiguous, else on its rows gathered into plan.in; the result
// goes through plan.out (a view has no storage of its own to be resized into) into the run's
// rows of `out`. Rows are along axis 0; the last dimension of out is `out_width`.
absl::Status ApplyPerRun(absl::Span<const RowGroup> groups, GroupedRuns& plan, const Tensor& in,
                         int64_t out_width, Tensor& out, RunOp op) {
  if (plan.runs.size() == 1) return op(*plan.runs.front().group, in, out);
  out.Resize(DType::kF32, in.shape().WithLastDim(out_width));
  if (in.dim(0) == 0) return absl::OkStatus();
  const int64_t row_elements = out.numel() / out.dim(0);
  for (size_t r = 0; r < plan.runs.size(); ++r) {
    const RowRun& run = plan.runs[r];
    if (run.contiguous) {
      TASKMOE_ASSIGN_OR_RETURN(Tensor rows, in.Rows(run.begin, run.count));
      TASKMOE_RETURN_IF_ERROR(op(*run.group, rows, plan.out));
      std::memcpy(out.data<float>() + run.begin * row_elements, plan.out.data<float>(),
                  sizeof(float) * run.count * row_elements);
    } else {
      CopyRun(groups, plan, static_cast<int32_t>(r), Direction::kGather, in, plan.in);
      TASKMOE_RETURN_IF_ERROR(op(*run.group, plan.in, plan.out));
      CopyRun(groups, plan, static_cast<int32_t>(r), Direction::kScatter, plan.out, out);
    }
  }
  return absl::OkStatus();
}

// The embedding lookup of a batch whose groups may use different tables (`pick` gives a
// model's): one lookup when they all share one, else one per group (one id per row, a group's
// contiguous), through plan.out. out: f32 [ids.size(), d_model].
template <typename Pick>
absl::Status GroupedEmbedding(absl::Span<const RowGroup> groups, GroupedRuns& plan, Pick pick,
                              absl::Span<const int32_t> ids, absl::Span<const int32_t> position_ids,
                              float scale, const Tensor& positions, Tensor& out) {
  PlanRuns(
      groups,
      [&](const RowGroup& a, const RowGroup& b) {
        return pick(*a.model).raw_data() == pick(*b.model).raw_data();
      },
      plan);
  const Tensor& first_table = pick(*groups.front().model);
  if (plan.runs.size() <= 1) {
    return kernels::EmbeddingLookup(first_table, ids, scale, positions, position_ids, out);
  }
  const int64_t d = first_table.dim(1);
  out.Resize(DType::kF32, Shape{static_cast<int64_t>(ids.size()), d});
  int64_t begin = 0;  // in ids
  for (const RowGroup& group : groups) {
    const int64_t count = group.rows;
    TASKMOE_RETURN_IF_ERROR(kernels::EmbeddingLookup(pick(*group.model), ids.subspan(begin, count),
                                                     scale, positions,
                                                     position_ids.subspan(begin, count), plan.out));
    std::memcpy(out.data<float>() + begin * d, plan.out.data<float>(), plan.out.bytes());
    begin += count;
  }
  return absl::OkStatus();
}

// A layer norm whose weights may differ between groups (`pick` gives a model's).
template <typename Pick>
absl::Status GroupedLayerNorm(absl::Span<const RowGroup> groups, GroupedRuns& plan, Pick pick,
                              float eps, const Tensor& in, Tensor& out) {
  PlanRuns(
      groups,
      [&](const RowGroup& a, const RowGroup& b) {
        const LayerNormWeights& x = pick(*a.model);
        const LayerNormWeights& y = pick(*b.model);
        return x.gamma.raw_data() == y.gamma.raw_data() && x.beta.raw_data() == y.beta.raw_data();
      },
      plan);
  return ApplyPerRun(groups, plan, in, in.dim(in.rank() - 1), out,
                     [&](const RowGroup& g, const Tensor& rows, Tensor& y) {
                       const LayerNormWeights& n = pick(*g.model);
                       return kernels::LayerNorm(rows, n.gamma, n.beta, eps, y);
                     });
}

// A linear layer (no activation) whose weight may differ between groups.
template <typename Pick>
absl::Status GroupedLinear(absl::Span<const RowGroup> groups, GroupedRuns& plan, Pick pick,
                           const Tensor& in, Tensor& out) {
  PlanRuns(
      groups,
      [&](const RowGroup& a, const RowGroup& b) {
        return pick(*a.model).get() == pick(*b.model).get();
      },
      plan);
  return ApplyPerRun(groups, plan, in, pick(*groups.front().model)->out_features(), out,
                     [&](const RowGroup& g, const Tensor& rows, Tensor& y) {
                       return pick(*g.model)->Forward(rows, kNone, y);
                     });
}

bool SameFfn(const FfnWeights& a, const ExpertChoice& a_choice, const FfnWeights& b,
             const ExpertChoice& b_choice) {
  if (a.index() != b.index()) return false;
  if (const auto* dense = std::get_if<DenseFfnWeights>(&a)) {
    const auto& other = std::get<DenseFfnWeights>(b);
    return dense->fc1 == other.fc1 && dense->fc2 == other.fc2;
  }
  const auto& moe = std::get<MoeFfnWeights>(a);
  const auto& other = std::get<MoeFfnWeights>(b);
  if (&moe != &other) {
    if (moe.routing != other.routing || moe.top_k != other.top_k || moe.router != other.router ||
        moe.experts.size() != other.experts.size()) {
      return false;
    }
    for (size_t e = 0; e < moe.experts.size(); ++e) {
      if (moe.experts[e].fc1 != other.experts[e].fc1 ||
          moe.experts[e].fc2 != other.experts[e].fc2) {
        return false;
      }
    }
  }
  return moe.routing != Routing::kTask ||
         (a_choice.experts == b_choice.experts && a_choice.gates == b_choice.gates);
}

// Checks that `groups` cover `rows` rows of models that can share a batch; returns the first.
absl::StatusOr<const TransformerModel*> CheckGroups(absl::Span<const RowGroup> groups, int64_t rows,
                                                    const char* op) {
  if (groups.empty() || groups.front().model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": no row groups"));
  }
  const TransformerModel* first = groups.front().model;
  int64_t covered = 0;
  for (const RowGroup& group : groups) {
    if (group.model == nullptr || group.route == nullptr || group.rows < 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": a row group without model or route"));
    }
    if (group.model != first && !TransformerModel::CanShareBatch(*first, *group.model)) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": row groups of models that cannot share a batch"));
    }
    covered += group.rows;
  }
  if (covered != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": row groups cover ", covered, " rows of ", rows));
  }
  return first;
}

// `groups` (which CheckGroups accepted for lengths.size() sentences) with each group's rows
// counted in its sentences' tokens: the groups of the packed encoder states.
void TokenGroups(absl::Span<const RowGroup> groups, absl::Span<const int32_t> lengths,
                 std::vector<RowGroup>& token_groups) {
  token_groups.assign(groups.begin(), groups.end());
  size_t sentence = 0;
  for (RowGroup& group : token_groups) {
    int64_t tokens = 0;
    for (int64_t r = 0; r < group.rows; ++r) tokens += lengths[sentence++];
    group.rows = tokens;
  }
}

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
  selected_positions.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) selected_positions[i] = positions[rows[i]];
  std::swap(positions, selected_positions);
  batch = static_cast<int64_t>(rows.size());
  return absl::OkStatus();
}

absl::Status DecoderState::AppendRows(const DecoderState& other) {
  if (&other == this) return absl::InvalidArgumentError("DecoderState::AppendRows: itself");
  if (other.batch == 0) return absl::OkStatus();
  if (other.self_cache.size() != self_cache.size() ||
      other.cross_cache.size() != cross_cache.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecoderState::AppendRows: ", other.self_cache.size(),
                     " decoder layers cannot join ", self_cache.size()));
  }
  const int64_t own = batch;
  for (size_t i = 0; i < self_cache.size(); ++i) {
    absl::Status s = self_cache[i].AppendRowsOf(other.self_cache[i]);
    if (s.ok()) s = cross_cache[i].AppendRowsOf(other.cross_cache[i]);
    if (!s.ok()) {
      // Back to this state's own rows in every cache (ascending: a cut, no copies).
      std::vector<int32_t> own_rows(own);
      for (int64_t r = 0; r < own; ++r) own_rows[r] = static_cast<int32_t>(r);
      for (size_t j = 0; j <= i; ++j) {
        for (kernels::KvCache* cache : {&self_cache[j], &cross_cache[j]}) {
          if (cache->batch() > own) cache->SelectRows(own_rows).IgnoreError();
        }
      }
      return s;
    }
  }
  source_lengths.insert(source_lengths.end(), other.source_lengths.begin(),
                        other.source_lengths.end());
  positions.insert(positions.end(), other.positions.begin(), other.positions.end());
  batch = own + other.batch;
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
    if (linear->bf16_weights()) ++cost.linears_on_bf16_weights;
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

std::optional<kernels::MatmulPath> TransformerModel::greedy_head_filter_path() const {
  return output_projection_->greedy_candidate_filter_path();
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

absl::Status TransformerModel::GroupedFfn(absl::Span<const RowGroup> groups, Stack stack,
                                          size_t layer, const Tensor& in, GroupedRuns& plan,
                                          FfnWorkspace& ws, Tensor& out) {
  const bool decoder = stack == Stack::kDecoder;
  auto ffn_of = [&](const TransformerModel& m) -> const FfnWeights& {
    return (decoder ? m.decoder_layers_ : m.encoder_layers_)[layer].ffn;
  };
  auto choice_of = [&](const RowGroup& g) -> const ExpertChoice& {
    return (decoder ? g.route->decoder : g.route->encoder)[layer];
  };
  PlanRuns(
      groups,
      [&](const RowGroup& a, const RowGroup& b) {
        return SameFfn(ffn_of(*a.model), choice_of(a), ffn_of(*b.model), choice_of(b));
      },
      plan);
  if (plan.runs.size() > 1) {
    // Task-routed MoE layers whose choices differ: each distinct expert once, over the rows of
    // every task that chose it, rather than each task's choice over its own rows.
    ws.blocks.clear();
    bool task_moe = true;
    for (const RowGroup& g : groups) {
      const auto* moe = std::get_if<MoeFfnWeights>(&ffn_of(*g.model));
      if (moe == nullptr || moe->routing != Routing::kTask) {
        task_moe = false;
        break;
      }
      ws.blocks.push_back({moe, &choice_of(g), g.rows});
    }
    if (task_moe) {
      return GroupedTaskMoeForward(ws.blocks, groups.front().model->config_.activation, in, ws,
                                   out);
    }
  }
  return ApplyPerRun(groups, plan, in, in.dim(in.rank() - 1), out,
                     [&](const RowGroup& g, const Tensor& rows, Tensor& y) {
                       return g.model->RunFfn(ffn_of(*g.model), choice_of(g), rows, ws, y);
                     });
}

bool TransformerModel::CanShareBatch(const TransformerModel& a, const TransformerModel& b) {
  if (&a == &b) return true;
  const ModelConfig& x = a.config_;
  const ModelConfig& y = b.config_;
  return a.precision_ == b.precision_ && x.d_model == y.d_model && x.num_heads == y.num_heads &&
         x.encoder_layers == y.encoder_layers && x.decoder_layers == y.decoder_layers &&
         x.activation == y.activation && x.layer_norm_eps == y.layer_norm_eps &&
         x.vocab_size == y.vocab_size && x.max_positions == y.max_positions &&
         x.scale_embeddings == y.scale_embeddings && x.special_tokens.pad == y.special_tokens.pad &&
         x.special_tokens.bos == y.special_tokens.bos &&
         x.special_tokens.eos == y.special_tokens.eos;
}

absl::Status TransformerModel::Encode(const std::vector<std::vector<int32_t>>& sources,
                                      const TaskRoute& route, EncoderOutput& out) const {
  const RowGroup group{this, &route, static_cast<int64_t>(sources.size())};
  return Encode({&group, 1}, sources, out);
}

absl::Status TransformerModel::Encode(absl::Span<const RowGroup> groups,
                                      const std::vector<std::vector<int32_t>>& sources,
                                      EncoderOutput& out) {
  const int64_t batch = static_cast<int64_t>(sources.size());
  TASKMOE_ASSIGN_OR_RETURN(const TransformerModel* first, CheckGroups(groups, batch, "Encode"));
  const ModelConfig& config = first->config_;
  int64_t max_len = 0, tokens = 0;
  for (size_t b = 0; b < sources.size(); ++b) {
    const int64_t len = static_cast<int64_t>(sources[b].size());
    if (len == 0 || len > config.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat(
          "source ", b, " has ", len, " tokens; the model takes 1 to ", config.max_positions));
    }
    max_len = std::max(max_len, len);
    tokens += len;
  }
  out.max_len = max_len;
  out.lengths.resize(batch);
  // Packed: every source's tokens right after the previous one's.
  std::vector<int32_t>& ids = out.ids;
  std::vector<int32_t>& positions = out.positions;
  ids.resize(tokens);
  positions.resize(tokens);
  for (int64_t b = 0, at = 0; b < batch; ++b) {
    const auto len = static_cast<int32_t>(sources[b].size());
    out.lengths[b] = len;
    std::copy(sources[b].begin(), sources[b].end(), ids.begin() + at);
    for (int32_t t = 0; t < len; ++t) positions[at + t] = t;
    at += len;
  }
  // The same groups, counting their sentences' tokens: what every per-token operation sees.
  TokenGroups(groups, out.lengths, out.token_groups);
  const absl::Span<const RowGroup> token_groups = out.token_groups;
  Tensor &x = out.x, &normed = out.normed, &qkv = out.qkv, &q = out.q, &k = out.k, &v = out.v,
         &attn = out.attn, &packed_attn = out.packed_attn, &delta = out.delta;
  Tensor* const qkv_parts[] = {&q, &k, &v};
  GroupedRuns& plan = out.grouped;
  const float eps = config.layer_norm_eps;

  TASKMOE_RETURN_IF_ERROR(GroupedEmbedding(
      token_groups, plan,
      [](const TransformerModel& m) -> const Tensor& { return m.encoder_embedding_; }, ids,
      positions, first->embedding_scale_, first->positions_, x));

  // Each layer's operations, run once per run of groups sharing the weight.
  auto norm = [&](auto pick, const Tensor& in, Tensor& result) {
    return GroupedLayerNorm(token_groups, plan, pick, eps, in, result);
  };
  auto linear = [&](auto pick, const Tensor& in, Tensor& result) {
    return GroupedLinear(token_groups, plan, pick, in, result);
  };
  const kernels::AttentionOptions attention{.num_heads = config.num_heads};
  for (size_t i = 0; i < first->encoder_layers_.size(); ++i) {
    auto layer = [i](const TransformerModel& m) -> const LayerWeights& {
      return m.encoder_layers_[i];
    };
    TASKMOE_RETURN_IF_ERROR(norm([&](const TransformerModel& m)
                                     -> const LayerNormWeights& { return layer(m).self_attn_norm; },
                                 x, normed));
    TASKMOE_RETURN_IF_ERROR(linear(
        [&](const TransformerModel& m) -> const LinearPtr& { return layer(m).self_attn.qkv; },
        normed, qkv));
    // Attention per sentence, on [batch, max_len, d] copies (padding masked by the lengths).
    TASKMOE_RETURN_IF_ERROR(kernels::UnpackSequences(qkv, out.lengths, max_len, qkv_parts));
    TASKMOE_RETURN_IF_ERROR(kernels::MultiHeadAttention(q, k, v, out.lengths, attention, attn));
    TASKMOE_RETURN_IF_ERROR(kernels::PackSequences(attn, out.lengths, packed_attn));
    TASKMOE_RETURN_IF_ERROR(linear(
        [&](const TransformerModel& m) -> const LinearPtr& { return layer(m).self_attn.out; },
        packed_attn, delta));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(delta, x));
    TASKMOE_RETURN_IF_ERROR(norm(
        [&](const TransformerModel& m) -> const LayerNormWeights& { return layer(m).ffn_norm; }, x,
        normed));
    TASKMOE_RETURN_IF_ERROR(
        GroupedFfn(token_groups, Stack::kEncoder, i, normed, plan, out.ffn_ws, delta));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(delta, x));
  }
  return norm(
      [](const TransformerModel& m) -> const LayerNormWeights& { return m.encoder_final_norm_; }, x,
      out.states);
}

absl::Status TransformerModel::StartDecoding(const EncoderOutput& encoder, int64_t max_steps,
                                             const TaskRoute& route, DecoderState& state) const {
  if (max_steps < 1 || max_steps > config_.max_positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps ", max_steps, " outside [1, ", config_.max_positions, "]"));
  }
  const int64_t batch = static_cast<int64_t>(encoder.lengths.size());
  const int64_t source_len = batch == 0 ? 0 : encoder.max_len;
  state.batch = 0;
  state.source_lengths.clear();
  state.positions.clear();
  state.self_cache.resize(decoder_layers_.size());
  state.cross_cache.resize(decoder_layers_.size());
  // Reduced-precision models keep their caches in bf16: attention over them is bound by
  // reading keys and values, and the linear layers already round far more than bf16 does.
  const DType cache_dtype = precision_ == kernels::Precision::kF32 ? DType::kF32 : DType::kBF16;
  for (size_t i = 0; i < decoder_layers_.size(); ++i) {
    TASKMOE_RETURN_IF_ERROR(state.self_cache[i].Reset(0, max_steps, config_.d_model, cache_dtype));
    TASKMOE_RETURN_IF_ERROR(
        state.cross_cache[i].Reset(0, source_len, config_.d_model, cache_dtype));
  }
  if (batch == 0) return absl::OkStatus();
  const RowGroup group{this, &route, batch};
  return AddRows({&group, 1}, encoder, max_steps, state);
}

absl::Status TransformerModel::AddRows(absl::Span<const RowGroup> groups,
                                       const EncoderOutput& encoder, int64_t max_steps,
                                       DecoderState& state) {
  const int64_t added = static_cast<int64_t>(encoder.lengths.size());
  if (added == 0) return absl::OkStatus();
  TASKMOE_ASSIGN_OR_RETURN(const TransformerModel* first, CheckGroups(groups, added, "AddRows"));
  const ModelConfig& config = first->config_;
  if (max_steps < 1 || max_steps > config.max_positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps ", max_steps, " outside [1, ", config.max_positions, "]"));
  }
  if (state.self_cache.size() != first->decoder_layers_.size() ||
      state.cross_cache.size() != first->decoder_layers_.size()) {
    return absl::FailedPreconditionError("AddRows: the decoder state was not started");
  }
  const int64_t first_row = state.batch;
  const int64_t source_len = encoder.max_len;
  // The projections run on the packed states (real tokens only); the cache takes them padded.
  TokenGroups(groups, encoder.lengths, state.token_groups);
  for (size_t i = 0; i < first->decoder_layers_.size(); ++i) {
    TASKMOE_RETURN_IF_ERROR(state.self_cache[i].AddRows(added, max_steps));
    TASKMOE_RETURN_IF_ERROR(state.cross_cache[i].AddRows(added, source_len));
    TASKMOE_RETURN_IF_ERROR(GroupedLinear(
        state.token_groups, state.grouped,
        [i](const TransformerModel& m) -> const LinearPtr& {
          return m.decoder_layers_[i].cross_attn.kv;
        },
        encoder.states, state.qkv));
    TASKMOE_RETURN_IF_ERROR(
        state.cross_cache[i].AppendPackedToRows(first_row, state.qkv, encoder.lengths, source_len));
  }
  state.source_lengths.insert(state.source_lengths.end(), encoder.lengths.begin(),
                              encoder.lengths.end());
  state.positions.resize(first_row + added, 0);
  state.batch = first_row + added;
  return absl::OkStatus();
}

absl::Status TransformerModel::DecodeStep(absl::Span<const int32_t> tokens, const TaskRoute& route,
                                          DecoderState& state, Tensor& logits) const {
  const RowGroup group{this, &route, state.batch};
  return DecodeStep({&group, 1}, tokens, state, logits);
}

absl::Status TransformerModel::DecodeStepGreedy(absl::Span<const int32_t> tokens,
                                                const TaskRoute& route, DecoderState& state,
                                                GreedyHead& head) const {
  const RowGroup group{this, &route, state.batch};
  return DecodeStepGreedy({&group, 1}, tokens, state, head);
}

absl::Status TransformerModel::DecodeStep(absl::Span<const RowGroup> groups,
                                          absl::Span<const int32_t> tokens, DecoderState& state,
                                          Tensor& logits) {
  TASKMOE_RETURN_IF_ERROR(DecoderLayers(groups, tokens, state, [] {}));
  const int64_t vocab = groups.front().model->config_.vocab_size;
  TASKMOE_RETURN_IF_ERROR(GroupedLinear(
      groups, state.grouped,
      [](const TransformerModel& m) -> const LinearPtr& { return m.output_projection_; },
      state.normed, logits));
  return logits.ReshapeInPlace(Shape{state.batch, vocab});
}

absl::Status TransformerModel::DecodeStepGreedy(absl::Span<const RowGroup> groups,
                                                absl::Span<const int32_t> tokens,
                                                DecoderState& state, GreedyHead& head) {
  return DecodeStepGreedy(groups, tokens, state, head, [] {});
}

absl::Status TransformerModel::DecodeStepGreedy(absl::Span<const RowGroup> groups,
                                                absl::Span<const int32_t> tokens,
                                                DecoderState& state, GreedyHead& head,
                                                absl::FunctionRef<void()> after_each_layer) {
  TASKMOE_RETURN_IF_ERROR(DecoderLayers(groups, tokens, state, after_each_layer));
  // Runs share an output projection and a kind of head (greedy or full logits).
  PlanRuns(
      groups,
      [](const RowGroup& a, const RowGroup& b) {
        return a.model->output_projection_.get() == b.model->output_projection_.get() &&
               a.full_logits == b.full_logits;
      },
      state.grouped);
  GroupedRuns& plan = state.grouped;
  int64_t logit_rows = 0;
  for (const RowGroup& group : groups) logit_rows += group.full_logits ? group.rows : 0;
  if (logit_rows == 0 && plan.runs.size() <= 1) {
    return groups.front().model->output_projection_->ForwardArgMaxAndLogSumExp(
        state.normed, state.logits, head.best, head.best_logit, head.log_sum_exp,
        head.log_sum_exp_kind);
  }
  const int64_t vocab = groups.front().model->config_.vocab_size;
  if (logit_rows == state.batch && plan.runs.size() <= 1) {
    TASKMOE_RETURN_IF_ERROR(
        groups.front().model->output_projection_->Forward(state.normed, kNone, head.logits));
    return head.logits.ReshapeInPlace(Shape{logit_rows, vocab});
  }
  // Per run: a greedy run into run_head, then into the run's rows of `head`; a run of full
  // logits into its rows of head.logits, which hold only such rows.
  head.best.Resize(DType::kS32, Shape{state.batch});
  head.best_logit.Resize(DType::kF32, Shape{state.batch});
  head.log_sum_exp.Resize(DType::kF32, Shape{state.batch});
  if (logit_rows > 0) head.logits.Resize(DType::kF32, Shape{logit_rows, vocab});
  GreedyHead& part = state.run_head;
  for (size_t r = 0; r < plan.runs.size(); ++r) {
    const auto run = static_cast<int32_t>(r);
    const RowRun& this_run = plan.runs[r];
    const kernels::PackedLinear& projection = *this_run.group->model->output_projection_;
    CopyRun(groups, plan, run, Direction::kGather, state.normed, plan.in);
    if (!this_run.group->full_logits) {
      TASKMOE_RETURN_IF_ERROR(
          projection.ForwardArgMaxAndLogSumExp(plan.in, state.logits, part.best, part.best_logit,
                                               part.log_sum_exp, head.log_sum_exp_kind));
      CopyRun(groups, plan, run, Direction::kScatter, part.best, head.best);
      CopyRun(groups, plan, run, Direction::kScatter, part.best_logit, head.best_logit);
      CopyRun(groups, plan, run, Direction::kScatter, part.log_sum_exp, head.log_sum_exp);
      continue;
    }
    if (this_run.count == logit_rows) {
      // Every row asking for logits, in batch order: straight into head.logits.
      TASKMOE_RETURN_IF_ERROR(projection.Forward(plan.in, kNone, head.logits));
      TASKMOE_RETURN_IF_ERROR(head.logits.ReshapeInPlace(Shape{logit_rows, vocab}));
      continue;
    }
    TASKMOE_RETURN_IF_ERROR(projection.Forward(plan.in, kNone, plan.out));
    int64_t at = 0, packed = 0;  // row in the run, row in head.logits
    for (size_t g = 0; g < groups.size(); ++g) {
      if (!groups[g].full_logits) continue;
      if (plan.run_of_group[g] == run) {
        std::memcpy(head.logits.data<float>() + packed * vocab, plan.out.data<float>() + at * vocab,
                    sizeof(float) * groups[g].rows * vocab);
        at += groups[g].rows;
      }
      packed += groups[g].rows;
    }
  }
  return absl::OkStatus();
}

absl::Status TransformerModel::DecoderLayers(absl::Span<const RowGroup> groups,
                                             absl::Span<const int32_t> tokens, DecoderState& state,
                                             absl::FunctionRef<void()> after_each_layer) {
  const int64_t batch = state.batch;
  TASKMOE_ASSIGN_OR_RETURN(const TransformerModel* first, CheckGroups(groups, batch, "DecodeStep"));
  const ModelConfig& config = first->config_;
  const int64_t d = config.d_model;
  if (static_cast<int64_t>(tokens.size()) != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeStep: ", tokens.size(), " tokens for a batch of ", batch));
  }
  if (state.self_cache.size() != first->decoder_layers_.size()) {
    return absl::FailedPreconditionError("DecodeStep: the decoder state was not started");
  }
  for (int64_t r = 0; r < batch; ++r) {
    if (state.positions[r] >= state.self_cache[0].capacity()) {
      return absl::OutOfRangeError(absl::StrCat("DecodeStep: row ", r, " used up the ",
                                                state.positions[r], " steps reserved"));
    }
  }
  GroupedRuns& plan = state.grouped;
  const float eps = config.layer_norm_eps;

  TASKMOE_RETURN_IF_ERROR(GroupedEmbedding(
      groups, plan, [](const TransformerModel& m) -> const Tensor& { return m.decoder_embedding_; },
      tokens, state.positions, first->embedding_scale_, first->positions_, state.x));
  TASKMOE_RETURN_IF_ERROR(state.x.ReshapeInPlace(Shape{batch, 1, d}));

  auto norm = [&](auto pick, const Tensor& in, Tensor& result) {
    return GroupedLayerNorm(groups, plan, pick, eps, in, result);
  };
  auto linear = [&](auto pick, const Tensor& in, Tensor& result) {
    return GroupedLinear(groups, plan, pick, in, result);
  };

  Tensor* const qkv_parts[] = {&state.q, &state.k, &state.v};
  const kernels::AttentionOptions attention{.num_heads = config.num_heads};
  state.self_lengths.resize(batch);
  for (int64_t r = 0; r < batch; ++r) state.self_lengths[r] = state.positions[r] + 1;
  for (size_t i = 0; i < first->decoder_layers_.size(); ++i) {
    auto layer = [i](const TransformerModel& m) -> const LayerWeights& {
      return m.decoder_layers_[i];
    };
    kernels::KvCache& self_cache = state.self_cache[i];
    kernels::KvCache& cross_cache = state.cross_cache[i];
    TASKMOE_RETURN_IF_ERROR(norm([&](const TransformerModel& m)
                                     -> const LayerNormWeights& { return layer(m).self_attn_norm; },
                                 state.x, state.normed));
    TASKMOE_RETURN_IF_ERROR(linear(
        [&](const TransformerModel& m) -> const LinearPtr& { return layer(m).self_attn.qkv; },
        state.normed, state.qkv));
    TASKMOE_RETURN_IF_ERROR(kernels::SplitLastDim(state.qkv, qkv_parts));
    TASKMOE_RETURN_IF_ERROR(self_cache.Append(state.k, state.v));
    TASKMOE_RETURN_IF_ERROR(kernels::MultiHeadAttention(state.q, self_cache.keys(),
                                                        self_cache.values(), state.self_lengths,
                                                        attention, state.attn));
    TASKMOE_RETURN_IF_ERROR(linear(
        [&](const TransformerModel& m) -> const LinearPtr& { return layer(m).self_attn.out; },
        state.attn, state.proj));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(state.proj, state.x));
    TASKMOE_RETURN_IF_ERROR(norm(
        [&](const TransformerModel& m) -> const LayerNormWeights& {
          return layer(m).cross_attn_norm;
        },
        state.x, state.normed));
    TASKMOE_RETURN_IF_ERROR(
        linear([&](const TransformerModel& m) -> const LinearPtr& { return layer(m).cross_attn.q; },
               state.normed, state.q));
    TASKMOE_RETURN_IF_ERROR(kernels::MultiHeadAttention(state.q, cross_cache.keys(),
                                                        cross_cache.values(), state.source_lengths,
                                                        attention, state.attn));
    TASKMOE_RETURN_IF_ERROR(linear(
        [&](const TransformerModel& m) -> const LinearPtr& { return layer(m).cross_attn.out; },
        state.attn, state.proj));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(state.proj, state.x));
    TASKMOE_RETURN_IF_ERROR(norm(
        [&](const TransformerModel& m) -> const LayerNormWeights& { return layer(m).ffn_norm; },
        state.x, state.normed));
    TASKMOE_RETURN_IF_ERROR(
        GroupedFfn(groups, Stack::kDecoder, i, state.normed, plan, state.ffn_ws, state.ffn_out));
    TASKMOE_RETURN_IF_ERROR(ResidualAdd(state.ffn_out, state.x));
    after_each_layer();
  }
  for (int64_t r = 0; r < batch; ++r) ++state.positions[r];
  return norm(
      [](const TransformerModel& m) -> const LayerNormWeights& { return m.decoder_final_norm_; },
      state.x, state.normed);
}

}  // namespace taskmoe::models
