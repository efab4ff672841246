// Leveled logging to stderr for the server: one line per event at info level, one per request
// at debug level. Debian 12's Abseil predates absl/log, and the server needs only this much.
//
// Two formats (--log_format): "text", `<UTC time> <LEVEL> <message> key=value ...`, and
// "json", one JSON object per line ({"time", "level", "msg", then the fields}). Values that
// come from callers (request ids, task names, error messages echoing input) travel as fields,
// never spliced into the message: in text they are quoted and escaped whenever they hold
// anything but a plain word, so a caller cannot forge fields or lines ("x code=OK" stays one
// quoted value), and the message itself has its control characters escaped.
#ifndef TASKMOE_SERVER_LOG_H_
#define TASKMOE_SERVER_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskmoe::server {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat : int { kText = 0, kJson = 1 };

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
// Lines below `level` are dropped. Default: info.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// Default: text.
void SetLogFormat(LogFormat format);

// One named value of a log line: text (quoted as needed) or a number (written bare). A field
// with empty text is left out of the line.
class LogField {
 public:
  LogField(absl::string_view key, absl::string_view value) : key_(key), value_(value) {}
  LogField(absl::string_view key, const char* value) : key_(key), value_(value) {}
  LogField(absl::string_view key, const std::string& value) : key_(key), value_(value) {}
  template <typename Number, typename = std::enable_if_t<std::is_arithmetic_v<Number>>>
  LogField(absl::string_view key, Number value)
      : key_(key), value_(absl::StrCat(value)), number_(true) {}

  absl::string_view key() const { return key_; }
  const std::string& value() const { return value_; }
  bool number() const { return number_; }

 private:
  absl::string_view key_;
  std::string value_;
  bool number_ = false;
};

// The line Log writes (newline included), for `time`: pure, so tests check the escaping.
std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view message, std::initializer_list<LogField> fields);

// Writes one line in the current format as one write(2), so concurrent lines do not mix.
void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields = {});

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_LOG_H_
