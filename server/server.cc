// Assembly and lifecycle of the server.
#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <sys/resource.h>

#include <exception>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.pb.h"
#include "server/grpc_call_metrics.h"
#include "server/listener.h"
#include "server/log.h"
#include "server/tls.h"

namespace taskmoe::server {
namespace {

// Connections each take a descriptor, and the soft limit is often 1024 while the hard one is
// far higher: the soft limit goes up to the hard one (an unprivileged process may do that).
void RaiseFileDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = before;
  }
  const auto text = [](rlim_t v) {
    return v == RLIM_INFINITY ? std::string("unlimited") : absl::StrCat(v);
  };
  Log(LogLevel::kInfo,
      absl::StrCat("file descriptors: ", text(limit.rlim_cur),
                   limit.rlim_cur != before ? absl::StrCat(" (raised from ", text(before), ")")
                                            : std::string()));
}

}  // namespace

TaskmoeServer::TaskmoeServer(const ServerOptions& options)
    : options_(options),
      process_metrics_(std::make_shared<ProcessMetrics>()),
      grpc_core_counters_(std::make_shared<GrpcCoreCallCounters>()),
      registry_(options.model_repository, options.precision, options.tasks),
      scheduler_(options.batching, metrics_),
      core_(registry_, scheduler_, metrics_, options.limits),
      translation_(core_, options.max_concurrent_rpcs),
      memory_trimmer_(options.malloc_trim_interval) {}

absl::StatusOr<std::unique_ptr<TaskmoeServer>> TaskmoeServer::Start(const ServerOptions& options) {
  if (absl::Status s = ValidateServerOptions(options); !s.ok()) return s;
  std::unique_ptr<TaskmoeServer> self(new TaskmoeServer(options));

  if (options.metrics_port >= 0) {
    const std::string address = absl::StrCat(options.metrics_host, ":", options.metrics_port);
    try {
      self->exposer_ = std::make_unique<prometheus::Exposer>(address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
    }
    self->exposer_->RegisterCollectable(self->metrics_.registry());
    self->exposer_->RegisterCollectable(self->process_metrics_);
    self->exposer_->RegisterCollectable(self->grpc_core_counters_);
    const std::vector<int> ports = self->exposer_->GetListeningPorts();
    self->metrics_port_ = ports.empty() ? options.metrics_port : ports.front();
  }

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();

  RaiseFileDescriptorLimit();
  // Our own listener (server/listener.h says why). It binds without SO_REUSEPORT, which gRPC
  // would set: a second server on a port already in use fails here instead of taking half of
  // the new connections.
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind(options.host, options.port);
  if (!listener.ok()) return listener.status();
  self->listener_ = *std::move(listener);
  self->grpc_port_ = self->listener_->port();

  grpc::EnableDefaultHealthCheckService(true);
  // gRPC's health service is not built on the protobuf classes, so nothing would pull our
  // compiled health.proto out of its static library, and reflection (which reads the
  // protobuf descriptor pool) could list grpc.health.v1.Health but not describe it.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  self->acceptor_ = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, *credentials);
  builder.SetMaxReceiveMessageSize(options.max_request_bytes);
  builder.AddChannelArgument(
      GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options.handshake_timeout)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
  builder.AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
  if (options.max_connection_idle > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_IDLE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options.max_connection_idle)));
  }
  if (options.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options.max_connection_age)));
    // Calls in flight get the grace period to finish on the aged connection.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(options.grace_period)));
  }
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // The sync methods (ListTasks, GetTask, health, admin) hold a thread per call; bounding the
  // threads bounds memory, and calls beyond the bound get RESOURCE_EXHAUSTED from gRPC. The
  // translation calls hold none: TranslationServiceImpl bounds them to the same number.
  grpc::ResourceQuota quota("taskmoe-server");
  quota.SetMaxThreads(options.max_concurrent_rpcs);
  builder.SetResourceQuota(quota);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counters;
  counters.push_back(std::make_unique<CallStatusInterceptorFactory>(
      self->metrics_, CallStatusInterceptorFactory::ServedMethods()));
  builder.experimental().SetInterceptorCreators(std::move(counters));
  builder.RegisterService(&self->translation_);
  if (options.enable_admin) {
    self->admin_ = std::make_unique<AdminServiceImpl>(
        self->registry_, self->metrics_,
        [raw = self.get()](const models::TaskModel& task) { raw->OnTaskLoaded(task); });
    if (options.admin_port < 0) {
      builder.RegisterService(self->admin_.get());
    } else {
      // A server of its own: only AdminService, on its own address, same transport security.
      grpc::ServerBuilder admin_builder;
      const std::string admin_address = absl::StrCat(options.admin_host, ":", options.admin_port);
      admin_builder.AddListeningPort(admin_address, *credentials, &self->admin_port_);
      admin_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
      admin_builder.SetMaxReceiveMessageSize(options.max_request_bytes);
      admin_builder.RegisterService(self->admin_.get());
      self->admin_server_ = admin_builder.BuildAndStart();
      if (self->admin_server_ == nullptr || self->admin_port_ == 0) {
        return absl::UnavailableError(absl::StrCat("cannot listen on ", admin_address,
                                                   " for --admin_port (in use, or not an "
                                                   "address of this host)"));
      }
    }
  }
  self->server_ = builder.BuildAndStart();
  if (self->server_ == nullptr) {
    return absl::InternalError("gRPC could not start the server (its log above says why)");
  }
  self->listener_->Start(self->acceptor_.get(), options.max_connections, self->metrics_);
  if (options.http_port >= 0) {
    HttpGatewayOptions http;
    http.host = options.http_host;
    http.port = options.http_port;
    http.threads = options.http_threads;
    http.max_request_bytes = options.max_request_bytes;
    http.playground = options.playground;
    absl::StatusOr<std::unique_ptr<HttpGateway>> gateway =
        HttpGateway::Start(http, self->core_, self->metrics_);
    if (!gateway.ok()) return gateway.status();
    self->http_ = *std::move(gateway);
    self->http_port_ = self->http_->port();
  }
  // gRPC's health service starts with the overall status SERVING; not until models load.
  self->server_->GetHealthCheckService()->SetServingStatus(false);
  self->server_->GetHealthCheckService()->SetServingStatus("taskmoe.v1.TranslationService", false);
  Log(LogLevel::kInfo,
      absl::StrCat(
          "listening on ", options.host, ":", self->grpc_port_,
          self->metrics_port_ >= 0 ? absl::StrCat(", metrics on ", options.metrics_host, ":",
                                                  self->metrics_port_, "/metrics")
                                   : std::string(),
          self->http_port_ >= 0
              ? absl::StrCat(", HTTP/JSON on ", options.http_host, ":", self->http_port_,
                             options.playground ? " (playground at /)" : "")
              : std::string(),
          ", ", TransportName(options.tls),
          !options.enable_admin ? ", admin service off"
          : options.admin_port < 0
              ? ", admin service on"
              : absl::StrCat(", admin service on ", options.admin_host, ":", self->admin_port_)));
  return self;
}

