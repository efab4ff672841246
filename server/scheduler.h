// Scheduler: the per-task dynamic batcher. Each task has a bounded queue of sentences; a pool
// of worker threads (shared by all tasks, so the cores are not oversubscribed) takes a batch
// from the task whose oldest sentence has waited longest, once that queue is ready: a full
// batch (max sentences or max source tokens), or its oldest sentence has waited
// max_queue_delay. A batch holds sentences of one model version with equal decode settings,
// from any number of requests; a request's sentences may span batches.
//
// Batching is per batch, not per step: a batch decodes to its end, and sentences that arrive
// meanwhile form the next one (docs/api.md "Batching" says why). Within a batch, finished
// sentences leave at once, and cancelled or expired ones at the next decoding step.
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
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "models/decoding.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/request_state.h"

namespace taskmoe::server {

class Scheduler {
 public:
  Scheduler(const BatchingOptions& options, Metrics& metrics);
  ~Scheduler();  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues every sentence of `request` on its task's queue, or none of them:
  // RESOURCE_EXHAUSTED when they do not fit, INVALID_ARGUMENT when they never could (more
  // sentences than the queue holds), UNAVAILABLE once stopping.
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
  };
  struct TaskQueue {
    std::deque<Item> items;
    int64_t tokens = 0;
    TaskMetrics* metrics = nullptr;
  };

  void WorkerLoop();
  // Picks a ready queue and removes a batch from it; empty when none is ready (then `wake`
  // says when one will be). Called with mu_ held.
  std::vector<Item> TakeBatch(absl::Time now, absl::Time& wake, TaskMetrics*& metrics);
  void RunBatch(std::vector<Item>& batch, TaskMetrics& metrics, models::DecodeWorkspace& workspace);
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
