// Texts -> translations for one task.
#include "models/translator.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "models/model_files.h"

namespace taskmoe::models {

absl::StatusOr<std::unique_ptr<Translator>> Translator::Load(const std::string& model_dir,
                                                             const LoadOptions& options) {
  absl::StatusOr<std::shared_ptr<const TransformerModel>> model =
      TransformerModel::Load(model_dir, options);
  if (!model.ok()) return model.status();
  if (absl::Status s = VerifyModelFiles((*model)->config(), model_dir); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<const Tokenizer>> tokenizer =
      Tokenizer::Load(absl::StrCat(model_dir, "/", kTokenizerFileName), (*model)->config());
  if (!tokenizer.ok()) return tokenizer.status();
  return std::make_unique<Translator>(*std::move(model), *std::move(tokenizer));
}

Translator::Translator(std::shared_ptr<const TransformerModel> model,
                       std::shared_ptr<const Tokenizer> tokenizer)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<std::vector<Translation>> Translator::Translate(
    std::string_view task_id, const std::vector<std::string>& texts,
    const TranslateOptions& options) const {
  const ModelConfig& config = model_->config();
  const TaskInfo* task = config.FindTask(task_id);
  if (task == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("task '", std::string(task_id), "' is not served by this model"));
  }
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError("max_batch_size must be >= 1");
  }
  absl::StatusOr<const TaskRoute*> route =
      model_->RouteForTask(static_cast<int>(task - config.tasks.data()));
  if (!route.ok()) return route.status();

  // Every text's sentences, one after the other; first_sentence[t] is text t's first.
  std::vector<SourceSentence> sentences;
  std::vector<size_t> first_sentence = {0};
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<SourceSentence>> prepared =
        PrepareText(*tokenizer_, *task, texts[i], options.text, config.max_positions);
    if (!prepared.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("text ", i, ": ", prepared.status().message()));
    }
    for (SourceSentence& sentence : *prepared) sentences.push_back(std::move(sentence));
    first_sentence.push_back(sentences.size());
  }
  // Longest first, stably, so each batch holds sentences of similar length.
  std::vector<size_t> order(sentences.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return sentences[a].ids.size() > sentences[b].ids.size();
  });

  std::vector<Hypothesis> hypotheses(sentences.size());
  DecodeWorkspace workspace;  // shared by the batches below
  for (size_t start = 0; start < order.size(); start += options.max_batch_size) {
    const size_t end = std::min(order.size(), start + options.max_batch_size);
    std::vector<std::vector<int32_t>> batch;
    for (size_t i = start; i < end; ++i) batch.push_back(sentences[order[i]].ids);
    DecodeOptions decode = options.decode;
    // Callbacks speak in the caller's sentence indices, not the batch's.
    if (options.decode.is_cancelled) {
      decode.is_cancelled = [&, start](int s) {
        return options.decode.is_cancelled(order[start + s]);
      };
    }
    if (options.decode.on_token) {
      decode.on_token = [&, start](int s, int32_t t) {
        options.decode.on_token(order[start + s], t);
      };
    }
    absl::StatusOr<std::vector<Hypothesis>> decoded =
        Decode(*model_, **route, batch, decode, &workspace);
    if (!decoded.ok()) return decoded.status();
    for (size_t i = start; i < end; ++i) hypotheses[order[i]] = std::move((*decoded)[i - start]);
  }

  std::vector<Translation> results(texts.size());
  for (size_t t = 0; t < texts.size(); ++t) {
    const size_t first = first_sentence[t], count = first_sentence[t + 1] - first;
    std::vector<const Hypothesis*> parts;
    for (size_t i = first; i < first + count; ++i) {
      parts.push_back(&hypotheses[i]);
      if (!hypotheses[i].status.ok() && results[t].status.ok()) {
        results[t].status = hypotheses[i].status;
      }
    }
    absl::StatusOr<TextTranslation> text =
        AssembleText(*tokenizer_, absl::MakeConstSpan(sentences).subspan(first, count), parts,
                     options.text.unknown_pieces);
    if (!text.ok()) return text.status();
    results[t].text = std::move(text->text);
    results[t].score = text->score;
    results[t].token_ids = std::move(text->token_ids);
    results[t].finish_reason = text->finish_reason;
  }
  return results;
}

}  // namespace taskmoe::models
