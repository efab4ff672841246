// A gRPC call's CallContext (translation_core.h): its deadline, routing header and how to tell
// that the caller went away, for the sync and the callback handlers alike.
#ifndef TASKMOE_SERVER_GRPC_CALL_CONTEXT_H_
#define TASKMOE_SERVER_GRPC_CALL_CONTEXT_H_

#include <grpcpp/server_context.h>

#include <functional>

#include "server/translation_core.h"

namespace taskmoe::server {

// `cancelled` as CallContext::cancelled says.
CallContext GrpcCallContext(const grpc::ServerContextBase& context,
                            std::function<bool()> cancelled);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_GRPC_CALL_CONTEXT_H_
