// ProgressRelay: listeners run a step at a time on the relay's thread.
#include "server/progress_relay.h"

#include <iterator>
#include <utility>

namespace taskmoe::server {

void ProgressBatch::Add(RequestState& request) {
  if (!request.listener_ || request.listener_queued_.exchange(true)) return;
  requests_.push_back(request.shared_from_this());
}

void ProgressBatch::Run() {
  for (const std::shared_ptr<RequestState>& request : requests_) {
    // Cleared first: progress made while the listener runs queues it again, so none is missed.
    request->listener_queued_.store(false);
    request->listener_();
  }
  requests_.clear();
}

void ProgressBatch::Append(ProgressBatch& other) {
  requests_.insert(requests_.end(), std::make_move_iterator(other.requests_.begin()),
                   std::make_move_iterator(other.requests_.end()));
  other.requests_.clear();
}

ProgressRelay::ProgressRelay() : thread_([this] { Loop(); }) {}

ProgressRelay::~ProgressRelay() { Stop(); }

void ProgressRelay::Deliver(ProgressBatch& batch) {
  if (batch.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      // The thread checks pending_ before it sleeps: only an empty one can have it asleep.
      if (pending_.empty()) {
        pending_.Swap(batch);  // `batch` takes the relay's spare buffer
        wake_.notify_one();
      } else {
        pending_.Append(batch);
      }
      return;
    }
  }
  batch.Run();
}

void ProgressRelay::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ProgressRelay::Loop() {
  ProgressBatch running;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, and everything delivered has run
    running.Swap(pending_);
    lock.unlock();
    running.Run();
    lock.lock();
  }
}

}  // namespace taskmoe::server
