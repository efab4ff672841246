// The encoder-decoder Transformer of docs/model-format.md on our kernels: weights loaded
// from a model directory and packed for one precision, the encoder over a batch of source
// sentences, and the incremental decoder (one step for a batch of hypotheses, with self- and
// cross-attention key/value caches).
//
// A model is immutable once loaded and may be used from many threads at once; all mutable
// state lives in EncoderOutput / DecoderState objects owned by the caller.
#ifndef TASKMOE_MODELS_TRANSFORMER_H_
#define TASKMOE_MODELS_TRANSFORMER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/tensor.h"
#include "models/ffn.h"
#include "models/format/config.h"
#include "models/weight_store.h"

namespace taskmoe::models {

struct LayerNormWeights {
  kernels::Tensor gamma, beta;
};

// The projections as the engine runs them, fused where one input feeds several: self-attention
// computes queries, keys and values in one matmul (qkv, [3d, d]), cross-attention its
// queries per step (q) and the source's keys and values once (kv, [2d, d]). One wider matmul
// beats three narrow ones and quantises its input once.
struct AttentionWeights {
  LinearPtr qkv;  // self-attention only
  LinearPtr q;    // cross-attention only
  LinearPtr kv;   // cross-attention only
  LinearPtr out;
};

using FfnWeights = std::variant<DenseFfnWeights, MoeFfnWeights>;

struct LayerWeights {
  LayerNormWeights self_attn_norm;
  AttentionWeights self_attn;
  LayerNormWeights cross_attn_norm;  // decoder only
  AttentionWeights cross_attn;       // decoder only
  LayerNormWeights ffn_norm;
  FfnWeights ffn;
};

struct LoadOptions {
  kernels::Precision precision = kernels::Precision::kF32;
  // Shares packed weights that are byte-identical across models loaded with the same store
  // (the attention and dense layers of a TaskMoE's subnetworks). Null: no sharing.
  std::shared_ptr<WeightStore> weight_store;
};

class TransformerModel;
struct TaskRoute;

// Rows of a batch that belong to one task: `rows` consecutive rows run by `model` on `route`.
// A batch lists its groups in row order. A batch of one task is one group; the rows of a
// continuous batch come from many tasks, and their models must be able to share a batch
// (TransformerModel::CanShareBatch).
struct RowGroup {
  const TransformerModel* model = nullptr;
  const TaskRoute* route = nullptr;
  int64_t rows = 0;
  // DecodeStepGreedy only: these rows are beam-searched and need their full next-token logits
  // (GreedyHead::logits) rather than the greedy head.
  bool full_logits = false;
};

// The groups of a batch that use the same weight for the operation at hand: `count` rows in
// all, from group `first` on. Neighbouring groups make a contiguous run (rows [begin, begin +
// count)); groups apart are gathered into one matmul and scattered back.
struct RowRun {
  int64_t begin = 0;
  int64_t count = 0;
  const RowGroup* group = nullptr;  // the first
  bool contiguous = true;
};

// Workspace of the grouped layers: the runs of the operation at hand, the run of each group,
// and a run's rows gathered before and after the operation.
struct GroupedRuns {
  std::vector<RowRun> runs;
  std::vector<int32_t> run_of_group;
  kernels::Tensor in, out;
};

// Encoder states of a batch of sentences, packed: sentence b's lengths[b] rows follow sentence
// b - 1's, with no padding ([sum(lengths), d_model]); max_len is the longest length. Every
// per-token layer of the encoder runs on the real tokens only (a batch of one long and many
// short sentences costs what its tokens cost); attention alone reads a padded copy.
struct EncoderOutput {
  kernels::Tensor states;
  std::vector<int32_t> lengths;
  int64_t max_len = 0;

  // Workspace of Encode, reused when the same EncoderOutput encodes the next batch.
  kernels::Tensor x, normed, qkv, q, k, v, attn, packed_attn, delta;
  FfnWorkspace ffn_ws;
  std::vector<int32_t> ids, positions;
  std::vector<RowGroup> token_groups;  // the row groups with their sentences' tokens as rows
  GroupedRuns grouped;
};

// What DecodeStepGreedy writes: the greedy head of every row, all [batch] (unspecified for rows
// of groups asking for full logits), and the logits of those rows.
struct GreedyHead {
  // Set by the caller: kNone leaves out the log-sum-exp (log_sum_exp gets the best logits),
  // and lets an output projection with a candidate filter skip most of its f32 products (the
  // same best tokens and logits).
  kernels::GreedyLogSumExp log_sum_exp_kind = kernels::GreedyLogSumExp::kExact;

