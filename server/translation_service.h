// TranslationService over gRPC: each call's deadline, x-taskmoe-task metadata and
// cancellation become a CallContext for TranslationCore (translation_core.h), which does the
// work; its status goes back as the call's gRPC status.
#ifndef TASKMOE_SERVER_TRANSLATION_SERVICE_H_
#define TASKMOE_SERVER_TRANSLATION_SERVICE_H_

#include "server/translation_core.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::server {

class TranslationServiceImpl final : public v1::TranslationService::Service {
 public:
  explicit TranslationServiceImpl(TranslationCore& core) : core_(core) {}

  grpc::Status Translate(grpc::ServerContext* context, const v1::TranslateRequest* request,
                         v1::TranslateResponse* response) override;
  grpc::Status TranslateStream(grpc::ServerContext* context,
                               const v1::TranslateStreamRequest* request,
                               grpc::ServerWriter<v1::TranslateStreamResponse>* writer) override;
  grpc::Status ListTasks(grpc::ServerContext* context, const v1::ListTasksRequest* request,
                         v1::ListTasksResponse* response) override;
  grpc::Status GetTask(grpc::ServerContext* context, const v1::GetTaskRequest* request,
                       v1::TaskInfo* response) override;

 private:
  TranslationCore& core_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATION_SERVICE_H_
