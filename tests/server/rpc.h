// Small gRPC helpers the server's integration tests share: requests, calls with deadlines,
// and waiting for a metric of the server under test to reach a value.
#ifndef TASKMOE_TESTS_SERVER_RPC_H_
#define TASKMOE_TESTS_SERVER_RPC_H_

#include <grpcpp/client_context.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/server/server_process.h"

namespace taskmoe::server::testing {

// Generous: a test that waits this long for success has found a bug, not a slow machine.
inline constexpr absl::Duration kLongDeadline = absl::Seconds(60);

// A slow model on demand: every sentence decodes 400 steps of at least 10 ms.
inline const std::vector<std::string> kSlowFlags = {
    "--debug_ignore_eos", "--debug_step_delay_ms=10", "--max_output_tokens=400"};

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout);

v1::TranslateRequest Request(const std::string& task, const std::vector<std::string>& texts,
                             int max_output_tokens = 0);

grpc::Status Translate(const ServerProcess& server, const v1::TranslateRequest& request,
                       v1::TranslateResponse* response, absl::Duration timeout = kLongDeadline);

// Polls the metrics endpoint until `series` reaches at least `value` (success) or 30 s pass
// (a failure that prints the last scrape of the series' family: its value, or which of its
// siblings moved instead).
::testing::AssertionResult WaitForMetric(const ServerProcess& server, const std::string& series,
                                         double value);
// The same until `series` is at most `value`.
::testing::AssertionResult WaitForMetricAtMost(const ServerProcess& server,
                                               const std::string& series, double value);

}  // namespace taskmoe::server::testing

#endif  // TASKMOE_TESTS_SERVER_RPC_H_
