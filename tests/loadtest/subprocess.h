// Child processes for the load tester's command-line and end-to-end tests: run a command to
// its end with its output captured, or keep one (the server) running in the background and
// stop it when done. Every wait is bounded.
#ifndef TASKMOE_TESTS_LOADTEST_SUBPROCESS_H_
#define TASKMOE_TESTS_LOADTEST_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace taskmoe::loadtest::testing {

// A fresh empty directory under TEST_TMPDIR (or /tmp).
std::string MakeTempDir(const std::string& name);

// The whole content of a file ("" when unreadable).
std::string ReadFile(const std::string& path);

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  std::string output;  // stdout and stderr together
};

// Runs argv[0] with argv to its end, killing it after `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout);

// A background process, sent SIGTERM (then SIGKILL) when destroyed.
class ChildProcess {
 public:
  // Starts argv with stdout and stderr going to `log_path`.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv,
                                                             const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // True while it has not exited.
  bool Running();
  // SIGTERM, then waits up to `timeout` (SIGKILL after it); the exit code or -1.
  int Stop(absl::Duration timeout);
  const std::string& log_path() const { return log_path_; }

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string log_path_;
};

}  // namespace taskmoe::loadtest::testing

#endif  // TASKMOE_TESTS_LOADTEST_SUBPROCESS_H_
