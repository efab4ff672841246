// Rule-based sentence splitting (see the header for the rules and why).
#include "models/text/sentence_splitter.h"

#include <algorithm>
#include <array>
#include <string>

#include "models/text/utf8.h"

namespace taskmoe::models {
namespace {

struct Char {
  char32_t code = 0;  // U+FFFD for a byte that starts no well-formed character
  size_t begin = 0;   // byte offsets in the text
  size_t end = 0;
};

std::vector<Char> DecodeUtf8(std::string_view text) {
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = DecodeUtf8Char(text.substr(i));
    const size_t length = c.length > 0 ? static_cast<size_t>(c.length) : 1;
    chars.push_back({c.length > 0 ? c.code : 0xFFFD, i, i + length});
    i += length;
  }
  return chars;
}

bool IsLineBreak(char32_t c) {
  return c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0x85 || c == 0x2028 ||
         c == 0x2029;
}

bool IsSpace(char32_t c) {
  return c == ' ' || c == '\t' || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x202F || c == 0x205F || c == 0x3000 || IsLineBreak(c);
}

// Terminals after which the next sentence may follow without a space (Chinese, Japanese).
bool IsCjkTerminal(char32_t c) { return c == 0x3002 || c == 0xFF01 || c == 0xFF1F || c == 0xFF61; }

bool IsTerminal(char32_t c) {
  return c == '.' || c == '!' || c == '?' || c == 0x2026 /* … */ || c == 0x203C || c == 0x2048 ||
         c == 0x2049 || c == 0x061F /* Arabic ? */ || c == 0x0964 /* danda */ || IsCjkTerminal(c);
}

// Quotes and brackets that may close a sentence after its terminal.
bool IsClosing(char32_t c) {
  switch (c) {
    case '"':
    case '\'':
    case ')':
    case ']':
    case '}':
    case 0xAB:
    case 0xBB:  // « »
    case 0x2018:
    case 0x2019:  // ‘ ’
    case 0x201C:
    case 0x201D:  // “ ” (“ closes in German)
    case 0x2039:
    case 0x203A:  // ‹ ›
    case 0x300D:
    case 0x300F:
    case 0x3011:
    case 0xFF09:  // 」 』 】 ）
      return true;
    default:
      return false;
  }
}

// Opening quotes and brackets, stripped before looking at the word before a full stop.
bool IsOpening(char32_t c) {
  switch (c) {
    case '"':
    case '\'':
    case '(':
    case '[':
    case '{':
    case 0xAB:
    case 0xBB:
    case 0xBF:
    case 0xA1:  // « » ¿ ¡
    case 0x2018:
    case 0x201A:
    case 0x201C:
    case 0x201E:  // ‘ ‚ “ „
      return true;
    default:
      return false;
  }
}

// Lowercase letters of the Latin, Greek and Cyrillic blocks: a sentence does not start with one.
bool IsLowercase(char32_t c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 0xDF && c <= 0xFF) return c != 0xF7;
  if (c >= 0x100 && c <= 0x137) return (c & 1) == 1;
  if (c == 0x138 || c == 0x149 || c == 0x17A || c == 0x17C || c == 0x17E || c == 0x17F) {
    return true;
  }
  if (c >= 0x139 && c <= 0x148) return (c & 1) == 0;
  if (c >= 0x14A && c <= 0x177) return (c & 1) == 1;
  if (c >= 0x3AC && c <= 0x3CE) return true;  // Greek
  if (c >= 0x430 && c <= 0x45F) return true;  // Cyrillic
  if (c >= 0x460 && c <= 0x4FF) return (c & 1) == 1;
  return false;
}

bool IsLetter(char32_t c) {
  return (c >= 'A' && c <= 'Z') || IsLowercase(c) || (c >= 0xC0 && c <= 0xDE && c != 0xD7) ||
         (c >= 0x100 && c <= 0x24F) || (c >= 0x391 && c <= 0x3FF) || (c >= 0x400 && c <= 0x4FF);
}

