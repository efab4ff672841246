// Translator: texts in, texts out, for one task of one model. Splits each text into sentences
// and tokenises them (text_pipeline.h, as the server does), sorts the sentences by source
// length (so padding stays small), decodes them in batches, puts each text back together, and
// returns the results in the caller's order.
#ifndef TASKMOE_MODELS_TRANSLATOR_H_
#define TASKMOE_MODELS_TRANSLATOR_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/decoding.h"
#include "models/text_pipeline.h"
#include "models/tokenizer.h"
#include "models/transformer.h"

namespace taskmoe::models {

struct TranslateOptions {
  // Its callbacks (is_cancelled, on_token) name a sentence by its index among the sentences
  // of all texts, in order.
  DecodeOptions decode;
  TextOptions text;
  // Sentences decoded together (after sorting by length).
  int max_batch_size = 32;
};

struct Translation {
  std::string text;
  float score = 0.0f;
  std::vector<int32_t> token_ids;
  FinishReason finish_reason = FinishReason::kEndOfSentence;
  absl::Status status;  // Cancelled when the caller cancelled one of its sentences
};

class Translator {
 public:
  // Loads model.safetensors, config.json and spm.model from a model directory.
  static absl::StatusOr<std::unique_ptr<Translator>> Load(const std::string& model_dir,
                                                          const LoadOptions& options);
  Translator(std::shared_ptr<const TransformerModel> model,
             std::shared_ptr<const Tokenizer> tokenizer);

  // Translates `texts` for task `task_id` ("en-de"), which the model must serve.
  absl::StatusOr<std::vector<Translation>> Translate(std::string_view task_id,
                                                     const std::vector<std::string>& texts,
                                                     const TranslateOptions& options) const;

  const TransformerModel& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  std::shared_ptr<const TransformerModel> model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TRANSLATOR_H_
