// The scheduler's continuous mode: each worker's running batch of every task, fed from the task
// queues between decoding steps (scheduler.h says the rules).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/log.h"
#include "server/scheduler.h"

namespace taskmoe::server {
namespace {

// Adds `count` to the entry of `metrics` in a short list of per-task counts.
void CountFor(TaskMetrics* metrics, int64_t count,
              std::vector<std::pair<TaskMetrics*, int64_t>>& counts) {
  for (auto& [m, n] : counts) {
    if (m == metrics) {
      n += count;
      return;
    }
  }
  counts.push_back({metrics, count});
}

}  // namespace

uint64_t Scheduler::Slots::Add(Item item) {
  if (free.empty()) {
    items.push_back(std::move(item));
    return items.size() - 1;
  }
  const uint64_t key = free.back();
  free.pop_back();
  items[key] = std::move(item);
  return key;
}

Scheduler::Item Scheduler::Slots::Release(uint64_t key) {
  Item item = std::move(items[key]);
  items[key] = Item();
  free.push_back(key);
  return item;
}

Scheduler::TaskQueue* Scheduler::OldestQueue() {
  TaskQueue* oldest = nullptr;
  for (auto& [task, queue] : queues_) {
    if (queue.items.empty()) continue;
    if (oldest == nullptr || queue.items.front().enqueued < oldest->items.front().enqueued) {
      oldest = &queue;
    }
  }
  return oldest;
}

std::vector<Scheduler::Item> Scheduler::TakeJoining(const models::ContinuousBatch& batch,
                                                    int64_t budget, bool during_step) {
  std::vector<Item> joining;
  // When the oldest queued sentence's model cannot share the running batch (another
  // architecture or precision), nothing joins until the batch has drained; then it starts
  // the next one.
  const TaskQueue* oldest_queue = OldestQueue();
  if (oldest_queue == nullptr || !batch.CanAdmit(oldest_queue->items.front().request->task())) {
    return joining;
  }
  // Sentences, as in a per-task batch (a beam-searched one is beam_size rows).
  int64_t free_rows = options_.max_batch_sentences - batch.sentences();
  if (free_rows <= 0 || (during_step && budget <= 0)) return joining;
  int64_t tokens = 0;
  const models::TaskModel* family = nullptr;  // of the first newcomer, when the batch is empty
  auto joinable = [&](const Item& item) {
    const models::TaskModel& task = item.request->task();
    if (!batch.CanAdmit(task)) return false;
    if (during_step && item.request->settings().beam_size > 1) return false;
    return family == nullptr || family->CanShareBatch(task);
  };
  // Queues whose head may join, with what each took so far.
  std::vector<std::pair<TaskQueue*, int64_t>> candidates;
  for (auto& [task, queue] : queues_) {
    if (!queue.items.empty()) candidates.push_back({&queue, 0});
  }
  if (candidates.empty()) return joining;
  // A fair share of the free rows for every waiting task first, then the rest oldest first.
  const int64_t share = std::max<int64_t>(1, free_rows / static_cast<int64_t>(candidates.size()));
  for (const bool fair : {true, false}) {
    while (free_rows > 0) {
      std::pair<TaskQueue*, int64_t>* oldest = nullptr;
      for (auto& candidate : candidates) {
        TaskQueue& queue = *candidate.first;
        if (queue.items.empty() || (fair && candidate.second >= share) ||
            !joinable(queue.items.front())) {
          continue;
        }
        if (oldest == nullptr ||
            queue.items.front().enqueued < oldest->first->items.front().enqueued) {
          oldest = &candidate;
        }
      }
      if (oldest == nullptr) break;
      TaskQueue& queue = *oldest->first;
      Item& head = queue.items.front();
      // At a step boundary the first sentence always joins, however long.
      if ((during_step || !joining.empty()) && tokens + head.tokens > budget) {
        free_rows = 0;  // the step's admission budget is spent
        break;
      }
      if (family == nullptr) family = &head.request->task();
      tokens += head.tokens;
      queue.tokens -= head.tokens;
      joining.push_back(std::move(head));
      queue.items.pop_front();
      queue.metrics->queue_depth->Set(static_cast<double>(queue.items.size()));
      ++oldest->second;
      --free_rows;
    }
  }
  return joining;
}

void Scheduler::FinishAll(models::ContinuousBatch& batch, Slots& slots,
                          const absl::Status& status) {
  batch
      .RemoveIf([](uint64_t) { return true; },
                [&](uint64_t key, models::Hypothesis h) {
                  Item item = slots.Release(key);
                  h.status = status;
                  item.request->Finish(item.sentence, std::move(h));
                })
      .IgnoreError();
  batch.Clear();
}

void Scheduler::ContinuousWorkerLoop() {
  // Kept for the worker's life, so that step after step reuses their buffers.
  models::ContinuousBatch batch;
  Slots slots;
  WorkerProgress progress;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    // The first sentence always joins; then at most max_admit_tokens of source per step, so
    // that encoding newcomers never stalls the running rows for long (a fresh batch takes a
    // full batch's worth, as a per-task batch would).
    std::vector<Item> joining = TakeJoining(
        batch, batch.empty() ? options_.max_batch_tokens : options_.max_admit_tokens, false);
    if (batch.empty() && joining.empty()) {
      work_.wait(lock);
      continue;
    }
    if (!joining.empty()) work_.notify_one();  // more may wait
    lock.unlock();
    RunContinuousStep(joining, batch, slots, progress);
    progress.Deliver();  // the step's tokens and finished sentences
    lock.lock();
  }
  lock.unlock();
  FinishAll(batch, slots, absl::UnavailableError("the server shut down before decoding finished"));
}

