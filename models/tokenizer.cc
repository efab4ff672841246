// SentencePiece wrapper.
#include "models/tokenizer.h"

#include "absl/strings/str_cat.h"

namespace taskmoe::models {

Tokenizer::Tokenizer() : processor_(std::make_unique<SentencePieceBridge>()) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::Load(const std::string& spm_path,
                                                                 const ModelConfig& config) {
  std::shared_ptr<Tokenizer> tokenizer(new Tokenizer());
  std::string error;
  if (!tokenizer->processor_->Load(spm_path, &error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model ", spm_path, ": ", error));
  }
  const SentencePieceBridge& sp = *tokenizer->processor_;
  if (sp.PieceSize() != config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(spm_path, " has ", sp.PieceSize(),
                                                   " pieces but config.json says vocab_size ",
                                                   config.vocab_size));
  }
  const SpecialTokens& special = config.special_tokens;
  for (auto [name, want, got] : {std::tuple{"pad", special.pad, sp.pad_id()},
                                 {"unk", special.unk, sp.unk_id()},
                                 {"bos", special.bos, sp.bos_id()},
                                 {"eos", special.eos, sp.eos_id()}}) {
    if (want != got) {
      return absl::InvalidArgumentError(
          absl::StrCat(spm_path, ": ", name, " id is ", got, " but config.json says ", want));
    }
  }
  for (const TaskInfo& task : config.tasks) {
    const int id = sp.PieceToId(task.target_tag);
    if (id != task.target_tag_id || sp.IsUnknown(id)) {
      return absl::InvalidArgumentError(absl::StrCat(spm_path, ": target tag ", task.target_tag,
                                                     " of task ", task.id, " has id ", id,
                                                     " but config.json says ", task.target_tag_id));
    }
  }
  tokenizer->eos_ = special.eos;
  return std::shared_ptr<const Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodePieces(std::string_view text) const {
  std::vector<int> ids;
  std::string error;
  if (!processor_->Encode(text, &ids, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", error));
  }
  return std::vector<int32_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodeSource(std::string_view text,
                                                             const TaskInfo& task) const {
  absl::StatusOr<std::vector<int32_t>> pieces = EncodePieces(text);
  if (!pieces.ok()) return pieces.status();
  std::vector<int32_t> ids;
  ids.reserve(pieces->size() + 2);
  ids.push_back(task.target_tag_id);
  ids.insert(ids.end(), pieces->begin(), pieces->end());
  ids.push_back(eos_);
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= processor_->PieceSize()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: id ", id, " outside the vocabulary"));
    }
    if (!processor_->IsControl(id)) pieces.push_back(id);
  }
  std::string text, error;
  if (!processor_->Decode(pieces, &text, &error)) {
    return absl::InternalError(absl::StrCat("tokenizer: ", error));
  }
  return text;
}

std::string Tokenizer::IdToPiece(int32_t id) const {
  if (id < 0 || id >= processor_->PieceSize()) return "";
  return processor_->IdToPiece(id);
}

int Tokenizer::vocab_size() const { return processor_->PieceSize(); }

}  // namespace taskmoe::models