TaskmoeServer::~TaskmoeServer() {
  // No connection may reach gRPC once it stops (the acceptor would leave it open).
  if (listener_ != nullptr) listener_->Stop();
  if (server_ != nullptr && !shut_down_) {
    core_.StartDraining();
    scheduler_.Stop();
    http_.reset();
    server_->Shutdown(std::chrono::system_clock::now());
  }
  if (admin_server_ != nullptr) admin_server_->Shutdown(std::chrono::system_clock::now());
}

void TaskmoeServer::OnTaskLoaded(const models::TaskModel& task) {
  const models::TaskDescription& d = task.description();
  metrics_.SetModelInfo(d.id, d.version, d.precision, d.matmul_path, d.greedy_head_filter);
  metrics_.ForTask(d.id).memory_bytes->Set(static_cast<double>(d.memory_bytes));
  metrics_.SetWeightStoreBytes(static_cast<double>(registry_.total_weight_bytes()),
                               static_cast<double>(registry_.shared_weight_bytes()));
  metrics_.SetTaskReady(task.id(), true);
  server_->GetHealthCheckService()->SetServingStatus(task.id(), true);
}

absl::Status TaskmoeServer::LoadModels() {
  const absl::Time start = absl::Now();
  for (const std::string& task : registry_.TaskIds()) {
    server_->GetHealthCheckService()->SetServingStatus(task, false);
  }
  if (absl::Status s = registry_.LoadAll(options_.require_all_tasks); !s.ok()) {
    metrics_.CountLoadFailure("");
    return s;
  }
  for (const auto& task : registry_.List()) OnTaskLoaded(*task);
  core_.SetReady();
  server_->GetHealthCheckService()->SetServingStatus("taskmoe.v1.TranslationService", true);
  // The overall status; gRPC sets every service's status with it, so the tasks that failed
  // to load are set NOT_SERVING after it.
  server_->GetHealthCheckService()->SetServingStatus(true);
  const std::map<std::string, std::string> load_errors = registry_.LoadErrors();
  for (const auto& [task, reason] : load_errors) {
    metrics_.CountLoadFailure(task);
    metrics_.SetTaskReady(task, false);
    server_->GetHealthCheckService()->SetServingStatus(task, false);
  }
  const size_t broken = load_errors.size();
  Log(broken > 0 ? LogLevel::kWarning : LogLevel::kInfo,
      absl::StrCat("ready: ", registry_.TaskIds().size(), " tasks loaded in ",
                   absl::FormatDuration(absl::Now() - start),
                   broken > 0 ? absl::StrCat(", ", broken, " failed (not ready)") : ""));
  return absl::OkStatus();
}

void TaskmoeServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  const absl::Time start = absl::Now();
  Log(LogLevel::kInfo, absl::StrCat("shutting down: not serving new requests; in-flight ones "
                                    "have ",
                                    absl::FormatDuration(options_.grace_period), " to finish"));
  // Every health status NOT_SERVING (and fixed so), then new calls are refused.
  server_->GetHealthCheckService()->Shutdown();
  core_.StartDraining();
  if (!core_.WaitIdle(start + options_.grace_period)) {
    Log(LogLevel::kWarning, "grace period over: cancelling the requests still in flight");
    scheduler_.Stop();
    core_.WaitIdle(absl::Now() + absl::Seconds(10));
  }
  scheduler_.Stop();
  listener_->Stop();
  http_.reset();  // no call is in flight: it only stops listening
  // Only streams no translation owns are left (health Watch): end them promptly.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  if (admin_server_ != nullptr) admin_server_->Shutdown(std::chrono::system_clock::now());
  Log(LogLevel::kInfo,
      absl::StrCat("stopped after draining for ", absl::FormatDuration(absl::Now() - start)));
}

}  // namespace taskmoe::server
