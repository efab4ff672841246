// The text around the decoder: sentence splitting (its rules, one case each), unknown pieces
// found in the source and replaced or dropped in the output (against the demo vocabulary and
// a hand-made one), and a text put back together from its sentences' hypotheses.
#include "models/text_pipeline.h"

#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "models/format/config.h"
#include "models/text/sentence_splitter.h"
#include "models/text/sentencepiece_model.h"
#include "models/text/tokenizer.h"

namespace taskmoe::models {
namespace {

const std::string kDemoCheckpointDir = std::string(TASKMOE_SOURCE_DIR) + "/demo/taskmoe";

std::vector<std::string> Split(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view s : SplitSentences(text)) out.emplace_back(s);
  return out;
}

using Sentences = std::vector<std::string>;

TEST(SentenceSplitter, SplitsAfterTerminalPunctuationBeforeACapital) {
  EXPECT_EQ(Split("Hello. This is a test! Is it? Yes."),
            (Sentences{"Hello.", "This is a test!", "Is it?", "Yes."}));
  EXPECT_EQ(Split("Wait... What?! No…  Really"), (Sentences{"Wait...", "What?!", "No…", "Really"}));
  // Closing quotes and brackets stay with their sentence.
  EXPECT_EQ(Split("He said \"Go.\" Then he left. (It rained.) „Gut.“ Ende."),
            (Sentences{"He said \"Go.\"", "Then he left.", "(It rained.)", "„Gut.“", "Ende."}));
  // Digits and opening quotes may start a sentence.
  EXPECT_EQ(Split("It ended. 42 people came. «Oui.» ¿Qué?"),
            (Sentences{"It ended.", "42 people came.", "«Oui.»", "¿Qué?"}));
}

TEST(SentenceSplitter, KeepsWhatOnlyLooksLikeAnEnd) {
  // No space after the stop, a lowercase word after it.
  EXPECT_EQ(Split("Version 2.0 is at example.com today."),
            (Sentences{"Version 2.0 is at example.com today."}));
  EXPECT_EQ(Split("It costs 5 p. per unit, i.e. cheap."),
            (Sentences{"It costs 5 p. per unit, i.e. cheap."}));
  // Initials, titles, abbreviations with inner stops, day ordinals.
  EXPECT_EQ(Split("J. Smith met Dr. Who and Mrs. Hudson in the U.S. Army."),
            (Sentences{"J. Smith met Dr. Who and Mrs. Hudson in the U.S. Army."}));
  EXPECT_EQ(Split("Am 3. Mai kommt er, z.B. Peter. Er bleibt."),
            (Sentences{"Am 3. Mai kommt er, z.B. Peter.", "Er bleibt."}));
  // Years end sentences; "I." does too.
  EXPECT_EQ(Split("I was born in 1990. So was I. Then came May."),
            (Sentences{"I was born in 1990.", "So was I.", "Then came May."}));
  // Lowercase after the stop in other alphabets.
  EXPECT_EQ(Split("Это т.е. пример. ébauche. Ещё"),
            (Sentences{"Это т.е. пример. ébauche.", "Ещё"}));
}

TEST(SentenceSplitter, LineBreaksAlwaysEndASentenceAndWhitespaceIsTrimmed) {
  EXPECT_EQ(Split("  First line\nsecond line\r\n\n  Third.  Fourth \n"),
            (Sentences{"First line", "second line", "Third.", "Fourth"}));
  // CJK terminals need no space.
  EXPECT_EQ(Split("你好。今天很好！再见？"), (Sentences{"你好。", "今天很好！", "再见？"}));
  EXPECT_TRUE(Split("").empty());
  EXPECT_TRUE(Split(" \n\t \n").empty());
  // Malformed UTF-8 passes through inside a sentence.
  EXPECT_EQ(Split("Bad \xFF byte. Next"), (Sentences{"Bad \xFF byte.", "Next"}));
}

TEST(SentenceSplitter, SentencesAreViewsIntoTheText) {
  const std::string text = "One. Two.\n\nThree.";
  const std::vector<std::string_view> parts = SplitSentences(text);
  ASSERT_EQ(parts.size(), 3u);
  for (std::string_view part : parts) {
    EXPECT_GE(part.data(), text.data());
    EXPECT_LE(part.data() + part.size(), text.data() + text.size());
  }
  // What lies between two sentences is their separator.
  EXPECT_EQ(std::string_view(parts[1].data() + parts[1].size(), parts[2].data()), "\n\n");
}

// A vocabulary of "▁a", "a", "▁" and "b": everything else is unknown.
std::string PipelinePiece(const std::string& piece, int type) {
  // SentencePiece's ModelProto.pieces (field 1): piece (1), score (2, float), type (3).
  std::string body;
  body += static_cast<char>(0x0A);
  body += static_cast<char>(piece.size());
  body += piece;
  body += std::string("\x15\x00\x00\x00\x00", 5);
  body += static_cast<char>(0x18);
  body += static_cast<char>(type);
  std::string out;
  out += static_cast<char>(0x0A);
  out += static_cast<char>(body.size());
  return out + body;
}

std::unique_ptr<SentencePieceModel> SmallModel() {
  const std::string bytes =
      PipelinePiece("<unk>", 2) + PipelinePiece("<s>", 3) + PipelinePiece("</s>", 3) +
      PipelinePiece(
          "\xE2\x96\x81"
          "a",
          1) +
      PipelinePiece("a", 1) + PipelinePiece("\xE2\x96\x81", 1) + PipelinePiece("b", 1);
  auto model = SentencePieceModel::FromBytes(bytes);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

TEST(UnknownPieces, EncodeReportsWhatEachUnknownPieceStandsFor) {
  const auto model = SmallModel();
  ASSERT_NE(model, nullptr);
  std::vector<std::string> unknowns;
  // "a xyb a 😀😀 b": "xy" is one run (one piece); the emoji run is another.
  const std::vector<int32_t> ids =
      model->Encode("a xyb a \xF0\x9F\x98\x80\xF0\x9F\x98\x80 b", &unknowns);
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 5, 0, 6, 3, 5, 0, 5, 6}));
  EXPECT_EQ(unknowns, (std::vector<std::string>{"xy", "\xF0\x9F\x98\x80\xF0\x9F\x98\x80"}));
  // Encoding without asking gives the same ids.
  EXPECT_EQ(model->Encode("a xyb a \xF0\x9F\x98\x80\xF0\x9F\x98\x80 b"), ids);
}

