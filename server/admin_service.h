// AdminService: hot reload of one task's model (ReloadTask). Served only with
// --enable_admin, since it makes the server read files and spend memory on request.
#ifndef TASKMOE_SERVER_ADMIN_SERVICE_H_
#define TASKMOE_SERVER_ADMIN_SERVICE_H_

#include <functional>
#include <string>

#include "server/metrics.h"
#include "server/task_registry.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::server {

class AdminServiceImpl final : public v1::AdminService::Service {
 public:
  // `on_loaded` is told of every task version swapped in (health and metrics follow it).
  AdminServiceImpl(TaskRegistry& registry, Metrics& metrics,
                   std::function<void(const models::TaskModel&)> on_loaded);

  grpc::Status ReloadTask(grpc::ServerContext* context, const v1::ReloadTaskRequest* request,
                          v1::ReloadTaskResponse* response) override;

 private:
  TaskRegistry& registry_;
  Metrics& metrics_;
  std::function<void(const models::TaskModel&)> on_loaded_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_ADMIN_SERVICE_H_
