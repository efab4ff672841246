// Unit tests of the HTTP gateway's JSON form (server/http_json.h): every field parsed into the
// API's messages, refusals naming the field, replies that are valid JSON whatever they hold,
// and the status code mapping.
#include "server/http_json.h"

#include <gtest/gtest.h>

#include <string>

#include "nlohmann/json.hpp"

namespace taskmoe::server {
namespace {

using Json = nlohmann::json;

TEST(HttpJsonTest, ParsesEveryFieldOfATranslateRequest) {
  absl::StatusOr<v1::TranslateRequest> request = ParseTranslateRequest(R"({
      "task": "en-de", "texts": ["Open the file.", "\u00d6l"], "request_id": "r-1",
      "options": {"beam_size": 4, "max_output_tokens": 64, "length_penalty": 0.5,
                  "return_scores": true, "return_tokens": true, "no_sentence_splitting": true,
                  "unknown_pieces": "DROP"}})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->task(), "en-de");
  ASSERT_EQ(request->texts_size(), 2);
  EXPECT_EQ(request->texts(1), "\xc3\x96l");
  EXPECT_EQ(request->request_id(), "r-1");
  const v1::DecodeOptions& o = request->options();
  EXPECT_EQ(o.beam_size(), 4u);
  EXPECT_EQ(o.max_output_tokens(), 64u);
  EXPECT_FLOAT_EQ(o.length_penalty(), 0.5f);
  EXPECT_TRUE(o.return_scores());
  EXPECT_TRUE(o.return_tokens());
  EXPECT_TRUE(o.no_sentence_splitting());
  EXPECT_EQ(o.unknown_pieces(), v1::UNKNOWN_PIECES_DROP);
}

TEST(HttpJsonTest, MissingFieldsAreLeftForValidationToName) {
  // Emptiness is validation's to report (the same message as gRPC), not the parser's.
  absl::StatusOr<v1::TranslateRequest> request = ParseTranslateRequest("{}");
  ASSERT_TRUE(request.ok());
  EXPECT_TRUE(request->task().empty());
  EXPECT_EQ(request->texts_size(), 0);
}

TEST(HttpJsonTest, RefusalsNameTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"options": {"max_output_tokens": 4294967296}})",
       "options.max_output_tokens: 4294967296 is out of range [0, 4294967295]"},
      {R"({"options": {"length_penalty": "high"}})",
       "options.length_penalty: expected a number, got string"},
      {R"({"options": 3})", "options: expected an object, got number"},
      {R"({"request_id": ["a"]})", "request_id: expected a string, got array"},
      {R"({"texts": ["a", 1]})", "texts[1]: expected a string, got number"},
      {R"({"task": "en-de", "extra": 1})", "extra: unknown field"},
      {"{\"a\": 1", "body: not valid JSON at byte 8: syntax error while parsing object"},
      {"{\"a\": \"\xff\"}", "invalid string: ill-formed UTF-8 byte"},
      {"", "body: empty"},
      {"null", "body: not a JSON object"},
  };
  for (const auto& [body, message] : cases) {
    absl::StatusOr<v1::TranslateRequest> request = ParseTranslateRequest(body);
    ASSERT_FALSE(request.ok()) << body;
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(request.status().message().find(message), std::string::npos)
        << request.status().message();
  }
}

// fuzz/corpus/http_json/regression-number-overflow.json: a number beyond double made the parser
// throw out_of_range, which escaped and would have taken the server down.
TEST(HttpJsonTest, NumbersBeyondDoubleAreRefusedNotThrown) {
  for (const char* body : {R"({"options": {"beam_size": 1e999}})", R"({"task": -1e400})",
                           R"({"texts": ["a"], "request_id": 8e467440737095})"}) {
    absl::StatusOr<v1::TranslateRequest> request = ParseTranslateRequest(body);
    ASSERT_FALSE(request.ok()) << body;
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(request.status().message().find("body: not valid JSON: number overflow"),
              std::string::npos)
        << request.status().message();
    EXPECT_FALSE(ParseTranslateStreamRequest(body).ok());
  }
}

TEST(HttpJsonTest, DeepNestingIsRefusedWithoutBuildingIt) {
  const std::string deep = std::string(1 << 20, '[') + std::string(1 << 20, ']');
  absl::StatusOr<v1::TranslateRequest> request = ParseTranslateRequest(deep);
  ASSERT_FALSE(request.ok());
  EXPECT_NE(request.status().message().find("nested deeper"), std::string::npos);
}

TEST(HttpJsonTest, StreamRequestTakesOneText) {
  absl::StatusOr<v1::TranslateStreamRequest> request =
      ParseTranslateStreamRequest(R"({"task": "en-fr", "text": "Hi", "options": {}})");
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->text(), "Hi");
  EXPECT_FALSE(ParseTranslateStreamRequest(R"({"text": ["Hi"]})").ok());
  EXPECT_FALSE(ParseTranslateStreamRequest(R"({"texts": ["Hi"]})").ok());
}

TEST(HttpJsonTest, RepliesAreJsonWhateverTheyHold) {
  v1::TranslateResponse response;
  v1::Translation* t = response.add_translations();
  t->set_text("bad \xff byte");  // not UTF-8: replaced, never an exception or broken JSON
  t->set_finish_reason(v1::FINISH_REASON_LENGTH);
  t->set_sentences(1);
  const Json reply = Json::parse(TranslateResponseJson(response));
  EXPECT_EQ(reply["translations"][0]["finish_reason"], "LENGTH");
  EXPECT_FALSE(reply["translations"][0].contains("score"));  // not asked for
  EXPECT_FALSE(reply["translations"][0].contains("tokens"));
  const Json error = Json::parse(ErrorJson(absl::NotFoundError("task 'x\xc3' is unknown")));
  EXPECT_EQ(error["error"]["code"], "NOT_FOUND");

  v1::TranslateStreamResponse last;
  last.set_done(true);
  last.set_text("Hallo");
  const Json line = Json::parse(StreamMessageJson(last));
  EXPECT_EQ(line["done"], true);
  EXPECT_EQ(line["text"], "Hallo");
  EXPECT_EQ(StreamMessageJson(last).find('\n'), std::string::npos);
}

TEST(HttpJsonTest, StatusCodesMapToHttp) {
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kDeadlineExceeded), 504);
}

}  // namespace
}  // namespace taskmoe::server
