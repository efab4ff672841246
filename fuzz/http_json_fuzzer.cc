// Fuzz target: the HTTP gateway's JSON request parsing (server/http_json.h), on any body a
// client can send, as a Translate and as a TranslateStream body. Beyond "no crash": a refusal
// is INVALID_ARGUMENT with a message; an accepted body gives a message whose strings are
// well-formed UTF-8 (what the JSON parser guarantees, and what the protobuf `string` fields of
// task and request_id need); and a reply written from the parsed request (its texts echoed as
// translations) is itself valid JSON, whatever the input held.
// Seeds: fuzz/corpus/http_json/ (JSON bodies written by fuzz/make_seeds.py).
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "fuzz/fuzz_util.h"
#include "nlohmann/json.hpp"
#include "server/http_json.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::fuzz {
namespace {

void CheckRefusal(const absl::Status& status) {
  TASKMOE_FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument,
                     std::string(status.ToString()));
  TASKMOE_FUZZ_CHECK(!status.message().empty(), std::string("no message"));
  // The error reply must be JSON too (messages may quote the input).
  const std::string reply = server::ErrorJson(status);
  TASKMOE_FUZZ_CHECK(nlohmann::json::accept(reply), reply);
}

void CheckReplies(const v1::TranslateRequest& request) {
  v1::TranslateResponse response;
  for (const std::string& text : request.texts()) response.add_translations()->set_text(text);
  response.set_request_id(request.request_id());
  const std::string reply = server::TranslateResponseJson(response);
  TASKMOE_FUZZ_CHECK(nlohmann::json::accept(reply), reply.substr(0, 200));
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace taskmoe;
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<v1::TranslateRequest> request = server::ParseTranslateRequest(body);
  if (!request.ok()) {
    fuzz::CheckRefusal(request.status());
  } else {
    TASKMOE_FUZZ_CHECK(fuzz::IsValidUtf8(request->task()), std::string("task not UTF-8"));
    TASKMOE_FUZZ_CHECK(fuzz::IsValidUtf8(request->request_id()), std::string("id not UTF-8"));
    for (const std::string& text : request->texts()) {
      TASKMOE_FUZZ_CHECK(fuzz::IsValidUtf8(text), std::string("text not UTF-8"));
    }
    fuzz::CheckReplies(*request);
  }
  absl::StatusOr<v1::TranslateStreamRequest> stream = server::ParseTranslateStreamRequest(body);
  if (!stream.ok()) {
    fuzz::CheckRefusal(stream.status());
  } else {
    TASKMOE_FUZZ_CHECK(fuzz::IsValidUtf8(stream->text()), std::string("text not UTF-8"));
    v1::TranslateStreamResponse message;
    message.set_text_delta(stream->text());
    TASKMOE_FUZZ_CHECK(nlohmann::json::accept(server::StreamMessageJson(message)),
                       std::string("stream line not JSON"));
  }
  return 0;
}
