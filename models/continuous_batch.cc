// Greedy and beam-search decoding of a batch that sentences join and leave between steps.
#include "models/continuous_batch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"
#include "kernels/topk.h"
#include "models/beam_search.h"
#include "util/status_macros.h"

namespace taskmoe::models {

int32_t ContinuousBatch::TakeBeamSlot() {
  if (free_beams_.empty()) {
    beams_.push_back(std::make_unique<BeamSearch>());
    return static_cast<int32_t>(beams_.size()) - 1;
  }
  const int32_t slot = free_beams_.back();
  free_beams_.pop_back();
  return slot;
}

void ContinuousBatch::ReleaseBeamSlot(int32_t slot) { free_beams_.push_back(slot); }

int ContinuousBatch::distinct_tasks() const {
  int distinct = 0;
  for (size_t r = 0; r < rows_.size(); ++r) {
    bool seen = false;
    for (size_t earlier = 0; earlier < r && !seen; ++earlier) {
      seen = rows_[earlier].task == rows_[r].task;
    }
    if (!seen) ++distinct;
  }
  return distinct;
}

bool ContinuousBatch::AllRowsOf(const TaskModel& task) const {
  return std::all_of(rows_.begin(), rows_.end(),
                     [&](const Row& row) { return row.task.get() == &task; });
}

bool ContinuousBatch::CanAdmit(const TaskModel& task) const {
  return rows_.empty() ||
         TransformerModel::CanShareBatch(rows_.front().task->transformer(), task.transformer());
}

void ContinuousBatch::BuildGroups(const std::vector<Row>& rows,
                                  std::vector<RowGroup>& groups) const {
  groups.clear();
  const TaskModel* current = nullptr;
  bool beam = false;
  for (const Row& row : rows) {
    if (row.task.get() != current || (row.beam >= 0) != beam) {
      current = row.task.get();
      beam = row.beam >= 0;
      groups.push_back({&current->transformer(), &current->route(), 0, beam});
    }
    ++groups.back().rows;
  }
}

absl::Status ContinuousBatch::Admit(std::vector<Sentence> sentences) {
  absl::Status admitted;
  kernels::RunCarried([&] { admitted = AdmitCarried(std::move(sentences)); });
  return admitted;
}

absl::Status ContinuousBatch::AdmitCarried(std::vector<Sentence> sentences) {
  if (sentences.empty()) return absl::OkStatus();
  // Checked first, so that a refused admission leaves the batch as it was.
  const TaskModel* reference =
      rows_.empty() ? sentences.front().task.get() : rows_.front().task.get();
  for (size_t i = 0; i < sentences.size(); ++i) {
    const Sentence& s = sentences[i];
    if (s.task == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sentence ", i, " has no task"));
    }
    if (!TransformerModel::CanShareBatch(reference->transformer(), s.task->transformer())) {
      return absl::InvalidArgumentError(
          absl::StrCat("task ", s.task->id(), " cannot share a batch with task ", reference->id(),
                       " (a different architecture, vocabulary or precision)"));
    }
    if (s.settings.beam_size < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("sentence ", i, ": beam size must be >= 1, got ", s.settings.beam_size));
    }
    if (s.settings.max_output_tokens < 1 || !(s.settings.max_output_ratio >= 0.0f) ||
        s.settings.max_output_offset < 0 || !(s.settings.length_penalty >= 0.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sentence ", i,
                       ": output limits must be >= 1 token, ratio, offset and length penalty "
                       ">= 0"));
    }
  }
  // One group per task: the joining rows are ordered by task (stably), so that each task's
  // rows are contiguous and its own layers run once for all of them.
  std::stable_sort(sentences.begin(), sentences.end(), [](const Sentence& a, const Sentence& b) {
    return a.task->id() < b.task->id();
  });
  std::vector<std::vector<int32_t>> sources;
  sources.reserve(sentences.size());
  std::vector<Row> joining(sentences.size());
  std::vector<int> beam_sizes(sentences.size());
  int64_t largest_limit = 1;
  bool any_beam = false;
  for (size_t i = 0; i < sentences.size(); ++i) {
    Sentence& s = sentences[i];
    const ModelConfig& config = s.task->transformer().config();
    // The step limits of decoding.h's Decode for this sentence alone.
    const int64_t max_steps = std::min<int64_t>(s.settings.max_output_tokens, config.max_positions);
    int64_t limit = max_steps;
    if (s.settings.max_output_ratio > 0.0f) {
      limit = std::clamp<int64_t>(
          static_cast<int64_t>(s.settings.max_output_ratio * static_cast<float>(s.source.size()) +
                               static_cast<float>(s.settings.max_output_offset)),
          1, max_steps);
    }
    largest_limit = std::max(largest_limit, limit);
    Row& row = joining[i];
    row.key = s.key;
    row.step_limit = limit;
    row.last_token = config.special_tokens.bos;
    row.ignore_eos = s.settings.ignore_eos;
    row.exact_scores = s.settings.exact_scores;
    beam_sizes[i] = s.settings.beam_size;
    any_beam = any_beam || beam_sizes[i] > 1;
    if (beam_sizes[i] == 1) row.hypothesis.tokens.reserve(limit);
    row.task = std::move(s.task);
    sources.push_back(std::move(s.source));
  }
  BuildGroups(joining, joining_groups_);
  TASKMOE_RETURN_IF_ERROR(TransformerModel::Encode(joining_groups_, sources, encoder_));
  const int64_t running = rows();
  if (running == 0) {
    // A fresh decode: caches reset to this admission's sizes (their storage is kept).
    const TaskModel& first = *joining.front().task;
    TASKMOE_RETURN_IF_ERROR(
        first.transformer().StartDecoding(empty_encoder_, largest_limit, first.route(), state_));
  }
  // On a failure, some layers may have taken the new rows: back to the running ones.
  auto restore = [&](absl::Status failure) {
    keep_.resize(running);
    for (int64_t r = 0; r < running; ++r) keep_[r] = static_cast<int32_t>(r);
    state_.SelectRows(keep_).IgnoreError();
    return failure;
  };
  if (absl::Status added =
          TransformerModel::AddRows(joining_groups_, encoder_, largest_limit, state_);
      !added.ok()) {
    return restore(added);
  }
  if (any_beam) {
    // A beam-searched sentence's row becomes `beam_size` copies, of which only the first is a
    // live hypothesis at the first step (so it does not pick the same token `beam_size` times).
    keep_.resize(running);
    for (int64_t r = 0; r < running; ++r) keep_[r] = static_cast<int32_t>(r);
    for (size_t i = 0; i < joining.size(); ++i) {
      keep_.insert(keep_.end(), beam_sizes[i], static_cast<int32_t>(running + i));
    }
    if (absl::Status expanded = state_.SelectRows(keep_); !expanded.ok()) {
      return restore(expanded);
    }
  }
  sentences_ += static_cast<int64_t>(joining.size());
  for (size_t i = 0; i < joining.size(); ++i) {
    Row& row = joining[i];
    const int beam = beam_sizes[i];
    if (beam == 1) {
      rows_.push_back(std::move(row));
      continue;
    }
    row.beam = TakeBeamSlot();
    BeamSearch& search = *beams_[row.beam];
    search.size = beam;
    search.length_penalty = sentences[i].settings.length_penalty;
    search.steps = 0;
    search.back.resize(row.step_limit * beam);
    search.finished.clear();
    search.finished.reserve(2 * beam);
    for (int k = 0; k < beam; ++k) {
      rows_.push_back(row);
      rows_.back().beam_score = k == 0 ? 0.0f : kDeadHypothesisScore;
    }
  }
  return absl::OkStatus();
}

