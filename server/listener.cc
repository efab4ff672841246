// The accept loop of the gRPC port.
#include "server/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/log.h"

namespace taskmoe::server {
namespace {

// How stale the count of open descriptors may be (connections accepted meanwhile are added).
constexpr absl::Duration kRecount = absl::Milliseconds(100);
constexpr int kBacklog = 1024;

std::string ErrnoText(int error) { return std::strerror(error); }

// Counts the process's open descriptors and, among them, its sockets.
void CountOpenFds(int& fds, int& sockets) {
  fds = sockets = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
    std::error_code link_error;
    const std::filesystem::path target = std::filesystem::read_symlink(it->path(), link_error);
    if (!link_error && target.native().rfind("socket:", 0) == 0) ++sockets;
  }
}

int SoftFdLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 20));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(const std::string& host, int port) {
  std::unique_ptr<Listener> listener(new Listener());
  // "[::]" and "[::1]" as gRPC takes them.
  std::string name = host;
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(name.empty() ? nullptr : name.c_str(),
                                 std::to_string(port).c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve ", host, " to listen on: ", gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, freeaddrinfo);
  // The wildcard "::" alone serves IPv4 too (dual stack); otherwise each address serves its
  // own family.
  const bool dual_stack = name == "::";
  for (const addrinfo* a = addresses.get(); a != nullptr; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", ErrnoText(errno)));
    listener->listen_fds_.push_back(fd);
    const int on = 1, off = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (a->ai_family == AF_INET6) {
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? &off : &on, sizeof(on));
    }
    // A port of 0 is chosen by the first bind; the other addresses take the same.
    sockaddr_storage address{};
    std::memcpy(&address, a->ai_addr, a->ai_addrlen);
    if (listener->port_ != 0) {
      const uint16_t chosen = htons(static_cast<uint16_t>(listener->port_));
      if (a->ai_family == AF_INET) reinterpret_cast<sockaddr_in*>(&address)->sin_port = chosen;
      if (a->ai_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&address)->sin6_port = chosen;
    }
    if (bind(fd, reinterpret_cast<const sockaddr*>(&address), a->ai_addrlen) != 0 ||
        listen(fd, kBacklog) != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", host, ":", port,
                       " (in use, or not an address of this host): ", ErrnoText(errno)));
    }
    sockaddr_storage bound{};
    socklen_t length = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
    listener->port_ =
        ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                         : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    if (dual_stack) break;
  }
  if (listener->listen_fds_.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ": no address"));
  }
  listener->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  listener->reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (listener->wake_fd_ < 0 || listener->reserve_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("listener set-up: ", ErrnoText(errno)));
  }
  return listener;
}

Listener::~Listener() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (reserve_fd_ >= 0) close(reserve_fd_);
}

void Listener::Start(grpc::experimental::ExternalConnectionAcceptor* acceptor, int max_connections,
                     Metrics& metrics) {
  acceptor_ = acceptor;
  max_connections_ = max_connections;
  metrics_ = &metrics;
  int fds = 0;
  CountOpenFds(fds, base_sockets_);
  thread_ = std::thread([this] { AcceptLoop(); });
}

void Listener::Stop() {
  if (stopping_.exchange(true)) return;
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  for (int fd : listen_fds_) close(fd);
  listen_fds_.clear();
}

void Listener::AcceptLoop() {
  std::vector<pollfd> polled;
  for (int fd : listen_fds_) polled.push_back({fd, POLLIN, 0});
  polled.push_back({wake_fd_, POLLIN, 0});
  while (!stopping_.load()) {
    if (poll(polled.data(), polled.size(), -1) < 0) {
      if (errno == EINTR) continue;
      Log(LogLevel::kError, absl::StrCat("listener: poll: ", ErrnoText(errno)));
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    for (size_t i = 0; i + 1 < polled.size() && !stopping_.load(); ++i) {
      if (polled[i].revents != 0) Drain(polled[i].fd);
    }
  }
}

void Listener::Drain(int listen_fd) {
  while (!stopping_.load()) {
    const char* reason = nullptr;
    if (!HasRoom(&reason)) {
      if (!RefuseOne(listen_fd, reason)) return;
      continue;
    }
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) return;
      if (error == EINTR || error == ECONNABORTED) continue;
      if (error == EMFILE || error == ENFILE) {
        if (!RefuseOne(listen_fd, "file_descriptors")) return;
        continue;
      }
      // ENOBUFS, ENOMEM, ...: the system is short of something; try again shortly.
      if (absl::Now() - last_error_log_ > absl::Seconds(10)) {
        last_error_log_ = absl::Now();
        Log(LogLevel::kError, absl::StrCat("listener: accept4: ", ErrnoText(error)));
      }
      absl::SleepFor(absl::Milliseconds(50));
      return;
    }
    const int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    ++open_fds_;
    ++open_sockets_;
    metrics_->CountConnection("");
    grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters connection;
    connection.listener_fd = listen_fd;
    connection.fd = fd;
    acceptor_->HandleNewConnection(&connection);
  }
}

bool Listener::HasRoom(const char** reason) {
  if (absl::Now() - counted_at_ > kRecount) {
    CountOpenFds(open_fds_, open_sockets_);
    counted_at_ = absl::Now();
  }
  if (open_fds_ + kFreeFds >= SoftFdLimit()) {
    *reason = "file_descriptors";
    return false;
  }
  if (max_connections_ > 0 && open_sockets_ - base_sockets_ >= max_connections_) {
    *reason = "max_connections";
    return false;
  }
  return true;
}

bool Listener::RefuseOne(int listen_fd, const char* reason) {
  if (reserve_fd_ < 0) reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  int error = errno;
  if (fd < 0 && (error == EMFILE || error == ENFILE) && reserve_fd_ >= 0) {
    // Not one descriptor to accept with: the reserved one makes room for a moment.
    close(reserve_fd_);
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    error = errno;
    if (fd >= 0) close(fd);
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  } else if (fd >= 0) {
    close(fd);
  }
  if (fd < 0) {
    // An empty backlog ends the drain; anything else (no descriptor even with the reserve)
    // waits a moment, or poll() would wake at once for the same connection.
    if (error != EAGAIN && error != EWOULDBLOCK) absl::SleepFor(absl::Milliseconds(50));
    return false;
  }
  metrics_->CountConnection(reason);
  if (absl::Now() - last_error_log_ > absl::Seconds(10)) {
    last_error_log_ = absl::Now();
    Log(LogLevel::kWarning,
        absl::StrCat(
            "listener: refusing connections (", reason, "): ", open_fds_, " descriptors open of ",
            SoftFdLimit(), ", ", open_sockets_ - base_sockets_, " connections",
            max_connections_ > 0 ? absl::StrCat(" of at most ", max_connections_) : std::string()));
  }
  return true;
}

}  // namespace taskmoe::server
