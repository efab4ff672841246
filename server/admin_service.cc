// ReloadTask: load the new version beside the old one, swap, and let the old one go when its
// last request finishes. A version that fails to load is refused and the old one stays.
#include "server/admin_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "server/log.h"
#include "server/routing_header.h"

namespace taskmoe::server {

AdminServiceImpl::AdminServiceImpl(TaskRegistry& registry, Metrics& metrics,
                                   std::function<void(const models::TaskModel&)> on_loaded)
    : registry_(registry), metrics_(metrics), on_loaded_(std::move(on_loaded)) {}

grpc::Status AdminServiceImpl::ReloadTask(grpc::ServerContext* context,
                                          const v1::ReloadTaskRequest* request,
                                          v1::ReloadTaskResponse* response) {
  const absl::Time start = absl::Now();
  if (request->task().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("task: empty; name the task to reload"));
  }
  if (absl::Status s = CheckTaskRoutingHeader(*context, request->task()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  absl::StatusOr<TaskRegistry::Reloaded> reloaded = registry_.Reload(request->task());
  if (!reloaded.ok()) {
    if (reloaded.status().code() == absl::StatusCode::kFailedPrecondition) {
      metrics_.CountLoadFailure(request->task());
    }
    Log(LogLevel::kWarning, "reload refused",
        {{"task", request->task()}, {"error", reloaded.status().message()}});
    return ToGrpcStatus(reloaded.status());
  }
  on_loaded_(*reloaded->current);
  response->set_task(request->task());
  if (reloaded->previous) response->set_previous_version(reloaded->previous->version());
  response->set_version(reloaded->current->version());
  Log(LogLevel::kInfo, "reloaded task",
      {{"task", request->task()},
       {"previous_version", reloaded->previous ? reloaded->previous->version() : "-"},
       {"version", reloaded->current->version()},
       {"time", absl::FormatDuration(absl::Now() - start)}});
  return grpc::Status::OK;
}

}  // namespace taskmoe::server
