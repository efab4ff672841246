// Translation calls in flight, admitted by TranslationCore (StartTranslate, StartStream), for a
// transport to complete: one that waits (the HTTP gateway, the core's blocking Translate and
// TranslateStream) polls WaitForProgress; one that listens (gRPC's callback API,
// translate_reactor.h and translate_stream_reactor.h) is told of progress from the
// scheduler's threads (progress_relay.h) and never blocks. Each call counts as in flight (for
// draining at shutdown and the inflight gauge) until it is destroyed, and records its metrics when
// it finishes.
#ifndef TASKMOE_SERVER_TRANSLATION_CALL_H_
#define TASKMOE_SERVER_TRANSLATION_CALL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "models/text_pipeline.h"
#include "server/request_state.h"
#include "server/translation_core.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

// What both kinds of call share: the admitted request and how to stop it.
class TranslationCall {
 public:
  virtual ~TranslationCall();  // the call is no longer in flight
  TranslationCall(const TranslationCall&) = delete;
  TranslationCall& operator=(const TranslationCall&) = delete;

  // The caller went away (or its deadline passed): queued sentences leave now, running ones
  // at the next decoding step; the call then completes with the reason. Any thread.
  void Stop();
  // For a transport that waits instead of listening: waits up to the poll interval for
  // progress, and stops decoding once the call's `cancelled` says the caller went away.
  void WaitForProgress();

 protected:
  friend class TranslationCore;
  // `in_flight` counted the call from before its admission.
  TranslationCall(TranslationCore& core, std::unique_ptr<TranslationCore::InFlight> in_flight,
                  CallContext call, std::string request_id, std::string task_label,
                  absl::Time start, std::shared_ptr<RequestState> state);
  bool Cancelled() const { return call_.cancelled && call_.cancelled(); }
  // Records the call's metrics (TranslationCore::Record) under `method`.
  void Record(const char* method, const absl::Status& status, int64_t output_tokens);

  TranslationCore& core_;
  const CallContext call_;
  const std::string request_id_;
  const std::string task_label_;
  const absl::Time start_;
  const std::shared_ptr<RequestState> state_;

 private:
  std::unique_ptr<TranslationCore::InFlight> in_flight_;
  prometheus::Gauge& inflight_gauge_;
};

// A Translate call: its response once every sentence is done.
class PendingTranslation final : public TranslationCall {
 public:
  // Every sentence is done: Finish may build the response. Any thread.
  bool done() const { return state_->done(); }
  // Fills `response` (left empty on error) and returns the call's status; records its
  // metrics. Once, after done(); by one thread.
  absl::Status Finish(v1::TranslateResponse& response);

 private:
  friend class TranslationCore;
  PendingTranslation(TranslationCore& core, std::unique_ptr<TranslationCore::InFlight> in_flight,
                     CallContext call, const v1::TranslateRequest& request, std::string task_label,
                     absl::Time start, std::shared_ptr<RequestState> state);

  const bool return_scores_;
  const bool return_tokens_;
};

// A TranslateStream call: its messages as decoding produces them. TakeMessages and Finish are
// called by one thread at a time; WriteFailed, like Stop, from any thread.
class TranslationStream final : public TranslationCall {
 public:
  // Appends the messages ready now to `out`: one per token decoded since the last call and,
  // once every sentence is done and the translation succeeded, the whole translation (done).
  // Returns true once nothing more will come; then write what it gave and call Finish.
  bool TakeMessages(std::vector<v1::TranslateStreamResponse>& out);
  // How the call ended; records its metrics. Once, after TakeMessages returned true and its
  // messages were written (or failed to be).
  absl::Status Finish();
  // A message could not be written: as Stop, and the call ends CANCELLED.
  void WriteFailed();

 private:
  friend class TranslationCore;
  TranslationStream(TranslationCore& core, std::unique_ptr<TranslationCore::InFlight> in_flight,
                    CallContext call, const v1::TranslateStreamRequest& request,
                    std::string task_label, absl::Time start, std::shared_ptr<RequestState> state);

  const int32_t eos_;
  const int sentence_count_;
  const bool return_scores_;
  // Text deltas token by token, in time linear in the tokens.
  models::TextStream text_stream_;
  std::atomic<bool> write_failed_{false};
  bool complete_ = false;
  absl::Status status_;  // set when complete_
  int64_t output_tokens_ = 0;
};

// How a stream whose decoding ended with `decoded` ends for its caller: as decoded unless a
// message could not be written; then DEADLINE_EXCEEDED once the deadline passed, else as
// decoded if the caller cancelled (`decoded` then says so), else CANCELLED (the caller went
// away).
absl::Status StreamEndStatus(absl::Status decoded, bool write_failed, bool cancelled,
                             bool deadline_passed);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATION_CALL_H_
