// JSON bodies <-> the API's messages, and status codes.
#include "server/http_json.h"

#include <cstdint>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace taskmoe::server {
namespace {

using Json = nlohmann::json;

// No field of the API nests deeper than options (2); deeper input is refused while parsing,
// before a deep document is ever built.
constexpr int kMaxDepth = 4;

struct TooDeep : std::exception {};

absl::StatusOr<Json> ParseObject(absl::string_view body) {
  if (body.empty()) {
    return absl::InvalidArgumentError("body: empty; send a JSON object (docs/api.md, HTTP/JSON)");
  }
  Json json;
  try {
    json = Json::parse(body.begin(), body.end(), [](int depth, Json::parse_event_t, Json&) {
      if (depth > kMaxDepth) throw TooDeep();
      return true;
    });
  } catch (const TooDeep&) {
    return absl::InvalidArgumentError(
        absl::StrCat("body: JSON nested deeper than ", kMaxDepth, " levels"));
  } catch (const Json::exception& e) {
    // Every parser error: parse_error for malformed text, but also out_of_range for a number
    // beyond double (1e999), which once escaped this function and crashed the server (found
    // by fuzz/http_json_fuzzer.cc). The reason without the parser's echo of the input ("; last
    // read: '...'"), which may hold any bytes.
    // e.what(): "[json.exception.<kind>.<id>] " and, for parse errors, "parse error at line L,
    // column C: " before the reason.
    absl::string_view reason = e.what();
    if (const size_t tag_end = reason.find("] "); tag_end != absl::string_view::npos) {
      reason.remove_prefix(tag_end + 2);
    }
    const auto* parse_error = dynamic_cast<const Json::parse_error*>(&e);
    if (const size_t colon = reason.find(": "); parse_error && colon != absl::string_view::npos) {
      reason.remove_prefix(colon + 2);
    }
    reason = reason.substr(0, reason.find("; last read"));
    return absl::InvalidArgumentError(absl::StrCat(
        "body: not valid JSON", parse_error ? absl::StrCat(" at byte ", parse_error->byte) : "",
        ": ", reason));
  }
  if (!json.is_object()) return absl::InvalidArgumentError("body: not a JSON object");
  return json;
}

std::string TypeName(const Json& value) { return value.type_name(); }

absl::Status WrongType(absl::string_view field, absl::string_view expected, const Json& value) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": expected ", expected, ", got ", TypeName(value)));
}

// Refuses keys other than `known` (typos would otherwise be ignored silently).
absl::Status CheckKeys(const Json& object, absl::string_view where,
                       std::initializer_list<absl::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    bool found = false;
    for (absl::string_view k : known) found = found || key == k;
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, key.size() > 64 ? key.substr(0, 64) + "..." : key,
                       ": unknown field; known: ", absl::StrJoin(known, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetString(const Json& value, absl::string_view field) {
  if (!value.is_string()) return WrongType(field, "a string", value);
  return value.get<std::string>();
}

absl::StatusOr<uint32_t> GetUint32(const Json& value, absl::string_view field) {
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() ? value.get<uint64_t>() > std::numeric_limits<uint32_t>::max()
                                  : value.get<int64_t>() < 0)) {
    if (value.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", value.dump(), " is out of range [0, 4294967295]"));
    }
    return WrongType(field, "a non-negative integer", value);
  }
  return static_cast<uint32_t>(value.get<uint64_t>());
}

absl::StatusOr<bool> GetBool(const Json& value, absl::string_view field) {
  if (!value.is_boolean()) return WrongType(field, "true or false", value);
  return value.get<bool>();
}

absl::Status ParseOptions(const Json& json, v1::DecodeOptions& options) {
  if (!json.is_object()) return WrongType("options", "an object", json);
  if (absl::Status s =
          CheckKeys(json, "options.",
                    {"beam_size", "max_output_tokens", "length_penalty", "return_scores",
                     "return_tokens", "no_sentence_splitting", "unknown_pieces"});
      !s.ok()) {
    return s;
  }
  for (const auto& [key, value] : json.items()) {
    const std::string field = absl::StrCat("options.", key);
    if (key == "beam_size" || key == "max_output_tokens") {
      absl::StatusOr<uint32_t> n = GetUint32(value, field);
      if (!n.ok()) return n.status();
      key == "beam_size" ? options.set_beam_size(*n) : options.set_max_output_tokens(*n);
    } else if (key == "length_penalty") {
      if (!value.is_number()) return WrongType(field, "a number", value);
      options.set_length_penalty(value.get<float>());
    } else if (key == "unknown_pieces") {
      absl::StatusOr<std::string> name = GetString(value, field);
      if (!name.ok()) return name.status();
      if (*name == "COPY_SOURCE") {
        options.set_unknown_pieces(v1::UNKNOWN_PIECES_COPY_SOURCE);
      } else if (*name == "DROP") {
        options.set_unknown_pieces(v1::UNKNOWN_PIECES_DROP);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": expected \"COPY_SOURCE\" or \"DROP\""));
      }
    } else {
      absl::StatusOr<bool> flag = GetBool(value, field);
      if (!flag.ok()) return flag.status();
      if (key == "return_scores") options.set_return_scores(*flag);
      if (key == "return_tokens") options.set_return_tokens(*flag);
      if (key == "no_sentence_splitting") options.set_no_sentence_splitting(*flag);
    }
  }
  return absl::OkStatus();
}