  kernels::Tensor best;         // s32 token ids
  kernels::Tensor best_logit;   // f32
  kernels::Tensor log_sum_exp;  // f32
  // f32 [rows of the full_logits groups, vocab], in batch order; untouched when no group asks.
  kernels::Tensor logits;
};

// Mutable state of an incremental decode over `batch` rows (sentences x beam hypotheses). Rows
// may have started at different steps (a continuous batch admits rows as others decode): each
// has its own position and its own source length.
struct DecoderState {
  std::vector<kernels::KvCache> self_cache;   // per decoder layer
  std::vector<kernels::KvCache> cross_cache;  // per decoder layer: keys/values of the source
  std::vector<int32_t> source_lengths;        // per row
  std::vector<int32_t> positions;             // per row: target tokens it has consumed
  int64_t batch = 0;

  // Workspace reused by every step. `logits` holds the output projection's products
  // (DecodeStepGreedy's scratch; beam search passes it to DecodeStep).
  kernels::Tensor x, normed, qkv, q, k, v, attn, proj, ffn_out, logits;
  FfnWorkspace ffn_ws;
  std::vector<int32_t> self_lengths, selected_lengths, selected_positions;
  std::vector<RowGroup> token_groups;  // AddRows: the groups over packed encoder states
  GroupedRuns grouped;
  GreedyHead run_head;  // a run's part of the greedy head

  // Keeps rows `rows` (reordered, repeated or dropped) in every cache.
  absl::Status SelectRows(absl::Span<const int32_t> rows);
  // Appends every row of `other`, a decode of models that can share a batch with this one's
  // (caches, source lengths and positions), after this state's rows. On an error this state
  // keeps its own rows only.
  absl::Status AppendRows(const DecoderState& other);
};

// Per-task routing decisions of the task-routed MoE layers, precomputed at load.
struct TaskRoute {
  std::vector<ExpertChoice> encoder;  // per encoder layer (empty choice for non-task layers)
  std::vector<ExpertChoice> decoder;
};

// What one decoding step of a task costs in its linear layers, for roofline accounting.
struct StepCost {
  // Multiply-adds per row (hypothesis): every linear layer the row passes through, including
  // the output projection (cross-attention keys/values are computed once, not per step).
  int64_t macs_per_row = 0;
  // Packed weight bytes the step reads at least once: the layers above, and every expert of a
  // token-routed layer (some token may pick any of them).
  size_t weight_bytes = 0;
  // Those linear layers per kernel path (kernels/matmul.h), e.g. {avx2_int8: 37}.
  std::map<kernels::MatmulPath, int> linears_per_path;
  // How many of them our f32 kernel runs on bf16 weights (kernels::PackedLinear::bf16_weights).
  int linears_on_bf16_weights = 0;
};

class TransformerModel {
 public:
  // Loads `<dir>/config.json` and `<dir>/model.safetensors`, checks every tensor against the
  // config (missing, unexpected, wrong shape: each an error naming the tensor) and packs the
  // weights for options.precision.
  static absl::StatusOr<std::shared_ptr<const TransformerModel>> Load(const std::string& dir,
                                                                      const LoadOptions& options);
  // The same from a config and a weight source already in memory.
  static absl::StatusOr<std::shared_ptr<const TransformerModel>> Create(
      ModelConfig config, const class SafetensorsFile& weights, const LoadOptions& options);

  const ModelConfig& config() const { return config_; }
  kernels::Precision precision() const { return precision_; }
  // The kernel path most of its linear layers run on this CPU (kernels/matmul.h); the step's
  // layers per path are in DecoderStepCost.
  kernels::MatmulPath matmul_path() const { return matmul_path_; }
  // The int8 path through which greedy steps filter the output projection's candidates
  // (kernels::PackedLinear::AddGreedyCandidateFilter); none where they compute the full product.
  std::optional<kernels::MatmulPath> greedy_head_filter_path() const;
  // Parameters and bytes of packed weights (shared ones included).
  int64_t parameter_count() const { return parameter_count_; }
  size_t memory_bytes() const { return memory_bytes_; }

  // Routing of a task this model serves (index into config().tasks).
  absl::StatusOr<const TaskRoute*> RouteForTask(int task_position) const;

  // The cost of one DecodeStep for the task whose route is given.
  StepCost DecoderStepCost(const TaskRoute& route) const;

  // Whether rows of `a` and `b` may share a batch (RowGroup): the same architecture,
  // vocabulary, special tokens and precision, so that every tensor between layers has the same
  // shape and meaning. Subnetworks of one parent always can.
  static bool CanShareBatch(const TransformerModel& a, const TransformerModel& b);

  // Encodes a batch of token-id sequences (each already [tag] + pieces + [eos]).
  absl::Status Encode(const std::vector<std::vector<int32_t>>& sources, const TaskRoute& route,
                      EncoderOutput& out) const;
  // The same for a batch of several tasks' sentences, grouped as `groups` (in order, covering
  // every source): each layer runs once per distinct weight among the groups.
  static absl::Status Encode(absl::Span<const RowGroup> groups,
                             const std::vector<std::vector<int32_t>>& sources, EncoderOutput& out);

