// gRPC call -> CallContext.
#include "server/grpc_call_context.h"

#include <chrono>

#include "server/routing_header.h"

namespace taskmoe::server {
namespace {

absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  const auto deadline = context.deadline();
  // gRPC's "no deadline" is the far future of system_clock.
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace

CallContext GrpcCallContext(const grpc::ServerContextBase& context,
                            std::function<bool()> cancelled) {
  CallContext call;
  call.deadline = DeadlineOf(context);
  call.routing_header = TaskRoutingHeaderValues(context);
  call.cancelled = std::move(cancelled);
  return call;
}

}  // namespace taskmoe::server
