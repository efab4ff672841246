// A narrow, Abseil-free wrapper over sentencepiece::SentencePieceProcessor. Debian's
// SentencePiece header defines `absl::string_view` as an alias of std::string_view, which
// clashes with Abseil's own class of that name; so only sentencepiece_bridge.cc includes it,
// and it never sees an Abseil header.
#ifndef TASKMOE_MODELS_SENTENCEPIECE_BRIDGE_H_
#define TASKMOE_MODELS_SENTENCEPIECE_BRIDGE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace taskmoe::models {

class SentencePieceBridge {
 public:
  SentencePieceBridge();
  ~SentencePieceBridge();

  // Each returns false and sets *error on failure.
  bool Load(const std::string& path, std::string* error);
  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const;

  int PieceSize() const;
  int PieceToId(const std::string& piece) const;
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  int pad_id() const;
  int unk_id() const;
  int bos_id() const;
  int eos_id() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_SENTENCEPIECE_BRIDGE_H_