  // Prepares `state` to decode `encoder.lengths.size()` rows of at most `max_steps` tokens:
  // computes the cross-attention keys/values once.
  absl::Status StartDecoding(const EncoderOutput& encoder, int64_t max_steps,
                             const TaskRoute& route, DecoderState& state) const;
  // Appends the encoded sentences to a running decode as new rows after the existing ones
  // (grouped as `groups`, covering encoder.lengths.size() rows), each with room for at most
  // `max_steps` tokens: their cross-attention keys/values and empty self-attention caches.
  // `state` must have been started (StartDecoding, possibly with no rows) by a model that can
  // share a batch with these.
  static absl::Status AddRows(absl::Span<const RowGroup> groups, const EncoderOutput& encoder,
                              int64_t max_steps, DecoderState& state);

  // Feeds one token per row and writes the next-token logits, f32 [batch, vocab]: log-
  // probabilities up to a per-row shift (kernels::LogSoftmaxInPlace or ArgMaxAndLogSumExp
  // give it). Left unnormalised because decoding needs only the best few of each row and the
  // shift, not a rewritten 64k-wide row.
  absl::Status DecodeStep(absl::Span<const int32_t> tokens, const TaskRoute& route,
                          DecoderState& state, kernels::Tensor& logits) const;

  // DecodeStep for greedy search: only each row's best next token, its logit and the row's
  // log-sum-exp (its log-probability is best_logit - log_sum_exp), which an int8 output
  // projection computes without writing the logits (PackedLinear::ForwardArgMaxAndLogSumExp).
  absl::Status DecodeStepGreedy(absl::Span<const int32_t> tokens, const TaskRoute& route,
                                DecoderState& state, GreedyHead& head) const;

  // The same two for a batch whose rows belong to several tasks (`groups`, in row order,
  // covering state.batch rows): each layer runs once per distinct weight among the groups (the
  // weight store makes shared weights one object), so the rows of every task sharing a layer
  // go through one matmul, wherever they sit in the batch. DecodeStepGreedy also serves a batch
  // that mixes greedy and beam-searched rows: groups marked full_logits get their logits in
  // head.logits (the output projection runs once per weight and kind of head).
  static absl::Status DecodeStep(absl::Span<const RowGroup> groups,
                                 absl::Span<const int32_t> tokens, DecoderState& state,
                                 kernels::Tensor& logits);
  static absl::Status DecodeStepGreedy(absl::Span<const RowGroup> groups,
                                       absl::Span<const int32_t> tokens, DecoderState& state,
                                       GreedyHead& head);
  // DecodeStepGreedy that calls `after_each_layer` once each decoder layer is done (the last
  // one's call comes before the output projection). The step's rows wait meanwhile: the
  // caller may do other work there, on anything but `state` and `head` (the server encodes
  // newcomers and takes their first step, so that they need not wait for a whole step).
  static absl::Status DecodeStepGreedy(absl::Span<const RowGroup> groups,
                                       absl::Span<const int32_t> tokens, DecoderState& state,
                                       GreedyHead& head,
                                       absl::FunctionRef<void()> after_each_layer);

 private:
  TransformerModel() = default;
  // A step up to the final layer norm: the output projection's input in state.normed.
  static absl::Status DecoderLayers(absl::Span<const RowGroup> groups,
                                    absl::Span<const int32_t> tokens, DecoderState& state,
                                    absl::FunctionRef<void()> after_each_layer);
  absl::Status RunFfn(const FfnWeights& ffn, const ExpertChoice& choice, const kernels::Tensor& x,
                      FfnWorkspace& ws, kernels::Tensor& y) const;
  // The FFN of layer `layer` of `stack` over a batch of groups (a row of `in` per group row:
  // the packed tokens in the encoder, one per hypothesis in the decoder): once per run of groups
  // with the same FFN and expert choice; where every group's is a task-routed MoE and the
  // choices differ, once per distinct expert over the rows of every group that chose it.
  static absl::Status GroupedFfn(absl::Span<const RowGroup> groups, Stack stack, size_t layer,
                                 const kernels::Tensor& in, GroupedRuns& plan, FfnWorkspace& ws,
                                 kernels::Tensor& out);

  ModelConfig config_;
  kernels::Precision precision_ = kernels::Precision::kF32;
  kernels::MatmulPath matmul_path_ = kernels::MatmulPath::kOneDnnF32;
  // f32 [vocab, d_model], or bf16 where every value is a bf16 value (a bf16-stored model).
  kernels::Tensor encoder_embedding_, decoder_embedding_;
  LinearPtr output_projection_;
  kernels::Tensor positions_;  // f32 [max_positions, d_model]
  std::vector<LayerWeights> encoder_layers_, decoder_layers_;
  LayerNormWeights encoder_final_norm_, decoder_final_norm_;
  std::vector<TaskRoute> task_routes_;  // per config().tasks entry
  float embedding_scale_ = 1.0f;
  // Holds the WeightStore entries this model uses, so the store can tell used from unused.
  std::vector<std::shared_ptr<const void>> keep_alive_;
  int64_t parameter_count_ = 0;
  size_t memory_bytes_ = 0;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TRANSFORMER_H_
