// TranslateReactor: a Translate call answered by its progress listener once it is done.
#include "server/translate_reactor.h"

#include "server/grpc_status.h"

namespace taskmoe::server {

grpc::ServerUnaryReactor* TranslateReactor::Start(TranslationCore& core, CallLimit& limit,
                                                  grpc::CallbackServerContext& context,
                                                  const v1::TranslateRequest& request,
                                                  v1::TranslateResponse& response) {
  auto reactor = std::make_shared<TranslateReactor>(limit, response);
  reactor->self_ = reactor;
  CallbackCall<PendingTranslation>::Begin(
      reactor, &TranslateReactor::call_, context,
      [&](CallContext call, std::function<void()> listener) {
        return core.StartTranslate(request, std::move(call), std::move(listener));
      },
      &TranslateReactor::FinishIfDone);
  return reactor.get();
}

void TranslateReactor::FinishIfDone() {
  PendingTranslation* const pending = call_.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || pending == nullptr || !pending->done()) return;
    finished_ = true;
  }
  // Only this thread gets here.
  Finish(ToGrpcStatus(pending->Finish(response_)));
}

void TranslateReactor::OnCancel() { call_.Cancel(); }

void TranslateReactor::OnDone() {
  // The last reference may be the listener's, on the thread running it; it ends there.
  std::shared_ptr<TranslateReactor> self = std::move(self_);
}

}  // namespace taskmoe::server
