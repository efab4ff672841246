// A SentencePiece unigram model read from spm.model, encoding and decoding exactly as the
// SentencePiece library 0.1.97 does (tests compare the two on real text), without linking it.
// See sentencepiece_proto.h for why we do not link libsentencepiece. Models trained with
// byte_fallback are supported: a character the vocabulary lacks encodes as the byte pieces
// <0x00>..<0xFF> of its UTF-8 bytes instead of the unknown piece, and decodes back.
#ifndef TASKMOE_MODELS_TEXT_SENTENCEPIECE_MODEL_H_
#define TASKMOE_MODELS_TEXT_SENTENCEPIECE_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "models/text/byte_trie.h"
#include "models/text/sentencepiece_normalizer.h"
#include "models/text/sentencepiece_proto.h"

namespace taskmoe::models {

class SentencePieceModel {
 public:
  // Not movable: the normaliser keeps a pointer to user_defined_.
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> Load(const std::string& path);
  // Parses spm.model bytes; errors start with `origin` (the file's path) when one is given.
  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> FromBytes(
      std::string_view bytes, std::string_view origin = {});
  // The bytes of an spm.model file (what Load parses), or why it cannot be read.
  static absl::StatusOr<std::string> ReadFile(const std::string& path);

  // Piece ids of `text` (normalised, then segmented by the Viterbi best path). With
  // `unknown_texts`, also the characters each unknown piece stands for, in order: a run of
  // characters the vocabulary lacks (normalised, "▁" shown as a space) is one unknown piece.
  // With byte fallback such a run is its bytes' pieces instead, and there are no unknowns.
  std::vector<int32_t> Encode(std::string_view text,
                              std::vector<std::string>* unknown_texts = nullptr) const;
  // Text of piece ids: control pieces vanish, the unknown piece shows as the model's unknown
  // surface (" ⁇ "), "▁" becomes a space and the first piece's leading space is dropped.
  // Neighbouring byte pieces become the UTF-8 characters of their bytes, and each byte that
  // starts no well-formed character U+FFFD. Ids must be in [0, size()).
  std::string Decode(absl::Span<const int32_t> ids) const;
  // As Decode, but the i-th unknown piece becomes `replacements[i]` rather than " ⁇ ": an
  // unknown piece past the end of `replacements`, or with an empty one, is dropped, and so is
  // the space it would leave doubled.
  std::string DecodeReplacingUnknowns(absl::Span<const int32_t> ids,
                                      absl::Span<const std::string> replacements) const;

  int size() const { return static_cast<int>(pieces_.size()); }
  // -1 when `piece` is not in the vocabulary.
  int PieceToId(std::string_view piece) const;
  const std::string& IdToPiece(int id) const { return pieces_[id].piece; }
  bool IsControl(int id) const { return pieces_[id].type == PieceType::kControl; }
  bool IsUnknown(int id) const { return pieces_[id].type == PieceType::kUnknown; }
  bool IsByte(int id) const { return pieces_[id].type == PieceType::kByte; }
  bool byte_fallback() const { return byte_fallback_; }
  int unk_id() const { return unk_id_; }
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }

 private:
  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> Parse(std::string_view bytes);
  SentencePieceModel() = default;
  // Decode and DecodeReplacingUnknowns: `replacements` null shows unknown pieces as " ⁇ ".
  std::string DecodeImpl(absl::Span<const int32_t> ids,
                         const absl::Span<const std::string>* replacements) const;

  std::vector<SentencePieceEntry> pieces_;
  absl::flat_hash_map<std::string, int> piece_ids_;
  ByteTrie vocabulary_;    // normal, user-defined and unused pieces
  ByteTrie user_defined_;  // matched verbatim by the normaliser
  std::unique_ptr<SentencePieceNormalizer> normalizer_;
  std::string unk_surface_;
  bool byte_fallback_ = false;
  std::array<int32_t, 256> byte_ids_{};  // the piece of each byte value, with byte fallback
  std::vector<uint8_t> byte_values_;     // the byte of each byte piece (by id), else 0
  float min_score_ = 0.0f;
  float max_score_ = 0.0f;
  int unk_id_ = 0;
  int bos_id_ = -1;
  int eos_id_ = -1;
  int pad_id_ = -1;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_SENTENCEPIECE_MODEL_H_
