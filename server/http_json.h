// The JSON form of the translation API for the HTTP gateway (docs/api.md "HTTP/JSON"):
// request bodies parsed into the API's messages, checked field by field (a wrong type or an
// unknown field is INVALID_ARGUMENT naming it, as gRPC's validation names fields), replies and
// errors written as JSON, and gRPC status codes mapped to HTTP status codes. The messages then
// go through the same validation and serving code as gRPC's (translation_core.h).
#ifndef TASKMOE_SERVER_HTTP_JSON_H_
#define TASKMOE_SERVER_HTTP_JSON_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

// {"task": "en-de", "texts": ["..."], "options": {...}, "request_id": "..."}.
absl::StatusOr<v1::TranslateRequest> ParseTranslateRequest(absl::string_view body);
// {"task": "en-de", "text": "...", "options": {...}, "request_id": "..."}.
absl::StatusOr<v1::TranslateStreamRequest> ParseTranslateStreamRequest(absl::string_view body);

std::string TranslateResponseJson(const v1::TranslateResponse& response);
// One line of a streamed translation (no newline).
std::string StreamMessageJson(const v1::TranslateStreamResponse& message);
std::string ListTasksJson(const v1::ListTasksResponse& response);
std::string TaskInfoJson(const v1::TaskInfo& info);
// {"error": {"code": "NOT_FOUND", "message": "..."}}: the gRPC code's name and message.
std::string ErrorJson(const absl::Status& status);

// The HTTP status code of a gRPC status code (Google's API mapping: INVALID_ARGUMENT 400,
// NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, CANCELLED
// 499, ...).
int HttpStatusOf(absl::StatusCode code);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_HTTP_JSON_H_
