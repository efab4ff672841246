// ProgressRelay: the requests' progress listeners (RequestState::SetProgressListener) run on a
// thread of their own, a decoding step's worth at a time, instead of inline on the worker that
// decoded the tokens.
//
// Why: a streamed call's listener builds the token's message and hands it to gRPC, which
// serialises it and usually writes it to the socket at once: tens of microseconds per message,
// spent on the decoding thread while the engine's other threads wait for it at their next
// parallel loop, and one write system call per token (docs/benchmarks.md, issue 20). A worker
// instead collects the requests a step touched in a ProgressBatch (each request once, however
// many of its tokens the step decoded) and delivers the batch when the step ends: one wake-up a
// step, and the step's messages reach gRPC together, which lets a connection carrying many
// streams send them in fewer writes. The listeners still run in the order their requests first
// made progress, and a request whose listener is already queued is not queued again.
#ifndef TASKMOE_SERVER_PROGRESS_RELAY_H_
#define TASKMOE_SERVER_PROGRESS_RELAY_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "server/request_state.h"

namespace taskmoe::server {

// Requests whose listener is to run once. Not thread-safe: one worker fills it.
class ProgressBatch {
 public:
  ProgressBatch() = default;
  ProgressBatch(const ProgressBatch&) = delete;
  ProgressBatch& operator=(const ProgressBatch&) = delete;

  // Queues `request`'s listener unless it has none or it is queued already (in any batch):
  // a listener takes whatever progress came since it last ran.
  void Add(RequestState& request);
  bool empty() const { return requests_.empty(); }
  // Runs the queued listeners in order, each request's once, and empties the batch (its
  // buffer is kept for the next step).
  void Run();
  // Moves `other`'s requests after this batch's; `other` is left empty.
  void Append(ProgressBatch& other);
  void Swap(ProgressBatch& other) { requests_.swap(other.requests_); }

 private:
  std::vector<std::shared_ptr<RequestState>> requests_;
};

class ProgressRelay {
 public:
  ProgressRelay();   // starts the relay's thread
  ~ProgressRelay();  // Stop()
  ProgressRelay(const ProgressRelay&) = delete;
  ProgressRelay& operator=(const ProgressRelay&) = delete;

  // Hands `batch`'s listeners to the relay's thread, waking it at most once; `batch` is left
  // empty. Cheap when `batch` is empty. After Stop, runs them on the caller's thread.
  void Deliver(ProgressBatch& batch);
  // Runs every listener delivered so far, then ends the thread. Idempotent.
  void Stop();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable wake_;
  ProgressBatch pending_;  // delivered, not yet taken by the thread
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_PROGRESS_RELAY_H_
