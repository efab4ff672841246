// The dynamic batcher's queues and workers.
#include "server/scheduler.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/log.h"

namespace taskmoe::server {

Scheduler::Scheduler(const BatchingOptions& options, Metrics& metrics)
    : options_(options), metrics_(metrics) {
  const bool continuous = options_.mode == BatchingOptions::Mode::kContinuous;
  for (int i = 0; i < options_.workers; ++i) {
    workers_.emplace_back([this, continuous] {
      if (continuous) {
        ContinuousWorkerLoop();
      } else {
        WorkerLoop();
      }
    });
  }
}

Scheduler::~Scheduler() { Stop(); }

absl::Status Scheduler::Enqueue(const std::shared_ptr<RequestState>& request) {
  const std::string& task = request->task().id();
  int64_t tokens = 0;
  for (int s = 0; s < request->size(); ++s) tokens += request->source(s).size();
  // A request's sentences queue longest first (stably), as the Translator sorts them, so that
  // the batches a long text spans hold sentences of similar length and pad little.
  // Sorted before taking the lock: it reads only the request.
  std::vector<int> order(request->size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return request->source(a).size() > request->source(b).size();
  });
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  TaskQueue& queue = queues_[task];
  if (queue.metrics == nullptr) queue.metrics = &metrics_.ForTask(task);
  // A request larger than the whole queue would never fit: the caller's to fix, not "retry".
  if (request->size() > options_.max_queue_sentences) {
    return absl::InvalidArgumentError(absl::StrCat(
        "texts: ", request->size(), " sentences, more than the ", options_.max_queue_sentences,
        " a task's queue holds (--max_queue_sentences); split the request"));
  }
  const int64_t queued = static_cast<int64_t>(queue.items.size());
  if (queued + request->size() > options_.max_queue_sentences) {
    return absl::ResourceExhaustedError(
        absl::StrCat("task ", task, " is overloaded: its queue holds ", queued, " of at most ",
                     options_.max_queue_sentences, " sentences and this request adds ",
                     request->size(), "; retry later"));
  }
  int64_t queued_in_all = 0;
  for (const auto& [id, other] : queues_) queued_in_all += static_cast<int64_t>(other.items.size());
  if (queued_in_all + request->size() > options_.max_total_queue_sentences) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server is overloaded: its queues hold ", queued_in_all, " of at most ",
                     options_.max_total_queue_sentences,
                     " sentences in all (--max_total_queue_sentences) and this request adds ",
                     request->size(), "; retry later"));
  }
  const absl::Time now = absl::Now();
  for (int s : order) {
    queue.items.push_back(
        {request, s, static_cast<int>(request->source(s).size()), now, queue.metrics});
  }
  queue.tokens += tokens;
  queue.metrics->queue_depth->Set(static_cast<double>(queue.items.size()));
  work_.notify_one();
  return absl::OkStatus();
}

void Scheduler::FinishUnrun(const Item& item, absl::Status status) {
  models::Hypothesis h;
  h.status = std::move(status);
  item.request->Finish(item.sentence, std::move(h));
}

void Scheduler::Withdraw(const RequestState& request) {
  std::vector<Item> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queues_.find(request.task().id());
    if (it == queues_.end()) return;
    TaskQueue& queue = it->second;
    std::deque<Item> kept;
    for (Item& item : queue.items) {
      if (item.request.get() == &request) {
        queue.tokens -= item.tokens;
        removed.push_back(std::move(item));
      } else {
        kept.push_back(std::move(item));
      }
    }
    queue.items = std::move(kept);
    queue.metrics->queue_depth->Set(static_cast<double>(queue.items.size()));
  }
  for (const Item& item : removed) FinishUnrun(item, request.StopStatus());
}

void Scheduler::Stop() {
  std::vector<Item> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    abort_running_.store(true);
    for (auto& [task, queue] : queues_) {
      for (Item& item : queue.items) removed.push_back(std::move(item));
      queue.items.clear();
      queue.tokens = 0;
      queue.metrics->queue_depth->Set(0);
    }
  }
  work_.notify_all();
  for (const Item& item : removed) {
    FinishUnrun(item, absl::UnavailableError("the server shut down before decoding this text"));
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

std::vector<Scheduler::Item> Scheduler::TakeBatch(absl::Time now, absl::Time& wake,
                                                  TaskMetrics*& metrics) {
  wake = absl::InfiniteFuture();
  TaskQueue* best = nullptr;
  for (auto& [task, queue] : queues_) {
    if (queue.items.empty()) continue;
    const absl::Time due = queue.items.front().enqueued + options_.max_queue_delay;
    const bool ready = static_cast<int>(queue.items.size()) >= options_.max_batch_sentences ||
                       queue.tokens >= options_.max_batch_tokens || now >= due;
    if (!ready) {
      wake = std::min(wake, due);
    } else if (best == nullptr || queue.items.front().enqueued < best->items.front().enqueued) {
      best = &queue;
    }
  }
  if (best == nullptr) return {};
  metrics = best->metrics;
  return TakeCompatible(*best);
}

std::vector<Scheduler::Item> Scheduler::TakeCompatible(TaskQueue& queue) {
  // The head decides the model version and settings; compatible sentences behind it join in
  // queue order while the limits allow (the first one always fits, however long).
  std::vector<Item> batch;
  if (queue.items.empty()) return batch;
  const models::TaskModel* version = &queue.items.front().request->task();
  const models::DecodeSettings settings = queue.items.front().request->settings();
  int64_t tokens = 0;
  std::deque<Item> kept;
  for (Item& item : queue.items) {
    const bool compatible =
        &item.request->task() == version && item.request->settings() == settings;
    const bool fits = static_cast<int>(batch.size()) < options_.max_batch_sentences &&
                      (batch.empty() || tokens + item.tokens <= options_.max_batch_tokens);
    if (compatible && fits) {
      tokens += item.tokens;
      queue.tokens -= item.tokens;
      batch.push_back(std::move(item));
    } else {
      kept.push_back(std::move(item));
    }
  }
  queue.items = std::move(kept);
  queue.metrics->queue_depth->Set(static_cast<double>(queue.items.size()));
  return batch;
}

void Scheduler::WorkerLoop() {
  // Kept for the worker's life: batch after batch reuses its buffers (DecodeWorkspace says why).
  models::DecodeWorkspace workspace;
  WorkerProgress progress;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    absl::Time wake;
    TaskMetrics* metrics = nullptr;
    std::vector<Item> batch = TakeBatch(absl::Now(), wake, metrics);
    if (batch.empty()) {
      if (wake == absl::InfiniteFuture()) {
        work_.wait(lock);
      } else {
        work_.wait_for(lock, absl::ToChronoMicroseconds(wake - absl::Now()));
      }
      continue;
    }
    // Another worker may serve another ready queue meanwhile.
    work_.notify_one();
    lock.unlock();
    RunBatch(batch, *metrics, workspace, progress);
    lock.lock();
  }
}

