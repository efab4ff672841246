// Protobuf wire-format reader for the few ModelProto fields tokenization needs.
#include "models/text/sentencepiece_proto.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace taskmoe::models {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// A cursor over one message's bytes. Every read checks bounds: the file is untrusted.
class WireReader {
 public:
  WireReader(std::string_view bytes, const char* message) : data_(bytes), message_(message) {}

  bool done() const { return position_ >= data_.size(); }

  absl::Status ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (position_ >= data_.size()) return Error("varint runs past the end");
      const auto byte = static_cast<uint8_t>(data_[position_++]);
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return absl::OkStatus();
    }
    return Error("varint longer than 10 bytes");
  }

  absl::Status ReadTag(uint32_t* field, uint32_t* wire_type) {
    uint64_t tag = 0;
    if (absl::Status status = ReadVarint(&tag); !status.ok()) return status;
    *field = static_cast<uint32_t>(tag >> 3);
    *wire_type = static_cast<uint32_t>(tag & 7);
    if (*field == 0) return Error("field number 0");
    return absl::OkStatus();
  }

  absl::Status ReadBytes(std::string_view* bytes) {
    uint64_t length = 0;
    if (absl::Status status = ReadVarint(&length); !status.ok()) return status;
    if (length > data_.size() - position_) {
      return Error(absl::StrCat("length ", length, " runs past the end"));
    }
    *bytes = data_.substr(position_, length);
    position_ += length;
    return absl::OkStatus();
  }

  absl::Status ReadFloat(float* value) {
    if (data_.size() - position_ < 4) return Error("fixed32 runs past the end");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) {
      bits |= static_cast<uint32_t>(static_cast<uint8_t>(data_[position_ + i])) << (8 * i);
    }
    position_ += 4;
    std::memcpy(value, &bits, sizeof(bits));
    return absl::OkStatus();
  }

  absl::Status Skip(uint32_t wire_type) {
    uint64_t ignored = 0;
    std::string_view ignored_bytes;
    switch (wire_type) {
      case kVarint:
        return ReadVarint(&ignored);
      case kFixed64:
        return Advance(8);
      case kLengthDelimited:
        return ReadBytes(&ignored_bytes);
      case kFixed32:
        return Advance(4);
      default:
        return Error(absl::StrCat("unsupported wire type ", wire_type));
    }
  }

  absl::Status Expect(uint32_t wire_type, uint32_t want, uint32_t field) const {
    if (wire_type == want) return absl::OkStatus();
    return Error(absl::StrCat("field ", field, " has wire type ", wire_type, ", expected ", want));
  }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("malformed SentencePiece model: ", message_,
                                                   " at byte ", position_, ": ",
                                                   std::string(what)));
  }

 private:
  absl::Status Advance(size_t count) {
    if (data_.size() - position_ < count) return Error("field runs past the end");
    position_ += count;
    return absl::OkStatus();
  }

  std::string_view data_;
  const char* message_;
  size_t position_ = 0;
};

absl::Status ParsePiece(std::string_view bytes, SentencePieceEntry* entry) {
  WireReader reader(bytes, "SentencePiece");
  while (!reader.done()) {
    uint32_t field = 0, wire_type = 0;
    TASKMOE_RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    if (field == 1) {
      TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kLengthDelimited, field));
      std::string_view piece;
      TASKMOE_RETURN_IF_ERROR(reader.ReadBytes(&piece));
      entry->piece = std::string(piece);
    } else if (field == 2) {
      TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kFixed32, field));
      TASKMOE_RETURN_IF_ERROR(reader.ReadFloat(&entry->score));
    } else if (field == 3) {
      TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kVarint, field));
      uint64_t type = 0;
      TASKMOE_RETURN_IF_ERROR(reader.ReadVarint(&type));
      if (type < 1 || type > 6) return reader.Error(absl::StrCat("unknown piece type ", type));
      entry->type = static_cast<PieceType>(type);
    } else {
      TASKMOE_RETURN_IF_ERROR(reader.Skip(wire_type));
    }
  }
  return absl::OkStatus();
}

