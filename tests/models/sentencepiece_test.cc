// Our SentencePiece reader against the SentencePiece library itself: tests/fixtures/spm/
// cases.json holds what python3-sentencepiece made of several hundred texts and id sequences
// with the demo model's spm.model (tests/fixtures/make_spm_fixtures.py). Also: the wire-format
// parser and the loader refuse malformed or unsupported models with clear errors.
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "models/format/config.h"
#include "models/text/sentencepiece_model.h"
#include "models/text/sentencepiece_normalizer.h"
#include "models/text/tokenizer.h"
#include "models/text/utf8.h"
#include "nlohmann/json.hpp"
#include "tests/common/process.h"

namespace taskmoe::models {
namespace {

using ::taskmoe::testing::ReadFile;

const std::string kSentencePieceFixtures = TASKMOE_TEST_FIXTURES_DIR;
const std::string kSpmModel = std::string(TASKMOE_SOURCE_DIR) + "/demo/taskmoe/spm.model";

std::string FromHex(const std::string& hex) {
  return absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
}

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = SentencePieceModel::Load(kSpmModel);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model).release();
    cases_ = new nlohmann::json(
        nlohmann::json::parse(ReadFile(kSentencePieceFixtures + "/spm/cases.json")));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete cases_;
  }
  // Raw pointers owned by the suite: gtest's static set-up needs them (deleted above).
  static SentencePieceModel* model_;
  static nlohmann::json* cases_;
};
SentencePieceModel* SentencePieceTest::model_ = nullptr;
nlohmann::json* SentencePieceTest::cases_ = nullptr;

TEST_F(SentencePieceTest, SpecialPiecesOfTheDemoModel) {
  EXPECT_EQ(model_->size(), 16000);
  EXPECT_EQ(model_->pad_id(), 0);
  EXPECT_EQ(model_->unk_id(), 1);
  EXPECT_EQ(model_->bos_id(), 2);
  EXPECT_EQ(model_->eos_id(), 3);
  EXPECT_EQ(model_->PieceToId("<2de>"), 4);
  EXPECT_EQ(model_->PieceToId("<2ru>"), 12);
  EXPECT_EQ(model_->PieceToId("no such piece"), -1);
  EXPECT_TRUE(model_->IsControl(3));
  EXPECT_TRUE(model_->IsUnknown(1));
  EXPECT_FALSE(model_->IsControl(4));  // target tags are user-defined, not control
}

// Every "encode" case of a fixture file: our ids against the library's (the first ten
// mismatches reported). `check_ids` sees each of our encodings, for further checks.
void ExpectEncodesLikeTheLibrary(
    const SentencePieceModel& model, const nlohmann::json& cases,
    const std::function<void(const std::string&, const std::vector<int32_t>&)>& check_ids = {}) {
  ASSERT_GT(cases.size(), 400u);
  int mismatches = 0;
  for (const auto& c : cases) {
    const std::string text = FromHex(c["text_hex"].get<std::string>());
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = model.Encode(text);
    if (check_ids) check_ids(text, got);
    if (got != want && ++mismatches <= 10) {
      ADD_FAILURE() << "text \"" << absl::CHexEscape(text)
                    << "\": " << ::testing::PrintToString(got) << " != library's "
                    << ::testing::PrintToString(want);
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size();
}

// Every "decode" case of a fixture file: our text against the library's.
void ExpectDecodesLikeTheLibrary(const SentencePieceModel& model, const nlohmann::json& cases) {
  ASSERT_GT(cases.size(), 200u);
  for (const auto& c : cases) {
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(model.Decode(ids), FromHex(c["text_hex"].get<std::string>()))
        << ::testing::PrintToString(ids);
  }
}

TEST_F(SentencePieceTest, EncodesLikeTheLibrary) {
  ExpectEncodesLikeTheLibrary(*model_, (*cases_)["encode"]);
}

TEST_F(SentencePieceTest, DecodesLikeTheLibrary) {
  ExpectDecodesLikeTheLibrary(*model_, (*cases_)["decode"]);
}

TEST_F(SentencePieceTest, RoundTripOfCleanText) {
  for (const char* text : {"Hello world", "Zażółć gęślą jaźń", "Привет, мир."}) {
    EXPECT_EQ(model_->Decode(model_->Encode(text)), text);
  }
}

// A model trained with byte_fallback (tests/fixtures/spm/byte_fallback.model, 400 pieces from
// English and German text): characters it lacks encode as byte pieces, as the library does.
class ByteFallbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = SentencePieceModel::Load(kSentencePieceFixtures + "/spm/byte_fallback.model");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    cases_ =
        nlohmann::json::parse(ReadFile(kSentencePieceFixtures + "/spm/byte_fallback_cases.json"));
  }
  std::unique_ptr<SentencePieceModel> model_;
  nlohmann::json cases_;
};

