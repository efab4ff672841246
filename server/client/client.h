// RunClient: performs one ClientCommand against a taskmoe-server and prints the outcome, as
// taskmoe-client does. Separate from main() so that the printing and exit codes are one
// function with explicit streams.
#ifndef TASKMOE_SERVER_CLIENT_CLIENT_H_
#define TASKMOE_SERVER_CLIENT_CLIENT_H_

#include <istream>
#include <ostream>

#include "server/client/client_command.h"

namespace taskmoe::client {

// Exit codes of taskmoe-client.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcFailed = 1;  // an RPC failed, or health is not SERVING
inline constexpr int kExitUsage = 2;      // bad flags or arguments (nothing was sent)

// Reads texts from `in` when the command says so; writes results to `out` and errors (as
// "taskmoe-client: CODE_NAME: message") and --stats to `err`. Returns an exit code.
int RunClient(const ClientCommand& command, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace taskmoe::client

#endif  // TASKMOE_SERVER_CLIENT_CLIENT_H_
