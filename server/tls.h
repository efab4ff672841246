// gRPC server credentials from the --tls_* flags: plaintext, TLS, or mutual TLS, with the
// PEM files read once at start so that a missing or unreadable file is a clear startup error.
#ifndef TASKMOE_SERVER_TLS_H_
#define TASKMOE_SERVER_TLS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>

#include "absl/status/statusor.h"
#include "server/options.h"

namespace taskmoe::server {

// Insecure credentials when no certificate is configured. The files are checked to look like
// PEM; whether the key matches the certificate is checked by gRPC when the port is bound.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& tls);

// "plaintext", "TLS" or "mutual TLS", for the startup log line.
const char* TransportName(const TlsOptions& tls);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TLS_H_
