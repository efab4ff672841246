// TranslationService: gRPC calls handed to TranslationCore.
#include "server/translation_service.h"

#include "server/grpc_call_context.h"
#include "server/grpc_status.h"
#include "server/translate_reactor.h"
#include "server/translate_stream_reactor.h"

namespace taskmoe::server {
namespace {

CallContext CallContextOf(grpc::ServerContext& context) {
  return GrpcCallContext(context, [&context] { return context.IsCancelled(); });
}

}  // namespace

grpc::ServerUnaryReactor* TranslationServiceImpl::Translate(grpc::CallbackServerContext* context,
                                                            const v1::TranslateRequest* request,
                                                            v1::TranslateResponse* response) {
  return TranslateReactor::Start(core_, call_limit_, *context, *request, *response);
}

grpc::ServerWriteReactor<v1::TranslateStreamResponse>* TranslationServiceImpl::TranslateStream(
    grpc::CallbackServerContext* context, const v1::TranslateStreamRequest* request) {
  return TranslateStreamReactor::Start(core_, call_limit_, *context, *request);
}

grpc::Status TranslationServiceImpl::ListTasks(grpc::ServerContext* context,
                                               const v1::ListTasksRequest* request,
                                               v1::ListTasksResponse* response) {
  core_.ListTasks(*response);
  return grpc::Status::OK;
}

grpc::Status TranslationServiceImpl::GetTask(grpc::ServerContext* context,
                                             const v1::GetTaskRequest* request,
                                             v1::TaskInfo* response) {
  return ToGrpcStatus(core_.GetTask(*request, CallContextOf(*context), *response));
}

}  // namespace taskmoe::server