absl::Status ContinuousBatch::CheckFirstStepApart(const std::vector<Sentence>& sentences) const {
  for (size_t i = 0; i < sentences.size(); ++i) {
    const Sentence& s = sentences[i];
    if (s.settings.beam_size != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sentence ", i, " asks for beam ", s.settings.beam_size,
          "; only greedy sentences take their first step apart (Admit beam-searched ones)"));
    }
    if (s.task != nullptr && !CanAdmit(*s.task)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task ", s.task->id(), " cannot share a batch with task ", rows_.front().task->id(),
          " (a different architecture, vocabulary or precision)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ContinuousBatch::AdmitWithFirstStep(
    std::vector<Sentence> sentences, absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished) {
  TASKMOE_RETURN_IF_ERROR(CheckFirstStepApart(sentences));
  if (newcomers_ == nullptr) newcomers_ = std::make_unique<ContinuousBatch>();
  ContinuousBatch& newcomers = *newcomers_;
  newcomers.Clear();
  TASKMOE_RETURN_IF_ERROR(newcomers.Admit(std::move(sentences)));
  // From here on every sentence is told or joins.
  auto fail_all = [&](const absl::Status& failure) {
    for (Row& row : newcomers.rows_) {
      row.hypothesis.status = failure;
      on_finished(row.key, std::move(row.hypothesis));
    }
    newcomers.Clear();
  };
  if (absl::Status stepped = newcomers.Step(on_token, on_finished); !stepped.ok()) {
    fail_all(stepped);
    return absl::OkStatus();
  }
  if (absl::Status joined = JoinRows(newcomers); !joined.ok()) fail_all(joined);
  return absl::OkStatus();
}

