// TranslateStream on gRPC's callback API. No thread waits for a stream: the progress listener
// hands the decoded tokens' messages to gRPC (StartWrite does not block; the scheduler runs
// listeners on its ProgressRelay's thread once a step has decoded, progress_relay.h), gRPC's
// OnWriteDone writes whatever came meanwhile, and OnCancel stops decoding at once. A blocking
// handler instead cost a thread per stream, woken for every token, and a context switch or
// two per token on the cores the decoder needs (docs/benchmarks.md, issue 20).
//
// Writes are one at a time, in order (gRPC allows one outstanding write); whoever finds none
// in flight (the progress listener, OnWriteDone, or the handler at the start) takes the
// messages that are ready and starts the next. The start, the limit and cancellation are
// CallbackCall's (callback_call.h).
#ifndef TASKMOE_SERVER_TRANSLATE_STREAM_REACTOR_H_
#define TASKMOE_SERVER_TRANSLATE_STREAM_REACTOR_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <memory>
#include <mutex>
#include <vector>

#include "server/call_limit.h"
#include "server/callback_call.h"
#include "server/translation_call.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

class TranslateStreamReactor final : public grpc::ServerWriteReactor<v1::TranslateStreamResponse> {
 public:
  // Serves the call (or refuses it: beyond `limit`, or whatever the core refuses); gRPC owns
  // the result until OnDone.
  static grpc::ServerWriteReactor<v1::TranslateStreamResponse>* Start(
      TranslationCore& core, CallLimit& limit, grpc::CallbackServerContext& context,
      const v1::TranslateStreamRequest& request);

  // Use Start.
  explicit TranslateStreamReactor(CallLimit& limit) : call_(limit) {}
  TranslateStreamReactor(const TranslateStreamReactor&) = delete;
  TranslateStreamReactor& operator=(const TranslateStreamReactor&) = delete;

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Writes what is ready if no write is in flight, or finishes the call once the stream is
  // complete and written; else notes that there may be more, for whoever is writing.
  void Pump();

  std::shared_ptr<TranslateStreamReactor> self_;  // until OnDone
  CallbackCall<TranslationStream> call_;

  std::mutex mu_;
  bool busy_ = false;      // someone is in Pump, or a write is in flight
  bool again_ = false;     // progress arrived while busy_
  bool complete_ = false;  // the stream said nothing more will come
  bool finished_ = false;  // Finish was called
  bool write_failed_ = false;
  std::vector<v1::TranslateStreamResponse> messages_;  // ready; [0, next_) are written
  size_t next_ = 0;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATE_STREAM_REACTOR_H_
