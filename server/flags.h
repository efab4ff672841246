// The command-line flags of taskmoe-server (absl flags; `taskmoe-server --help` lists them)
// and their translation into ServerOptions.
#ifndef TASKMOE_SERVER_FLAGS_H_
#define TASKMOE_SERVER_FLAGS_H_

#include "absl/status/statusor.h"
#include "server/options.h"

namespace taskmoe::server {

// Reads the parsed flags (call after absl::ParseCommandLine), applies --log_level and
// --log_format, and
// returns validated options.
absl::StatusOr<ServerOptions> ServerOptionsFromFlags();

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_FLAGS_H_
