// The server's log lines (server/log.h): values a caller controls cannot forge fields or
// lines in the text format, and every JSON line parses to the same fields.
#include "server/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "absl/time/time.h"

namespace taskmoe::server {
namespace {

const absl::Time kTime = absl::FromUnixMillis(1764633600123);  // 2025-12-02T00:00:00.123Z

TEST(LogLine, TextWritesPlainWordsBareAndQuotesTheRest) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kTime, LogLevel::kInfo, "Translate",
                          {{"id", "req-1"}, {"texts", 3}, {"time", "1.5ms"}}),
            "2025-12-02T00:00:00.123Z INFO Translate id=req-1 texts=3 time=1.5ms\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kTime, LogLevel::kDebug, "m", {{"error", "a b"}}),
            "2025-12-02T00:00:00.123Z DEBUG m error=\"a b\"\n");
}

TEST(LogLine, TextCannotBeForgedByAValue) {
  // What an outside client sent as its request_id to fake a successful request.
  const std::string forged = "x code=OK task=en-fr";
  const std::string line = FormatLogLine(LogFormat::kText, kTime, LogLevel::kDebug, "Translate",
                                         {{"id", forged}, {"code", "INVALID_ARGUMENT"}});
  EXPECT_EQ(line,
            "2025-12-02T00:00:00.123Z DEBUG Translate id=\"x code=OK task=en-fr\" "
            "code=INVALID_ARGUMENT\n");
  // Quotes, backslashes and line breaks inside a value stay inside it, and the line stays one.
  const std::string escaped =
      FormatLogLine(LogFormat::kText, kTime, LogLevel::kInfo, "m",
                    {{"id", "a\" code=OK b=\\"}, {"error", "one\ntwo\r\x01"}});
  EXPECT_EQ(escaped,
            "2025-12-02T00:00:00.123Z INFO m id=\"a\\\" code=OK b=\\\\\" "
            "error=\"one\\ntwo\\r\\u0001\"\n");
  // The message has its control characters escaped too: no second line.
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kTime, LogLevel::kError, "bad\nINFO fake", {}),
            "2025-12-02T00:00:00.123Z ERROR bad\\nINFO fake\n");
}

TEST(LogLine, EmptyTextFieldsAreLeftOut) {
  EXPECT_EQ(
      FormatLogLine(LogFormat::kText, kTime, LogLevel::kInfo, "m", {{"error", ""}, {"tokens", 0}}),
      "2025-12-02T00:00:00.123Z INFO m tokens=0\n");
}

TEST(LogLine, JsonLinesParseToTheSameFields) {
  const std::string line =
      FormatLogLine(LogFormat::kJson, kTime, LogLevel::kWarning, "reload \"refused\"",
                    {{"task", "en-de"}, {"id", "x\" code=OK\n"}, {"tokens", 12}, {"ratio", 0.5}});
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  const nlohmann::json parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["time"], "2025-12-02T00:00:00.123Z");
  EXPECT_EQ(parsed["level"], "WARNING");
  EXPECT_EQ(parsed["msg"], "reload \"refused\"");
  EXPECT_EQ(parsed["task"], "en-de");
  EXPECT_EQ(parsed["id"], "x\" code=OK\n");
  EXPECT_EQ(parsed["tokens"], 12);
  EXPECT_DOUBLE_EQ(parsed["ratio"].get<double>(), 0.5);
}

TEST(LogLine, MalformedUtf8BecomesReplacementCharacters) {
  // "é" stays; a lone continuation byte and a truncated sequence become U+FFFD.
  const std::string line = FormatLogLine(LogFormat::kJson, kTime, LogLevel::kInfo, "m",
                                         {{"task", "caf\xC3\xA9 \x80 \xE2\x82"}});
  const nlohmann::json parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["task"], "caf\xC3\xA9 \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(LogFormatFlag, ParsesKnownNamesAndRefusesOthers) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  const absl::StatusOr<LogFormat> bad = ParseLogFormat("xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "unknown log format 'xml' (expected text or json)");
}

}  // namespace
}  // namespace taskmoe::server
