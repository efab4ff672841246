// SentencePiece unigram encoding (Viterbi over the vocabulary) and decoding.
#include "models/text/sentencepiece_model.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "models/text/utf8.h"

namespace taskmoe::models {
namespace {

// An unknown character costs this much below the least likely piece, as in SentencePiece.
constexpr float kUnknownPenalty = 10.0f;

// Bytes of the UTF-8 character whose lead byte is `lead` (normalised text is well formed).
int CharLengthFromLeadByte(char lead) {
  static constexpr int kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[static_cast<uint8_t>(lead) >> 4];
}

}  // namespace

absl::StatusOr<std::string> SentencePieceModel::ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream bytes;
  bytes << file.rdbuf();
  if (file.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return std::move(bytes).str();
}

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::Load(
    const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return FromBytes(*bytes, path);
}

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::FromBytes(
    std::string_view bytes, std::string_view origin) {
  absl::StatusOr<std::unique_ptr<SentencePieceModel>> model = Parse(bytes);
  if (!model.ok() && !origin.empty()) {
    return absl::Status(model.status().code(), absl::StrCat(std::string(origin), ": ",
                                                            std::string(model.status().message())));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::Parse(
    std::string_view bytes) {
  absl::StatusOr<SentencePieceProto> proto = ParseSentencePieceProto(bytes);
  if (!proto.ok()) return proto.status();
  if (proto->model_type != 1) {
    return absl::UnimplementedError(absl::StrCat("SentencePiece model type ", proto->model_type,
                                                 " is not supported (only unigram)"));
  }
  if (proto->treat_whitespace_as_suffix) {
    return absl::UnimplementedError("SentencePiece treat_whitespace_as_suffix is not supported");
  }
  if (!proto->denormalizer_charsmap.empty()) {
    return absl::UnimplementedError("SentencePiece denormalization is not supported");
  }
  if (proto->pieces.empty()) return absl::InvalidArgumentError("SentencePiece model has no pieces");
  std::unique_ptr<SentencePieceModel> model(new SentencePieceModel());
  model->byte_fallback_ = proto->byte_fallback;
  model->byte_ids_.fill(-1);
  model->byte_values_.assign(proto->pieces.size(), 0);
  model->min_score_ = std::numeric_limits<float>::max();
  // SentencePiece starts the maximum at FLT_MIN (the smallest positive float), not at the
  // lowest float; user-defined pieces' scores depend on it, so we start from the same value.
  model->max_score_ = std::numeric_limits<float>::min();
  int unknown_pieces = 0;
  for (size_t id = 0; id < proto->pieces.size(); ++id) {
    const SentencePieceEntry& entry = proto->pieces[id];
    if (entry.piece.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("SentencePiece piece ", id, " is empty"));
    }
    if (!model->piece_ids_.emplace(entry.piece, static_cast<int>(id)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("SentencePiece piece \"", entry.piece, "\" appears twice"));
    }
    switch (entry.type) {
      case PieceType::kNormal:
        model->min_score_ = std::min(model->min_score_, entry.score);
        model->max_score_ = std::max(model->max_score_, entry.score);
        model->vocabulary_.Insert(entry.piece, static_cast<int32_t>(id));
        break;
      case PieceType::kUserDefined:
        model->user_defined_.Insert(entry.piece, static_cast<int32_t>(id));
        model->vocabulary_.Insert(entry.piece, static_cast<int32_t>(id));
        break;
      case PieceType::kUnused:
        model->vocabulary_.Insert(entry.piece, static_cast<int32_t>(id));
        break;
      case PieceType::kUnknown:
        ++unknown_pieces;
        break;
      case PieceType::kControl:
        break;
      case PieceType::kByte: {
        // "<0xHH>", as SentencePiece names them; only a byte-fallback model may have them.
        int value = -1;
        if (entry.piece.size() == 6 && entry.piece.substr(0, 3) == "<0x" &&
            entry.piece.back() == '>') {
          const std::string hex = entry.piece.substr(3, 2);
          if (std::isxdigit(static_cast<uint8_t>(hex[0])) &&
              std::isxdigit(static_cast<uint8_t>(hex[1]))) {
            value = std::stoi(hex, nullptr, 16);
          }
        }
        if (!proto->byte_fallback || value < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "SentencePiece byte piece ", id, " \"", entry.piece, "\"",
              value < 0 ? " is not named <0xHH>" : " in a model without byte_fallback"));
        }
        model->byte_ids_[value] = static_cast<int32_t>(id);
        model->byte_values_[id] = static_cast<uint8_t>(value);
        break;
      }
    }
  }
  if (model->byte_fallback_) {
    for (int value = 0; value < 256; ++value) {
      if (model->byte_ids_[value] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("SentencePiece model has byte_fallback but no byte piece <0x",
                         absl::Hex(value, absl::kZeroPad2), ">"));
      }
    }
  }
  const int size = static_cast<int>(proto->pieces.size());
  if (unknown_pieces != 1 || proto->unk_id < 0 || proto->unk_id >= size ||
      proto->pieces[proto->unk_id].type != PieceType::kUnknown) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SentencePiece model needs exactly one unknown piece at unk_id ", proto->unk_id));
  }
  for (auto [name, id] :
       {std::pair{"bos", proto->bos_id}, {"eos", proto->eos_id}, {"pad", proto->pad_id}}) {
    if (id >= size || (id >= 0 && proto->pieces[id].type != PieceType::kControl)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SentencePiece ", name, "_id ", id, " is not a control piece"));
    }
  }
  absl::StatusOr<SentencePieceNormalizer> normalizer = SentencePieceNormalizer::Create(
      *proto, model->user_defined_.empty() ? nullptr : &model->user_defined_);
  if (!normalizer.ok()) return normalizer.status();
  model->normalizer_ = std::make_unique<SentencePieceNormalizer>(*std::move(normalizer));
  model->unk_surface_ = proto->unk_surface;
  model->unk_id_ = proto->unk_id;
  model->bos_id_ = proto->bos_id;
  model->eos_id_ = proto->eos_id;
  model->pad_id_ = proto->pad_id;
  model->pieces_ = std::move(proto->pieces);
  return model;
}