// Reads a varint field into an int or bool.
template <typename T>
absl::Status ReadScalar(WireReader& reader, uint32_t wire_type, uint32_t field, T* value) {
  TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kVarint, field));
  uint64_t raw = 0;
  TASKMOE_RETURN_IF_ERROR(reader.ReadVarint(&raw));
  *value = static_cast<T>(static_cast<int64_t>(raw));  // int32 negatives are 10-byte varints
  return absl::OkStatus();
}

absl::Status ParseTrainerSpec(std::string_view bytes, SentencePieceProto* proto) {
  WireReader reader(bytes, "TrainerSpec");
  while (!reader.done()) {
    uint32_t field = 0, wire_type = 0;
    TASKMOE_RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    switch (field) {
      case 3:
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, &proto->model_type));
        break;
      case 24:
        TASKMOE_RETURN_IF_ERROR(
            ReadScalar(reader, wire_type, field, &proto->treat_whitespace_as_suffix));
        break;
      case 35:
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, &proto->byte_fallback));
        break;
      case 40:
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, &proto->unk_id));
        break;
      case 41:
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, &proto->bos_id));
        break;
      case 42:
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, &proto->eos_id));
        break;
      case 43:
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, &proto->pad_id));
        break;
      case 44: {
        TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kLengthDelimited, field));
        std::string_view surface;
        TASKMOE_RETURN_IF_ERROR(reader.ReadBytes(&surface));
        proto->unk_surface = std::string(surface);
        break;
      }
      default:
        TASKMOE_RETURN_IF_ERROR(reader.Skip(wire_type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerSpec(std::string_view bytes, std::string* name, std::string* charsmap,
                                 SentencePieceProto* flags) {
  WireReader reader(bytes, "NormalizerSpec");
  while (!reader.done()) {
    uint32_t field = 0, wire_type = 0;
    TASKMOE_RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    std::string_view text;
    switch (field) {
      case 1:
        TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kLengthDelimited, field));
        TASKMOE_RETURN_IF_ERROR(reader.ReadBytes(&text));
        if (name != nullptr) *name = std::string(text);
        break;
      case 2:
        TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kLengthDelimited, field));
        TASKMOE_RETURN_IF_ERROR(reader.ReadBytes(&text));
        *charsmap = std::string(text);
        break;
      case 3:
      case 4:
      case 5: {
        if (flags == nullptr) {  // the denormalizer's flags do not matter to us
          TASKMOE_RETURN_IF_ERROR(reader.Skip(wire_type));
          break;
        }
        bool* flag = field == 3   ? &flags->add_dummy_prefix
                     : field == 4 ? &flags->remove_extra_whitespaces
                                  : &flags->escape_whitespaces;
        TASKMOE_RETURN_IF_ERROR(ReadScalar(reader, wire_type, field, flag));
        break;
      }
      default:
        TASKMOE_RETURN_IF_ERROR(reader.Skip(wire_type));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SentencePieceProto> ParseSentencePieceProto(std::string_view bytes) {
  SentencePieceProto proto;
  WireReader reader(bytes, "ModelProto");
  while (!reader.done()) {
    uint32_t field = 0, wire_type = 0;
    TASKMOE_RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    if (field != 1 && field != 2 && field != 3 && field != 5) {
      TASKMOE_RETURN_IF_ERROR(reader.Skip(wire_type));
      continue;
    }
    TASKMOE_RETURN_IF_ERROR(reader.Expect(wire_type, kLengthDelimited, field));
    std::string_view message;
    TASKMOE_RETURN_IF_ERROR(reader.ReadBytes(&message));
    if (field == 1) {
      TASKMOE_RETURN_IF_ERROR(ParsePiece(message, &proto.pieces.emplace_back()));
    } else if (field == 2) {
      TASKMOE_RETURN_IF_ERROR(ParseTrainerSpec(message, &proto));
    } else if (field == 3) {
      TASKMOE_RETURN_IF_ERROR(ParseNormalizerSpec(message, &proto.normalizer_name,
                                                  &proto.precompiled_charsmap, &proto));
    } else {
      TASKMOE_RETURN_IF_ERROR(
          ParseNormalizerSpec(message, nullptr, &proto.denormalizer_charsmap, nullptr));
    }
  }
  return proto;
}

}  // namespace taskmoe::models
