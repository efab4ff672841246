// Texts -> translations for one task.
#include "models/translator.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace taskmoe::models {

absl::StatusOr<std::vector<Translation>> Translator::Translate(
    const std::vector<std::string>& texts, const TranslateOptions& options) const {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError("max_batch_size must be >= 1");
  }
  // Every text's sentences, one after the other; first_sentence[t] is text t's first.
  std::vector<SourceSentence> sentences;
  std::vector<size_t> first_sentence = {0};
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<SourceSentence>> prepared =
        task_->PrepareText(texts[i], options.text);
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
    absl::StatusOr<std::vector<Hypothesis>> decoded = task_->Decode(batch, decode, &workspace);
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
    absl::StatusOr<TextTranslation> text = task_->FinishText(
        absl::MakeConstSpan(sentences).subspan(first, count), parts, options.text.unknown_pieces);
    if (!text.ok()) return text.status();
    results[t].text = std::move(text->text);
    results[t].score = text->score;
    results[t].token_ids = std::move(text->token_ids);
    results[t].finish_reason = text->finish_reason;
  }
  return results;
}

}  // namespace taskmoe::models
