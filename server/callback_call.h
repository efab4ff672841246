// What the translation reactors on gRPC's callback API (translate_reactor.h,
// translate_stream_reactor.h) share: a place of the CallLimit, the call's context, the core's
// call in flight (translation_call.h) and the listener through which the scheduler reports
// progress, and cancellation. The listener holds the reactor weakly, so it never touches
// a reactor gRPC is done with; each reactor owns itself (a shared_ptr to itself) until OnDone.
#ifndef TASKMOE_SERVER_CALLBACK_CALL_H_
#define TASKMOE_SERVER_CALLBACK_CALL_H_

#include <grpcpp/server_context.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>

#include "server/call_limit.h"
#include "server/grpc_call_context.h"
#include "server/grpc_status.h"
#include "server/translation_call.h"

namespace taskmoe::server {

// `Call`: PendingTranslation or TranslationStream.
template <typename Call>
class CallbackCall {
 public:
  explicit CallbackCall(CallLimit& limit) : limit_(limit) {}
  ~CallbackCall() {
    if (limited_) limit_.Release();
  }
  CallbackCall(const CallbackCall&) = delete;
  CallbackCall& operator=(const CallbackCall&) = delete;

  // Starts `reactor`'s call, whose CallbackCall is `reactor->*member`: refused at once (the
  // gRPC call finished with the status) beyond the limit or when `start(CallContext,
  // listener)` (a TranslationCore::Start*) refuses it; else the listener runs
  // `reactor->*on_progress` while the reactor lives, and it runs once more here, since
  // progress may have come before the call existed.
  template <typename Reactor, typename Start>
  static void Begin(const std::shared_ptr<Reactor>& reactor, CallbackCall Reactor::*member,
                    grpc::CallbackServerContext& context, Start start,
                    void (Reactor::*on_progress)()) {
    CallbackCall& self = (*reactor).*member;
    if (!self.limit_.TryAcquire()) {
      reactor->Finish(ToGrpcStatus(self.limit_.Refusal()));
      return;
    }
    self.limited_ = true;
    CallContext call_context = GrpcCallContext(context, [&self] { return self.cancelled_.load(); });
    std::weak_ptr<Reactor> weak = reactor;
    absl::StatusOr<std::unique_ptr<Call>> call =
        start(std::move(call_context), [weak, on_progress] {
          if (std::shared_ptr<Reactor> alive = weak.lock()) ((*alive).*on_progress)();
        });
    if (!call.ok()) {
      reactor->Finish(ToGrpcStatus(call.status()));
      return;
    }
    Call* started = nullptr;
    {
      std::lock_guard<std::mutex> lock(self.mu_);
      self.call_ = *std::move(call);
      started = self.call_.get();
    }
    // The caller may have gone before the call existed for Cancel to stop.
    if (self.cancelled_.load()) started->Stop();
    ((*reactor).*on_progress)();
  }

  // The call once started; nullptr before, and for good when it was refused.
  Call* get() {
    std::lock_guard<std::mutex> lock(mu_);
    return call_.get();
  }

  // OnCancel: the caller went away or its deadline passed; decoding stops at once.
  void Cancel() {
    cancelled_.store(true);
    // Outside the lock: stopping finishes queued sentences, whose listener reacts.
    if (Call* call = get()) call->Stop();
  }

 private:
  CallLimit& limit_;
  bool limited_ = false;  // holds one of limit_'s places
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::unique_ptr<Call> call_;  // set once, under mu_
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_CALLBACK_CALL_H_