std::vector<int32_t> SentencePieceModel::Encode(std::string_view text,
                                                std::vector<std::string>* unknown_texts) const {
  const std::string normalized = normalizer_->Normalize(text);
  const size_t size = normalized.size();
  if (size == 0) return {};
  // best[i]: the best segmentation of normalized[0, i) ends with piece `id` starting at
  // `start`; a lattice generated on the fly, as SentencePiece's optimised encoder does.
  struct BestPath {
    int32_t id = -1;
    float score = 0.0f;
    int64_t start = -1;
  };
  std::vector<BestPath> best(size + 1);
  const float unknown_score = min_score_ - kUnknownPenalty;
  size_t start = 0;
  while (start < size) {
    const float score_so_far = best[start].score;
    const size_t char_length =
        std::min<size_t>(CharLengthFromLeadByte(normalized[start]), size - start);
    bool single_char_piece = false;
    int32_t node = ByteTrie::kRoot;
    for (size_t end = start; end < size; ++end) {
      node = vocabulary_.Child(node, static_cast<uint8_t>(normalized[end]));
      if (node == ByteTrie::kNoNode) break;
      const int32_t id = vocabulary_.Value(node);
      if (id < 0 || pieces_[id].type == PieceType::kUnused) continue;
      const size_t length = end + 1 - start;
      // User-defined pieces always win. SentencePiece mixes float and double here (the sum is
      // taken in double and stored as float); we do the same so ties break identically.
      const double piece_score =
          pieces_[id].type == PieceType::kUserDefined
              ? static_cast<double>(static_cast<float>(length) * max_score_) - 0.1
              : static_cast<double>(pieces_[id].score);
      const double candidate = piece_score + static_cast<double>(score_so_far);
      BestPath& target = best[end + 1];
      if (target.start == -1 || candidate > target.score) {
        target = {id, static_cast<float>(candidate), static_cast<int64_t>(start)};
      }
      if (length == char_length) single_char_piece = true;
    }
    if (!single_char_piece) {
      BestPath& target = best[start + char_length];
      const float candidate = unknown_score + score_so_far;
      if (target.start == -1 || candidate > target.score) {
        target = {unk_id_, candidate, static_cast<int64_t>(start)};
      }
    }
    start += char_length;
  }
  std::vector<int32_t> ids;
  // Byte ranges of normalized[] under each unknown piece, last first (as ids is built).
  std::vector<std::pair<size_t, size_t>> unknown_spans;
  for (size_t end = size; end > 0; end = static_cast<size_t>(best[end].start)) {
    const size_t begin = static_cast<size_t>(best[end].start);
    // A run of unknown characters becomes one unknown piece, as in SentencePiece.
    if (best[end].id == unk_id_ && !ids.empty() && ids.back() == unk_id_) {
      unknown_spans.back().first = begin;
      continue;
    }
    if (best[end].id == unk_id_) unknown_spans.emplace_back(begin, end);
    ids.push_back(best[end].id);
  }
  std::reverse(ids.begin(), ids.end());
  if (byte_fallback_ && !unknown_spans.empty()) {
    // Each run of unknown characters becomes the pieces of its (normalised) bytes.
    std::vector<int32_t> with_bytes;
    with_bytes.reserve(ids.size() + size);
    auto span = unknown_spans.rbegin();
    for (int32_t id : ids) {
      if (id != unk_id_) {
        with_bytes.push_back(id);
        continue;
      }
      for (size_t i = span->first; i < span->second; ++i) {
        with_bytes.push_back(byte_ids_[static_cast<uint8_t>(normalized[i])]);
      }
      ++span;
    }
    if (unknown_texts != nullptr) unknown_texts->clear();
    return with_bytes;
  }
  if (unknown_texts != nullptr) {
    unknown_texts->clear();
    for (auto it = unknown_spans.rbegin(); it != unknown_spans.rend(); ++it) {
      unknown_texts->push_back(
          absl::StrReplaceAll(normalized.substr(it->first, it->second - it->first),
                              {{std::string(kSpaceSymbol), " "}}));
    }
  }
  return ids;
}

