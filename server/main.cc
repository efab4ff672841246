// taskmoe-server: serves the tasks of a model repository over gRPC (DESIGN.md §4), with
// Prometheus metrics (§5). SIGTERM or SIGINT drains and exits 0.
//
//   taskmoe-server --model_repository REPO [--port 8500] [--metrics_port 9464]
#include <grpc/support/log.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "models/compute.h"
#include "server/flags.h"
#include "server/log.h"
#include "server/server.h"
#include "util/command_line.h"

namespace {

using taskmoe::server::Log;
using taskmoe::server::LogLevel;

// Written to a temporary name and renamed, so a reader never sees half a file.
bool WritePortFile(const std::string& path, int grpc_port, int metrics_port, int admin_port,
                   int http_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "grpc_port=" << grpc_port << "\nmetrics_port=" << metrics_port << "\n";
    if (admin_port >= 0) out << "admin_port=" << admin_port << "\n";
    if (http_port >= 0) out << "http_port=" << http_port << "\n";
    if (!out.good()) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

// gRPC's own messages (gpr_log: a failed accept, a bad handshake) in the server's format, so
// that a JSON log stays one JSON object per line. gRPC prints only errors unless
// GRPC_VERBOSITY says otherwise, and it filters before calling this.
void ForwardGrpcLog(gpr_log_func_args* args) {
  const LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                         : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                                   : LogLevel::kDebug;
  Log(level, args->message, {{"source", "grpc"}, {"file", args->file}, {"line", args->line}});
}

}  // namespace

int main(int argc, char** argv) {
  taskmoe::util::ParseCommandLine(
      argc, argv,
      "Serves the per-task subnetworks of a TaskMoE model repository over gRPC.\n"
      "  taskmoe-server --model_repository REPO [--port 8500] [--metrics_port 9464]\n"
      "API, limits, batching and metrics: docs/api.md. SIGTERM/SIGINT drains and exits 0.",
      "server/flags.cc");
  absl::StatusOr<taskmoe::server::ServerOptions> options =
      taskmoe::server::ServerOptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "taskmoe-server: %s (see --help)\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }
  gpr_set_log_function(ForwardGrpcLog);
  // Blocked before any thread exists, so every thread inherits the mask and the signals wait
  // for sigwait below instead of killing the process mid-request.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (options->threads > 0) {
    if (absl::Status s = taskmoe::models::SetComputeThreads(options->threads); !s.ok()) {
      std::fprintf(stderr, "taskmoe-server: --threads: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  Log(LogLevel::kInfo,
      absl::StrCat(
          "compute threads per batch: ", taskmoe::models::ComputeThreads(),
          options->threads > 0 ? " (--threads)"
          : std::getenv("OMP_NUM_THREADS") != nullptr
              ? " (OMP_NUM_THREADS)"
              : absl::StrCat(" of budget ", taskmoe::models::DescribeComputeThreadBudget())));
  absl::StatusOr<std::unique_ptr<taskmoe::server::TaskmoeServer>> server =
      taskmoe::server::TaskmoeServer::Start(*options);
  if (!server.ok()) {
    Log(LogLevel::kError, server.status().message());
    return 1;
  }
  if (!options->port_file.empty() &&
      !WritePortFile(options->port_file, (*server)->grpc_port(), (*server)->metrics_port(),
                     (*server)->admin_port(), (*server)->http_port())) {
    Log(LogLevel::kError, absl::StrCat("cannot write --port_file ", options->port_file));
    return 1;
  }
  if (absl::Status s = (*server)->LoadModels(); !s.ok()) {
    Log(LogLevel::kError, absl::StrCat("cannot load the model repository: ", s.message()));
    return 1;
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  Log(LogLevel::kInfo, absl::StrCat("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"));
  (*server)->Shutdown();
  return 0;
}
