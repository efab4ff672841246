// RequestState: the handler/worker hand-over of one request.
#include "server/request_state.h"

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"
#include "server/progress_relay.h"

namespace taskmoe::server {

RequestState::RequestState(std::shared_ptr<const models::TaskModel> task,
                           models::DecodeSettings settings, models::TextOptions text_options,
                           std::vector<std::vector<models::SourceSentence>> texts,
                           absl::Time deadline, bool streams_tokens)
    : task_(std::move(task)),
      settings_(settings),
      text_options_(text_options),
      received_(absl::Now()),
      deadline_(deadline),
      streams_tokens_(streams_tokens) {
  text_begin_.push_back(0);
  for (std::vector<models::SourceSentence>& text : texts) {
    for (models::SourceSentence& sentence : text) sentences_.push_back(std::move(sentence));
    text_begin_.push_back(static_cast<int>(sentences_.size()));
  }
  results_.resize(sentences_.size());
  finished_.resize(sentences_.size());
  remaining_ = static_cast<int>(sentences_.size());
  if (streams_tokens_) new_tokens_.resize(sentences_.size());
}

absl::Span<const models::SourceSentence> RequestState::TextSentences(int text) const {
  return absl::MakeConstSpan(sentences_)
      .subspan(text_begin_[text], text_begin_[text + 1] - text_begin_[text]);
}

std::vector<const models::Hypothesis*> RequestState::TextResults(int text) const {
  std::vector<const models::Hypothesis*> results;
  for (int s = text_begin_[text]; s < text_begin_[text + 1]; ++s) results.push_back(&results_[s]);
  return results;
}

bool RequestState::ShouldStop() const {
  return cancelled_.load(std::memory_order_relaxed) || absl::Now() >= deadline_;
}

bool RequestState::DeadlineExpired() const {
  const absl::Time now = absl::Now();
  if (now >= deadline_) return true;
  if (deadline_ == absl::InfiniteFuture()) return false;
  const absl::Duration rounding = std::max(absl::Milliseconds(5), (deadline_ - received_) / 50);
  return now >= deadline_ - rounding;
}

absl::Status RequestState::StopStatus() const {
  // The deadline first: when it passes, gRPC also cancels the call.
  if (DeadlineExpired()) {
    return absl::DeadlineExceededError("the deadline passed before decoding finished");
  }
  if (cancelled_.load()) return absl::CancelledError("the request was cancelled by the client");
  return absl::OkStatus();
}

void RequestState::AddToken(int sentence, int32_t token, ProgressBatch* later) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const absl::Time now = absl::Now();
    if (!first_token_.has_value()) first_token_ = now;
    last_token_ = now;
    ++tokens_added_;
    // Unary requests keep no tokens: a token nobody takes would keep Wait() from sleeping.
    if (!streams_tokens_) return;
    new_tokens_[sentence].push_back(token);
    if (sentence == stream_sentence_) changed_.notify_all();
  }
  TellListener(later);
}

void RequestState::Finish(int sentence, models::Hypothesis result, ProgressBatch* later) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    results_[sentence] = std::move(result);
    finished_[sentence] = true;
    if (--remaining_ == 0 || (streams_tokens_ && sentence == stream_sentence_)) {
      changed_.notify_all();
    }
  }
  TellListener(later);
}

void RequestState::TellListener(ProgressBatch* later) {
  if (!listener_) return;
  if (later != nullptr) {
    later->Add(*this);
  } else {
    listener_();
  }
}

void RequestState::Cancel() { cancelled_.store(true); }

bool RequestState::Wait(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, absl::ToChronoMicroseconds(timeout), [&] {
    return remaining_ == 0 || (streams_tokens_ && (!new_tokens_[stream_sentence_].empty() ||
                                                   finished_[stream_sentence_]));
  });
  return remaining_ == 0;
}

bool RequestState::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return remaining_ == 0;
}

std::vector<int32_t> RequestState::TakeTokens(int sentence) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!streams_tokens_) return {};
  stream_sentence_ = sentence;
  return std::exchange(new_tokens_[sentence], {});
}

bool RequestState::SentenceDone(int sentence) const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_[sentence];
}

std::optional<absl::Duration> RequestState::TimePerOutputToken() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (tokens_added_ < 2) return std::nullopt;
  return (last_token_ - *first_token_) / (tokens_added_ - 1);
}

std::optional<absl::Time> RequestState::first_token_time() const {
  std::lock_guard<std::mutex> lock(mu_);
  return first_token_;
}

}  // namespace taskmoe::server
