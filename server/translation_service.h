// TranslationService over gRPC: each call's deadline, x-taskmoe-task metadata and
// cancellation become a CallContext for TranslationCore (translation_core.h), which does the
// work; its status goes back as the call's gRPC status. Translate and TranslateStream run on
// gRPC's callback API (translate_reactor.h, translate_stream_reactor.h): a call in flight
// holds no thread, and the batch worker hands its tokens and its response to gRPC itself.
// ListTasks and GetTask, which answer at once, stay on the sync API.
#ifndef TASKMOE_SERVER_TRANSLATION_SERVICE_H_
#define TASKMOE_SERVER_TRANSLATION_SERVICE_H_

#include "server/call_limit.h"
#include "server/translate_reactor.h"
#include "server/translate_stream_reactor.h"
#include "server/translation_core.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::server {

class TranslationServiceImpl final : public v1::TranslationService::WithCallbackMethod_Translate<
                                         v1::TranslationService::WithCallbackMethod_TranslateStream<
                                             v1::TranslationService::Service>> {
 public:
  // At most `max_calls` Translate and TranslateStream calls in flight together; beyond,
  // RESOURCE_EXHAUSTED.
  TranslationServiceImpl(TranslationCore& core, int max_calls)
      : core_(core), call_limit_(max_calls) {}

  grpc::ServerUnaryReactor* Translate(grpc::CallbackServerContext* context,
                                      const v1::TranslateRequest* request,
                                      v1::TranslateResponse* response) override;
  grpc::ServerWriteReactor<v1::TranslateStreamResponse>* TranslateStream(
      grpc::CallbackServerContext* context, const v1::TranslateStreamRequest* request) override;
  grpc::Status ListTasks(grpc::ServerContext* context, const v1::ListTasksRequest* request,
                         v1::ListTasksResponse* response) override;
  grpc::Status GetTask(grpc::ServerContext* context, const v1::GetTaskRequest* request,
                       v1::TaskInfo* response) override;

 private:
  TranslationCore& core_;
  CallLimit call_limit_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATION_SERVICE_H_