void Scheduler::AdmitJoining(
    std::vector<Item>& joining, bool during_step, models::ContinuousBatch& batch, Slots& slots,
    absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
    absl::FunctionRef<void(uint64_t key, models::Hypothesis h)> on_finished) {
  const absl::Time start = absl::Now();
  std::vector<models::ContinuousBatch::Sentence> sentences;
  std::vector<uint64_t> keys;
  for (Item& item : joining) {
    if (item.request->ShouldStop()) {
      FinishUnrun(item, item.request->StopStatus());
      continue;
    }
    models::DecodeSettings settings = item.request->settings();
    if (options_.ignore_eos && settings.beam_size == 1) {
      // A forced-length benchmark decodes exactly max_output_tokens.
      settings.ignore_eos = true;
      settings.max_output_ratio = 0.0f;
      settings.max_output_offset = 0;
    }
    item.metrics->queue_duration->Observe(absl::ToDoubleSeconds(start - item.enqueued));
    item.metrics->input_tokens->Increment(static_cast<double>(item.tokens));
    std::shared_ptr<const models::TaskModel> task = item.request->shared_task();
    std::vector<int32_t> source = item.request->source(item.sentence);
    const uint64_t key = slots.Add(std::move(item));
    sentences.push_back({std::move(task), std::move(source), settings, key});
    keys.push_back(key);
  }
  if (sentences.empty()) return;
  const ContinuousBatchMetrics& step_metrics = metrics_.continuous();
  (during_step ? step_metrics.admitted_rows_between_layers : step_metrics.admitted_rows)
      ->Observe(static_cast<double>(sentences.size()));
  // Per task: the sentences joining together and their source tokens.
  slots.counts.clear();
  slots.token_counts.clear();
  for (uint64_t key : keys) {
    CountFor(slots.items[key].metrics, 1, slots.counts);
    CountFor(slots.items[key].metrics, slots.items[key].tokens, slots.token_counts);
  }
  for (const auto& [m, n] : slots.counts) m->batch_size->Observe(static_cast<double>(n));
  for (const auto& [m, n] : slots.token_counts) m->batch_tokens->Observe(static_cast<double>(n));
  auto refused = [&](const absl::Status& admitted, const std::vector<uint64_t>& refused_keys) {
    if (admitted.ok()) return;
    Log(LogLevel::kError, absl::StrCat("admitting ", refused_keys.size(),
                                       " sentences to a batch failed: ", admitted.ToString()));
    for (uint64_t key : refused_keys) {
      FinishUnrun(slots.Release(key),
                  absl::InternalError(absl::StrCat("decoding failed: ", admitted.message())));
    }
  };
  if (during_step) {
    refused(batch.AdmitDuringStep(std::move(sentences), on_token, on_finished), keys);
    return;
  }
  // With --prefill_first, greedy newcomers to a running batch take their first step apart;
  // with --prefill_first_when_mixed, those whose task is not the only one of the running rows.
  std::vector<models::ContinuousBatch::Sentence> apart;
  std::vector<uint64_t> apart_keys;
  if ((options_.prefill_first || options_.prefill_first_when_mixed) && !batch.empty()) {
    size_t kept = 0;
    for (size_t i = 0; i < sentences.size(); ++i) {
      if (sentences[i].settings.beam_size == 1 &&
          (options_.prefill_first || !batch.AllRowsOf(*sentences[i].task))) {
        apart.push_back(std::move(sentences[i]));
        apart_keys.push_back(keys[i]);
      } else {
        if (kept != i) sentences[kept] = std::move(sentences[i]);  // never onto itself
        keys[kept++] = keys[i];
      }
    }
    sentences.resize(kept);
    keys.resize(kept);
  }
  if (!sentences.empty()) refused(batch.Admit(std::move(sentences)), keys);
  if (!apart.empty()) {
    refused(batch.AdmitWithFirstStep(std::move(apart), on_token, on_finished), apart_keys);
  }
}

