// ContinuousBatch: decoding whose sentences come and go at step boundaries (step-level, or
// continuous, batching) and may belong to different tasks. New sentences join a running batch
// between two steps (Admit: their encoder pass, then their cross-attention keys/values and
// empty self-attention caches are appended as new rows); finished sentences leave at once and
// cancelled ones whenever the caller says (RemoveIf), so the batch always decodes the rows it
// really has. Rows of tasks whose models can share a batch (subnetworks of one parent: the
// same architecture, vocabulary and precision) decode in one step, every layer running once
// per distinct weight among them (TransformerModel::DecodeStepGreedy with row groups).
//
// A greedy sentence is one row. A beam-searched sentence is `beam_size` neighbouring rows (its
// hypotheses) with its own search state: its rows get full logits from the step, and after
// each step its block is rebuilt from the surviving hypotheses' parents, in place, so greedy
// and beam sentences of any tasks share every step.
//
// A sentence's tokens are those a per-task Decode (decoding.h) of it alone gives: the same step
// limits, EOS rule, beam ranking and scores; only the batch it shares each step differs.
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
#include "models/beam_search.h"
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
    DecodeSettings settings;      // beam_size 1: greedy, more: beam search
    uint64_t key = 0;
  };

  // Rows a sentence with these settings takes in the batch.
  static int64_t RowsOf(const DecodeSettings& settings) {
    return settings.beam_size > 1 ? settings.beam_size : 1;
  }

  ContinuousBatch() = default;
  ContinuousBatch(const ContinuousBatch&) = delete;
  ContinuousBatch& operator=(const ContinuousBatch&) = delete;

  // Rows decoding now (a beam-searched sentence counts its hypotheses), and the distinct tasks
  // among them.
  int64_t rows() const { return static_cast<int64_t>(rows_.size()); }
  // Sentences decoding now (rows() when all are greedy), and those admitted during the step
  // under way (AdmitDuringStep), who join its rows when it ends.
  int64_t sentences() const { return sentences_ + (pending_ ? pending_->sentences_ : 0); }
  int distinct_tasks() const;
  bool empty() const { return rows_.empty(); }
  // Whether every row decoding now is of `task` (true when none is).
  bool AllRowsOf(const TaskModel& task) const;

  // Whether a sentence of `task` can join the rows decoding now (any task when none is).
  bool CanAdmit(const TaskModel& task) const;

  // Encodes `sentences` (all of tasks CanAdmit accepts) in one encoder pass, grouped by task,
  // and adds them as rows that decode from the next Step on. On an error nothing was added
  // (INVALID_ARGUMENT for a sentence that cannot join; the engine's status otherwise) and the
  // running rows are unaffected.
  absl::Status Admit(std::vector<Sentence> sentences);

  // Admit for greedy sentences, who first take their first step by themselves (a step of
  // their rows alone, on a batch of their own), then join the running rows: their first token
  // does not wait for a step of the whole batch, at the cost of that extra, smaller step
  // (prefill first, as LLM servers schedule it). `on_token` and `on_finished` are Step's.
  // Returned errors are Admit's: nothing joined and no sentence was told. Otherwise every
  // sentence has joined or been told through `on_finished`: ended by its first token, or,
  // should the step or the joining fail, with the engine's error as its status.
  absl::Status AdmitWithFirstStep(
      std::vector<Sentence> sentences,
      absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
      absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished);

  // Every sentence whose key `leave` selects leaves the batch now, unfinished: `on_left` gets
  // its key and its hypothesis so far (greedy: tokens decoded and score; beam search, like a
  // cancelled Decode: none), whose status the caller sets.
  absl::Status RemoveIf(absl::FunctionRef<bool(uint64_t key)> leave,
                        absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_left);

  // One decoding step for every row: `on_token` hears each greedy sentence's chosen token (EOS
  // included; beam search has no token to stream before it ends), and `on_finished` each
  // sentence that ended (EOS, its length limit, or for beam search `beam_size` finished
  // hypotheses) with its hypothesis; those sentences have left when Step returns. On an engine
  // error every row is still in the batch, and the caller should remove them all (the state of
  // a failed step is not resumable). The callbacks are called one at a time, but not always on
  // the calling thread: a step's control flow goes on on whichever kernel thread is running
  // (kernels::RunCarried), so a callback holds no lock or thread-local state from one call to
  // the next.
  absl::Status Step(absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
                    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished);
  // Step that calls `after_each_layer` once each decoder layer is done, the running rows
  // waiting meanwhile: there (and only there) the caller may AdmitDuringStep, so that a
  // newcomer waits for the end of a layer, not of a whole step. Sentences admitted so join
  // the rows when the step ends (also when it failed, so that the caller removes them with
  // the rest).
  absl::Status Step(absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
                    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished,
                    absl::FunctionRef<void()> after_each_layer);

  // AdmitWithFirstStep while a Step is between two layers (only from its after_each_layer): the
  // greedy `sentences` are encoded and take their first step now, by themselves (`on_token` and
  // `on_finished` are for that step), and those that go on join the rows when the step under way
  // ends; that step does not decode them. Errors as AdmitWithFirstStep's, and FAILED_PRECONDITION
  // outside a step.
  absl::Status AdmitDuringStep(
      std::vector<Sentence> sentences,
      absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
      absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished);

  // Removes every row without a word to anyone (after a failed step, when the caller has
  // already told every row's owner).
  void Clear();

 private:
  // The search state of a beam-searched sentence, whose `size` rows are neighbours in the
  // batch (rank k is the block's k-th row). Kept in a pool and reused, so that admitting and
  // stepping beams allocates nothing once warm.
  struct BeamSearch {
    int size = 0;
    float length_penalty = 0.0f;
    int64_t steps = 0;                   // taken so far
    std::vector<BackPointer> back;       // [step][rank]; parents are ranks
    std::vector<FinishedBeam> finished;  // rows are ranks, once the sentence is done
    std::vector<BeamCandidate> candidates, live;
    std::vector<float> scores;  // the hypotheses' scores by rank, for the step
  };
  struct Row {
    uint64_t key = 0;
    std::shared_ptr<const TaskModel> task;
    int64_t step_limit = 0;  // steps this row may take, EOS included
    int32_t last_token = 0;  // fed at the next step
    bool ignore_eos = false;
    bool exact_scores = false;  // greedy: DecodeSettings::exact_scores
    Hypothesis hypothesis;      // greedy
    int32_t beam = -1;          // beam search: the sentence's slot in beams_
    float beam_score = 0;       // beam search: the hypothesis's log-probability (-inf: none)
  };
  // INVALID_ARGUMENT unless every sentence is greedy and of a task that can join these rows.
  absl::Status CheckFirstStepApart(const std::vector<Sentence>& sentences) const;
  // Admit's work, in a control flow the kernel threads carry (kernels::RunCarried).
  absl::Status AdmitCarried(std::vector<Sentence> sentences);
  // Step's work on the rows decoding now (Step then lets the pending ones join).
  absl::Status StepRunningRows(
      absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
      absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished,
      absl::FunctionRef<void()> after_each_layer);
  // Moves every row of `from` (greedy rows only), state and all, after this batch's rows;
  // `from` is left empty. On an error nothing moved.
  absl::Status JoinRows(ContinuousBatch& from);
  // At the end of a step: the rows admitted during it join; should that fail, each is told
  // through `on_finished` with the error.
  void JoinPending(absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished);
  // The row groups of the running rows: maximal stretches of neighbouring rows of one task and
  // one kind of search.
  void BuildGroups(const std::vector<Row>& rows, std::vector<RowGroup>& groups) const;
  // Keeps rows_[keep_[i]] (ascending), in the rows and in the decoder state.
  absl::Status KeepRows();
  // After a greedy step: reorders keep_ and next_rows_ so that surviving rows keep their place
  // and the last ones move into the holes finished rows left. The caches then copy one row per
  // finished sentence, not every row after it (a row's tokens do not depend on its place).
  void FillHolesFromTheEnd();
  // One step of the beam-searched sentence whose block starts at row `first` (its logits at
  // row `first_logits` of head_.logits): ranks its candidates, and either finishes it or
  // appends its next rows to keep_ and next_rows_. Returns whether it finished.
  bool StepBeam(size_t first, int64_t first_logits, int64_t per_row,
                absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished);
  int32_t TakeBeamSlot();
  void ReleaseBeamSlot(int32_t slot);

  std::vector<Row> rows_, next_rows_;
  int64_t sentences_ = 0;
  // AdmitWithFirstStep's batch of newcomers, kept for its buffers.
  std::unique_ptr<ContinuousBatch> newcomers_;
  // Sentences admitted during the step under way (AdmitDuringStep), kept for its buffers.
  std::unique_ptr<ContinuousBatch> pending_;
  bool stepping_ = false;  // inside Step's decoder layers
  DecoderState state_;
  EncoderOutput encoder_;
  const EncoderOutput empty_encoder_{};  // starts a decode with no rows
  GreedyHead head_;
  kernels::Tensor top_values_, top_indices_, best_, log_sum_exp_;  // beam search
  std::vector<std::unique_ptr<BeamSearch>> beams_;
  std::vector<int32_t> free_beams_;
  std::vector<RowGroup> groups_, joining_groups_;
  std::vector<int32_t> tokens_, keep_, filled_keep_;
  std::vector<Row> filled_rows_;  // FillHolesFromTheEnd's buffer
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_CONTINUOUS_BATCH_H_
