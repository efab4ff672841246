// RunClient: performs one ClientCommand against a taskmoe-server and prints the outcome, as
// taskmoe-client does. Separate from main() so that the printing and exit codes are one
// function with explicit streams.
#ifndef TASKMOE_SERVER_CLIENT_CLIENT_H_
#define TASKMOE_SERVER_CLIENT_CLIENT_H_

#include <grpcpp/channel.h>

#include <istream>
#include <memory>
#include <ostream>

#include "absl/status/statusor.h"
#include "server/client/client_command.h"

namespace taskmoe::client {

// Exit codes of taskmoe-client.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcFailed = 1;  // an RPC failed, or health is not SERVING
inline constexpr int kExitUsage = 2;      // bad flags or arguments (nothing was sent)

// gRPC metadata header every task-specific call carries with its task id, so that a proxy or
// a Gateway API GRPCRoute can route by task without parsing the message (docs/api.md).
inline constexpr char kTaskHeader[] = "x-taskmoe-task";

// The channel to flags.target: plaintext, TLS, or mutual TLS per the --tls_* flags. Fails
// only when a certificate file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ClientFlags& flags);

// Reads texts from `in` when the command says so; writes results to `out` and errors (as
// "taskmoe-client: CODE_NAME: message") and --stats to `err`. Returns an exit code.
int RunClient(const ClientCommand& command, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace taskmoe::client

#endif  // TASKMOE_SERVER_CLIENT_CLIENT_H_
