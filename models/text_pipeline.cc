// Texts to sources and hypotheses to texts.
#include "models/text_pipeline.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "models/text/sentence_splitter.h"
#include "models/text/utf8.h"

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
  return tokenizer.DecodeReplacingUnknowns(tokens, unknowns == UnknownPieces::kCopySource
                                                       ? absl::MakeConstSpan(source.unknown_texts)
                                                       : absl::Span<const std::string>());
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
  if (!text_.empty()) text_.append(pending_separator_);
  text_.append(translation);
  pending_separator_ = separator;
}

std::string_view SentenceJoiner::SeparatorBeforeNext() const {
  return text_.empty() ? std::string_view() : std::string_view(pending_separator_);
}

TextStream::TextStream(const Tokenizer& tokenizer, absl::Span<const SourceSentence> sentences,
                       UnknownPieces unknowns)
    : tokenizer_(tokenizer), sentences_(sentences), unknowns_(unknowns) {}

std::string TextStream::Detokenize(size_t begin, size_t end, size_t unknowns_before) const {
  // Views, not copies: this runs twice per streamed token.
  absl::Span<const std::string> replacements;
  if (unknowns_ == UnknownPieces::kCopySource) {
    const std::vector<std::string>& all = sentences_[sentence_].unknown_texts;
    replacements = absl::MakeConstSpan(all).subspan(std::min(unknowns_before, all.size()));
  }
  absl::StatusOr<std::string> text = tokenizer_.DecodeReplacingUnknowns(
      absl::MakeConstSpan(tokens_).subspan(begin, end - begin), replacements);
  return text.ok() ? *std::move(text) : std::string();
}

std::string TextStream::AddToken(int32_t token) {
  if (sentence_ >= static_cast<int>(sentences_.size())) return std::string();
  tokens_.push_back(token);
  const std::string window = Detokenize(window_begin_, tokens_.size(), unknowns_before_window_);
  // Wait while the window's text does not extend what it read before (a piece may change how
  // the one before it reads) or ends inside a character (a byte piece of a longer one).
  size_t unused = 0;
  if (window.size() <= window_text_.size() || !window.starts_with(window_text_) ||
      CountUtf8Chars(std::string_view(window).substr(window_text_.size()), &unused) < 0) {
    return std::string();
  }
  if (current_.empty()) current_ = joiner_.SeparatorBeforeNext();
  current_.append(std::string_view(window).substr(window_text_.size()));
  // The next window starts at the tokens just read, if their text alone is not empty:
  // detokenising from a token that adds nothing would drop the leading space of the next.
  size_t unknowns_before_read_end = unknowns_before_window_;
  for (size_t i = window_begin_; i < read_end_; ++i) {
    if (tokenizer_.IsUnknown(tokens_[i])) ++unknowns_before_read_end;
  }
  std::string tail = Detokenize(read_end_, tokens_.size(), unknowns_before_read_end);
  if (!tail.empty()) {
    window_begin_ = read_end_;
    unknowns_before_window_ = unknowns_before_read_end;
    window_text_ = std::move(tail);
  } else {
    window_text_ = window;
  }
  read_end_ = tokens_.size();
  return TakeUnsent();
}

char TextStream::TextAt(size_t i) const {
  const std::string& finished = joiner_.text();
  return i < finished.size() ? finished[i] : current_[i - finished.size()];
}

std::string TextStream::TakeUnsent() {
  // A surplus is dropped from what follows where that repeats it; where it does not, it stays
  // in the caller's text and the rest goes on.
  while (!surplus_.empty() && sent_ < TextSize()) {
    if (TextAt(sent_) != surplus_.front()) {
      surplus_.clear();
      break;
    }
    surplus_.erase(0, 1);
    ++sent_;
  }
  if (!surplus_.empty()) return std::string();
  const std::string& finished = joiner_.text();
  std::string delta = sent_ < finished.size() ? finished.substr(sent_) + current_
                                              : current_.substr(sent_ - finished.size());
  sent_ = TextSize();
  return delta;
}

void TextStream::EndSentence() {
  if (sentence_ >= static_cast<int>(sentences_.size())) return;
  // The sentence's whole text, as AssembleText has it; it differs from the windows' only where
  // its end took something back.
  const std::string full = Detokenize(0, tokens_.size(), 0);
  const size_t begin = joiner_.text().size();  // where current_ starts in the text
  const std::string new_part =
      full.empty() ? std::string() : std::string(joiner_.SeparatorBeforeNext()) + full;
  if (new_part != current_ && sent_ > begin) {
    // What was sent of this sentence and no longer stands becomes surplus.
    const std::string_view sent_part = std::string_view(current_).substr(0, sent_ - begin);
    size_t common = 0;
    while (common < sent_part.size() && common < new_part.size() &&
           sent_part[common] == new_part[common]) {
      ++common;
    }
    sent_ = begin + common;
    // In the order the caller has them: this sentence's surplus, then any older one.
    surplus_ = std::string(sent_part.substr(common)) + surplus_;
  }
  joiner_.Add(full, sentences_[sentence_].separator);  // the text now ends with new_part
  current_.clear();
  ++sentence_;
  tokens_.clear();
  window_begin_ = read_end_ = unknowns_before_window_ = 0;
  window_text_.clear();
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