void Scheduler::RunBatch(std::vector<Item>& batch, TaskMetrics& metrics,
                         models::DecodeWorkspace& workspace, WorkerProgress& progress) {
  const absl::Time start = absl::Now();
  // Sentences whose request already stopped leave before any work is spent on them.
  std::vector<Item> live;
  for (Item& item : batch) {
    if (item.request->ShouldStop()) {
      FinishUnrun(item, item.request->StopStatus());
    } else {
      live.push_back(std::move(item));
    }
  }
  if (live.empty()) return;
  const RequestState& head = *live.front().request;
  const models::TaskModel& task = head.task();
  const models::DecodeSettings& settings = head.settings();

  std::vector<std::vector<int32_t>> sources;
  int64_t tokens = 0;
  for (const Item& item : live) {
    sources.push_back(item.request->source(item.sentence));
    tokens += item.tokens;
    metrics.queue_duration->Observe(absl::ToDoubleSeconds(start - item.enqueued));
  }
  metrics.batch_size->Observe(static_cast<double>(live.size()));
  metrics.batch_tokens->Observe(static_cast<double>(tokens));
  metrics.input_tokens->Increment(static_cast<double>(tokens));

  models::DecodeOptions decode(settings);
  decode.ignore_eos = options_.ignore_eos && settings.beam_size == 1;
  if (decode.ignore_eos) {
    // A forced-length benchmark decodes exactly max_output_tokens; otherwise the per-sentence
    // limit applies as in taskmoe-translate.
    decode.max_output_ratio = 0.0f;
    decode.max_output_offset = 0;
  }
  decode.is_cancelled = [&](int s) {
    return abort_running_.load(std::memory_order_relaxed) || live[s].request->ShouldStop();
  };
  if (settings.beam_size == 1) {
    decode.on_token = [&](int s, int32_t token) {
      live[s].request->AddToken(live[s].sentence, token, &progress.batch);
    };
  }
  decode.on_step = [&](int64_t, int rows) {
    progress.Deliver();  // the previous step's tokens
    metrics.step_rows->Observe(static_cast<double>(rows));
    if (options_.step_delay > absl::ZeroDuration()) absl::SleepFor(options_.step_delay);
  };
  absl::StatusOr<std::vector<models::Hypothesis>> hypotheses =
      task.Decode(sources, decode, &workspace);
  if (!hypotheses.ok()) {
    progress.Deliver();  // the tokens decoded before the failure
    Log(LogLevel::kError, absl::StrCat("task ", task.id(), ": decoding a batch of ", live.size(),
                                       " failed: ", hypotheses.status().ToString()));
    for (const Item& item : live) {
      FinishUnrun(item, absl::InternalError(
                            absl::StrCat("decoding failed: ", hypotheses.status().message())));
    }
    return;
  }
  int64_t generated = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    models::Hypothesis& h = (*hypotheses)[i];
    generated += static_cast<int64_t>(h.tokens.size());
    if (!h.status.ok()) {
      h.status = abort_running_.load()
                     ? absl::UnavailableError("the server shut down before decoding finished")
                     : live[i].request->StopStatus();
      if (h.status.ok()) h.status = absl::CancelledError("decoding was cancelled");
    }
    live[i].request->Finish(live[i].sentence, std::move(h), &progress.batch);
  }
  progress.Deliver();  // the last step's tokens and the finished sentences, together
  metrics.generated_tokens->Increment(static_cast<double>(generated));
  Log(LogLevel::kDebug, absl::StrCat("task ", task.id(), ": batch of ", live.size(), " sentences, ",
                                     tokens, " source tokens, ", generated, " generated in ",
                                     absl::FormatDuration(absl::Now() - start)));
}

}  // namespace taskmoe::server
