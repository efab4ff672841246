// Child-process control of taskmoe-server for the integration tests.
#include "tests/server/server_process.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <signal.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& repository, const std::vector<std::string>& flags, absl::Duration timeout,
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    const grpc::ChannelArguments& channel_arguments) {
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  p->dir_ = MakeTempDir("server");
  p->log_path_ = p->dir_ + "/server.log";
  const std::string port_file = p->dir_ + "/ports";
  std::vector<std::string> args = {"--model_repository=" + repository,
                                   "--host=127.0.0.1",
                                   "--port=0",
                                   "--metrics_host=127.0.0.1",
                                   "--metrics_port=0",
                                   "--port_file=" + port_file,
                                   "--threads=1"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.begin(), TASKMOE_SERVER_BINARY);
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Spawn(args, p->log_path_);
  if (!process.ok()) return process.status();
  p->process_ = *std::move(process);
  const absl::Time deadline = absl::Now() + timeout;
  int grpc_port = 0;
  while (grpc_port == 0) {
    for (absl::string_view line : absl::StrSplit(ReadFile(port_file), '\n')) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, '=');
      if (kv.first == "grpc_port" && !absl::SimpleAtoi(kv.second, &grpc_port)) grpc_port = 0;
      if (kv.first == "metrics_port" && !absl::SimpleAtoi(kv.second, &p->metrics_port_)) {
        p->metrics_port_ = -1;
      }
      if (kv.first == "admin_port" && !absl::SimpleAtoi(kv.second, &p->admin_port_)) {
        p->admin_port_ = -1;
      }
      if (kv.first == "http_port" && !absl::SimpleAtoi(kv.second, &p->http_port_)) {
        p->http_port_ = -1;
      }
    }
    if (grpc_port != 0) break;
    if (!p->process_->Running()) {
      return absl::InternalError(absl::StrCat("server exited at start:\n", p->Log()));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("no port file:\n" + p->Log());
    absl::SleepFor(absl::Milliseconds(20));
  }
  p->address_ = absl::StrCat("127.0.0.1:", grpc_port);
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  p->channel_ = grpc::CreateCustomChannel(p->address_, credentials, channel_arguments);
  while (HealthStatus(p->channel_, "") != "SERVING") {
    if (!p->process_->Running()) {
      return absl::InternalError(absl::StrCat("server exited while loading:\n", p->Log()));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("never SERVING:\n" + p->Log());
    absl::SleepFor(absl::Milliseconds(20));
  }
  return p;
}

ServerProcess::~ServerProcess() {
  if (process_ == nullptr) return;
  process_->Signal(SIGKILL);
  process_->Wait(absl::Seconds(30));
}

void ServerProcess::Signal(int signal) { process_->Signal(signal); }

int ServerProcess::WaitExit(absl::Duration timeout) { return process_->Wait(timeout).value_or(-1); }

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

ExitResult RunServerToExit(const std::vector<std::string>& args, absl::Duration timeout) {
  std::vector<std::string> argv = {TASKMOE_SERVER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult result = RunCommand(argv, timeout);
  return {.code = result.exit_code, .log = std::move(result.output)};
}

std::string HealthStatus(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return absl::StrCat("error ", status.error_code());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

absl::StatusOr<std::string> ScrapeMetrics(int port) { return HttpGet(port, "/metrics"); }

double MetricValue(const std::string& exposition, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.size() > series.size() && line.substr(0, series.size()) == series &&
        line[series.size()] == ' ') {
      double value = 0;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
    }
  }
  return -1;
}

}  // namespace taskmoe::server::testing
