// RequestState: the handler/worker hand-over of one request.
#include "server/request_state.h"

#include <chrono>

#include "absl/time/clock.h"

namespace taskmoe::server {

RequestState::RequestState(std::shared_ptr<const LoadedTask> task, DecodeSettings settings,
                           std::vector<std::vector<int32_t>> sources, absl::Time deadline,
                           bool streams_tokens)
    : task_(std::move(task)),
      settings_(settings),
      sources_(std::move(sources)),
      received_(absl::Now()),
      deadline_(deadline),
      streams_tokens_(streams_tokens),
      results_(sources_.size()),
      remaining_(static_cast<int>(sources_.size())) {}

bool RequestState::ShouldStop() const {
  return cancelled_.load(std::memory_order_relaxed) || absl::Now() >= deadline_;
}

absl::Status RequestState::StopStatus() const {
  // The deadline first: when it passes, gRPC also cancels the call, and the caller should
  // learn that its deadline was too short, not that someone cancelled.
  if (absl::Now() >= deadline_) {
    return absl::DeadlineExceededError("the deadline passed before decoding finished");
  }
  if (cancelled_.load()) return absl::CancelledError("the request was cancelled by the client");
  return absl::OkStatus();
}

void RequestState::AddToken(int sentence, int32_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!first_token_.has_value()) first_token_ = absl::Now();
  // Unary requests keep no tokens: a token nobody takes would keep Wait() from sleeping.
  if (streams_tokens_ && sentence == 0) {
    new_tokens_.push_back(token);
    changed_.notify_all();
  }
}

void RequestState::Finish(int sentence, models::Hypothesis result) {
  std::lock_guard<std::mutex> lock(mu_);
  results_[sentence] = std::move(result);
  if (--remaining_ == 0) changed_.notify_all();
}

void RequestState::Cancel() { cancelled_.store(true); }

bool RequestState::Wait(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, absl::ToChronoMicroseconds(timeout),
                    [&] { return remaining_ == 0 || !new_tokens_.empty(); });
  return remaining_ == 0;
}

bool RequestState::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return remaining_ == 0;
}

std::vector<int32_t> RequestState::TakeTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(new_tokens_, {});
}

std::optional<absl::Time> RequestState::first_token_time() const {
  std::lock_guard<std::mutex> lock(mu_);
  return first_token_;
}

}  // namespace taskmoe::server
