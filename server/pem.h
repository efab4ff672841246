// Reading the PEM files named by --tls_* flags, for the server and for taskmoe-client: one
// message for an unreadable file and one for a file that is not PEM, both naming the flag.
#ifndef TASKMOE_SERVER_PEM_H_
#define TASKMOE_SERVER_PEM_H_

#include <string>

#include "absl/status/statusor.h"

namespace taskmoe::server {

// The content of `path`, given by --<flag>: NOT_FOUND when it cannot be read,
// INVALID_ARGUMENT when it holds no "-----BEGIN " line.
absl::StatusOr<std::string> ReadPemFile(const char* flag, const std::string& path);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_PEM_H_
