// The seam between the load generator and the transport: a Caller starts one request and
// reports how it went. The gRPC implementation is grpc_caller.h; tests use fakes, so the
// schedulers are tested without a server.
#ifndef TASKMOE_LOADTEST_CALLER_H_
#define TASKMOE_LOADTEST_CALLER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace taskmoe::loadtest {

struct RequestSpec {
  std::string task;
  std::vector<std::string> texts;  // one for a stream
};

struct CallResult {
  // gRPC and Abseil share their code numbering (google.rpc.Code).
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;  // the error message, when not OK
  // From just before the call was started to its final status, in seconds.
  double latency_s = 0;
  // Streams: from the start to the first token message; negative when none came (or unary).
  double ttft_s = -1;
  int64_t output_tokens = 0;  // generated tokens over all texts
  int64_t input_tokens = 0;   // as the server counted them (unary only; 0 when unknown)
};

class Caller {
 public:
  using Done = std::function<void(const CallResult&)>;
  virtual ~Caller() = default;
  // Starts one request without blocking on its answer. `done` runs exactly once, on any
  // thread, possibly before Start returns; it must not block.
  virtual void Start(const RequestSpec& spec, Done done) = 0;
};

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_CALLER_H_
