// Fuzz target: any bytes as a SentencePiece model file (spm.model, a serialised ModelProto)
// through our own reader, models::SentencePieceModel::FromBytes (sentencepiece_proto.h: the
// protobuf wire format; sentencepiece_normalizer.h: the precompiled character map, a
// darts-clone double-array trie read from the file).
//
// Malformed files must be refused with a status, never crash, hang or leak. A model that is
// accepted must then encode sample texts, the model's own pieces run together and the input
// itself without crashing (the charsmap trie is walked with untrusted offsets), giving ids in
// the vocabulary that are never control pieces, and decode every one of its ids.
// A byte-fallback model must never encode to the unknown piece.
// Seeds: fuzz/corpus/spm_model/ (tiny unigram models trained by fuzz/make_seeds.py with
// identity, custom-rule and whitespace-option normalisers, user-defined and unused pieces,
// byte fallback).
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "models/text/sentencepiece_model.h"

namespace taskmoe::fuzz {
namespace {

constexpr std::string_view kSamples[] = {"Hello world.",
                                         "  two  spaces  ",
                                         "\t\n",
                                         "caf\xC3\xA9 \xEF\xAC\x81le \xEF\xBC\xA1",
                                         "bad \xFF byte \xC3",
                                         "<2de> tag",
                                         "\xE2\x96\x81literal",
                                         "\xE6\x97\xA5\xE6\x9C\xAC"};

void CheckIds(const models::SentencePieceModel& model, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    TASKMOE_FUZZ_CHECK(id >= 0 && id < model.size(), absl::StrCat("encoded id ", id));
    TASKMOE_FUZZ_CHECK(!model.IsControl(id), absl::StrCat("encoded control id ", id));
    // With byte fallback every character encodes, as pieces or as bytes.
    TASKMOE_FUZZ_CHECK(!model.byte_fallback() || !model.IsUnknown(id),
                       absl::StrCat("unknown id ", id, " in a byte-fallback model"));
  }
  (void)model.Decode(ids);
}

void Run(std::string_view input) {
  absl::StatusOr<std::unique_ptr<models::SentencePieceModel>> parsed =
      models::SentencePieceModel::FromBytes(input);
  if (!parsed.ok()) {
    TASKMOE_FUZZ_CHECK(!parsed.status().message().empty(), "an error without a message");
    return;
  }
  const models::SentencePieceModel& model = **parsed;
  TASKMOE_FUZZ_CHECK(model.size() > 0, "no pieces");
  TASKMOE_FUZZ_CHECK(model.IsUnknown(model.unk_id()), "unk_id is not the unknown piece");
  for (int id : {model.bos_id(), model.eos_id(), model.pad_id()}) {
    TASKMOE_FUZZ_CHECK(id < 0 || (id < model.size() && model.IsControl(id)),
                       absl::StrCat("special id ", id));
  }
  for (std::string_view text : kSamples) CheckIds(model, model.Encode(text));
  CheckIds(model, model.Encode(input.substr(0, 4096)));

  // The first pieces run together, then every id (bounded: models may be large).
  const int shown = std::min(model.size(), 4096);
  std::string pieces;
  std::vector<int32_t> ids;
  for (int id = 0; id < shown; ++id) {
    if (id < 64) pieces += model.IdToPiece(id);
    TASKMOE_FUZZ_CHECK(model.PieceToId(model.IdToPiece(id)) == id,
                       absl::StrCat("piece ", id, " does not map back to its id"));
    ids.push_back(id);
  }
  CheckIds(model, model.Encode(pieces));
  (void)model.Decode(ids);
}

}  // namespace
}  // namespace taskmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  taskmoe::fuzz::Run(taskmoe::fuzz::AsText(data, size));
  return 0;
}