TEST(UnknownPieces, DecodeCopiesReplacementsInOrderOrDropsThem) {
  const auto model = SmallModel();
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> ids = {3, 5, 0, 6, 3, 5, 0, 5, 6};  // "a ⁇b a ⁇ b"
  EXPECT_EQ(model->Decode(ids), "a  \xE2\x81\x87 b a  \xE2\x81\x87  b");
  EXPECT_EQ(model->DecodeReplacingUnknowns(ids, {"xy", "Z"}), "a xyb a Z b");
  // Past the replacements, or empty: dropped, without a doubled space.
  EXPECT_EQ(model->DecodeReplacingUnknowns(ids, {"xy"}), "a xyb a b");
  EXPECT_EQ(model->DecodeReplacingUnknowns(ids, {}), "a b a b");
  EXPECT_EQ(model->DecodeReplacingUnknowns({0, 3}, {}), "a");
  EXPECT_EQ(model->DecodeReplacingUnknowns({3, 5, 0}, {}), "a");
  EXPECT_EQ(model->DecodeReplacingUnknowns({0}, {}), "");
}

class TextPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = LoadModelConfig(kDemoCheckpointDir);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *std::move(config);
    auto tokenizer = Tokenizer::Load(kDemoCheckpointDir + "/spm.model", config_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    task_ = config_.FindTask("en-de");
    ASSERT_NE(task_, nullptr);
  }

  ModelConfig config_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  const TaskInfo* task_ = nullptr;
};

TEST_F(TextPipelineTest, PrepareSplitsTokenisesAndKeepsSeparators) {
  auto sentences = PrepareText(*tokenizer_, *task_, "Hello there.  How are you?\nFine.", {}, 256);
  ASSERT_TRUE(sentences.ok()) << sentences.status();
  ASSERT_EQ(sentences->size(), 3u);
  EXPECT_EQ((*sentences)[0].separator, "  ");
  EXPECT_EQ((*sentences)[1].separator, "\n");
  EXPECT_EQ((*sentences)[2].separator, "");
  for (const SourceSentence& s : *sentences) {
    EXPECT_EQ(s.ids.front(), task_->target_tag_id);
    EXPECT_EQ(s.ids.back(), config_.special_tokens.eos);
  }
  EXPECT_EQ((*sentences)[1].ids, *tokenizer_->EncodeSource("How are you?", *task_));
  // Splitting off: one sentence, the whole text.
  auto whole = PrepareText(*tokenizer_, *task_, "Hello there.  How are you?",
                           {.split_sentences = false}, 256);
  ASSERT_TRUE(whole.ok());
  ASSERT_EQ(whole->size(), 1u);
  EXPECT_EQ((*whole)[0].ids, *tokenizer_->EncodeSource("Hello there.  How are you?", *task_));
  // A blank text is one empty sentence, as before splitting existed.
  auto blank = PrepareText(*tokenizer_, *task_, "  ", {}, 256);
  ASSERT_TRUE(blank.ok());
  ASSERT_EQ(blank->size(), 1u);
  EXPECT_EQ(blank->front().ids.size(), 2u);
}

