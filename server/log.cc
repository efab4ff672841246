// Leveled stderr logging, as text or JSON lines, with caller-supplied values escaped.
#include "server/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "models/text/utf8.h"

namespace taskmoe::server {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

// Appends `text` with control characters escaped (\n, \r, \t, else \u00XX: valid JSON and
// unambiguous in text) and malformed UTF-8 bytes replaced by U+FFFD, so that a line is always
// one line of valid UTF-8; inside quotes also the quote and the backslash.
void AppendEscaped(absl::string_view text, bool in_quotes, std::string& out) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const int length =
          models::ValidUtf8CharLength(std::string_view(text.data() + i, text.size() - i));
      if (length == 0) {
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        out.append(text.data() + i, length);
        i += length;
      }
      continue;
    }
    if (!in_quotes && (c == '"' || c == '\\')) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
}

// A text-format value that needs no quotes: one or more of letters, digits and `-_.:/@+%,()`
// (ids, durations, numbers, paths). Anything else, spaces, '=' and '"' above all, is quoted.
bool IsBareWord(absl::string_view value) {
  if (value.empty()) return false;
  for (char c : value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        absl::string_view("-_.:/@+%,()").find(c) == absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

void AppendQuoted(absl::string_view text, std::string& out) {
  out += '"';
  AppendEscaped(text, /*in_quotes=*/true, out);
  out += '"';
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warning") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level '", name, "' (expected debug, info, warning or error)"));
}

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format '", name, "' (expected text or json)"));
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }

std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view message, std::initializer_list<LogField> fields) {
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  std::string line;
  if (format == LogFormat::kJson) {
    absl::StrAppend(&line, "{\"time\":\"", when, "\",\"level\":\"", LevelName(level),
                    "\",\"msg\":");
    AppendQuoted(message, line);
    for (const LogField& field : fields) {
      if (!field.number() && field.value().empty()) continue;
      line += ',';
      AppendQuoted(field.key(), line);
      line += ':';
      if (field.number()) {
        line += field.value();
      } else {
        AppendQuoted(field.value(), line);
      }
    }
    line += "}\n";
    return line;
  }
  absl::StrAppend(&line, when, " ", LevelName(level), " ");
  AppendEscaped(message, /*in_quotes=*/false, line);
  for (const LogField& field : fields) {
    if (!field.number() && field.value().empty()) continue;
    absl::StrAppend(&line, " ", field.key(), "=");
    if (field.number() || IsBareWord(field.value())) {
      line += field.value();
    } else {
      AppendQuoted(field.value(), line);
    }
  }
  line += '\n';
  return line;
}

void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  const std::string line =
      FormatLogLine(static_cast<LogFormat>(g_format.load()), absl::Now(), level, message, fields);
  // One write(2) per line: stderr is unbuffered and lines from several threads stay whole.
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

}  // namespace taskmoe::server
