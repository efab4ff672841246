// The gRPC Caller: Translate (unary) or TranslateStream calls on one channel to a loopback
// server, through gRPC's callback API so that a single dispatching thread can keep thousands
// of requests in flight. Measures each call's latency, and for streams the time to the first
// token; counts generated tokens (the server's output_tokens for unary calls, the token
// messages for streams).
#ifndef TASKMOE_LOADTEST_GRPC_CALLER_H_
#define TASKMOE_LOADTEST_GRPC_CALLER_H_

#include <grpcpp/channel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loadtest/caller.h"
#include "loadtest/options.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::loadtest {

struct GrpcCallerOptions {
  std::string target;  // loopback HOST:PORT
  Api api = Api::kUnary;
  int beam_size = 1;
  int max_output_tokens = 0;  // 0: the server's default
  absl::Duration timeout = absl::Seconds(60);
};

class GrpcCaller : public Caller {
 public:
  // Opens the channel and waits up to `connect_timeout` for it to connect, so that a missing
  // server is one clear error before the run rather than a run of UNAVAILABLE answers.
  static absl::StatusOr<std::unique_ptr<GrpcCaller>> Connect(const GrpcCallerOptions& options,
                                                             absl::Duration connect_timeout);

  void Start(const RequestSpec& spec, Done done) override;

  // The ids of the tasks the server has loaded (ListTasks).
  absl::StatusOr<std::vector<std::string>> ListTasks(absl::Duration timeout);

 private:
  explicit GrpcCaller(const GrpcCallerOptions& options);

  GrpcCallerOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TranslationService::Stub> stub_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_GRPC_CALLER_H_
