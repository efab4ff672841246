// Listener: the server's own accept loop for the gRPC port, handing each connection to gRPC
// (grpc::experimental::ExternalConnectionAcceptor), which runs TLS and HTTP/2 on it as on a
// connection of its own listener.
//
// Why not gRPC's listener: in gRPC 1.51 an accept4 that fails with EMFILE or ENFILE (the
// process or the system out of file descriptors) ends that listener for good; the port keeps
// completing TCP handshakes into the backlog but nothing is ever served again. This loop never
// stops accepting. It keeps the process clear of the limit: while fewer than kFreeFds
// descriptors are left under RLIMIT_NOFILE, or `max_connections` are open, a new connection
// is accepted and closed at once (the client sees the connection closed and retries); should
// accept4 still fail for want of descriptors, a descriptor held in reserve is given up to
// accept and close the connection at the head of the backlog, so the backlog drains.
#ifndef TASKMOE_SERVER_LISTENER_H_
#define TASKMOE_SERVER_LISTENER_H_

#include <grpcpp/server_builder.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/metrics.h"

namespace taskmoe::server {

class Listener {
 public:
  // Descriptors kept free for everything else (loading models at reload, metrics scrapes,
  // gRPC's own): connections beyond the limit less these are refused.
  static constexpr int kFreeFds = 32;

  // Binds every address `host` resolves to (a name, an IPv4 or IPv6 address, "[::]" for both
  // families) on `port` (0: a free port, the same for all) and listens. Fails naming the
  // address when one is in use: SO_REUSEPORT is not set, so a second server cannot share it.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& host, int port);
  ~Listener();  // Stop()
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int port() const { return port_; }

  // Accepts in a thread of its own, handing connections to `acceptor` (which must outlive
  // Stop()); `max_connections` 0 caps connections by file descriptors only.
  void Start(grpc::experimental::ExternalConnectionAcceptor* acceptor, int max_connections,
             Metrics& metrics);
  // Stops accepting and closes the listening sockets; connections already handed over are
  // gRPC's. Idempotent.
  void Stop();

 private:
  Listener() = default;
  void AcceptLoop();
  // Accepts what waits on `listen_fd` until the backlog is empty.
  void Drain(int listen_fd);
  // Whether another connection may be served: enough descriptors left, and fewer than
  // max_connections_ open. Counts /proc/self/fd at most every kRecount.
  bool HasRoom(const char** reason);
  // Accepts the connection at the head of `listen_fd`'s backlog and closes it, using the
  // reserved descriptor when the process has no other. False when none was taken: the backlog
  // is empty, or not even the reserve helped.
  bool RefuseOne(int listen_fd, const char* reason);

  std::vector<int> listen_fds_;
  int port_ = 0;
  int wake_fd_ = -1;      // an eventfd: Stop() wakes the loop through it
  int reserve_fd_ = -1;   // /dev/null, given up when accept4 finds no descriptor
  int base_sockets_ = 0;  // sockets open before any connection (listeners, metrics)
  int max_connections_ = 0;
  grpc::experimental::ExternalConnectionAcceptor* acceptor_ = nullptr;
  Metrics* metrics_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  // The last count of /proc/self/fd, plus the connections accepted since.
  absl::Time counted_at_ = absl::InfinitePast();
  int open_fds_ = 0;
  int open_sockets_ = 0;
  absl::Time last_error_log_ = absl::InfinitePast();
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_LISTENER_H_
