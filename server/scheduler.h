// Scheduler: the dynamic batcher. Each task has a bounded queue of sentences; a pool of worker
// threads (shared by all tasks, so the cores are not oversubscribed) decodes them, in one of two
// modes (docs/api.md "Batching"):
//
// - Continuous (the default): each worker runs one batch of sentences (greedy and beam search)
//   of every task whose models can share a batch (models::ContinuousBatch). Between two
//   decoding steps it admits queued sentences, oldest first with a fair share of the free rows
//   for every waiting task, at most max_batch_sentences sentences (a beam-searched one is
//   beam_size rows) and max_admit_tokens of source per step; with prefill_first, greedy ones
//   take their first step by themselves, also while a step waits between two decoder layers
//   (joining its rows when it ends), so that a newcomer's first token need not wait for a
//   whole step (with prefill_first_when_mixed only where the running rows are not all of the
//   newcomer's task, and between layers of steps over several tasks). Finished
//   sentences leave at once,
//   cancelled and expired ones at the next step. When the oldest queued sentence's model cannot
//   share the running batch (another architecture or precision), the worker admits nothing more,
//   lets its batch drain, and starts the next one.
// - Per task: a worker takes a batch from the task whose oldest sentence has waited longest,
//   once that queue is ready (a full batch, or its oldest sentence has waited max_queue_delay),
//   and decodes it to its end.
//
// A per-task batch holds sentences of one model version with equal decode settings, from any
// number of requests; a request's sentences may span batches.
//
// The workers do not run the requests' progress listeners (a stream's message to gRPC)
// themselves: each worker's own ProgressRelay does, once a step has decoded, and once newcomers
// took their first step (progress_relay.h).
#ifndef TASKMOE_SERVER_SCHEDULER_H_
#define TASKMOE_SERVER_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "models/continuous_batch.h"
#include "models/decoding.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/progress_relay.h"
#include "server/request_state.h"

namespace taskmoe::server {

class Scheduler {
 public:
  Scheduler(const BatchingOptions& options, Metrics& metrics);
  ~Scheduler();  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues every sentence of `request` on its task's queue, or none of them:
  // RESOURCE_EXHAUSTED when they do not fit (the task's queue, or all queues together),
  // INVALID_ARGUMENT when they never could (more sentences than a task's queue holds),
  // UNAVAILABLE once stopping.
  absl::Status Enqueue(const std::shared_ptr<RequestState>& request);

  // Finishes the request's sentences that are still queued with its StopStatus() (for a
  // cancelled or expired request, so it frees its queue places at once).
  void Withdraw(const RequestState& request);

  // Refuses new work, finishes queued sentences as UNAVAILABLE, makes running batches stop at
  // their next step, and joins the workers. Idempotent.
  void Stop();

 private:
  struct Item {
    std::shared_ptr<RequestState> request;
    int sentence = 0;
    int tokens = 0;
    absl::Time enqueued;
    TaskMetrics* metrics = nullptr;
  };
  struct TaskQueue {
    std::deque<Item> items;
    int64_t tokens = 0;
    TaskMetrics* metrics = nullptr;
  };

  // Rows of a worker's continuous batch: the item of each key (ContinuousBatch::Sentence::key),
  // and per-task counts reused step after step for the metrics.
  struct Slots {
    std::vector<Item> items;
    std::vector<uint64_t> free;
    std::vector<std::pair<TaskMetrics*, int64_t>> counts, token_counts;
    uint64_t Add(Item item);
    Item Release(uint64_t key);
  };

  void WorkerLoop();
  void ContinuousWorkerLoop();  // scheduler_continuous.cc
  // Picks a ready queue and removes a batch from it; empty when none is ready (then `wake`
  // says when one will be). Called with mu_ held.
  std::vector<Item> TakeBatch(absl::Time now, absl::Time& wake, TaskMetrics*& metrics);
  // Removes the batch `queue`'s head starts: compatible sentences in queue order while the
  // limits allow. Called with mu_ held.
  std::vector<Item> TakeCompatible(TaskQueue& queue);
  // A worker's progress listeners: queued in `batch` while it decodes, run by its own relay
  // thread once delivered (progress_relay.h). Its destructor delivers what is still queued
  // (a listener never run would leave its call waiting for good) and lets the relay run it.
  struct WorkerProgress {
    WorkerProgress() = default;
    WorkerProgress(const WorkerProgress&) = delete;
    WorkerProgress& operator=(const WorkerProgress&) = delete;
    ~WorkerProgress() { Deliver(); }  // before `relay`'s destructor, which runs it

    void Deliver() { relay.Deliver(batch); }

    ProgressBatch batch;
    ProgressRelay relay;
  };

  // Decodes `batch` to its end; its requests' listeners are delivered at each step and at the
  // end.
  void RunBatch(std::vector<Item>& batch, TaskMetrics& metrics, models::DecodeWorkspace& workspace,
                WorkerProgress& progress);
  // The queue whose head has waited longest; null when all are empty. Called with mu_ held.
  TaskQueue* OldestQueue();
  // The sentences that join `batch` now (see the file comment), at most `budget` source tokens
  // (at a step boundary the first always joins); none while the oldest queued sentence cannot
  // share the batch; `during_step`: greedy ones only, into a step between two layers. Called
  // with mu_ held.
  std::vector<Item> TakeJoining(const models::ContinuousBatch& batch, int64_t budget,
                                bool during_step);
  // Admits `joining`, lets stopped rows leave and decodes one step of `batch`, admitting
  // newcomers between its layers too (prefill_first, or prefill_first_when_mixed when the step
  // runs more than one task). Listeners are delivered after each admission; the caller
  // delivers the step's.
  void RunContinuousStep(std::vector<Item>& joining, models::ContinuousBatch& batch, Slots& slots,
                         WorkerProgress& progress);
  // Encodes `joining` into `batch`: at a step boundary, or during its step (between two
  // layers). Sentences whose request stopped, or that the batch refuses, are finished here.
  void AdmitJoining(std::vector<Item>& joining, bool during_step, models::ContinuousBatch& batch,
                    Slots& slots, absl::FunctionRef<void(uint64_t key, int32_t token)> on_token,
                    absl::FunctionRef<void(uint64_t key, models::Hypothesis h)> on_finished);
  // Finishes every row of `batch` with `status`.
  void FinishAll(models::ContinuousBatch& batch, Slots& slots, const absl::Status& status);
  // Finishes a sentence that never ran, with `status`.
  static void FinishUnrun(const Item& item, absl::Status status);

  const BatchingOptions options_;
  Metrics& metrics_;
  std::mutex mu_;
  std::condition_variable work_;
  std::map<std::string, TaskQueue> queues_;
  bool stopping_ = false;
  std::atomic<bool> abort_running_{false};
  std::vector<std::thread> workers_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_SCHEDULER_H_
