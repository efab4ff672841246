// The real taskmoe-server binary as a child process, for integration tests: started on free
// loopback ports (read back from its --port_file), waited for until healthy, stopped by
// signal, with its log kept for failure messages.
#ifndef TASKMOE_TESTS_SERVER_SERVER_PROCESS_H_
#define TASKMOE_TESTS_SERVER_SERVER_PROCESS_H_

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/common/process.h"

namespace taskmoe::server::testing {

using ::taskmoe::testing::ChildProcess;
using ::taskmoe::testing::CommandResult;
using ::taskmoe::testing::HttpGet;
using ::taskmoe::testing::HttpRequest;
using ::taskmoe::testing::HttpResponse;
using ::taskmoe::testing::MakeTempDir;
using ::taskmoe::testing::ReadFile;
using ::taskmoe::testing::RunCommand;

class ServerProcess {
 public:
  // Starts the server on `repository` with extra flags, and waits until its overall health is
  // SERVING (or it exits, or `timeout` passes).
  // `credentials` (default plaintext) and `channel_arguments` make channel().
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& repository, const std::vector<std::string>& flags,
      absl::Duration timeout = absl::Seconds(120),
      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
      const grpc::ChannelArguments& channel_arguments = {});
  ~ServerProcess();  // SIGKILL if still running

  const std::string& address() const { return address_; }
  int metrics_port() const { return metrics_port_; }
  int admin_port() const { return admin_port_; }  // -1 unless started with --admin_port
  int http_port() const { return http_port_; }    // -1 unless started with --http_port
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  pid_t pid() const { return process_->pid(); }

  // Sends `signal` (unless it has exited).
  void Signal(int signal);
  // Waits for the process to exit; its exit code, or -1 (killed by a signal, or timeout).
  int WaitExit(absl::Duration timeout);
  // Everything the server wrote to stderr so far.
  std::string Log() const;

 private:
  ServerProcess() = default;
  std::unique_ptr<ChildProcess> process_;
  std::string dir_, log_path_, address_;
  int metrics_port_ = -1;
  int admin_port_ = -1;
  int http_port_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
};

// Runs the server to its exit (for startup failures): its exit code and log.
struct ExitResult {
  int code = -1;
  std::string log;
};
ExitResult RunServerToExit(const std::vector<std::string>& args, absl::Duration timeout);

// grpc.health.v1 Check of `service` on `channel`: "SERVING", "NOT_SERVING", ... or the gRPC
// error code's name.
std::string HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service);

// GET http://127.0.0.1:<port>/metrics.
absl::StatusOr<std::string> ScrapeMetrics(int port);
// The value of the sample `series` (exact text before the value, e.g.
// `taskmoe_queue_depth{task="en-de"}`), or -1 when absent.
double MetricValue(const std::string& exposition, const std::string& series);

}  // namespace taskmoe::server::testing

#endif  // TASKMOE_TESTS_SERVER_SERVER_PROCESS_H_
