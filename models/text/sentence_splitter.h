// Splitting a text into sentences before translation. The models are trained on single
// sentences: a paragraph decoded as one source degenerates and runs into the length cap, while
// its sentences translate well one by one. The rules are deliberately simple and language-
// neutral (no trained segmenter): every line break ends a sentence, and within a line a
// sentence ends after terminal punctuation (. ! ? … and their CJK forms), optionally followed
// by closing quotes or brackets, when whitespace follows (not needed after CJK terminals) and
// the next sentence does not start with a lowercase letter. A full stop after a single letter
// ("J."), after digits ("3." as in German dates), after a word with an inner full stop
// ("e.g.", "U.S.") or after a common title or abbreviation ("Dr.", "Nr.", "vs.") ends nothing.
#ifndef TASKMOE_MODELS_TEXT_SENTENCE_SPLITTER_H_
#define TASKMOE_MODELS_TEXT_SENTENCE_SPLITTER_H_

#include <string_view>
#include <vector>

namespace taskmoe::models {

// The sentences of `text`, in order, as views into it without surrounding whitespace; what lies
// between two of them is the whitespace that separated them. A text of whitespace only has no
// sentences. Malformed UTF-8 is passed through (bytes that are no character never end one).
std::vector<std::string_view> SplitSentences(std::string_view text);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_SENTENCE_SPLITTER_H_
