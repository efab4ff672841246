// The x-taskmoe-task header against the message's task.
#include "server/routing_header.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace taskmoe::server {

absl::Status CheckTaskRoutingHeader(absl::Span<const std::string> header_values,
                                    absl::string_view task) {
  for (const std::string& value_string : header_values) {
    const absl::string_view value(value_string);
    if (value == task) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        kTaskRoutingHeader, " header: '", absl::CHexEscape(value.substr(0, 64)),
        "' is not the request's task '", absl::CHexEscape(task.substr(0, 64)),
        "'; a gateway routes the call by the header, so send the same task id in both"));
  }
  return absl::OkStatus();
}

std::vector<std::string> TaskRoutingHeaderValues(const grpc::ServerContextBase& context) {
  std::vector<std::string> values;
  const auto [first, last] = context.client_metadata().equal_range(kTaskRoutingHeader);
  for (auto it = first; it != last; ++it) values.emplace_back(it->second.data(), it->second.size());
  return values;
}

absl::Status CheckTaskRoutingHeader(const grpc::ServerContextBase& context,
                                    absl::string_view task) {
  return CheckTaskRoutingHeader(TaskRoutingHeaderValues(context), task);
}

}  // namespace taskmoe::server
