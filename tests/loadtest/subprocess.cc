// posix_spawn-based child processes with bounded waits.
#include "tests/loadtest/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace taskmoe::loadtest::testing {
namespace {

// Starts argv with stdout and stderr redirected to `log_path`; the pid or an error.
absl::StatusOr<pid_t> SpawnWithLog(const std::vector<std::string>& argv,
                                   const std::string& log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", argv[0], ": errno ", error));
  }
  return pid;
}

// Waits for `pid` up to `timeout`: its exit code, -1 if killed by a signal, or nullopt if it
// is still running.
std::optional<int> WaitFor(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    if (absl::Now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string MakeTempDir(const std::string& name) {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/taskmoe-", name, "-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout) {
  CommandResult result;
  const std::string dir = MakeTempDir("command");
  const std::string log = dir + "/output.txt";
  absl::StatusOr<pid_t> pid = SpawnWithLog(argv, log);
  if (!pid.ok()) {
    result.output = std::string(pid.status().message());
    return result;
  }
  std::optional<int> code = WaitFor(*pid, timeout);
  if (!code) {
    kill(*pid, SIGKILL);
    WaitFor(*pid, absl::Seconds(10));
    code = -1;
  }
  result.exit_code = *code;
  result.output = ReadFile(log);
  return result;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv, const std::string& log_path) {
  absl::StatusOr<pid_t> pid = SpawnWithLog(argv, log_path);
  if (!pid.ok()) return pid.status();
  return std::unique_ptr<ChildProcess>(new ChildProcess(*pid, log_path));
}

ChildProcess::~ChildProcess() { Stop(absl::Seconds(30)); }

bool ChildProcess::Running() {
  if (exited_) return false;
  if (std::optional<int> code = WaitFor(pid_, absl::ZeroDuration())) {
    exited_ = true;
    exit_code_ = *code;
  }
  return !exited_;
}

int ChildProcess::Stop(absl::Duration timeout) {
  if (!Running()) return exit_code_;
  kill(pid_, SIGTERM);
  std::optional<int> code = WaitFor(pid_, timeout);
  if (!code) {
    kill(pid_, SIGKILL);
    code = WaitFor(pid_, absl::Seconds(10)).value_or(-1);
  }
  exited_ = true;
  exit_code_ = *code;
  return exit_code_;
}

}  // namespace taskmoe::loadtest::testing
