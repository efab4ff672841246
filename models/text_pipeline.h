// From a caller's text to the decoder's sources and back, shared by the server and the
// Translator so that both treat text alike: the text is split into sentences (optionally,
// sentence_splitter.h), each sentence is tokenised for the task, and once decoded the
// sentences' translations are put back together with the whitespace that separated the
// sources. Unknown pieces (characters the vocabulary lacks, which the model can only write as
// SentencePiece's " ⁇ ") never reach the caller: they become the source's unknown characters
// again, or are dropped.
#ifndef TASKMOE_MODELS_TEXT_PIPELINE_H_
#define TASKMOE_MODELS_TEXT_PIPELINE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "models/decoding.h"
#include "models/format/config.h"
#include "models/text/tokenizer.h"

namespace taskmoe::models {

// What becomes of an unknown piece in a translation.
enum class UnknownPieces {
  // The i-th unknown piece of a sentence's translation becomes the i-th run of unknown
  // characters of its source (emoji, names in letters the vocabulary lacks); one with no
  // counterpart is dropped. The model copies such spans in order, which this alignment relies on.
  kCopySource,
  kDrop,
};

struct TextOptions {
  bool split_sentences = true;
  UnknownPieces unknown_pieces = UnknownPieces::kCopySource;
};

// One sentence of a caller's text, ready for the decoder.
struct SourceSentence {
  std::vector<int32_t> ids;                // [target tag] + pieces + [eos]
  std::vector<std::string> unknown_texts;  // what each unknown piece of `ids` stands for
  std::string separator;  // the whitespace before the next sentence of the text ("" if last)
};

// Why a text's translation ended.
enum class FinishReason {
  kEndOfSentence,  // every sentence ended with the model's end-of-sentence token
  kLength,         // the length cap stopped at least one sentence: its translation may be cut
};

struct TextTranslation {
  std::string text;
  float score = 0.0f;              // the sum of its sentences' scores
  std::vector<int32_t> token_ids;  // its sentences' tokens, one after the other
  FinishReason finish_reason = FinishReason::kEndOfSentence;
};

// The sentences of `text` (one when splitting is off or the text is blank), tokenised for
// `task`. INVALID_ARGUMENT when a sentence has more than `max_positions` tokens; the message
// says how many and, when the text was split, which sentence.
absl::StatusOr<std::vector<SourceSentence>> PrepareText(const Tokenizer& tokenizer,
                                                        const TaskInfo& task, std::string_view text,
                                                        const TextOptions& options,
                                                        int64_t max_positions);

// The text of one sentence's generated tokens, unknown pieces resolved against its source.
absl::StatusOr<std::string> SentenceText(const Tokenizer& tokenizer,
                                         const std::vector<int32_t>& tokens,
                                         const SourceSentence& source, UnknownPieces unknowns);

// Joins a text's sentence translations, in order, with the whitespace that separated their
// sources. A sentence translated to nothing adds no separator of its own; the one kept is the
// one with the most line breaks, so paragraphs survive it.
class SentenceJoiner {
 public:
  // Appends the next sentence's translation; `separator` is what followed its source.
  void Add(std::string_view translation, std::string_view separator);
  const std::string& text() const { return text_; }
  // What goes between the text so far and the next non-empty translation.
  std::string_view SeparatorBeforeNext() const;

 private:
  std::string text_;
  std::string pending_separator_;  // goes before the next non-empty translation
};

// A text's translation as it streams in, token by token: each token's text delta, such that
// the deltas add up to what AssembleText makes of the same tokens. Each token costs time
// proportional to the tokens since the last delta, not to the text so far: only a short window
// of the sentence is detokenised again, starting at a token whose text was already sent, so
// the leading-space rule of the first piece and byte pieces that complete a character later
// come out as in the whole sentence's text.
//
// A delta, once sent, cannot be taken back. Where a sentence's final text is shorter than what
// was sent for it (SentencePiece drops the space before a dropped unknown piece at its end),
// the surplus is matched against the text that follows (usually the separator) and never sent
// twice; a surplus nothing matches stays in the caller's text (at most some whitespace).
class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, absl::Span<const SourceSentence> sentences,
             UnknownPieces unknowns);

  // A token of the current sentence (EOS excluded): the text it adds, empty while it ends
  // inside a UTF-8 character or adds no text yet.
  std::string AddToken(int32_t token);
  // The current sentence is done; tokens from now on belong to the next one.
  void EndSentence();
  int sentence() const { return sentence_; }

 private:
  // Text of tokens_[begin, end) detokenised together, unknown pieces numbered from
  // `unknowns_before` (the unknown pieces before `begin`).
  std::string Detokenize(size_t begin, size_t end, size_t unknowns_before) const;
  // The text as it stands (joiner_.text() + current_), by position.
  size_t TextSize() const { return joiner_.text().size() + current_.size(); }
  char TextAt(size_t i) const;
  // What the text holds beyond what was sent, once the surplus (if any) is matched.
  std::string TakeUnsent();

  const Tokenizer& tokenizer_;
  const absl::Span<const SourceSentence> sentences_;
  const UnknownPieces unknowns_;
  int sentence_ = 0;
  std::vector<int32_t> tokens_;  // of the current sentence
  // The window: tokens_[window_begin_, read_end_) detokenise to window_text_ (non-empty unless
  // window_begin_ is 0), and the text of tokens_[0, read_end_) is at the end of current_.
  size_t window_begin_ = 0;
  size_t read_end_ = 0;
  size_t unknowns_before_window_ = 0;
  std::string window_text_;
  // The text as it stands: the finished sentences, joined, then current_: the current
  // sentence's separator and text so far (empty until its text starts).
  SentenceJoiner joiner_;
  std::string current_;
  size_t sent_ = 0;      // the text's first sent_ bytes were sent
  std::string surplus_;  // sent beyond those, not (yet) in the text
};

// Puts a text's translation together from its sentences' hypotheses (both in order).
absl::StatusOr<TextTranslation> AssembleText(const Tokenizer& tokenizer,
                                             absl::Span<const SourceSentence> sentences,
                                             absl::Span<const Hypothesis* const> hypotheses,
                                             UnknownPieces unknowns);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_PIPELINE_H_