TEST_F(TextPipelineTest, PrepareRecordsUnknownCharactersOfTheDemoVocabulary) {
  // The demo vocabulary has neither emoji nor "Ł" (README: about 2% of real outputs had them).
  auto sentences = PrepareText(*tokenizer_, *task_,
                               "I like \xF0\x9F\x98\x80 in \xC5\x81"
                               "odz",
                               {}, 256);
  ASSERT_TRUE(sentences.ok());
  ASSERT_EQ(sentences->size(), 1u);
  EXPECT_EQ((*sentences)[0].unknown_texts,
            (std::vector<std::string>{"\xF0\x9F\x98\x80", "\xC5\x81"}));
}

TEST_F(TextPipelineTest, PrepareRefusesASentenceLongerThanTheModelTakes) {
  auto too_long = PrepareText(*tokenizer_, *task_, "Short. This one is longer than that.", {}, 6);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("sentence 2 of 2 has"), std::string::npos)
      << too_long.status();
}

TEST_F(TextPipelineTest, AssembleJoinsSentencesWithTheirSeparators) {
  auto sentences = PrepareText(*tokenizer_, *task_, "\xF0\x9F\x98\x80 Yes.\n\nGood. No.", {}, 256);
  ASSERT_TRUE(sentences.ok());
  ASSERT_EQ(sentences->size(), 3u);
  const int32_t unk = config_.special_tokens.unk;
  const auto hallo = *tokenizer_->EncodePieces("Hallo");
  std::vector<int32_t> first = {unk};
  first.insert(first.end(), hallo.begin(), hallo.end());
  const Hypothesis h0{.tokens = first, .score = -1.0f, .reached_eos = true};
  const Hypothesis h1{.tokens = {}, .score = -0.5f, .reached_eos = true};  // translated to nothing
  const Hypothesis h2{
      .tokens = *tokenizer_->EncodePieces("Welt"), .score = -2.0f, .reached_eos = false};
  const std::vector<const Hypothesis*> parts = {&h0, &h1, &h2};
  auto copied = AssembleText(*tokenizer_, *sentences, parts, UnknownPieces::kCopySource);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(copied->text, "\xF0\x9F\x98\x80 Hallo\n\nWelt");
  EXPECT_FLOAT_EQ(copied->score, -3.5f);
  EXPECT_EQ(copied->finish_reason, FinishReason::kLength);
  EXPECT_EQ(copied->token_ids.size(), first.size() + h2.tokens.size());
  auto dropped = AssembleText(*tokenizer_, *sentences, parts, UnknownPieces::kDrop);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(dropped->text, "Hallo\n\nWelt");
  // Every sentence at its end of sentence: so is the text.
  const std::vector<const Hypothesis*> ended = {&h0, &h1, &h0};
  EXPECT_EQ(AssembleText(*tokenizer_, *sentences, ended, UnknownPieces::kDrop)->finish_reason,
            FinishReason::kEndOfSentence);
  // Mismatched counts are an internal error, not a crash.
  EXPECT_FALSE(AssembleText(*tokenizer_, *sentences, {&h0}, UnknownPieces::kDrop).ok());
}

// The deltas a stream sends, token by token, sentence by sentence.
std::string StreamedText(const Tokenizer& tokenizer, const std::vector<SourceSentence>& sentences,
                         const std::vector<const Hypothesis*>& hypotheses, UnknownPieces unknowns) {
  TextStream stream(tokenizer, sentences, unknowns);
  std::string text;
  for (const Hypothesis* h : hypotheses) {
    for (int32_t token : h->tokens) text += stream.AddToken(token);
    stream.EndSentence();
  }
  return text;
}

