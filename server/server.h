// TaskmoeServer: the whole server assembled (registry, batcher, services, health, reflection,
// metrics endpoint) with its lifecycle: Start (ports bound, NOT_SERVING), LoadModels (SERVING
// once every task is loaded), Shutdown (NOT_SERVING, drain within the grace period, stop).
#ifndef TASKMOE_SERVER_SERVER_H_
#define TASKMOE_SERVER_SERVER_H_

#include <grpcpp/server.h>
#include <prometheus/exposer.h>

#include <memory>

#include "absl/status/statusor.h"
#include "server/admin_service.h"
#include "server/grpc_call_metrics.h"
#include "server/http_gateway.h"
#include "server/listener.h"
#include "server/memory_trimmer.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/process_metrics.h"
#include "server/scheduler.h"
#include "server/task_registry.h"
#include "server/translation_core.h"
#include "server/translation_service.h"

namespace taskmoe::server {

class TaskmoeServer {
 public:
  // Binds the gRPC and metrics ports and starts serving: health says NOT_SERVING and
  // translation calls are UNAVAILABLE until LoadModels succeeds.
  static absl::StatusOr<std::unique_ptr<TaskmoeServer>> Start(const ServerOptions& options);
  ~TaskmoeServer();
  TaskmoeServer(const TaskmoeServer&) = delete;
  TaskmoeServer& operator=(const TaskmoeServer&) = delete;

  // Loads every task of the repository; then health turns SERVING (overall, per service and
  // per task id).
  absl::Status LoadModels();

  // Health NOT_SERVING and new calls UNAVAILABLE at once; calls in flight get the grace period
  // to finish, then are cancelled; then the server stops. Blocks until it has.
  void Shutdown();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  int admin_port() const { return admin_port_; }  // -1 unless AdminService has its own port
  int http_port() const { return http_port_; }    // -1 without --http_port

 private:
  explicit TaskmoeServer(const ServerOptions& options);
  void OnTaskLoaded(const models::TaskModel& task);

  const ServerOptions options_;
  Metrics metrics_;
  std::shared_ptr<ProcessMetrics> process_metrics_;
  std::shared_ptr<GrpcCoreCallCounters> grpc_core_counters_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  TaskRegistry registry_;
  Scheduler scheduler_;
  TranslationCore core_;
  TranslationServiceImpl translation_;
  std::unique_ptr<AdminServiceImpl> admin_;
  int grpc_port_ = 0;
  int metrics_port_ = -1;
  int admin_port_ = -1;
  int http_port_ = -1;
  bool shut_down_ = false;
  MemoryTrimmer memory_trimmer_;
  // Hands the connections listener_ accepts to server_; outlives both.
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  // Stopped before the core it calls is destroyed (declared after it).
  std::unique_ptr<HttpGateway> http_;
  // Last: destroyed first, so no call reaches the services after they are gone.
  std::unique_ptr<grpc::Server> admin_server_;  // only with --admin_port
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Listener> listener_;  // stopped before server_ goes
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_SERVER_H_
