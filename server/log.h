// Leveled logging to stderr for the server: one line per event at info level, one per request
// at debug level. Debian 12's Abseil predates absl/log, and the server needs only this much.
#ifndef TASKMOE_SERVER_LOG_H_
#define TASKMOE_SERVER_LOG_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace taskmoe::server {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
// Lines below `level` are dropped. Default: info.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Writes "<UTC time> <LEVEL> <message>\n" as one write, so concurrent lines do not mix.
void Log(LogLevel level, absl::string_view message);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_LOG_H_
