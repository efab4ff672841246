// RequestState: one translation request as the RPC handler and the batch workers share it.
// The handler creates it with the tokenised sources, queues it, and waits; workers decode its
// sentences (possibly in several batches) and report tokens and results here. Only the
// handler touches the gRPC call itself, so cancellation reaches workers through Cancel().
// A handler either waits (Wait) or is told of progress by a listener (SetProgressListener).
#ifndef TASKMOE_SERVER_REQUEST_STATE_H_
#define TASKMOE_SERVER_REQUEST_STATE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "models/decoding.h"
#include "models/task_model.h"
#include "models/text_pipeline.h"

namespace taskmoe::server {

class ProgressBatch;  // progress_relay.h

class RequestState : public std::enable_shared_from_this<RequestState> {
 public:
  // `texts` holds each text's sentences (models::PrepareText); workers see the sentences of
  // all texts one after the other. `streams_tokens`: the handler takes tokens as they come
  // (TranslateStream). Otherwise tokens only mark the time to first token, and Wait() wakes
  // when every sentence is done.
  RequestState(std::shared_ptr<const models::TaskModel> task, models::DecodeSettings settings,
               models::TextOptions text_options,
               std::vector<std::vector<models::SourceSentence>> texts, absl::Time deadline,
               bool streams_tokens);
  RequestState(const RequestState&) = delete;
  RequestState& operator=(const RequestState&) = delete;

  const models::TaskModel& task() const { return *task_; }
  const std::shared_ptr<const models::TaskModel>& shared_task() const { return task_; }
  const models::DecodeSettings& settings() const { return settings_; }
  const models::TextOptions& text_options() const { return text_options_; }
  // Sentences, over all texts.
  int size() const { return static_cast<int>(sentences_.size()); }
  const std::vector<int32_t>& source(int sentence) const { return sentences_[sentence].ids; }
  int text_count() const { return static_cast<int>(text_begin_.size()) - 1; }
  // The sentences of text `text`.
  absl::Span<const models::SourceSentence> TextSentences(int text) const;
  absl::Time received() const { return received_; }
  absl::Time deadline() const { return deadline_; }
  // Whether the deadline explains a call that stopped or was cancelled now: it passed, or it
  // is within the rounding of the timeout the client sent (2% of the timeout, at least 5 ms).
  // The client's gRPC cancels the call when its deadline passes, a moment before ours does,
  // since the timeout travels rounded up to three digits of a unit (1,000 ms as "1S", 1,234 ms
  // as 1,240 ms); its caller should learn that the deadline was too short, not that someone
  // cancelled.
  bool DeadlineExpired() const;

  // --- Worker side.
  // True once the request was cancelled or its deadline passed: its sentences leave their
  // batch at the next decoding step.
  bool ShouldStop() const;
  // Why ShouldStop(): DEADLINE_EXCEEDED or CANCELLED (OK while it is false).
  absl::Status StopStatus() const;
  // A token of `sentence` was decoded (greedy decoding only; EOS included). The progress
  // listener runs now, or with `later`, when that batch runs (once for all the progress the
  // request made before; progress_relay.h). `later` needs a request owned by a shared_ptr.
  void AddToken(int sentence, int32_t token, ProgressBatch* later = nullptr);
  // The sentence is done: `result.status` OK, or why it stopped. The listener as AddToken's.
  void Finish(int sentence, models::Hypothesis result, ProgressBatch* later = nullptr);

  // --- Handler side.
  // Called, outside the state's lock, after each token added to a streamed request and after
  // each sentence finishes (or once for several of them, through a ProgressBatch): for
  // handlers that do not wait (gRPC's callback API). It runs on the worker's thread or on a
  // ProgressRelay's. Set it before the request is queued; it must not call Finish or
  // AddToken.
  void SetProgressListener(std::function<void()> listener) { listener_ = std::move(listener); }
  void Cancel();
  // Waits until every sentence is done, or (streams_tokens only) the sentence the handler
  // last took tokens of has new tokens or is done, or `timeout` passed. Returns true once
  // every sentence is done.
  bool Wait(absl::Duration timeout);
  bool done() const;
  // Tokens of `sentence` decoded since the last call; from now on the handler waits on it. A
  // stream takes its sentences in order, moving on once SentenceDone says so.
  std::vector<int32_t> TakeTokens(int sentence);
  // Whether `sentence` is done: every token it will have was added before.
  bool SentenceDone(int sentence) const;
  // Valid once done(): per sentence, over all texts.
  const std::vector<models::Hypothesis>& results() const { return results_; }
  // Valid once done(): the results of text `text`'s sentences.
  std::vector<const models::Hypothesis*> TextResults(int text) const;
  // When the first token of any sentence was decoded, if one was.
  std::optional<absl::Time> first_token_time() const;
  // The mean time between its tokens (over all its sentences, first to last), once it had
  // two or more; greedy only, like tokens.
  std::optional<absl::Duration> TimePerOutputToken() const;

 private:
  // Runs the listener now, or queues it in `later`.
  void TellListener(ProgressBatch* later);

  const std::shared_ptr<const models::TaskModel> task_;
  const models::DecodeSettings settings_;
  const models::TextOptions text_options_;
  std::vector<models::SourceSentence> sentences_;  // set in the constructor, then read only
  std::vector<int> text_begin_;  // text t's sentences are [text_begin_[t], text_begin_[t + 1])
  const absl::Time received_;
  const absl::Time deadline_;
  const bool streams_tokens_;
  std::atomic<bool> cancelled_{false};
  std::function<void()> listener_;  // set before workers see the request, then read only
  friend class ProgressBatch;
  std::atomic<bool> listener_queued_{false};  // in a ProgressBatch, not yet run

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<models::Hypothesis> results_;  // written under mu_, read by the handler when done
  std::vector<bool> finished_;               // per sentence
  int remaining_;
  std::vector<std::vector<int32_t>> new_tokens_;  // per sentence, streams only
  int stream_sentence_ = 0;                       // the sentence the stream handler waits on
  std::optional<absl::Time> first_token_;
  absl::Time last_token_;
  int64_t tokens_added_ = 0;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_REQUEST_STATE_H_