TEST_F(TextPipelineTest, StreamDeltasAddUpToTheAssembledText) {
  auto sentences = PrepareText(*tokenizer_, *task_, "\xF0\x9F\x98\x80 Yes.\n\nGood. No.", {}, 256);
  ASSERT_TRUE(sentences.ok());
  ASSERT_EQ(sentences->size(), 3u);
  const int32_t unk = config_.special_tokens.unk;
  auto pieces = [&](std::string_view text) { return *tokenizer_->EncodePieces(text); };
  auto concat = [](std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  // Unknown pieces first, in the middle (more of them than the source has: dropped), next to
  // spaces, and a sentence translated to nothing.
  const std::vector<std::vector<int32_t>> cases[] = {
      {concat({{unk}, pieces("Hallo Welt")}), {}, pieces("Gut so.")},
      {concat({pieces("Ja"), {unk}, pieces(" und"), {unk, unk}, pieces(" nein")}),
       concat({pieces("Gut."), {unk}}), concat({{unk}, pieces(" Nein.")})},
      {{}, {}, pieces("Nur das.")},
      {concat({pieces("Das kostet 5 \xE2\x82\xAC, \xC3\xBC"
                      "ber alles!")}),
       pieces("Ja."),
       {}},
  };
  for (const auto& tokens : cases) {
    std::vector<Hypothesis> hypotheses;
    for (const auto& t : tokens) hypotheses.push_back({.tokens = t, .reached_eos = true});
    const std::vector<const Hypothesis*> parts = {&hypotheses[0], &hypotheses[1], &hypotheses[2]};
    for (UnknownPieces unknowns : {UnknownPieces::kCopySource, UnknownPieces::kDrop}) {
      auto assembled = AssembleText(*tokenizer_, *sentences, parts, unknowns);
      ASSERT_TRUE(assembled.ok());
      EXPECT_EQ(StreamedText(*tokenizer_, *sentences, parts, unknowns), assembled->text);
    }
  }
}

TEST_F(TextPipelineTest, StreamDeltasAddUpForRandomPieceSequences) {
  // Pieces of real words, the unknown piece and byte-level oddities, in random orders.
  std::vector<int32_t> vocabulary = *tokenizer_->EncodePieces(
      "Die Datei wurde nicht gefunden. \xC3\x9C"
      "bersetzung, gr\xC3\xB6\xC3\x9F"
      "er als 5 % \xE2\x80\x93 "
      "\xE2\x80\x9Eja\xE2\x80\x9C (nein) ...");
  vocabulary.push_back(config_.special_tokens.unk);
  vocabulary.push_back(config_.special_tokens.unk);
  auto sentences =
      PrepareText(*tokenizer_, *task_, "\xF0\x9F\x98\x80 in \xC5\x81odz. Gut.", {}, 256);
  ASSERT_TRUE(sentences.ok());
  ASSERT_EQ(sentences->size(), 2u);
  uint32_t seed = 12345;
  auto next = [&seed]() { return seed = seed * 1664525u + 1013904223u; };
  int surplus_cases = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<Hypothesis> hypotheses(2);
    for (Hypothesis& h : hypotheses) {
      const int length = static_cast<int>(next() >> 28);  // 0..15
      for (int i = 0; i < length; ++i)
        h.tokens.push_back(vocabulary[(next() >> 8) % vocabulary.size()]);
    }
    const std::vector<const Hypothesis*> parts = {&hypotheses[0], &hypotheses[1]};
    for (UnknownPieces unknowns : {UnknownPieces::kCopySource, UnknownPieces::kDrop}) {
      auto assembled = AssembleText(*tokenizer_, *sentences, parts, unknowns);
      ASSERT_TRUE(assembled.ok());
      // Exact, but for a surplus nothing after it repeats: a space the last sentence took
      // back at its end (TextStream says why).
      const std::string streamed = StreamedText(*tokenizer_, *sentences, parts, unknowns);
      const bool exact = streamed == assembled->text;
      const bool trailing_space =
          streamed.starts_with(assembled->text) &&
          streamed.find_first_not_of(' ', assembled->text.size()) == std::string::npos;
      ASSERT_TRUE(exact || trailing_space)
          << "trial " << trial << ": '" << streamed << "' against '" << assembled->text << "'";
      surplus_cases += exact ? 0 : 1;
    }
  }
  // Rare: a dropped unknown piece after a space at the very end of the text.
  EXPECT_LT(surplus_cases, 50);
}

}  // namespace
}  // namespace taskmoe::models
