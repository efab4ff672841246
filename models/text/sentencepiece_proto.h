// Reads a SentencePiece model file (spm.model, a serialised `ModelProto`) into plain structs.
//
// We parse the protobuf wire format ourselves instead of linking libsentencepiece: Debian's
// libsentencepiece carries a private copy of protobuf 3.14 whose exported symbols clash with
// the system protobuf 3.21 that gRPC uses, so a process linking both aborts at start-up. Only
// the fields tokenization needs are read (field numbers from sentencepiece_model.proto); the
// rest is skipped, and features we do not implement are refused with a clear error.
#ifndef TASKMOE_MODELS_TEXT_SENTENCEPIECE_PROTO_H_
#define TASKMOE_MODELS_TEXT_SENTENCEPIECE_PROTO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace taskmoe::models {

// ModelProto.SentencePiece.Type.
enum class PieceType : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct SentencePieceEntry {
  std::string piece;
  float score = 0.0f;
  PieceType type = PieceType::kNormal;
};

struct SentencePieceProto {
  std::vector<SentencePieceEntry> pieces;
  // TrainerSpec (defaults as in sentencepiece_model.proto).
  int model_type = 1;  // 1 = UNIGRAM
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int unk_id = 0;
  int bos_id = 1;
  int eos_id = 2;
  int pad_id = -1;
  std::string unk_surface = " \xE2\x81\x87 ";
  // NormalizerSpec.
  std::string normalizer_name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  // DenormalizerSpec's charsmap (we refuse models that have one).
  std::string denormalizer_charsmap;
};

// Parses the serialised ModelProto in `bytes`; malformed input is an InvalidArgument error
// saying where it went wrong.
absl::StatusOr<SentencePieceProto> ParseSentencePieceProto(std::string_view bytes);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_SENTENCEPIECE_PROTO_H_
