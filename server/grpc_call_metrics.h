// Metrics of the calls gRPC handles on the server's behalf, beyond those our handlers count
// (taskmoe_requests_total): gRPC refuses some calls itself, and those must not be invisible.
//
// - CallStatusInterceptorFactory: a server interceptor that counts every status a call ends
//   with, by method and code, in taskmoe_grpc_calls_total. It sees the calls refused before
//   the translation core runs: beyond --max_concurrent_rpcs (RESOURCE_EXHAUSTED: "too many
//   calls in flight" from the callback handlers' CallLimit, "Server Threadpool Exhausted" from
//   gRPC's thread quota for the sync methods), an unparsable message, an unknown method
//   (UNIMPLEMENTED). It also turns gRPC's anonymous status for a request message that does not
//   parse (a JSON body, say: INTERNAL on sync methods, UNIMPLEMENTED on callback ones) into
//   INVALID_ARGUMENT saying so.
// - GrpcCoreCallCounters: gRPC core's own call counters (channelz), exported as
//   taskmoe_grpc_core_calls_{started,succeeded,failed}_total. Core refuses some calls before
//   any interceptor runs, a request message over --max_request_bytes above all; such a call
//   is started but never succeeds or fails, so started - succeeded - failed, less the calls in
//   flight, counts them (docs/api.md "Metrics").
#ifndef TASKMOE_SERVER_GRPC_CALL_METRICS_H_
#define TASKMOE_SERVER_GRPC_CALL_METRICS_H_

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/collectable.h>

#include <set>
#include <string>
#include <vector>

#include "server/metrics.h"

namespace taskmoe::server {

class CallStatusInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `methods`: the full names ("/package.Service/Method") counted under their own label;
  // any other method, whatever a client sends, is counted as "unknown".
  CallStatusInterceptorFactory(Metrics& metrics, std::set<std::string> methods);
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

  // The methods of the services this server registers, health and reflection included.
  static std::set<std::string> ServedMethods();

 private:
  Metrics& metrics_;
  const std::set<std::string> methods_;
};

class GrpcCoreCallCounters final : public prometheus::Collectable {
 public:
  // Sums over every gRPC server of the process (the main one and --admin_port's).
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_GRPC_CALL_METRICS_H_
