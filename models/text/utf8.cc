// The UTF-8 decoder.
#include "models/text/utf8.h"

namespace taskmoe::models {
namespace {

bool IsTrailByte(uint8_t byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

Utf8Char DecodeUtf8Char(std::string_view text) {
  if (text.empty()) return {};
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  if (s[0] < 0x80) return {s[0], 1};
  int length = 0;
  char32_t code = 0;
  char32_t minimum = 0;  // the shortest form's range starts here
  if ((s[0] & 0xE0) == 0xC0) {
    length = 2, code = s[0] & 0x1Fu, minimum = 0x80;
  } else if ((s[0] & 0xF0) == 0xE0) {
    length = 3, code = s[0] & 0x0Fu, minimum = 0x800;
  } else if ((s[0] & 0xF8) == 0xF0) {
    length = 4, code = s[0] & 0x07u, minimum = 0x10000;
  } else {
    return {};
  }
  if (n < static_cast<size_t>(length)) return {};
  for (int k = 1; k < length; ++k) {
    if (!IsTrailByte(s[k])) return {};
    code = (code << 6) | (s[k] & 0x3Fu);
  }
  if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return {};
  return {code, length};
}

int ValidUtf8CharLength(std::string_view text) { return DecodeUtf8Char(text).length; }

int64_t CountUtf8Chars(std::string_view text, size_t* error_offset) {
  int64_t chars = 0;
  for (size_t i = 0; i < text.size(); ++chars) {
    const int length = ValidUtf8CharLength(text.substr(i));
    if (length == 0) {
      *error_offset = i;
      return -1;
    }
    i += static_cast<size_t>(length);
  }
  return chars;
}

}  // namespace taskmoe::models
