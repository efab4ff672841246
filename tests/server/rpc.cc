// gRPC helpers of the server's integration tests.
#include "tests/server/rpc.h"

#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace taskmoe::server::testing {
namespace {

// The lines of `exposition` of the family `series` belongs to (its name before any labels):
// what a failed wait shows, so that a log says which value the series had, or which sibling
// series was counted instead.
std::string FamilyLines(const std::string& exposition, const std::string& series) {
  const std::string family = series.substr(0, series.find('{'));
  std::string lines;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (absl::StartsWith(line, family)) absl::StrAppend(&lines, "\n  ", line);
  }
  return lines.empty() ? "\n  (no series of " + family + ")" : lines;
}

::testing::AssertionResult WaitForMetricWhere(const ServerProcess& server,
                                              const std::string& series,
                                              const std::function<bool(double)>& reached,
                                              absl::string_view wanted) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<std::string> text;
  while (absl::Now() < deadline) {
    text = ScrapeMetrics(server.metrics_port());
    if (text.ok()) {
      const double value = MetricValue(*text, series);
      if (value >= 0 && reached(value)) return ::testing::AssertionSuccess();
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  ::testing::AssertionResult failure = ::testing::AssertionFailure();
  failure << series << " did not become " << wanted << " in 30 s; the last scrape: ";
  if (text.ok()) {
    failure << FamilyLines(*text, series);
  } else {
    failure << text.status();
  }
  return failure;
}

}  // namespace

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

v1::TranslateRequest Request(const std::string& task, const std::vector<std::string>& texts,
                             int max_output_tokens) {
  v1::TranslateRequest request;
  request.set_task(task);
  for (const std::string& t : texts) request.add_texts(t);
  request.mutable_options()->set_max_output_tokens(max_output_tokens);
  return request;
}

grpc::Status Translate(const ServerProcess& server, const v1::TranslateRequest& request,
                       v1::TranslateResponse* response, absl::Duration timeout) {
  auto stub = v1::TranslationService::NewStub(server.channel());
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  return stub->Translate(&context, request, response);
}

::testing::AssertionResult WaitForMetric(const ServerProcess& server, const std::string& series,
                                         double value) {
  return WaitForMetricWhere(
      server, series, [value](double v) { return v >= value; }, absl::StrCat(">= ", value));
}

::testing::AssertionResult WaitForMetricAtMost(const ServerProcess& server,
                                               const std::string& series, double value) {
  return WaitForMetricWhere(
      server, series, [value](double v) { return v <= value; }, absl::StrCat("<= ", value));
}

}  // namespace taskmoe::server::testing
