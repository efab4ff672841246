// The helpers tests of every layer share: temporary directories and whole files, child
// processes (run a command to its end with its output captured, or keep one, a server or a
// client, running in the background and signal or stop it) and GET from a local HTTP
// endpoint. Every wait is bounded.
#ifndef TASKMOE_TESTS_COMMON_PROCESS_H_
#define TASKMOE_TESTS_COMMON_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace taskmoe::testing {

// A fresh empty directory under TEST_TMPDIR (or /tmp), removed with everything in it when the
// test process exits normally (set TASKMOE_KEEP_TEST_TMP to keep them for a post-mortem). Test
// binaries run one test per process under ctest, so what a test writes there lives as long as
// the test; without the removal a full ctest run left gigabytes behind in /tmp.
std::string MakeTempDir(const std::string& name);

// The whole content of a file, byte for byte ("" when unreadable).
std::string ReadFile(const std::string& path);

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  std::string output;  // stdout and stderr together
};

// Runs argv[0] with argv to its end, killing it after `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout);

struct SeparateOutputs {
  int exit_code = -1;  // -1: killed by a signal
  std::string out, err;
};

// Runs argv (through sh, every argument quoted) to its end with `input` on its stdin, and
// returns stdout and stderr apart (for command-line tools whose errors go to stderr).
SeparateOutputs RunCommandWithInput(const std::vector<std::string>& argv,
                                    const std::string& input = "");

// A background process, sent SIGTERM (then SIGKILL) when destroyed.
class ChildProcess {
 public:
  // Starts argv (argv[0] a path) with stdin from `stdin_path` (default /dev/null) and stdout
  // and stderr going to `log_path`. The child is killed if the test process dies.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv,
                                                             const std::string& log_path,
                                                             const std::string& stdin_path = "");
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // True while it has not exited.
  bool Running();
  // Sends `signal` unless it has exited.
  void Signal(int signal);
  // Waits up to `timeout` for it to exit on its own: its exit code (-1: killed by a signal),
  // or nullopt while it still runs.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, then waits up to `timeout` (SIGKILL after it); the exit code or -1.
  int Stop(absl::Duration timeout);
  const std::string& log_path() const { return log_path_; }
  // What it wrote so far.
  std::string Log() const;

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string log_path_;
};

// A TCP connection to 127.0.0.1:<port> (blocking, close-on-exec, 10 s send and receive
// timeouts): its descriptor, which the caller closes. UNAVAILABLE when the connection is
// refused; RESOURCE_EXHAUSTED when no socket could be made at all (out of descriptors).
absl::StatusOr<int> ConnectToLoopback(int port);

// An HTTP response: its status code, header lines as sent, and body (chunked transfer
// decoded).
struct HttpResponse {
  int status = 0;
  std::string headers;
  std::string body;
};

// One HTTP/1.1 request to 127.0.0.1:<port> on a connection of its own (Connection: close);
// `headers` are extra header lines ("name: value"). UNAVAILABLE when nothing listens.
absl::StatusOr<HttpResponse> HttpRequest(int port, const std::string& method,
                                         const std::string& path,
                                         const std::vector<std::string>& headers = {},
                                         const std::string& body = "");

// GET http://127.0.0.1:<port><path>: the body of a 200 response, UNAVAILABLE when nothing
// listens or the status is not 200 (the status is in the message).
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace taskmoe::testing

#endif  // TASKMOE_TESTS_COMMON_PROCESS_H_