std::string SentencePieceModel::Decode(absl::Span<const int32_t> ids) const {
  return DecodeImpl(ids, nullptr);
}

std::string SentencePieceModel::DecodeReplacingUnknowns(
    absl::Span<const int32_t> ids, absl::Span<const std::string> replacements) const {
  return DecodeImpl(ids, &replacements);
}

std::string SentencePieceModel::DecodeImpl(
    absl::Span<const int32_t> ids, const absl::Span<const std::string>* replacements) const {
  std::string text;
  size_t unknowns_seen = 0;
  // A dropped unknown piece between two spaces ("▁", unk, "▁x") must not leave two.
  bool dropped_after_space = false;
  // Bytes of the byte pieces seen since the last other piece, decoded together (a character
  // may span several).
  std::string bytes;
  const auto flush_bytes = [&] {
    for (std::string_view rest = bytes; !rest.empty();) {
      const int length = ValidUtf8CharLength(rest);
      if (length == 0) {
        text += "\xEF\xBF\xBD";  // U+FFFD for a byte that starts no character
        rest.remove_prefix(1);
      } else {
        text.append(rest.substr(0, static_cast<size_t>(length)));
        rest.remove_prefix(static_cast<size_t>(length));
      }
    }
    if (!bytes.empty()) dropped_after_space = false;
    bytes.clear();
  };
  for (int32_t id : ids) {
    const SentencePieceEntry& entry = pieces_[id];
    if (entry.type == PieceType::kByte) {
      bytes.push_back(static_cast<char>(byte_values_[id]));
      continue;
    }
    flush_bytes();
    if (entry.type == PieceType::kControl) continue;
    if (entry.type == PieceType::kUnknown) {
      if (replacements == nullptr) {
        text += unk_surface_;
      } else if (const size_t i = unknowns_seen++;
                 i < replacements->size() && !(*replacements)[i].empty()) {
        text += (*replacements)[i];
      } else {
        dropped_after_space = dropped_after_space || text.empty() || text.back() == ' ';
        continue;
      }
      dropped_after_space = false;
      continue;
    }
    std::string_view piece = entry.piece;
    // The dummy prefix space of the first word is not part of the text.
    if ((text.empty() || dropped_after_space) &&
        piece.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
      piece.remove_prefix(kSpaceSymbol.size());
    }
    dropped_after_space = false;
    for (size_t i = 0; i < piece.size();) {
      if (piece.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) {
        text.push_back(' ');
        i += kSpaceSymbol.size();
      } else {
        text.push_back(piece[i++]);
      }
    }
  }
  flush_bytes();
  if (dropped_after_space && !text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

int SentencePieceModel::PieceToId(std::string_view piece) const {
  auto it = piece_ids_.find(absl::string_view(piece.data(), piece.size()));
  return it == piece_ids_.end() ? -1 : it->second;
}

}  // namespace taskmoe::models
