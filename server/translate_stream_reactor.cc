// TranslateStreamReactor: a stream's messages written as the workers decode them.
#include "server/translate_stream_reactor.h"

#include "server/grpc_call_context.h"
#include "server/grpc_status.h"

namespace taskmoe::server {

grpc::ServerWriteReactor<v1::TranslateStreamResponse>* TranslateStreamReactor::Start(
    TranslationCore& core, CallLimit& limit, grpc::CallbackServerContext& context,
    const v1::TranslateStreamRequest& request) {
  auto reactor = std::make_shared<TranslateStreamReactor>(limit);
  reactor->self_ = reactor;
  if (!limit.TryAcquire()) {
    reactor->finished_ = true;
    reactor->Finish(ToGrpcStatus(limit.Refusal()));
    return reactor.get();
  }
  reactor->limited_ = true;
  TranslateStreamReactor* raw = reactor.get();
  CallContext call = GrpcCallContext(context, [raw] { return raw->cancelled_.load(); });
  std::weak_ptr<TranslateStreamReactor> weak = reactor;
  absl::StatusOr<std::unique_ptr<TranslationStream>> stream =
      core.StartStream(request, std::move(call), [weak] {
        if (std::shared_ptr<TranslateStreamReactor> alive = weak.lock()) alive->Pump();
      });
  if (!stream.ok()) {
    {
      std::lock_guard<std::mutex> lock(reactor->mu_);
      reactor->finished_ = true;
    }
    reactor->Finish(ToGrpcStatus(stream.status()));
    return raw;
  }
  {
    std::lock_guard<std::mutex> lock(reactor->mu_);
    reactor->stream_ = *std::move(stream);
  }
  // The caller may have gone before the stream existed for OnCancel to stop.
  if (reactor->cancelled_.load()) reactor->stream_->Stop();
  reactor->Pump();
  return raw;
}

TranslateStreamReactor::~TranslateStreamReactor() {
  if (limited_) limit_.Release();
}

void TranslateStreamReactor::Pump() {
  std::unique_lock<std::mutex> lock(mu_);
  if (busy_ || finished_ || stream_ == nullptr) {
    again_ = true;
    return;
  }
  busy_ = true;
  for (;;) {
    again_ = false;
    if (next_ == messages_.size() && !complete_) {
      messages_.clear();
      next_ = 0;
      complete_ = stream_->TakeMessages(messages_);
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
      Finish(ToGrpcStatus(stream_->Finish()));
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
  if (!ok) stream_->WriteFailed();
  Pump();
}

void TranslateStreamReactor::OnCancel() {
  cancelled_.store(true);
  TranslationStream* stream = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = stream_.get();
  }
  if (stream != nullptr) stream->Stop();
}

void TranslateStreamReactor::OnDone() {
  // The last reference may be a worker's, in its listener; it ends there.
  std::shared_ptr<TranslateStreamReactor> self = std::move(self_);
}

}  // namespace taskmoe::server
