// TranslationService: gRPC calls handed to TranslationCore.
#include "server/translation_service.h"

#include <chrono>

#include "server/grpc_status.h"
#include "server/routing_header.h"

namespace taskmoe::server {
namespace {

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

CallContext CallContextOf(grpc::ServerContext& context) {
  CallContext call;
  call.deadline = DeadlineOf(context);
  call.routing_header = TaskRoutingHeaderValues(context);
  call.cancelled = [&context] { return context.IsCancelled(); };
  return call;
}

}  // namespace

grpc::Status TranslationServiceImpl::Translate(grpc::ServerContext* context,
                                               const v1::TranslateRequest* request,
                                               v1::TranslateResponse* response) {
  return ToGrpcStatus(core_.Translate(*request, CallContextOf(*context), *response));
}

grpc::Status TranslationServiceImpl::TranslateStream(
    grpc::ServerContext* context, const v1::TranslateStreamRequest* request,
    grpc::ServerWriter<v1::TranslateStreamResponse>* writer) {
  return ToGrpcStatus(core_.TranslateStream(
      *request, CallContextOf(*context),
      [writer](const v1::TranslateStreamResponse& message) { return writer->Write(message); }));
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