// task, options and request_id: the fields both requests share.
template <typename Request>
absl::Status ParseCommonField(const std::string& key, const Json& value, Request& request) {
  if (key == "options") return ParseOptions(value, *request.mutable_options());
  absl::StatusOr<std::string> text = GetString(value, key);
  if (!text.ok()) return text.status();
  key == "task" ? request.set_task(*std::move(text)) : request.set_request_id(*std::move(text));
  return absl::OkStatus();
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_END_OF_SENTENCE:
      return "END_OF_SENTENCE";
    case v1::FINISH_REASON_LENGTH:
      return "LENGTH";
    default:
      return "UNSPECIFIED";
  }
}

// Replies hold model pieces and detokenised text, valid UTF-8 by construction; replacing
// anything else keeps a reply well-formed whatever a model's vocabulary holds.
std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

absl::StatusOr<v1::TranslateRequest> ParseTranslateRequest(absl::string_view body) {
  absl::StatusOr<Json> json = ParseObject(body);
  if (!json.ok()) return json.status();
  if (absl::Status s = CheckKeys(*json, "", {"task", "texts", "options", "request_id"}); !s.ok()) {
    return s;
  }
  v1::TranslateRequest request;
  for (const auto& [key, value] : json->items()) {
    if (key != "texts") {
      if (absl::Status s = ParseCommonField(key, value, request); !s.ok()) return s;
      continue;
    }
    if (!value.is_array()) return WrongType("texts", "an array of strings", value);
    for (size_t i = 0; i < value.size(); ++i) {
      absl::StatusOr<std::string> text = GetString(value[i], absl::StrCat("texts[", i, "]"));
      if (!text.ok()) return text.status();
      request.add_texts(*std::move(text));
    }
  }
  return request;
}

absl::StatusOr<v1::TranslateStreamRequest> ParseTranslateStreamRequest(absl::string_view body) {
  absl::StatusOr<Json> json = ParseObject(body);
  if (!json.ok()) return json.status();
  if (absl::Status s = CheckKeys(*json, "", {"task", "text", "options", "request_id"}); !s.ok()) {
    return s;
  }
  v1::TranslateStreamRequest request;
  for (const auto& [key, value] : json->items()) {
    if (key != "text") {
      if (absl::Status s = ParseCommonField(key, value, request); !s.ok()) return s;
      continue;
    }
    absl::StatusOr<std::string> text = GetString(value, "text");
    if (!text.ok()) return text.status();
    request.set_text(*std::move(text));
  }
  return request;
}

std::string TranslateResponseJson(const v1::TranslateResponse& response) {
  Json translations = Json::array();
  for (const v1::Translation& t : response.translations()) {
    Json item = {{"text", t.text()},
                 {"finish_reason", FinishReasonName(t.finish_reason())},
                 {"sentences", t.sentences()}};
    if (t.score() != 0) item["score"] = t.score();
    if (t.token_ids_size() > 0) {
      item["token_ids"] = std::vector<int32_t>(t.token_ids().begin(), t.token_ids().end());
      item["tokens"] = std::vector<std::string>(t.tokens().begin(), t.tokens().end());
    }
    translations.push_back(std::move(item));
  }
  return Dump({{"translations", std::move(translations)},
               {"request_id", response.request_id()},
               {"model_version", response.model_version()},
               {"input_tokens", response.input_tokens()},
               {"output_tokens", response.output_tokens()}});
}

std::string StreamMessageJson(const v1::TranslateStreamResponse& message) {
  if (message.done()) {
    Json done = {{"done", true},
                 {"text", message.text()},
                 {"finish_reason", FinishReasonName(message.finish_reason())},
                 {"sentence", message.sentence()}};
    if (message.score() != 0) done["score"] = message.score();
    return Dump(done);
  }
  return Dump({{"text_delta", message.text_delta()},
               {"token_id", message.token_id()},
               {"token", message.token()},
               {"sentence", message.sentence()}});
}

namespace {

Json TaskInfoObject(const v1::TaskInfo& info) {
  if (!info.load_error().empty()) {
    return {{"task", info.task()}, {"ready", false}, {"load_error", info.load_error()}};
  }
  return {{"task", info.task()},
          {"source_language", info.source_language()},
          {"target_language", info.target_language()},
          {"version", info.version()},
          {"parameters", info.parameters()},
          {"memory_bytes", info.memory_bytes()},
          {"shared_memory_bytes", info.shared_memory_bytes()},
          {"precision", info.precision()},
          {"matmul_path", info.matmul_path()},
          {"greedy_head_filter", info.greedy_head_filter()},
          {"parent_digest", info.parent_digest()},
          {"ready", info.ready()}};
}

}  // namespace

std::string ListTasksJson(const v1::ListTasksResponse& response) {
  Json tasks = Json::array();
  for (const v1::TaskInfo& info : response.tasks()) tasks.push_back(TaskInfoObject(info));
  return Dump({{"tasks", std::move(tasks)}});
}

std::string TaskInfoJson(const v1::TaskInfo& info) { return Dump(TaskInfoObject(info)); }

std::string ErrorJson(const absl::Status& status) {
  return Dump({{"error",
                {{"code", absl::StatusCodeToString(status.code())},
                 {"message", std::string(status.message())}}}});
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kCancelled:
      return 499;  // client closed request
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

}  // namespace taskmoe::server