void Scheduler::RunContinuousStep(std::vector<Item>& joining, models::ContinuousBatch& batch,
                                  Slots& slots, WorkerProgress& progress) {
  const ContinuousBatchMetrics& step_metrics = metrics_.continuous();
  auto on_token = [&](uint64_t key, int32_t token) {
    const Item& item = slots.items[key];
    item.request->AddToken(item.sentence, token, &progress.batch);
  };
  auto on_finished = [&](uint64_t key, models::Hypothesis h) {
    Item item = slots.Release(key);
    if (!h.status.ok()) {
      // A newcomer's first step apart (--prefill_first) failed in the engine.
      h.status = absl::InternalError(absl::StrCat("decoding failed: ", h.status.message()));
    }
    item.metrics->generated_tokens->Increment(static_cast<double>(h.tokens.size()));
    item.request->Finish(item.sentence, std::move(h), &progress.batch);
  };
  // Source tokens admitted in this step so far, against max_admit_tokens.
  int64_t admitted_tokens = 0;
  for (const Item& item : joining) admitted_tokens += item.tokens;
  // Admission: newcomers whose request is still wanted, encoded together.
  if (!joining.empty()) {
    AdmitJoining(joining, false, batch, slots, on_token, on_finished);
    progress.Deliver();  // first tokens of newcomers that took their first step apart
  }
  // Cancelled and expired rows leave before the step spends anything on them.
  absl::Status left = batch.RemoveIf(
      [&](uint64_t key) {
        return abort_running_.load(std::memory_order_relaxed) ||
               slots.items[key].request->ShouldStop();
      },
      [&](uint64_t key, models::Hypothesis h) {
        Item item = slots.Release(key);
        h.status = abort_running_.load()
                       ? absl::UnavailableError("the server shut down before decoding finished")
                       : item.request->StopStatus();
        if (h.status.ok()) h.status = absl::CancelledError("decoding was cancelled");
        item.metrics->generated_tokens->Increment(static_cast<double>(h.tokens.size()));
        item.request->Finish(item.sentence, std::move(h), &progress.batch);
      });
  if (!left.ok()) {
    Log(LogLevel::kError, absl::StrCat("removing rows from a batch failed: ", left.ToString()));
    FinishAll(batch, slots, absl::InternalError("decoding failed"));
    return;
  }
  if (batch.empty()) return;

  step_metrics.step_rows->Observe(static_cast<double>(batch.rows()));
  const int step_tasks = batch.distinct_tasks();
  step_metrics.step_tasks->Observe(static_cast<double>(step_tasks));
  // Per task: its rows in this step (a beam-searched sentence's hypotheses).
  slots.counts.clear();
  for (const Item& item : slots.items) {
    if (item.request != nullptr) {
      CountFor(item.metrics, models::ContinuousBatch::RowsOf(item.request->settings()),
               slots.counts);
    }
  }
  for (const auto& [m, n] : slots.counts) m->step_rows->Observe(static_cast<double>(n));
  if (options_.step_delay > absl::ZeroDuration()) absl::SleepFor(options_.step_delay);
  // With --prefill_first, between two layers the step waits while newcomers are encoded and
  // take their first step: they wait for a layer of this step, not all of it. (Encoding them
  // there without their first step would gain nothing: the first token would still come with
  // the next whole step, and the worker does the same work in another order.) With
  // --prefill_first_when_mixed, only in a step over more than one task.
  const bool between_layers =
      options_.prefill_first || (options_.prefill_first_when_mixed && step_tasks > 1);
  auto admit_between_layers = [&] {
    if (!between_layers) return;
    std::vector<Item> newcomers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      newcomers = TakeJoining(batch, options_.max_admit_tokens - admitted_tokens, true);
      if (!newcomers.empty()) work_.notify_one();  // more may wait
    }
    if (newcomers.empty()) return;
    for (const Item& item : newcomers) admitted_tokens += item.tokens;
    AdmitJoining(newcomers, true, batch, slots, on_token, on_finished);
    progress.Deliver();  // their first tokens, before the step goes on
  };
  absl::Status stepped = batch.Step(on_token, on_finished, admit_between_layers);
  if (!stepped.ok()) {
    Log(LogLevel::kError,
        absl::StrCat("a decoding step of ", batch.rows(), " rows failed: ", stepped.ToString()));
    FinishAll(batch, slots,
              absl::InternalError(absl::StrCat("decoding failed: ", stepped.message())));
  }
}

}  // namespace taskmoe::server
