// Tokenizer over our SentencePiece model reader.
#include "models/text/tokenizer.h"

#include "absl/strings/str_cat.h"

namespace taskmoe::models {

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::Load(const std::string& spm_path,
                                                                 const ModelConfig& config) {
  absl::StatusOr<std::unique_ptr<SentencePieceModel>> model = SentencePieceModel::Load(spm_path);
  if (!model.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model: ", std::string(model.status().message())));
  }
  return FromModel(*std::move(model), spm_path, config);
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizer::FromModel(
    std::shared_ptr<const SentencePieceModel> model, const std::string& spm_path,
    const ModelConfig& config) {
  if (model == nullptr) return absl::InvalidArgumentError("Tokenizer::FromModel: no model");
  std::shared_ptr<Tokenizer> tokenizer(new Tokenizer());
  tokenizer->processor_ = std::move(model);
  const SentencePieceModel& sp = *tokenizer->processor_;
  if (sp.size() != config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(spm_path, " has ", sp.size(),
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
    if (id != task.target_tag_id) {
      return absl::InvalidArgumentError(absl::StrCat(spm_path, ": target tag ", task.target_tag,
                                                     " of task ", task.id, " has id ", id,
                                                     " but config.json says ", task.target_tag_id));
    }
  }
  tokenizer->eos_ = special.eos;
  return std::shared_ptr<const Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodePieces(std::string_view text) const {
  return processor_->Encode(text);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodeSource(
    std::string_view text, const TaskInfo& task, std::vector<std::string>* unknown_texts) const {
  const std::vector<int32_t> pieces = processor_->Encode(text, unknown_texts);
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 2);
  ids.push_back(task.target_tag_id);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  ids.push_back(eos_);
  return ids;
}

absl::Status Tokenizer::CheckIds(absl::Span<const int32_t> ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= processor_->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: id ", id, " outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  if (absl::Status s = CheckIds(ids); !s.ok()) return s;
  return processor_->Decode(ids);
}

absl::StatusOr<std::string> Tokenizer::DecodeReplacingUnknowns(
    absl::Span<const int32_t> ids, absl::Span<const std::string> replacements) const {
  if (absl::Status s = CheckIds(ids); !s.ok()) return s;
  return processor_->DecodeReplacingUnknowns(ids, replacements);
}

std::string Tokenizer::IdToPiece(int32_t id) const {
  if (id < 0 || id >= processor_->size()) return "";
  return processor_->IdToPiece(id);
}

bool Tokenizer::IsUnknown(int32_t id) const {
  return id >= 0 && id < processor_->size() && processor_->IsUnknown(id);
}

int Tokenizer::vocab_size() const { return processor_->size(); }

}  // namespace taskmoe::models