absl::Status ContinuousBatch::AdmitDuringStep(
    std::vector<Sentence> sentences, absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished) {
  if (!stepping_) {
    return absl::FailedPreconditionError(
        "AdmitDuringStep: only between the layers of a step (from Step's after_each_layer)");
  }
  // rows_ does not change while the step runs, so this is the check made after it.
  TASKMOE_RETURN_IF_ERROR(CheckFirstStepApart(sentences));
  if (pending_ == nullptr) pending_ = std::make_unique<ContinuousBatch>();
  return pending_->AdmitWithFirstStep(std::move(sentences), on_token, on_finished);
}

absl::Status ContinuousBatch::JoinRows(ContinuousBatch& from) {
  if (from.empty()) return absl::OkStatus();
  for (const Row& row : from.rows_) {
    if (row.beam >= 0) return absl::InternalError("JoinRows: beam-searched rows cannot move");
  }
  if (rows_.empty()) {
    // Nothing running: the newcomers become the batch, state and all (buffers swap).
    std::swap(state_, from.state_);
  } else {
    TASKMOE_RETURN_IF_ERROR(state_.AppendRows(from.state_));
  }
  for (Row& row : from.rows_) rows_.push_back(std::move(row));
  sentences_ += from.sentences_;
  from.Clear();
  return absl::OkStatus();
}

void ContinuousBatch::JoinPending(
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished) {
  if (pending_ == nullptr || pending_->empty()) return;
  if (absl::Status joined = JoinRows(*pending_); !joined.ok()) {
    for (Row& row : pending_->rows_) {
      row.hypothesis.status = joined;
      on_finished(row.key, std::move(row.hypothesis));
    }
    pending_->Clear();
  }
}

absl::Status ContinuousBatch::KeepRows() {
  if (keep_.size() == rows_.size()) return absl::OkStatus();
  TASKMOE_RETURN_IF_ERROR(state_.SelectRows(keep_));
  // keep_ ascends, so every row moves down (or stays) and none is overwritten before it moves.
  for (size_t i = 0; i < keep_.size(); ++i) {
    if (static_cast<size_t>(keep_[i]) != i) rows_[i] = std::move(rows_[keep_[i]]);
  }
  rows_.resize(keep_.size());
  return absl::OkStatus();
}

