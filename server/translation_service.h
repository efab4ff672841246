// TranslationService over gRPC: each call's deadline, x-taskmoe-task metadata and
// cancellation become a CallContext for TranslationCore (translation_core.h), which does the
// work; its status goes back as the call's gRPC status. Unary calls hold one of gRPC's sync
// threads while they wait (one wake-up per call); TranslateStream is served on the callback
// API (translate_stream_reactor.h), so a stream holds no thread and its tokens cost no
// context switches.
#ifndef TASKMOE_SERVER_TRANSLATION_SERVICE_H_
#define TASKMOE_SERVER_TRANSLATION_SERVICE_H_

#include "server/translate_stream_reactor.h"
#include "server/translation_core.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::server {

class TranslationServiceImpl final
    : public v1::TranslationService::WithCallbackMethod_TranslateStream<
          v1::TranslationService::Service> {
 public:
  // At most `max_streams` TranslateStream calls in flight; beyond, RESOURCE_EXHAUSTED.
  TranslationServiceImpl(TranslationCore& core, int max_streams)
      : core_(core), stream_limit_(max_streams) {}

  grpc::Status Translate(grpc::ServerContext* context, const v1::TranslateRequest* request,
                         v1::TranslateResponse* response) override;
  grpc::ServerWriteReactor<v1::TranslateStreamResponse>* TranslateStream(
      grpc::CallbackServerContext* context, const v1::TranslateStreamRequest* request) override;
  grpc::Status ListTasks(grpc::ServerContext* context, const v1::ListTasksRequest* request,
                         v1::ListTasksResponse* response) override;
  grpc::Status GetTask(grpc::ServerContext* context, const v1::GetTaskRequest* request,
                       v1::TaskInfo* response) override;

 private:
  TranslationCore& core_;
  StreamLimit stream_limit_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATION_SERVICE_H_