// Titles and abbreviations that are followed by a full stop and a capitalised word without
// ending a sentence, lowercase. Words that often end a sentence ("etc.", "usw.") are left out.
constexpr std::array<std::string_view, 28> kAbbreviations = {
    "mr",   "mrs", "ms",   "dr",  "prof", "st",  "jr",  "sr",  "vs",  "fig",
    "no",   "nr",  "tel",  "hr",  "fr",   "frl", "bzw", "ca",  "vgl", "mme",
    "mlle", "sra", "srta", "sig", "dott", "gen", "lt",  "capt"};

// Whether the full stop at chars[stop] ends a word that it merely abbreviates.
bool IsAbbreviation(const std::vector<Char>& chars, size_t stop, size_t line_start) {
  size_t begin = stop;
  while (begin > line_start && !IsSpace(chars[begin - 1].code)) --begin;
  while (begin < stop && IsOpening(chars[begin].code)) ++begin;
  const size_t length = stop - begin;
  if (length == 0) return false;
  if (length == 1 && IsLetter(chars[begin].code)) return chars[begin].code != 'I';
  bool all_digits = true;
  std::string lower;
  for (size_t i = begin; i < stop; ++i) {
    const char32_t c = chars[i].code;
    if (c == '.') return true;  // "e.g", "U.S", "z.B"
    all_digits = all_digits && c >= '0' && c <= '9';
    lower.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a')
                                         : static_cast<char>(c < 0x80 ? c : 0));
  }
  // Day and century ordinals ("am 3. Mai", "im 19. Jahrhundert"); years end sentences.
  if (all_digits) return length <= 2;
  return std::find(kAbbreviations.begin(), kAbbreviations.end(), lower) != kAbbreviations.end();
}

}  // namespace

std::vector<std::string_view> SplitSentences(std::string_view text) {
  const std::vector<Char> chars = DecodeUtf8(text);
  const size_t n = chars.size();
  std::vector<std::string_view> sentences;
  // Adds chars[begin, end) without its surrounding whitespace, unless nothing is left.
  const auto add = [&](size_t begin, size_t end) {
    while (begin < end && IsSpace(chars[begin].code)) ++begin;
    while (end > begin && IsSpace(chars[end - 1].code)) --end;
    if (begin < end) {
      sentences.push_back(text.substr(chars[begin].begin, chars[end - 1].end - chars[begin].begin));
    }
  };
  size_t start = 0;       // where the current sentence starts
  size_t line_start = 0;  // where the current line starts
  for (size_t i = 0; i < n;) {
    const char32_t c = chars[i].code;
    if (IsLineBreak(c)) {
      add(start, i);
      start = line_start = ++i;
      continue;
    }
    if (!IsTerminal(c)) {
      ++i;
      continue;
    }
    size_t after_terminals = i;
    while (after_terminals < n && IsTerminal(chars[after_terminals].code)) ++after_terminals;
    size_t after_closing = after_terminals;
    while (after_closing < n && IsClosing(chars[after_closing].code)) ++after_closing;
    const bool cjk = IsCjkTerminal(chars[after_terminals - 1].code);
    if (after_closing == n || (!cjk && !IsSpace(chars[after_closing].code))) {
      i = after_closing;  // the text ends anyway, or no space follows ("3.5", "a.m.")
      continue;
    }
    size_t next = after_closing;
    while (next < n && IsSpace(chars[next].code) && !IsLineBreak(chars[next].code)) ++next;
    const bool line_ends = next == n || IsLineBreak(chars[next].code);
    const bool single_stop = after_terminals - i == 1 && c == '.';
    if (line_ends || IsLowercase(chars[next].code) ||
        (single_stop && IsAbbreviation(chars, i, line_start))) {
      i = next;
      continue;
    }
    add(start, after_closing);
    start = i = next;
  }
  add(start, n);
  return sentences;
}

}  // namespace taskmoe::models
