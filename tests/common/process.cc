// fork/exec child processes with bounded waits, and a minimal loopback HTTP client.
#include "tests/common/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace taskmoe::testing {
namespace {

// Starts argv with stdin from `stdin_path` (or /dev/null) and stdout and stderr into
// `log_path`; the pid or an error. The child gets SIGKILL when the test process dies, so no
// test outcome (failed assertion, crash) leaves it behind.
absl::StatusOr<pid_t> SpawnWithLog(const std::vector<std::string>& argv,
                                   const std::string& log_path, const std::string& stdin_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  // Everything the child needs is prepared before fork: after it, only system calls.
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (std::string& a : args) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  const std::string in = stdin_path.empty() ? "/dev/null" : stdin_path;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("cannot start ", argv[0], ": fork failed"));
  if (pid == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    const int in_fd = open(in.c_str(), O_RDONLY | O_CLOEXEC);
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in_fd < 0 || log_fd < 0) _exit(127);
    if (dup2(in_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) _exit(127);
    execv(c_argv[0], c_argv.data());
    _exit(127);
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

namespace {

// The directories MakeTempDir made in this process, removed when it exits. Never destroyed:
// used at exit.
std::mutex& TempDirsMutex() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::vector<std::string>& TempDirsToRemove() {
  static auto* dirs = new std::vector<std::string>();
  return *dirs;
}

void RemoveTempDirs() {
  if (getenv("TASKMOE_KEEP_TEST_TMP") != nullptr) return;
  std::lock_guard<std::mutex> lock(TempDirsMutex());
  for (const std::string& dir : TempDirsToRemove()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
}

}  // namespace

std::string MakeTempDir(const std::string& name) {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/taskmoe-", name, "-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) return "";
  static const bool registered = std::atexit(RemoveTempDirs) == 0;
  (void)registered;
  std::lock_guard<std::mutex> lock(TempDirsMutex());
  TempDirsToRemove().push_back(pattern);
  return pattern;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout) {
  CommandResult result;
  const std::string dir = MakeTempDir("command");
  const std::string log = dir + "/output.txt";
  absl::StatusOr<pid_t> pid = SpawnWithLog(argv, log, "");
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

SeparateOutputs RunCommandWithInput(const std::vector<std::string>& argv,
                                    const std::string& input) {
  const std::string dir = MakeTempDir("command");
  std::ofstream(dir + "/in", std::ios::binary) << input;
  std::vector<std::string> quoted;
  for (const std::string& arg : argv) {
    quoted.push_back(absl::StrCat("'", absl::StrReplaceAll(arg, {{"'", "'\\''"}}), "'"));
  }
  const std::string command =
      absl::StrCat(absl::StrJoin(quoted, " "), " < ", dir, "/in > ", dir, "/out 2> ", dir, "/err");
  const int status = std::system(command.c_str());
  SeparateOutputs result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadFile(dir + "/out");
  result.err = ReadFile(dir + "/err");
  return result;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv, const std::string& log_path,
    const std::string& stdin_path) {
  absl::StatusOr<pid_t> pid = SpawnWithLog(argv, log_path, stdin_path);
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

std::string ChildProcess::Log() const { return ReadFile(log_path_); }

void ChildProcess::Signal(int signal) {
  if (Running()) kill(pid_, signal);
}

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  if (exited_) return exit_code_;
  std::optional<int> code = WaitFor(pid_, timeout);
  if (code) {
    exited_ = true;
    exit_code_ = *code;
  }
  return code;
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

absl::StatusOr<int> ConnectToLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ResourceExhaustedError("socket failed");
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to port ", port));
  }
  return fd;
}

namespace {

// The body of a chunked transfer, decoded; nullopt when malformed.
std::optional<std::string> Unchunk(absl::string_view chunked) {
  std::string body;
  for (;;) {
    const size_t line_end = chunked.find("\r\n");
    if (line_end == absl::string_view::npos) return std::nullopt;
    size_t size = 0;
    if (!absl::SimpleHexAtoi(chunked.substr(0, line_end), &size)) return std::nullopt;
    chunked.remove_prefix(line_end + 2);
    if (size == 0) return body;
    if (chunked.size() < size + 2) return std::nullopt;
    body.append(chunked.data(), size);
    chunked.remove_prefix(size + 2);
  }
}

}  // namespace

absl::StatusOr<HttpResponse> HttpRequest(int port, const std::string& method,
                                         const std::string& path,
                                         const std::vector<std::string>& headers,
                                         const std::string& body) {
  absl::StatusOr<int> connected = ConnectToLoopback(port);
  if (!connected.ok()) return connected.status();
  const int fd = *connected;
  std::string request =
      absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  for (const std::string& header : headers) absl::StrAppend(&request, header, "\r\n");
  if (!body.empty() || method == "POST") {
    absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n");
  }
  absl::StrAppend(&request, "\r\n", body);
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = write(fd, request.data() + sent, request.size() - sent);
    if (n <= 0) break;  // the server may answer (413) before reading everything
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  const size_t body_start = response.find("\r\n\r\n");
  HttpResponse result;
  if (response.rfind("HTTP/1.", 0) != 0 || body_start == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(response).substr(9, 3), &result.status)) {
    return absl::InternalError("bad HTTP response: " + response.substr(0, 200));
  }
  result.headers = response.substr(0, body_start);
  result.body = response.substr(body_start + 4);
  if (absl::StrContains(absl::AsciiStrToLower(result.headers), "transfer-encoding: chunked")) {
    std::optional<std::string> unchunked = Unchunk(result.body);
    if (!unchunked) return absl::InternalError("bad chunked body: " + result.body.substr(0, 200));
    result.body = *std::move(unchunked);
  }
  return result;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  absl::StatusOr<HttpResponse> response = HttpRequest(port, "GET", path);
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return absl::UnavailableError(absl::StrCat("HTTP error: status ", response->status));
  }
  return std::move(response->body);
}

}  // namespace taskmoe::testing