TEST_F(ByteFallbackTest, EncodesLikeTheLibrary) {
  ASSERT_TRUE(model_->byte_fallback());
  int with_bytes = 0;
  ExpectEncodesLikeTheLibrary(*model_, cases_["encode"],
                              [&](const std::string& text, const std::vector<int32_t>& ids) {
                                std::vector<std::string> unknowns;
                                model_->Encode(text, &unknowns);
                                EXPECT_TRUE(unknowns.empty());
                                for (int32_t id : ids) {
                                  EXPECT_FALSE(model_->IsUnknown(id)) << absl::CHexEscape(text);
                                  if (model_->IsByte(id)) ++with_bytes;
                                }
                              });
  EXPECT_GT(with_bytes, 1000);  // Cyrillic, CJK, emoji, ...: the cases do exercise bytes
}

TEST_F(ByteFallbackTest, DecodesLikeTheLibrary) {
  ExpectDecodesLikeTheLibrary(*model_, cases_["decode"]);
}

TEST_F(ByteFallbackTest, EveryCharacterRoundTrips) {
  // Nothing maps to the unknown piece any more: what the vocabulary lacks comes back whole.
  for (const char* text : {"Привет, мир!", "日本語のテキスト", "¿Qué? ¡Sí!", "Łódź Ёлка Щ",
                           "emoji 😀 and 🚀", "Übergröße"}) {
    EXPECT_EQ(model_->Decode(model_->Encode(text)), text);
  }
}

TEST(SentencePieceModelErrors, RefusesMalformedFiles) {
  const std::string good = ReadFile(kSpmModel);
  ASSERT_FALSE(good.empty());
  EXPECT_FALSE(SentencePieceModel::FromBytes("").ok());                       // no pieces
  EXPECT_FALSE(SentencePieceModel::FromBytes(good.substr(0, 1000)).ok());     // truncated
  EXPECT_FALSE(SentencePieceModel::FromBytes(std::string(64, '\xff')).ok());  // bad varints
  std::string wrong_wire_type = good;
  wrong_wire_type[0] = static_cast<char>((1 << 3) | 0);  // pieces as a varint
  EXPECT_FALSE(SentencePieceModel::FromBytes(wrong_wire_type).ok());
  auto missing = SentencePieceModel::Load("/nonexistent/spm.model");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// Builds a serialised ModelProto by hand: the pieces, then raw extra bytes.
std::string Varint(uint64_t value) {
  std::string out;
  do {
    out.push_back(static_cast<char>((value & 0x7f) | (value > 0x7f ? 0x80 : 0)));
    value >>= 7;
  } while (value != 0);
  return out;
}
std::string LengthDelimited(int field, const std::string& payload) {
  return Varint((field << 3) | 2) + Varint(payload.size()) + payload;
}
std::string Piece(const std::string& text, int type) {
  return LengthDelimited(1, LengthDelimited(1, text) + Varint(3 << 3) + Varint(type));
}

TEST(SentencePieceModelErrors, RefusesUnsupportedFeaturesAndBadVocabularies) {
  const std::string base = Piece("<unk>", 2) + Piece("<s>", 3) + Piece("</s>", 3) +
                           Piece(
                               "\xE2\x96\x81"
                               "a",
                               1);
  ASSERT_TRUE(SentencePieceModel::FromBytes(base).ok());
  const std::string bpe = LengthDelimited(2, Varint(3 << 3) + Varint(2));  // model_type BPE
  EXPECT_EQ(SentencePieceModel::FromBytes(base + bpe).status().code(),
            absl::StatusCode::kUnimplemented);
  const std::string suffix_space = LengthDelimited(2, Varint(24 << 3) + Varint(1));
  EXPECT_EQ(SentencePieceModel::FromBytes(base + suffix_space).status().code(),
            absl::StatusCode::kUnimplemented);
  // Byte fallback needs all 256 byte pieces, named <0xHH>; without it there may be none.
  const std::string byte_fallback = LengthDelimited(2, Varint(35 << 3) + Varint(1));
  std::string bytes;
  for (int b = 0; b < 256; ++b) {
    bytes += Piece(absl::StrCat("<0x", absl::Hex(b, absl::kZeroPad2), ">"), 6);
  }
  ASSERT_TRUE(SentencePieceModel::FromBytes(base + bytes + byte_fallback).ok());
  const auto message = [](const absl::StatusOr<std::unique_ptr<SentencePieceModel>>& model) {
    return std::string(model.status().message());
  };
  EXPECT_NE(message(SentencePieceModel::FromBytes(base + byte_fallback))
                .find("has byte_fallback but no byte piece <0x00>"),
            std::string::npos);
  EXPECT_NE(message(SentencePieceModel::FromBytes(base + bytes))
                .find("byte piece 4 \"<0x00>\" in a model without byte_fallback"),
            std::string::npos);
  EXPECT_NE(message(SentencePieceModel::FromBytes(base + Piece("<0xZZ>", 6) + byte_fallback))
                .find("is not named <0xHH>"),
            std::string::npos);
  EXPECT_FALSE(SentencePieceModel::FromBytes(base + Piece("<unk>", 1)).ok());  // duplicate
  EXPECT_FALSE(SentencePieceModel::FromBytes(Piece("a", 1)).ok());             // no unknown piece
  const std::string eos_is_normal = LengthDelimited(2, Varint(42 << 3) + Varint(3));
  EXPECT_FALSE(SentencePieceModel::FromBytes(base + eos_is_normal).ok());
  const std::string bad_charsmap = LengthDelimited(3, LengthDelimited(2, "\x10\x00\x00\x00xx"));
  EXPECT_FALSE(SentencePieceModel::FromBytes(base + bad_charsmap).ok());
}

TEST(SentencePieceModelErrors, UnknownCharactersWithoutCharsmap) {
  // No charsmap: identity normalisation; "b" is not in the vocabulary so it is unknown.
  const std::string model_bytes = Piece("<unk>", 2) + Piece("<s>", 3) + Piece("</s>", 3) +
                                  Piece(
                                      "\xE2\x96\x81"
                                      "a",
                                      1) +
                                  Piece("a", 1);
  auto model = SentencePieceModel::FromBytes(model_bytes);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->Encode("  a  ab "), (std::vector<int32_t>{3, 3, 0}));
  EXPECT_EQ((*model)->Decode({3, 0, 4}), "a \xE2\x81\x87 a");
}

