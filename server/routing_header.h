// The routing header: a gateway (deploy/k8s GRPCRoute, a proxy) sends each task-specific call
// to the deployment that serves the task named in its `x-taskmoe-task` header (gRPC metadata or
// an HTTP header), while the server serves the task named in the message. The two must agree,
// or a call could be answered by a task its router never chose.
#ifndef TASKMOE_SERVER_ROUTING_HEADER_H_
#define TASKMOE_SERVER_ROUTING_HEADER_H_

#include <grpcpp/server_context.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace taskmoe::server {

inline constexpr char kTaskRoutingHeader[] = "x-taskmoe-task";

// OK when `header_values` is empty (the header is optional) or every value is `task`; else
// INVALID_ARGUMENT naming both ids.
absl::Status CheckTaskRoutingHeader(absl::Span<const std::string> header_values,
                                    absl::string_view task);

// Every value of the header in a gRPC call's metadata.
std::vector<std::string> TaskRoutingHeaderValues(const grpc::ServerContextBase& context);

// The same check on a gRPC call's metadata.
absl::Status CheckTaskRoutingHeader(const grpc::ServerContextBase& context, absl::string_view task);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_ROUTING_HEADER_H_
