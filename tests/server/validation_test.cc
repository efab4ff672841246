// Unit tests of request validation: UTF-8, text limits, request ids, decode options, and
// PrepareRequest (every check of Admit that needs no transport) on a task of the demo model.
#include "server/validation.h"

#include <gtest/gtest.h>

#include <limits>

#include "models/text/utf8.h"
#include "server/options.h"
#include "server/task_registry.h"

namespace taskmoe::server {
namespace {

TEST(Utf8, CountsCharactersAndFindsBadBytes) {
  size_t offset = 0;
  EXPECT_EQ(models::CountUtf8Chars("", &offset), 0);
  EXPECT_EQ(models::CountUtf8Chars("abc", &offset), 3);
  EXPECT_EQ(models::CountUtf8Chars("Grüße, мир, 世界, 🙂", &offset), 17);
  for (auto [bad, at] : {std::pair<std::string, size_t>{"ab\xff", 2},
                         {"\xc0\xaf", 0},          // overlong '/'
                         {"x\xed\xa0\x80", 1},     // surrogate
                         {"\xf4\x90\x80\x80", 0},  // past U+10FFFF
                         {"\xe2\x82", 0},          // truncated
                         {"\x80", 0}}) {
    offset = 99;
    EXPECT_EQ(models::CountUtf8Chars(bad, &offset), -1) << bad;
    EXPECT_EQ(offset, at) << bad;
  }
}

TEST(CheckText, NamesTheFieldAndTheProblem) {
  RequestLimits limits;
  limits.max_text_chars = 5;
  EXPECT_TRUE(CheckText("héllo", "texts[0]", limits).ok());
  EXPECT_EQ(CheckText("", "texts[2]", limits).message(),
            "texts[2]: empty text; send non-empty text");
  EXPECT_EQ(CheckText("toolong", "text", limits).message(),
            "text: 7 characters, more than the limit of 5");
  EXPECT_EQ(CheckText("a\xff", "texts[1]", limits).message(),
            "texts[1]: not valid UTF-8 (bad byte sequence at byte 1)");
}

TEST(ResolveDecodeOptions, AppliesDefaultsAndLimits) {
  RequestLimits limits;
  limits.max_output_tokens = 100;
  limits.max_beam_size = 4;
  v1::DecodeOptions options;
  absl::StatusOr<models::DecodeSettings> s = ResolveDecodeOptions(options, limits);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->beam_size, 1);
  EXPECT_EQ(s->max_output_tokens, 100);
  EXPECT_EQ(s->max_output_ratio, limits.max_output_ratio);
  EXPECT_EQ(s->max_output_offset, limits.max_output_offset);
  options.set_beam_size(4);
  options.set_max_output_tokens(7);
  options.set_length_penalty(0.6f);
  s = ResolveDecodeOptions(options, limits);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->beam_size, 4);
  EXPECT_EQ(s->max_output_tokens, 7);
  options.set_beam_size(5);
  EXPECT_EQ(ResolveDecodeOptions(options, limits).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.set_beam_size(1);
  options.set_length_penalty(std::numeric_limits<float>::infinity());
  EXPECT_EQ(ResolveDecodeOptions(options, limits).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckRequestId, PrintableAndBounded) {
  RequestLimits limits;
  EXPECT_TRUE(CheckRequestId("", limits).ok());
  EXPECT_TRUE(CheckRequestId("req-42 (retry)", limits).ok());
  EXPECT_FALSE(CheckRequestId("a\tb", limits).ok());
  EXPECT_FALSE(CheckRequestId(std::string(129, 'x'), limits).ok());
}

TEST(TaskNames, OnlyPlainDirectoryNames) {
  EXPECT_TRUE(IsValidTaskName("en-de"));
  EXPECT_TRUE(IsValidTaskName("en_de.v2"));
  for (const char* bad : {"", ".", "..", "../x", "a/b", ".hidden", "a b", "a\\b"}) {
    EXPECT_FALSE(IsValidTaskName(bad)) << bad;
  }
}

class PrepareRequestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = models::TaskModel::Load(TASKMOE_DEMO_MODEL_DIR, "en-de", {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    task_ = new std::shared_ptr<const models::TaskModel>(*std::move(loaded));
  }
  static void TearDownTestSuite() {
    delete task_;
    task_ = nullptr;
  }
  static absl::StatusOr<PreparedRequest> Prepare(const std::vector<absl::string_view>& texts,
                                                 const v1::DecodeOptions& options, bool stream,
                                                 const RequestLimits& limits = {}) {
    return PrepareRequest(**task_, texts, options, stream, limits);
  }
  // The message of a refusal, which must be INVALID_ARGUMENT.
  static std::string Refusal(const absl::StatusOr<PreparedRequest>& prepared) {
    EXPECT_FALSE(prepared.ok());
    EXPECT_EQ(prepared.status().code(), absl::StatusCode::kInvalidArgument) << prepared.status();
    return std::string(prepared.status().message());
  }

  static std::shared_ptr<const models::TaskModel>* task_;
};

std::shared_ptr<const models::TaskModel>* PrepareRequestTest::task_ = nullptr;

TEST_F(PrepareRequestTest, PreparesEveryTextWithTheResolvedSettings) {
  v1::DecodeOptions options;
  options.set_beam_size(2);
  auto prepared = Prepare({"Open the file. Then save it.", "Close."}, options, false);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  ASSERT_EQ(prepared->texts.size(), 2u);
  EXPECT_EQ(prepared->texts[0].size(), 2u);  // two sentences
  EXPECT_EQ(prepared->texts[1].size(), 1u);
  EXPECT_EQ(prepared->settings.beam_size, 2);
  EXPECT_EQ(prepared->settings.max_output_tokens, RequestLimits{}.max_output_tokens);
  EXPECT_TRUE(prepared->text_options.split_sentences);
  options.set_no_sentence_splitting(true);
  prepared = Prepare({"Open the file. Then save it."}, options, false);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->texts[0].size(), 1u);
}

TEST_F(PrepareRequestTest, RefusalsNameTheField) {
  const v1::DecodeOptions defaults;
  EXPECT_EQ(Refusal(Prepare({}, defaults, false)), "texts: no text given; send at least one");
  RequestLimits two_texts;
  two_texts.max_texts_per_request = 2;
  EXPECT_TRUE(Refusal(Prepare({"a", "b", "c"}, defaults, false, two_texts))
                  .starts_with("texts: 3 texts, more than the limit of 2"));
  EXPECT_TRUE(Refusal(Prepare({"fine", "bad \xff"}, defaults, false))
                  .starts_with("texts[1]: not valid UTF-8"));
  EXPECT_TRUE(Refusal(Prepare({""}, defaults, true)).starts_with("text: empty text"));
  v1::DecodeOptions beam;
  beam.set_beam_size(4);
  EXPECT_TRUE(Refusal(Prepare({"Hello."}, beam, true)).starts_with("options.beam_size:"));
  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += "a, ";
  v1::DecodeOptions unsplit;
  unsplit.set_no_sentence_splitting(true);
  const std::string refusal = Refusal(Prepare({"ok", long_text}, unsplit, false));
  EXPECT_TRUE(refusal.starts_with("texts[1]: ")) << refusal;
  EXPECT_NE(refusal.find("more than the model's limit"), std::string::npos) << refusal;
}

TEST(ServerOptions, ValidationNamesTheFlag) {
  ServerOptions options;
  EXPECT_EQ(ValidateServerOptions(options).message(), "--model_repository is required");
  options.model_repository = "/repo";
  EXPECT_TRUE(ValidateServerOptions(options).ok());
  options.batching.workers = 0;
  EXPECT_EQ(ValidateServerOptions(options).message(), "--workers must be >= 1, got 0");
  options.batching.workers = 1;
  options.limits.max_output_ratio = -1.0f;
  EXPECT_EQ(ValidateServerOptions(options).message(),
            "--max_output_ratio must be in [0, 100] (0: off), got -1");
  options.limits.max_output_ratio = 1.5f;
  options.limits.max_output_offset = -2;
  EXPECT_EQ(ValidateServerOptions(options).message(), "--max_output_offset must be >= 0, got -2");
  options.limits.max_output_offset = 10;
  options.malloc_trim_interval = absl::Milliseconds(-1);
  EXPECT_NE(ValidateServerOptions(options).message().find("--malloc_trim_interval_ms"),
            std::string::npos);
  options.malloc_trim_interval = absl::ZeroDuration();
  EXPECT_TRUE(ValidateServerOptions(options).ok());
  options.limits.max_texts_per_request = 1000;
  EXPECT_FALSE(ValidateServerOptions(options).ok());
}

}  // namespace
}  // namespace taskmoe::server
