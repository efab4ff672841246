// ContinuousBatch: greedy decoding whose rows come and go at step boundaries (step-level, or
// continuous, batching) and may belong to different tasks. New sentences join a running batch
// between two steps (Admit: their encoder pass, then their cross-attention keys/values and
// empty self-attention caches are appended as new rows); finished rows leave at once and
// cancelled ones whenever the caller says (RemoveIf), so the batch always decodes the rows it
// really has. Rows of tasks whose models can share a batch (subnetworks of one parent: the
// same architecture, vocabulary and precision) decode in one step, every layer running once
// per distinct weight among them (TransformerModel::DecodeStepGreedy with row groups).
//
// A row's tokens are those a per-task Decode (decoding.h) of the sentence alone gives: the
// same step limits, EOS rule and scores; only the batch it shares each step differs.
//
// One ContinuousBatch is used by one thread at a time (a server worker keeps one for its
// life); its buffers grow to the largest batch seen and are reused.
#ifndef TASKMOE_MODELS_CONTINUOUS_BATCH_H_
#define TASKMOE_MODELS_CONTINUOUS_BATCH_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "models/decoding.h"
#include "models/task_model.h"
#include "models/transformer.h"

namespace taskmoe::models {

class ContinuousBatch {
 public:
  // A sentence to admit. `key` is the caller's handle for it, given back with its tokens.
  struct Sentence {
    std::shared_ptr<const TaskModel> task;
    std::vector<int32_t> source;  // [tag] + pieces + [eos], as TaskModel::PrepareText makes it
    DecodeSettings settings;      // greedy: beam_size 1
    uint64_t key = 0;
  };

  ContinuousBatch() = default;
  ContinuousBatch(const ContinuousBatch&) = delete;
  ContinuousBatch& operator=(const ContinuousBatch&) = delete;

  // Rows decoding now, and the distinct tasks among them.
  int64_t rows() const { return static_cast<int64_t>(rows_.size()); }
  int distinct_tasks() const;
  bool empty() const { return rows_.empty(); }

  // Whether a sentence of `task` can join the rows decoding now (any task when none is).
  bool CanAdmit(const TaskModel& task) const;

  // Encodes `sentences` (all of tasks CanAdmit accepts, greedy settings) in one encoder pass,
  // grouped by task, and adds them as rows that decode from the next Step on. On an error
  // nothing was added (INVALID_ARGUMENT for a sentence that cannot join; the engine's status
  // otherwise) and the running rows are unaffected.
  absl::Status Admit(std::vector<Sentence> sentences);

  // Every row whose key `leave` selects leaves the batch now, unfinished: `on_left` gets its
  // key and its hypothesis so far (tokens decoded, score), whose status the caller sets.
  absl::Status RemoveIf(absl::FunctionRef<bool(uint64_t key)> leave,
                        absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_left);

  // One decoding step for every row: `on_token` hears each row's chosen token (EOS included),
  // and `on_finished` each row that ended (EOS or its length limit) with its hypothesis; those
  // rows have left when Step returns. On an engine error every row is still in the batch, and
  // the caller should remove them all (the state of a failed step is not resumable).
  absl::Status Step(absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
                    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished);

  // Removes every row without a word to anyone (after a failed step, when the caller has
  // already told every row's owner).
  void Clear();

 private:
  struct Row {
    uint64_t key = 0;
    std::shared_ptr<const TaskModel> task;
    int64_t step_limit = 0;  // steps this row may take, EOS included
    int32_t last_token = 0;  // fed at the next step
    bool ignore_eos = false;
    Hypothesis hypothesis;
  };
  // The row groups of the running rows: maximal stretches of neighbouring rows of one task.
  void BuildGroups(const std::vector<Row>& rows, std::vector<RowGroup>& groups) const;
  // Keeps rows_[keep_[i]] (ascending), in the rows and in the decoder state.
  absl::Status KeepRows();

  std::vector<Row> rows_;
  DecoderState state_;
  EncoderOutput encoder_;
  const EncoderOutput empty_encoder_{};  // starts a decode with no rows
  GreedyHead head_;
  std::vector<RowGroup> groups_, joining_groups_;
  std::vector<int32_t> tokens_, keep_;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_CONTINUOUS_BATCH_H_
