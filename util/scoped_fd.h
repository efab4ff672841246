// ScopedFd: a file descriptor closed when it goes out of scope. Header only; includes nothing of
// the project, so every layer may use it.
#ifndef TASKMOE_UTIL_SCOPED_FD_H_
#define TASKMOE_UTIL_SCOPED_FD_H_

#include <unistd.h>

namespace taskmoe::util {

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  // Closes now, reporting the error that a deferred close would lose (a write-back failure).
  int Close() {
    const int rc = close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

}  // namespace taskmoe::util

#endif  // TASKMOE_UTIL_SCOPED_FD_H_
