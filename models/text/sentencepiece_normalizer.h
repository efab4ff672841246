// SentencePiece's text normalisation, reimplemented to produce byte-identical output: a
// longest-match rewrite through the model's precompiled character map (a double-array trie
// plus a pool of replacement strings, e.g. NFKC for `nmt_nfkc`), user-defined symbols kept
// verbatim, and the whitespace rules (trim, collapse runs, a dummy prefix space, spaces shown
// as U+2581 "▁").
#ifndef TASKMOE_MODELS_TEXT_SENTENCEPIECE_NORMALIZER_H_
#define TASKMOE_MODELS_TEXT_SENTENCEPIECE_NORMALIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "models/text/byte_trie.h"
#include "models/text/sentencepiece_proto.h"

namespace taskmoe::models {

// U+2581 LOWER ONE EIGHTH BLOCK: how SentencePiece's pieces and normalised text show a space.
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";

class SentencePieceNormalizer {
 public:
  // `user_defined` are the pieces matched before normalisation and copied unchanged.
  static absl::StatusOr<SentencePieceNormalizer> Create(const SentencePieceProto& proto,
                                                        const ByteTrie* user_defined);

  // The normalised form of `text`, as SentencePiece's Normalizer::Normalize returns it.
  std::string Normalize(std::string_view text) const;

 private:
  SentencePieceNormalizer() = default;

  // The normalised form of the longest prefix of `input` the character map (or a user-defined
  // symbol) matches, or of its first character, and the number of input bytes it consumed.
  std::pair<std::string_view, size_t> NormalizePrefix(std::string_view input) const;
  // Longest match of `input` in the double-array trie: (value, length), length 0 if none.
  std::pair<uint32_t, size_t> LongestCharsmapMatch(std::string_view input) const;

  std::vector<uint32_t> trie_units_;  // darts-clone double-array units
  std::string replacements_;          // NUL-terminated replacement strings
  const ByteTrie* user_defined_ = nullptr;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_SENTENCEPIECE_NORMALIZER_H_
