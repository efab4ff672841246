// Tokenizer: the model's SentencePiece vocabulary (our own reader, sentencepiece_model.h), checked
// against config.json, turning source text into [<2xx>] + pieces + [eos] and generated ids back
// into text.
#ifndef TASKMOE_MODELS_TEXT_TOKENIZER_H_
#define TASKMOE_MODELS_TEXT_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "models/format/config.h"
#include "models/text/sentencepiece_model.h"

namespace taskmoe::models {

class Tokenizer {
 public:
  // Loads an spm.model and checks it against the config: vocabulary size, the ids of
  // pad/unk/bos/eos, and every task's target tag piece and id.
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> Load(const std::string& spm_path,
                                                               const ModelConfig& config);
  // The same checks on a model already read (from spm_path: named in errors), which the
  // tokenizer shares with its other users (the tasks of one vocabulary).
  static absl::StatusOr<std::shared_ptr<const Tokenizer>> FromModel(
      std::shared_ptr<const SentencePieceModel> model, const std::string& spm_path,
      const ModelConfig& config);
  ~Tokenizer();

  // [task's target tag] + pieces(text) + [eos]. With `unknown_texts`, also what each unknown
  // piece stands for (SentencePieceModel::Encode).
  absl::StatusOr<std::vector<int32_t>> EncodeSource(
      std::string_view text, const TaskInfo& task,
      std::vector<std::string>* unknown_texts = nullptr) const;
  // Pieces of `text` alone (no tag, no eos).
  absl::StatusOr<std::vector<int32_t>> EncodePieces(std::string_view text) const;
  // Text of generated ids (special ids are skipped), unknown pieces shown as " ⁇ ".
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;
  // As Decode, the i-th unknown piece replaced by replacements[i], or dropped
  // (SentencePieceModel::DecodeReplacingUnknowns).
  absl::StatusOr<std::string> DecodeReplacingUnknowns(
      absl::Span<const int32_t> ids, absl::Span<const std::string> replacements) const;
  std::string IdToPiece(int32_t id) const;
  // Whether `id` is the unknown piece (false for ids outside the vocabulary).
  bool IsUnknown(int32_t id) const;
  int vocab_size() const;
  // The SentencePiece model underneath (shared by the tasks of one vocabulary loaded through
  // one WeightStore).
  const SentencePieceModel& model() const { return *processor_; }

 private:
  Tokenizer();
  // INVALID_ARGUMENT naming the first id outside the vocabulary.
  absl::Status CheckIds(absl::Span<const int32_t> ids) const;
  std::shared_ptr<const SentencePieceModel> processor_;
  int32_t eos_ = 3;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_TOKENIZER_H_
