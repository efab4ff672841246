// The routing header: a gateway (deploy/k8s GRPCRoute, a proxy) sends each task-specific call
// to the deployment that serves the task named in its `x-taskmoe-task` metadata, while the
// server serves the task named in the message. The two must agree, or a call could be
// answered by a task its router never chose.
#ifndef TASKMOE_SERVER_ROUTING_HEADER_H_
#define TASKMOE_SERVER_ROUTING_HEADER_H_

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace taskmoe::server {

inline constexpr char kTaskRoutingHeader[] = "x-taskmoe-task";

// OK when the call carries no routing header (it is optional) or every value of it is `task`;
// else INVALID_ARGUMENT naming both ids.
absl::Status CheckTaskRoutingHeader(const grpc::ServerContext& context, absl::string_view task);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_ROUTING_HEADER_H_
