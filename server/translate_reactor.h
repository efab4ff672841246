// Translate on gRPC's callback API: no thread waits for a call. Once a call's last sentence is
// decoded, its progress listener (run by the scheduler's ProgressRelay, progress_relay.h)
// builds the response and hands it to gRPC (Finish does not block);
// OnCancel stops decoding at once. A blocking handler instead held one of gRPC's threads per
// call, woken every 20 ms to look for cancellation. The start, the limit and cancellation are
// CallbackCall's (callback_call.h).
#ifndef TASKMOE_SERVER_TRANSLATE_REACTOR_H_
#define TASKMOE_SERVER_TRANSLATE_REACTOR_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <memory>
#include <mutex>

#include "server/call_limit.h"
#include "server/callback_call.h"
#include "server/translation_call.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

class TranslateReactor final : public grpc::ServerUnaryReactor {
 public:
  // Serves the call into `response` (or refuses it: beyond `limit`, or whatever the core
  // refuses); gRPC owns the result until OnDone.
  static grpc::ServerUnaryReactor* Start(TranslationCore& core, CallLimit& limit,
                                         grpc::CallbackServerContext& context,
                                         const v1::TranslateRequest& request,
                                         v1::TranslateResponse& response);

  // Use Start.
  TranslateReactor(CallLimit& limit, v1::TranslateResponse& response)
      : response_(response), call_(limit) {}
  TranslateReactor(const TranslateReactor&) = delete;
  TranslateReactor& operator=(const TranslateReactor&) = delete;

  void OnCancel() override;
  void OnDone() override;

 private:
  // Finishes the call once every sentence is done (once, whoever gets there first).
  void FinishIfDone();

  v1::TranslateResponse& response_;         // gRPC's, valid until OnDone
  std::shared_ptr<TranslateReactor> self_;  // until OnDone
  CallbackCall<PendingTranslation> call_;
  std::mutex mu_;
  bool finished_ = false;  // Finish was called
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATE_REACTOR_H_
