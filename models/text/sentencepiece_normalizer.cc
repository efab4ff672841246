// SentencePiece normalisation: precompiled character map, user-defined symbols, whitespace.
#include "models/text/sentencepiece_normalizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/text/utf8.h"

namespace taskmoe::models {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// darts-clone's 32-bit unit layout: a label byte (bit 31 marks a leaf unit), a has-leaf bit,
// and an offset to the children's block (with an extension bit that scales it by 256).
bool UnitHasLeaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
uint32_t UnitValue(uint32_t unit) { return unit & ((1u << 31) - 1); }
uint32_t UnitLabel(uint32_t unit) { return unit & ((1u << 31) | 0xFF); }
uint32_t UnitOffset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

}  // namespace

absl::StatusOr<SentencePieceNormalizer> SentencePieceNormalizer::Create(
    const SentencePieceProto& proto, const ByteTrie* user_defined) {
  SentencePieceNormalizer normalizer;
  normalizer.user_defined_ = user_defined;
  normalizer.add_dummy_prefix_ = proto.add_dummy_prefix;
  normalizer.remove_extra_whitespaces_ = proto.remove_extra_whitespaces;
  normalizer.escape_whitespaces_ = proto.escape_whitespaces;
  const std::string& blob = proto.precompiled_charsmap;
  if (blob.empty()) return normalizer;  // identity normalisation
  if (blob.size() < 4) {
    return absl::InvalidArgumentError("SentencePiece model: precompiled charsmap under 4 bytes");
  }
  uint32_t trie_bytes = 0;
  for (int i = 0; i < 4; ++i)
    trie_bytes |= static_cast<uint32_t>(static_cast<uint8_t>(blob[i])) << (8 * i);
  if (trie_bytes % 4 != 0 || trie_bytes == 0 || trie_bytes > blob.size() - 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SentencePiece model: charsmap trie of ", trie_bytes, " bytes in a blob of ", blob.size()));
  }
  normalizer.trie_units_.resize(trie_bytes / 4);
  for (size_t u = 0; u < normalizer.trie_units_.size(); ++u) {
    uint32_t unit = 0;
    for (int i = 0; i < 4; ++i) {
      unit |= static_cast<uint32_t>(static_cast<uint8_t>(blob[4 + 4 * u + i])) << (8 * i);
    }
    normalizer.trie_units_[u] = unit;
  }
  normalizer.replacements_ = blob.substr(4 + trie_bytes);
  // Replacement strings are read up to their NUL: make sure the pool ends with one.
  if (normalizer.replacements_.empty() || normalizer.replacements_.back() != '\0') {
    normalizer.replacements_.push_back('\0');
  }
  return normalizer;
}

std::pair<uint32_t, size_t> SentencePieceNormalizer::LongestCharsmapMatch(
    std::string_view input) const {
  std::pair<uint32_t, size_t> longest{0, 0};
  const size_t units = trie_units_.size();
  size_t node = UnitOffset(trie_units_[0]);
  for (size_t i = 0; i < input.size(); ++i) {
    const auto label = static_cast<uint8_t>(input[i]);
    node ^= label;
    if (node >= units) break;
    const uint32_t unit = trie_units_[node];
    if (UnitLabel(unit) != label) break;
    node ^= UnitOffset(unit);
    if (node >= units) break;
    if (UnitHasLeaf(unit)) longest = {UnitValue(trie_units_[node]), i + 1};
  }
  return longest;
}

std::pair<std::string_view, size_t> SentencePieceNormalizer::NormalizePrefix(
    std::string_view input) const {
  if (user_defined_ != nullptr) {
    int32_t ignored = 0;
    if (const size_t length = user_defined_->LongestPrefix(input, &ignored); length > 0) {
      return {input.substr(0, length), length};
    }
  }
  if (!trie_units_.empty()) {
    const auto [value, length] = LongestCharsmapMatch(input);
    if (length > 0 && value < replacements_.size()) {
      return {std::string_view(replacements_.c_str() + value), length};
    }
  }
  const int char_length = ValidUtf8CharLength(input);
  // A malformed byte becomes U+FFFD and only that byte is consumed.
  if (char_length == 0) return {kReplacementChar, 1};
  return {input.substr(0, char_length), static_cast<size_t>(char_length)};
}

std::string SentencePieceNormalizer::Normalize(std::string_view input) const {
  std::string normalized;
  if (remove_extra_whitespaces_) {  // leading whitespace goes
    while (!input.empty()) {
      const auto [piece, consumed] = NormalizePrefix(input);
      if (piece != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return normalized;
  normalized.reserve(input.size() * 3 / 2 + kSpaceSymbol.size());
  const std::string_view space = escape_whitespaces_ ? kSpaceSymbol : std::string_view(" ");
  if (add_dummy_prefix_) normalized.append(space);
  bool previous_was_space = remove_extra_whitespaces_;
  while (!input.empty()) {
    auto [piece, consumed] = NormalizePrefix(input);
    // Runs of spaces collapse into one.
    while (previous_was_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    if (!piece.empty()) {
      for (char c : piece) {
        if (c == ' ' && escape_whitespaces_) {
          normalized.append(kSpaceSymbol);
        } else {
          normalized.push_back(c);
        }
      }
      previous_was_space = piece.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!remove_extra_whitespaces_) previous_was_space = false;
  }
  if (remove_extra_whitespaces_) {  // trailing whitespace goes
    while (normalized.size() >= space.size() &&
           std::string_view(normalized).substr(normalized.size() - space.size()) == space) {
      normalized.resize(normalized.size() - space.size());
    }
  }
  return normalized;
}

}  // namespace taskmoe::models
