// TranslateReactor: a Translate call answered by the worker that finishes it.
#include "server/translate_reactor.h"

#include "server/grpc_call_context.h"
#include "server/grpc_status.h"

namespace taskmoe::server {

grpc::ServerUnaryReactor* TranslateReactor::Start(TranslationCore& core, CallLimit& limit,
                                                  grpc::CallbackServerContext& context,
                                                  const v1::TranslateRequest& request,
                                                  v1::TranslateResponse& response) {
  auto reactor = std::make_shared<TranslateReactor>(limit, response);
  reactor->self_ = reactor;
  if (!limit.TryAcquire()) {
    reactor->finished_ = true;
    reactor->Finish(ToGrpcStatus(limit.Refusal()));
    return reactor.get();
  }
  reactor->limited_ = true;
  TranslateReactor* raw = reactor.get();
  CallContext call = GrpcCallContext(context, [raw] { return raw->cancelled_.load(); });
  std::weak_ptr<TranslateReactor> weak = reactor;
  absl::StatusOr<std::unique_ptr<PendingTranslation>> pending =
      core.StartTranslate(request, std::move(call), [weak] {
        if (std::shared_ptr<TranslateReactor> alive = weak.lock()) alive->FinishIfDone();
      });
  if (!pending.ok()) {
    {
      std::lock_guard<std::mutex> lock(reactor->mu_);
      reactor->finished_ = true;
    }
    reactor->Finish(ToGrpcStatus(pending.status()));
    return raw;
  }
  {
    std::lock_guard<std::mutex> lock(reactor->mu_);
    reactor->pending_ = *std::move(pending);
  }
  // The caller may have gone before the call existed for OnCancel to stop.
  if (reactor->cancelled_.load()) reactor->pending_->Stop();
  // Its sentences may all have finished before pending_ was set.
  reactor->FinishIfDone();
  return raw;
}

TranslateReactor::~TranslateReactor() {
  if (limited_) limit_.Release();
}

void TranslateReactor::FinishIfDone() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || pending_ == nullptr || !pending_->done()) return;
    finished_ = true;
  }
  // Only this thread gets here: pending_ is read without the lock from now on.
  Finish(ToGrpcStatus(pending_->Finish(response_)));
}

void TranslateReactor::OnCancel() {
  cancelled_.store(true);
  PendingTranslation* pending = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending = pending_.get();
  }
  // Outside the lock: stopping finishes queued sentences, whose listener takes it.
  if (pending != nullptr) pending->Stop();
}

void TranslateReactor::OnDone() {
  // The last reference may be a worker's, in its listener; it ends there.
  std::shared_ptr<TranslateReactor> self = std::move(self_);
}

}  // namespace taskmoe::server
