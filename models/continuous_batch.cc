// Greedy decoding of a batch that sentences join and leave between steps.
#include "models/continuous_batch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace taskmoe::models {

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

bool ContinuousBatch::CanAdmit(const TaskModel& task) const {
  return rows_.empty() ||
         TransformerModel::CanShareBatch(rows_.front().task->transformer(), task.transformer());
}

void ContinuousBatch::BuildGroups(const std::vector<Row>& rows,
                                  std::vector<RowGroup>& groups) const {
  groups.clear();
  const TaskModel* current = nullptr;
  for (const Row& row : rows) {
    if (row.task.get() != current) {
      current = row.task.get();
      groups.push_back({&current->transformer(), &current->route(), 0});
    }
    ++groups.back().rows;
  }
}

absl::Status ContinuousBatch::Admit(std::vector<Sentence> sentences) {
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
    if (s.settings.beam_size != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("a continuous batch decodes greedily; sentence ", i, " asks for beam ",
                       s.settings.beam_size));
    }
    if (s.settings.max_output_tokens < 1 || !(s.settings.max_output_ratio >= 0.0f) ||
        s.settings.max_output_offset < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sentence ", i, ": output limits must be >= 1 token, ratio and offset >= 0"));
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
  int64_t largest_limit = 1;
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
    row.hypothesis.tokens.reserve(limit);
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
  if (absl::Status added =
          TransformerModel::AddRows(joining_groups_, encoder_, largest_limit, state_);
      !added.ok()) {
    // Some layers may have taken the new rows: back to the running ones.
    keep_.resize(running);
    for (int64_t r = 0; r < running; ++r) keep_[r] = static_cast<int32_t>(r);
    state_.SelectRows(keep_).IgnoreError();
    return added;
  }
  for (Row& row : joining) rows_.push_back(std::move(row));
  return absl::OkStatus();
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
  for (size_t r = 0; r < rows_.size(); ++r) {
    if (leave(rows_[r].key)) {
      on_left(rows_[r].key, std::move(rows_[r].hypothesis));
    } else {
      keep_.push_back(static_cast<int32_t>(r));
    }
  }
  return KeepRows();
}

absl::Status ContinuousBatch::Step(
    absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, Hypothesis hypothesis)> on_finished) {
  if (rows_.empty()) return absl::OkStatus();
  BuildGroups(rows_, groups_);
  tokens_.resize(rows_.size());
  for (size_t r = 0; r < rows_.size(); ++r) tokens_[r] = rows_[r].last_token;
  TASKMOE_RETURN_IF_ERROR(TransformerModel::DecodeStepGreedy(groups_, tokens_, state_, head_));
  keep_.clear();
  for (size_t r = 0; r < rows_.size(); ++r) {
    Row& row = rows_[r];
    const int32_t best = head_.best.data<int32_t>()[r];
    Hypothesis& h = row.hypothesis;
    h.score += head_.best_logit.data<float>()[r] - head_.log_sum_exp.data<float>()[r];
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
      on_finished(row.key, std::move(h));
    } else {
      keep_.push_back(static_cast<int32_t>(r));
    }
  }
  return KeepRows();
}

void ContinuousBatch::Clear() { rows_.clear(); }

}  // namespace taskmoe::models
