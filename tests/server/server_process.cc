// Child-process control of taskmoe-server for the integration tests.
#include "tests/server/server_process.h"

#include <arpa/inet.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<char*> argv;
  std::string binary = TASKMOE_SERVER_BINARY;
  argv.push_back(binary.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    FILE* log = freopen(log_path.c_str(), "w", stderr);
    if (log == nullptr) _exit(127);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Exit code of `pid` once it exits within `timeout`; -1 when killed by a signal; -2 on timeout.
int WaitPid(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    if (absl::Now() >= deadline) return -2;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace

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
  p->pid_ = Spawn(args, p->log_path_);
  if (p->pid_ < 0) return absl::InternalError("fork failed");
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
    }
    if (grpc_port != 0) break;
    if (WaitPid(p->pid_, absl::ZeroDuration()) != -2) {
      p->exited_ = true;
      return absl::InternalError(absl::StrCat("server exited at start:\n", p->Log()));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("no port file:\n" + p->Log());
    absl::SleepFor(absl::Milliseconds(20));
  }
  p->address_ = absl::StrCat("127.0.0.1:", grpc_port);
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  p->channel_ = grpc::CreateCustomChannel(p->address_, credentials, channel_arguments);
  while (HealthStatus(p->channel_, "") != "SERVING") {
    if (WaitPid(p->pid_, absl::ZeroDuration()) != -2) {
      p->exited_ = true;
      return absl::InternalError(absl::StrCat("server exited while loading:\n", p->Log()));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("never SERVING:\n" + p->Log());
    absl::SleepFor(absl::Milliseconds(20));
  }
  return p;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    WaitPid(pid_, absl::Seconds(30));
  }
}

void ServerProcess::Signal(int signal) {
  if (!exited_) kill(pid_, signal);
}

int ServerProcess::WaitExit(absl::Duration timeout) {
  const int code = WaitPid(pid_, timeout);
  if (code != -2) exited_ = true;
  return code < 0 ? -1 : code;
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

ExitResult RunServerToExit(const std::vector<std::string>& args, absl::Duration timeout) {
  const std::string log_path = MakeTempDir("exit") + "/server.log";
  const pid_t pid = Spawn(args, log_path);
  ExitResult result;
  result.code = WaitPid(pid, timeout);
  if (result.code == -2) {
    kill(pid, SIGKILL);
    WaitPid(pid, absl::Seconds(30));
  }
  result.log = ReadFile(log_path);
  return result;
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

absl::StatusOr<std::string> ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to metrics port ", port));
  }
  const std::string request =
      "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::InternalError("write failed");
  }
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos ||
      response.find(" 200 ") == std::string::npos) {
    return absl::InternalError("bad HTTP response: " + response.substr(0, 200));
  }
  return response.substr(body + 4);
}

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
