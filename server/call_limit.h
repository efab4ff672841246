// The bound on translation calls in flight. gRPC's thread quota (--max_concurrent_rpcs as
// ResourceQuota threads) bounds only calls that hold a thread; Translate and TranslateStream
// run on the callback API and hold none, so the server counts them itself.
#ifndef TASKMOE_SERVER_CALL_LIMIT_H_
#define TASKMOE_SERVER_CALL_LIMIT_H_

#include <atomic>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace taskmoe::server {

class CallLimit {
 public:
  explicit CallLimit(int max_calls) : max_calls_(max_calls) {}
  CallLimit(const CallLimit&) = delete;
  CallLimit& operator=(const CallLimit&) = delete;

  // True, counting one more call, unless max_calls are in flight.
  bool TryAcquire() {
    if (in_flight_.fetch_add(1) < max_calls_) return true;
    in_flight_.fetch_sub(1);
    return false;
  }
  void Release() { in_flight_.fetch_sub(1); }

  // What a call beyond the limit gets.
  absl::Status Refusal() const {
    return absl::ResourceExhaustedError(
        absl::StrCat("too many calls in flight (--max_concurrent_rpcs=", max_calls_,
                     "); retry later, or on another replica"));
  }

 private:
  const int max_calls_;
  std::atomic<int> in_flight_{0};
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_CALL_LIMIT_H_
