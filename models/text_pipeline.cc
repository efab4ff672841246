// Texts to sources and hypotheses to texts.
#include "models/text_pipeline.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "models/sentence_splitter.h"

namespace taskmoe::models {

absl::StatusOr<std::vector<SourceSentence>> PrepareText(const Tokenizer& tokenizer,
                                                        const TaskInfo& task, std::string_view text,
                                                        const TextOptions& options,
                                                        int64_t max_positions) {
  std::vector<std::string_view> parts;
  if (options.split_sentences) parts = SplitSentences(text);
  if (parts.empty()) parts = {text};  // not split, or blank: the tokenizer sees it as it is
  std::vector<SourceSentence> sentences(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    SourceSentence& sentence = sentences[i];
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer.EncodeSource(parts[i], task, &sentence.unknown_texts);
    if (!ids.ok()) return ids.status();
    if (static_cast<int64_t>(ids->size()) > max_positions) {
      return absl::InvalidArgumentError(absl::StrCat(
          parts.size() > 1 ? absl::StrCat("sentence ", i + 1, " of ", parts.size(), " has ")
                           : std::string(),
          ids->size(), " tokens, more than the model's limit of ", max_positions,
          options.split_sentences ? "" : " (sentence splitting was off)"));
    }
    sentence.ids = *std::move(ids);
    if (i + 1 < parts.size()) {
      const char* end = parts[i].data() + parts[i].size();
      sentence.separator.assign(end, parts[i + 1].data());
    }
  }
  return sentences;
}

absl::StatusOr<std::string> SentenceText(const Tokenizer& tokenizer,
                                         const std::vector<int32_t>& tokens,
                                         const SourceSentence& source, UnknownPieces unknowns) {
  static const std::vector<std::string> kNoReplacements;
  return tokenizer.DecodeReplacingUnknowns(
      tokens, unknowns == UnknownPieces::kCopySource ? source.unknown_texts : kNoReplacements);
}

void SentenceJoiner::Add(std::string_view translation, std::string_view separator) {
  if (translation.empty()) {
    // Keep the separator with the most line breaks.
    if (!text_.empty() &&
        std::count(separator.begin(), separator.end(), '\n') >
            std::count(pending_separator_.begin(), pending_separator_.end(), '\n')) {
      pending_separator_ = separator;
    }
    return;
  }
  text_ = With(translation);
  pending_separator_ = separator;
}

std::string SentenceJoiner::With(std::string_view translation) const {
  if (translation.empty()) return text_;
  if (text_.empty()) return std::string(translation);
  std::string joined = text_;
  joined.append(pending_separator_).append(translation);
  return joined;
}

absl::StatusOr<TextTranslation> AssembleText(const Tokenizer& tokenizer,
                                             absl::Span<const SourceSentence> sentences,
                                             absl::Span<const Hypothesis* const> hypotheses,
                                             UnknownPieces unknowns) {
  if (sentences.size() != hypotheses.size()) {
    return absl::InternalError(
        absl::StrCat(sentences.size(), " sentences but ", hypotheses.size(), " hypotheses"));
  }
  TextTranslation result;
  SentenceJoiner joiner;
  for (size_t i = 0; i < sentences.size(); ++i) {
    const Hypothesis& h = *hypotheses[i];
    absl::StatusOr<std::string> text = SentenceText(tokenizer, h.tokens, sentences[i], unknowns);
    if (!text.ok()) return text.status();
    joiner.Add(*text, sentences[i].separator);
    result.score += h.score;
    result.token_ids.insert(result.token_ids.end(), h.tokens.begin(), h.tokens.end());
    if (!h.reached_eos) result.finish_reason = FinishReason::kLength;
  }
  result.text = joiner.text();
  return result;
}

}  // namespace taskmoe::models
