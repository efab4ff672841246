// Fuzz target: the tokenizer path of a request, with the demo model's spm.model (our own
// SentencePiece reader, models/sentencepiece_*.h) and config.json, loaded once.
//
// The input is used twice. As text (any bytes: malformed UTF-8, NULs, control characters),
// it is normalised and encoded (EncodePieces, EncodeSource for one of the model's tasks):
// every id must be in the vocabulary and none a control piece, and decoding the ids back must
// give valid UTF-8. As id sequences, it is decoded: little-endian int32s, in range or not,
// through Tokenizer::Decode (out-of-range ids must be refused with a status), and uint16s
// taken modulo the vocabulary size straight through SentencePieceModel::Decode; every text a
// decode returns must be valid UTF-8, since the server puts it in protobuf string fields.
// As a caller's text, it is also split into sentences (models/sentence_splitter.h): in order,
// inside the text, never overlapping, without surrounding whitespace; and its unknown pieces'
// texts are decoded back in: whatever replaces them, the decoded text is valid UTF-8 and
// holds no " ⁇ " of ours.
// Seeds: fuzz/corpus/tokenizer/ (sentences in the demo's languages and edge cases).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "models/format/config.h"
#include "models/text/sentence_splitter.h"
#include "models/text/sentencepiece_model.h"
#include "models/text/tokenizer.h"

namespace taskmoe::fuzz {
namespace {

struct Demo : DemoTokenizer {
  std::unique_ptr<models::SentencePieceModel> spm;
};

const Demo& GetDemo() {
  static const Demo* const demo = [] {
    auto* d = new Demo{LoadDemoTokenizer(), nullptr};
    absl::StatusOr<std::unique_ptr<models::SentencePieceModel>> spm =
        models::SentencePieceModel::Load(DemoModelDir() + "/spm.model");
    TASKMOE_FUZZ_CHECK(spm.ok(), std::string(spm.status().message()));
    d->spm = *std::move(spm);
    return d;
  }();
  return *demo;
}

void CheckText(const char* what, const std::string& text) {
  TASKMOE_FUZZ_CHECK(IsValidUtf8(text),
                     absl::StrCat(what, " is not valid UTF-8: ", absl::CHexEscape(text)));
}

void Run(std::string_view input) {
  const Demo& demo = GetDemo();
  const int vocab = demo.tokenizer->vocab_size();

  // The input as text.
  absl::StatusOr<std::vector<int32_t>> pieces = demo.tokenizer->EncodePieces(input);
  TASKMOE_FUZZ_CHECK(pieces.ok(), std::string(pieces.status().message()));
  for (int32_t id : *pieces) {
    TASKMOE_FUZZ_CHECK(id >= 0 && id < vocab, absl::StrCat("encoded id ", id));
    TASKMOE_FUZZ_CHECK(!demo.spm->IsControl(id), absl::StrCat("encoded control id ", id));
  }
  const models::TaskInfo& task = demo.config.tasks[input.size() % demo.config.tasks.size()];
  absl::StatusOr<std::vector<int32_t>> source = demo.tokenizer->EncodeSource(input, task);
  TASKMOE_FUZZ_CHECK(source.ok(), std::string(source.status().message()));
  TASKMOE_FUZZ_CHECK(source->size() == pieces->size() + 2 &&
                         source->front() == task.target_tag_id &&
                         source->back() == demo.config.special_tokens.eos &&
                         std::equal(pieces->begin(), pieces->end(), source->begin() + 1),
                     "EncodeSource is not [tag] + EncodePieces + [eos]");
  absl::StatusOr<std::string> text = demo.tokenizer->Decode(*pieces);
  TASKMOE_FUZZ_CHECK(text.ok(), std::string(text.status().message()));
  CheckText("the decoded encoding", *text);

  // The input as a caller's text: its sentences, and its unknown pieces replaced or dropped.
  const char* previous_end = input.data();
  for (std::string_view sentence : models::SplitSentences(input)) {
    TASKMOE_FUZZ_CHECK(!sentence.empty() && sentence.data() >= previous_end &&
                           sentence.data() + sentence.size() <= input.data() + input.size(),
                       "a sentence outside the text, empty, or out of order");
    TASKMOE_FUZZ_CHECK(sentence.front() != ' ' && sentence.back() != ' ' &&
                           sentence.front() != '\n' && sentence.back() != '\n',
                       "a sentence with surrounding whitespace");
    previous_end = sentence.data() + sentence.size();
  }
  std::vector<std::string> unknown_texts;
  const std::vector<int32_t> with_unknowns = demo.spm->Encode(input, &unknown_texts);
  TASKMOE_FUZZ_CHECK(with_unknowns == *pieces, "Encode differs when asked for unknown texts");
  TASKMOE_FUZZ_CHECK(static_cast<size_t>(std::count(with_unknowns.begin(), with_unknowns.end(),
                                                    demo.spm->unk_id())) == unknown_texts.size(),
                     "not one unknown text per unknown piece");
  for (const std::vector<std::string>& replacements : {unknown_texts, std::vector<std::string>{}}) {
    const std::string replaced = demo.spm->DecodeReplacingUnknowns(with_unknowns, replacements);
    CheckText("a decoding with unknown pieces replaced", replaced);
    if (input.find("\xE2\x81\x87") == std::string_view::npos) {
      TASKMOE_FUZZ_CHECK(replaced.find(" \xE2\x81\x87 ") == std::string::npos,
                         "the unknown sign in a decoding that replaces it");
    }
  }

  // The input as int32 ids, any value.
  std::vector<int32_t> ids(input.size() / sizeof(int32_t));
  if (!ids.empty()) std::memcpy(ids.data(), input.data(), ids.size() * sizeof(int32_t));
  bool in_range = true;
  for (int32_t id : ids) {
    in_range = in_range && id >= 0 && id < vocab;
    if (id >= 0 && id < vocab) {
      TASKMOE_FUZZ_CHECK(demo.tokenizer->IdToPiece(id) == demo.spm->IdToPiece(id), "IdToPiece");
    } else {
      TASKMOE_FUZZ_CHECK(demo.tokenizer->IdToPiece(id).empty(), absl::StrCat("piece of ", id));
    }
  }
  text = demo.tokenizer->Decode(ids);
  TASKMOE_FUZZ_CHECK(text.ok() == in_range,
                     absl::StrCat("Decode of out-of-range ids: ", text.status().message()));
  if (text.ok()) CheckText("a decoded id sequence", *text);

  // The input as uint16 ids modulo the vocabulary: nearly every input decodes.
  ids.resize(input.size() / sizeof(uint16_t));
  for (size_t i = 0; i < ids.size(); ++i) {
    uint16_t raw = 0;
    std::memcpy(&raw, input.data() + i * sizeof(raw), sizeof(raw));
    ids[i] = static_cast<int32_t>(raw % vocab);
  }
  CheckText("a decoded id sequence", demo.spm->Decode(ids));
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  taskmoe::fuzz::Run(taskmoe::fuzz::AsText(data, size));
  return 0;
}
