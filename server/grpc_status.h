// absl::Status -> grpc::Status. The two share their code numbering (both follow
// google.rpc.Code), so the conversion keeps the code and the message.
#ifndef TASKMOE_SERVER_GRPC_STATUS_H_
#define TASKMOE_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace taskmoe::server {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_GRPC_STATUS_H_
