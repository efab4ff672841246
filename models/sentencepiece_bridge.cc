// The only file that includes SentencePiece (see the header for why).
#include "models/sentencepiece_bridge.h"

#include <sentencepiece_processor.h>

namespace taskmoe::models {

SentencePieceBridge::SentencePieceBridge()
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SentencePieceBridge::~SentencePieceBridge() = default;

bool SentencePieceBridge::Load(const std::string& path, std::string* error) {
  const auto status = processor_->Load(path);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool SentencePieceBridge::Encode(std::string_view text, std::vector<int>* ids,
                                 std::string* error) const {
  const auto status = processor_->Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool SentencePieceBridge::Decode(const std::vector<int>& ids, std::string* text,
                                 std::string* error) const {
  const auto status = processor_->Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int SentencePieceBridge::PieceSize() const { return processor_->GetPieceSize(); }
int SentencePieceBridge::PieceToId(const std::string& piece) const {
  return processor_->PieceToId(piece);
}
std::string SentencePieceBridge::IdToPiece(int id) const { return processor_->IdToPiece(id); }
bool SentencePieceBridge::IsControl(int id) const { return processor_->IsControl(id); }
bool SentencePieceBridge::IsUnknown(int id) const { return processor_->IsUnknown(id); }
int SentencePieceBridge::pad_id() const { return processor_->pad_id(); }
int SentencePieceBridge::unk_id() const { return processor_->unk_id(); }
int SentencePieceBridge::bos_id() const { return processor_->bos_id(); }
int SentencePieceBridge::eos_id() const { return processor_->eos_id(); }

}  // namespace taskmoe::models
