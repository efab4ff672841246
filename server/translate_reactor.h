// Translate on gRPC's callback API: no thread waits for a call. The batch worker that finishes
// a call's last sentence builds the response and hands it to gRPC (Finish does not block);
// OnCancel stops decoding at once. A blocking handler instead held one of gRPC's threads per
// call, woken every 20 ms to look for cancellation. The reactor owns itself until OnDone; the
// worker's progress listener holds it weakly (as TranslateStreamReactor's does).
#ifndef TASKMOE_SERVER_TRANSLATE_REACTOR_H_
#define TASKMOE_SERVER_TRANSLATE_REACTOR_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <atomic>
#include <memory>
#include <mutex>

#include "server/call_limit.h"
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
      : limit_(limit), response_(response) {}
  ~TranslateReactor() override;
  TranslateReactor(const TranslateReactor&) = delete;
  TranslateReactor& operator=(const TranslateReactor&) = delete;

  void OnCancel() override;
  void OnDone() override;

 private:
  // Finishes the call once every sentence is done (once, whoever gets there first).
  void FinishIfDone();

  CallLimit& limit_;
  v1::TranslateResponse& response_;         // gRPC's, valid until OnDone
  bool limited_ = false;                    // holds one of limit_'s places
  std::shared_ptr<TranslateReactor> self_;  // until OnDone
  std::atomic<bool> cancelled_{false};      // OnCancel came

  std::mutex mu_;
  std::unique_ptr<PendingTranslation> pending_;  // set once, under mu_
  bool finished_ = false;                        // Finish was called
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATE_REACTOR_H_
