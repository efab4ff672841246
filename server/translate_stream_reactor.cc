// TranslateStreamReactor: a stream's messages written as the workers decode them.
#include "server/translate_stream_reactor.h"

#include "server/grpc_status.h"

namespace taskmoe::server {

grpc::ServerWriteReactor<v1::TranslateStreamResponse>* TranslateStreamReactor::Start(
    TranslationCore& core, CallLimit& limit, grpc::CallbackServerContext& context,
    const v1::TranslateStreamRequest& request) {
  auto reactor = std::make_shared<TranslateStreamReactor>(limit);
  reactor->self_ = reactor;
  CallbackCall<TranslationStream>::Begin(
      reactor, &TranslateStreamReactor::call_, context,
      [&](CallContext call, std::function<void()> listener) {
        return core.StartStream(request, std::move(call), std::move(listener));
      },
      &TranslateStreamReactor::Pump);
  return reactor.get();
}

void TranslateStreamReactor::Pump() {
  TranslationStream* const stream = call_.get();
  std::unique_lock<std::mutex> lock(mu_);
  if (busy_ || finished_ || stream == nullptr) {
    again_ = true;
    return;
  }
  busy_ = true;
  for (;;) {
    again_ = false;
    if (next_ == messages_.size() && !complete_) {
      messages_.clear();
      next_ = 0;
      complete_ = stream->TakeMessages(messages_);
      if (write_failed_) messages_.clear();  // nobody reads them
    }
    if (next_ < messages_.size()) {
      // The message stays put until OnWriteDone: nothing touches messages_ while busy_.
      const v1::TranslateStreamResponse* message = &messages_[next_++];
      lock.unlock();
      StartWrite(message);
      return;
    }
    if (complete_) {
      finished_ = true;
      lock.unlock();
      Finish(ToGrpcStatus(stream->Finish()));
      return;
    }
    if (!again_) {
      busy_ = false;
      return;
    }
  }
}

void TranslateStreamReactor::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    if (!ok) {
      write_failed_ = true;
      next_ = messages_.size();
    }
  }
  // Outside the lock: stopping finishes queued sentences, whose listener pumps.
  if (!ok) call_.get()->WriteFailed();
  Pump();
}

void TranslateStreamReactor::OnCancel() { call_.Cancel(); }

void TranslateStreamReactor::OnDone() {
  // The last reference may be the listener's, on the thread running it; it ends there.
  std::shared_ptr<TranslateStreamReactor> self = std::move(self_);
}

}  // namespace taskmoe::server