TEST(Utf8, DecodesCodePoints) {
  EXPECT_EQ(DecodeUtf8Char("a").code, U'a');
  EXPECT_EQ(DecodeUtf8Char("\xC3\xA9x").code, U'\u00E9');
  EXPECT_EQ(DecodeUtf8Char("\xE2\x96\x81").code, U'\u2581');
  EXPECT_EQ(DecodeUtf8Char("\xF0\x9F\x98\x80").code, U'\U0001F600');
  EXPECT_EQ(DecodeUtf8Char("\xF0\x9F\x98\x80").length, 4);
  EXPECT_EQ(DecodeUtf8Char("\xFF").length, 0);
}

TEST(Utf8, ValidCharLength) {
  EXPECT_EQ(ValidUtf8CharLength("a"), 1);
  EXPECT_EQ(ValidUtf8CharLength("\xC3\xA9"), 2);
  EXPECT_EQ(ValidUtf8CharLength("\xE2\x96\x81"), 3);
  EXPECT_EQ(ValidUtf8CharLength("\xF0\x9F\x98\x80"), 4);
  EXPECT_EQ(ValidUtf8CharLength("\xC0\xAF"), 0);          // overlong
  EXPECT_EQ(ValidUtf8CharLength("\xED\xA0\x80"), 0);      // surrogate
  EXPECT_EQ(ValidUtf8CharLength("\xF4\x90\x80\x80"), 0);  // above U+10FFFF
  EXPECT_EQ(ValidUtf8CharLength("\xE2\x82"), 0);          // truncated
  EXPECT_EQ(ValidUtf8CharLength(""), 0);
}

TEST(TokenizerTest, ChecksTheModelAgainstTheConfig) {
  auto config = LoadModelConfig(std::string(TASKMOE_SOURCE_DIR) + "/demo/taskmoe");
  ASSERT_TRUE(config.ok()) << config.status();
  auto tokenizer = Tokenizer::Load(kSpmModel, *config);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const TaskInfo& en_de = config->tasks[1];
  ASSERT_EQ(en_de.id, "en-de");
  auto ids = (*tokenizer)->EncodeSource("Hello world", en_de);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), 4);  // <2de>
  EXPECT_EQ(ids->back(), 3);   // eos
  auto text = (*tokenizer)->Decode(std::vector<int32_t>(ids->begin() + 1, ids->end()));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "Hello world");
  EXPECT_FALSE((*tokenizer)->Decode({5, 16000}).ok());
  EXPECT_FALSE((*tokenizer)->Decode({-1}).ok());

  ModelConfig wrong_vocab = *config;
  wrong_vocab.vocab_size = 8000;
  EXPECT_FALSE(Tokenizer::Load(kSpmModel, wrong_vocab).ok());
  ModelConfig wrong_tag = *config;
  wrong_tag.tasks[1].target_tag_id = 5;
  EXPECT_FALSE(Tokenizer::Load(kSpmModel, wrong_tag).ok());
  ModelConfig wrong_eos = *config;
  wrong_eos.special_tokens.eos = 2;
  EXPECT_FALSE(Tokenizer::Load(kSpmModel, wrong_eos).ok());
}

}  // namespace
}  // namespace taskmoe::models