absl::Status ContinuousBatch::RemoveIf(
    absl::FunctionRef<bool(uint64_t key)> leave,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_left) {
  keep_.clear();
  for (size_t r = 0; r < rows_.size();) {
    Row& row = rows_[r];
    const size_t block = row.beam < 0 ? 1 : beams_[row.beam]->size;
    if (leave(row.key)) {
      --sentences_;
      if (row.beam >= 0) {
        ReleaseBeamSlot(row.beam);
        on_left(row.key, Hypothesis());
      } else {
        on_left(row.key, std::move(row.hypothesis));
      }
    } else {
      for (size_t k = 0; k < block; ++k) keep_.push_back(static_cast<int32_t>(r + k));
    }
    r += block;
  }
  return KeepRows();
}

bool ContinuousBatch::StepBeam(
    size_t first, int64_t first_logits, int64_t per_row,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished) {
  const Row& head_row = rows_[first];
  BeamSearch& search = *beams_[head_row.beam];
  const int beam = search.size;
  const int64_t step = search.steps;
  search.scores.resize(beam);
  for (int k = 0; k < beam; ++k) search.scores[k] = rows_[first + k].beam_score;
  const int32_t eos = head_row.task->eos_id();
  const BeamStepInput in{.beam = beam,
                         .step = step,
                         .last_step = step + 1 >= head_row.step_limit,
                         .length_penalty = search.length_penalty,
                         .eos = eos,
                         .first_row = first_logits,
                         .scores = search.scores.data(),
                         .top_logits = top_values_.data<float>(),
                         .top_tokens = top_indices_.data<int32_t>(),
                         .log_sum_exp = log_sum_exp_.data<float>(),
                         .top_width = per_row,
                         .candidates_per_row = std::min<int64_t>(2 * beam, per_row)};
  const size_t finished_before = search.finished.size();
  const bool done = RankBeamCandidates(in, search.candidates, search.live, search.finished);
  // Finished rows come numbered like this step's logits rows; the back pointers go by rank.
  for (size_t i = finished_before; i < search.finished.size(); ++i) {
    search.finished[i].row -= static_cast<int32_t>(first_logits);
  }
  if (done) {
    Hypothesis h = search.finished.empty()
                       ? Hypothesis()
                       : BestFinished(search.finished, search.back.data(), beam);
    const uint64_t key = head_row.key;
    ReleaseBeamSlot(head_row.beam);
    --sentences_;
    on_finished(key, std::move(h));
    return true;
  }
  for (int k = 0; k < beam; ++k) {
    const bool has_live = k < static_cast<int>(search.live.size());
    const int32_t parent = has_live ? search.live[k].parent : 0;
    const int32_t token = has_live ? search.live[k].token : eos;
    search.back[step * beam + k] = {parent, token};
    keep_.push_back(static_cast<int32_t>(first + parent));
    next_rows_.push_back(rows_[first + parent]);
    next_rows_.back().last_token = token;
    next_rows_.back().beam_score = has_live ? search.live[k].score : kDeadHypothesisScore;
  }
  search.steps = step + 1;
  return false;
}

absl::Status ContinuousBatch::Step(
    absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished) {
  return Step(on_token, on_finished, [] {});
}

absl::Status ContinuousBatch::Step(
    absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished,
    absl::FunctionRef<void()> after_each_layer) {
  absl::Status stepped;
  kernels::RunCarried([&] {
    stepped = StepRunningRows(on_token, on_finished, after_each_layer);
    JoinPending(on_finished);  // after a failure, removed by the caller with every other row
  });
  return stepped;
}

