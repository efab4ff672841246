// Translator: texts in, texts out, for one task of one model, offline (taskmoe-translate).
// Prepares each text through the task's TaskModel (sentences, tokens, limits: as the server
// does), sorts the sentences by source length (so padding stays small), decodes them in
// batches, puts each text back together, and returns the results in the caller's order.
#ifndef TASKMOE_MODELS_TRANSLATOR_H_
#define TASKMOE_MODELS_TRANSLATOR_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/decoding.h"
#include "models/task_model.h"
#include "models/text_pipeline.h"

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
  explicit Translator(std::shared_ptr<const TaskModel> task) : task_(std::move(task)) {}

  // Translates `texts`; INVALID_ARGUMENT names the text ("text 3: ...") a problem is in.
  absl::StatusOr<std::vector<Translation>> Translate(const std::vector<std::string>& texts,
                                                     const TranslateOptions& options) const;

  const TaskModel& task() const { return *task_; }

 private:
  std::shared_ptr<const TaskModel> task_;
};

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TRANSLATOR_H_
