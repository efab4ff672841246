// UTF-8 decoding, the one decoder of everything that reads a caller's text: the server's
// request checks, the SentencePiece normaliser, the sentence splitter and the log's escaping
// all agree on which bytes are well formed. Well formed means the shortest form of a code
// point up to U+10FFFF that is not a surrogate.
#ifndef TASKMOE_MODELS_TEXT_UTF8_H_
#define TASKMOE_MODELS_TEXT_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace taskmoe::models {

struct Utf8Char {
  char32_t code = 0;  // meaningful only when length > 0
  int length = 0;     // bytes, 1 to 4; 0 when the bytes at the start are malformed
};

// The character at the start of `text`.
Utf8Char DecodeUtf8Char(std::string_view text);

// DecodeUtf8Char(text).length: 1 to 4 for a well-formed character, else 0.
int ValidUtf8CharLength(std::string_view text);

// The number of characters of `text` if it is well formed; else -1, with the byte offset of
// the first malformed sequence in `error_offset`.
int64_t CountUtf8Chars(std::string_view text, size_t* error_offset);

}  // namespace taskmoe::models

#endif  // TASKMOE_MODELS_TEXT_UTF8_H_