absl::Status ContinuousBatch::StepRunningRows(
    absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished,
    absl::FunctionRef<void()> after_each_layer) {
  if (rows_.empty()) return absl::OkStatus();
  BuildGroups(rows_, groups_);
  tokens_.resize(rows_.size());
  int64_t beam_rows = 0;
  int largest_beam = 1;
  // One greedy row that reports its score makes the whole step's head exact.
  head_.log_sum_exp_kind = kernels::GreedyLogSumExp::kNone;
  for (size_t r = 0; r < rows_.size(); ++r) {
    tokens_[r] = rows_[r].last_token;
    if (rows_[r].beam < 0 && rows_[r].exact_scores) {
      head_.log_sum_exp_kind = kernels::GreedyLogSumExp::kExact;
    }
    if (rows_[r].beam >= 0) {
      ++beam_rows;
      largest_beam = std::max(largest_beam, beams_[rows_[r].beam]->size);
    }
  }
  stepping_ = true;
  const absl::Status stepped =
      TransformerModel::DecodeStepGreedy(groups_, tokens_, state_, head_, after_each_layer);
  stepping_ = false;
  TASKMOE_RETURN_IF_ERROR(stepped);
  // Beam search ranks the best 2 * beam continuations of each row (enough: at most `beam` of
  // the chosen ones end in EOS); one top-k for every beam row, each sentence reading the first
  // 2 * its beam of them (the top-k is sorted, ties by index, so those are its own top-k).
  int64_t per_row = 0;
  if (beam_rows > 0) {
    per_row = std::min<int64_t>(2 * largest_beam, head_.logits.dim(1));
    TASKMOE_RETURN_IF_ERROR(kernels::TopK(head_.logits, per_row, top_values_, top_indices_));
    TASKMOE_RETURN_IF_ERROR(kernels::ArgMaxAndLogSumExp(head_.logits, best_, log_sum_exp_));
  }
  // The next step's rows: greedy rows that go on, and each going beam's rebuilt block.
  keep_.clear();
  next_rows_.clear();
  int64_t logits_row = 0;
  for (size_t r = 0; r < rows_.size();) {
    Row& row = rows_[r];
    if (row.beam >= 0) {
      const int beam = beams_[row.beam]->size;
      StepBeam(r, logits_row, per_row, on_finished);
      logits_row += beam;
      r += beam;
      continue;
    }
    const int32_t best = head_.best.data<int32_t>()[r];
    Hypothesis& h = row.hypothesis;
    if (row.exact_scores) {
      h.score += head_.best_logit.data<float>()[r] - head_.log_sum_exp.data<float>()[r];
    }
    on_token(row.key, best);
    row.last_token = best;
    bool finished = false;
    if (best == row.task->eos_id() && !row.ignore_eos) {
      h.reached_eos = true;
      finished = true;
    } else {
      h.tokens.push_back(best);
      finished = state_.positions[r] >= row.step_limit;
    }
    if (finished) {
      --sentences_;
      on_finished(row.key, std::move(h));
    } else {
      keep_.push_back(static_cast<int32_t>(r));
      next_rows_.push_back(std::move(row));
    }
    ++r;
  }
  if (beam_rows == 0 && keep_.size() != rows_.size()) FillHolesFromTheEnd();
  if (keep_.size() != rows_.size() || beam_rows > 0) {
    TASKMOE_RETURN_IF_ERROR(state_.SelectRows(keep_));
  }
  std::swap(rows_, next_rows_);
  return absl::OkStatus();
}

void ContinuousBatch::FillHolesFromTheEnd() {
  // keep_ ascends; the n survivors below index n stay where they are, and those at n or above
  // (the last ones of keep_) fill the holes finished rows left, in order.
  const auto n = static_cast<int32_t>(keep_.size());
  const auto first_tail =
      static_cast<size_t>(std::lower_bound(keep_.begin(), keep_.end(), n) - keep_.begin());
  filled_keep_.resize(n);
  filled_rows_.resize(n);
  size_t staying = 0, tail = first_tail;
  for (int32_t position = 0; position < n; ++position) {
    const size_t from = staying < first_tail && keep_[staying] == position ? staying++ : tail++;
    filled_keep_[position] = keep_[from];
    filled_rows_[position] = std::move(next_rows_[from]);
  }
  std::swap(keep_, filled_keep_);
  std::swap(next_rows_, filled_rows_);
}

void ContinuousBatch::Clear() {
  for (size_t r = 0; r < rows_.size(); ++r) {
    if (rows_[r].beam >= 0 && (r == 0 || rows_[r - 1].beam != rows_[r].beam)) {
      ReleaseBeamSlot(rows_[r].beam);
    }
  }
  rows_.clear();
  sentences_ = 0;
  if (pending_ != nullptr) pending_->Clear();
}

}  // namespace taskmoe::models
