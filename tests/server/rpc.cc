// gRPC helpers of the server's integration tests.
#include "tests/server/rpc.h"

#include <functional>

#include "absl/time/clock.h"

namespace taskmoe::server::testing {
namespace {

bool WaitForMetricWhere(const ServerProcess& server, const std::string& series,
                        const std::function<bool(double)>& reached) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    absl::StatusOr<std::string> text = ScrapeMetrics(server.metrics_port());
    if (text.ok()) {
      const double value = MetricValue(*text, series);
      if (value >= 0 && reached(value)) return true;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
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

bool WaitForMetric(const ServerProcess& server, const std::string& series, double value) {
  return WaitForMetricWhere(server, series, [value](double v) { return v >= value; });
}

bool WaitForMetricAtMost(const ServerProcess& server, const std::string& series, double value) {
  return WaitForMetricWhere(server, series, [value](double v) { return v <= value; });
}

}  // namespace taskmoe::server::testing
