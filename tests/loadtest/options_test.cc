// Option parsing and validation: every bad combination is refused with a message naming the
// flag.
#include "loadtest/options.h"

#include <gtest/gtest.h>

#include <functional>

#include "absl/strings/match.h"

namespace taskmoe::loadtest {
namespace {

TEST(ParseSweepTest, Kinds) {
  absl::StatusOr<Sweep> sweep = ParseSweep("concurrency:1,2,4,8");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->kind, SweepKind::kConcurrency);
  EXPECT_EQ(sweep->values, (std::vector<double>{1, 2, 4, 8}));
  sweep = ParseSweep("rate:2.5,10");
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->kind, SweepKind::kRate);
  EXPECT_EQ(sweep->values, (std::vector<double>{2.5, 10}));
  sweep = ParseSweep("batch:1,8,32,128,512");
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->kind, SweepKind::kBatch);
  sweep = ParseSweep("");
  ASSERT_TRUE(sweep.ok());
  EXPECT_EQ(sweep->kind, SweepKind::kNone);
}

TEST(ParseSweepTest, RejectsBadSweeps) {
  for (const char* bad : {"concurrency", "concurrency:", "speed:1,2", "batch:1,,2", "batch:0",
                          "batch:-4", "batch:1.5", "concurrency:x", "rate:nan", "rate:inf"}) {
    absl::StatusOr<Sweep> sweep = ParseSweep(bad);
    EXPECT_FALSE(sweep.ok()) << bad;
    if (!sweep.ok()) {
      EXPECT_TRUE(absl::StartsWith(sweep.status().message(), "--sweep")) << bad;
    }
  }
}

TEST(IsLoopbackTargetTest, OnlyLoopbackHostsWithAPort) {
  for (const char* ok : {"127.0.0.1:8500", "127.1.2.3:1", "localhost:65535", "[::1]:8500"}) {
    EXPECT_TRUE(IsLoopbackTarget(ok)) << ok;
  }
  for (const char* bad : {"10.0.0.1:8500", "example.com:443", "0.0.0.0:8500", "127.0.0.1",
                          "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "[::2]:80", "[::1]",
                          "localhost", "128.0.0.1:80", "127.0.0.256:80", ""}) {
    EXPECT_FALSE(IsLoopbackTarget(bad)) << bad;
  }
}

TEST(ValidateOptionsTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateOptions(LoadTestOptions{}).ok());
}

struct BadCase {
  const char* flag;  // the message must start with "--flag"
  std::function<void(LoadTestOptions&)> change;
};

TEST(ValidateOptionsTest, RefusesBadValuesNamingTheFlag) {
  const std::vector<BadCase> cases = {
      {"target", [](LoadTestOptions& o) { o.target = "192.168.1.1:8500"; }},
      {"concurrency", [](LoadTestOptions& o) { o.concurrency = 0; }},
      {"concurrency", [](LoadTestOptions& o) { o.concurrency = 100000; }},
      {"rate", [](LoadTestOptions& o) { o.rate = 0; }},
      {"rate", [](LoadTestOptions& o) { o.rate = -1; }},
      {"max_inflight", [](LoadTestOptions& o) { o.max_inflight = 0; }},
      {"duration", [](LoadTestOptions& o) { o.duration = absl::Seconds(-1); }},
      {"duration",
       [](LoadTestOptions& o) {
         o.duration = absl::ZeroDuration();
         o.requests = 0;
       }},
      {"requests", [](LoadTestOptions& o) { o.requests = -5; }},
      {"warmup", [](LoadTestOptions& o) { o.warmup = absl::Seconds(-1); }},
      {"timeout", [](LoadTestOptions& o) { o.timeout = absl::ZeroDuration(); }},
      {"synthetic_words", [](LoadTestOptions& o) { o.synthetic_words = 0; }},
      {"texts_per_request", [](LoadTestOptions& o) { o.texts_per_request = 0; }},
      {"beam_size", [](LoadTestOptions& o) { o.beam_size = -1; }},
      {"max_output_tokens", [](LoadTestOptions& o) { o.max_output_tokens = -1; }},
      {"texts_per_request",
       [](LoadTestOptions& o) {
         o.api = Api::kStream;
         o.texts_per_request = 4;
       }},
      {"beam_size",
       [](LoadTestOptions& o) {
         o.api = Api::kStream;
         o.beam_size = 4;
       }},
      {"sweep",
       [](LoadTestOptions& o) {
         o.api = Api::kStream;
         o.sweep = {SweepKind::kBatch, {1, 2}};
       }},
      {"sweep",
       [](LoadTestOptions& o) {
         o.loop = Loop::kOpen;
         o.sweep = {SweepKind::kConcurrency, {1, 2}};
       }},
      {"sweep",
       [](LoadTestOptions& o) {
         o.sweep = {SweepKind::kRate, {1, 2}};
       }},
      {"sweep",
       [](LoadTestOptions& o) {
         o.sweep = {SweepKind::kBatch, {1, 100000}};
       }},
      {"plot", [](LoadTestOptions& o) { o.plot_path = "x.svg"; }},
  };
  for (const BadCase& c : cases) {
    LoadTestOptions options;
    c.change(options);
    const absl::Status status = ValidateOptions(options);
    ASSERT_FALSE(status.ok()) << "--" << c.flag << " case was accepted";
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(status.message(), std::string("--") + c.flag + ":"))
        << status.message();
  }
}

TEST(ValidateOptionsTest, EitherBoundIsEnough) {
  LoadTestOptions options;
  options.duration = absl::ZeroDuration();
  options.requests = 10;
  EXPECT_TRUE(ValidateOptions(options).ok());
  options.loop = Loop::kOpen;
  options.sweep = {SweepKind::kRate, {5, 10}};
  options.plot_path = "curve.svg";
  EXPECT_TRUE(ValidateOptions(options).ok());
}

TEST(ParseNamesTest, ApiAndLoop) {
  EXPECT_EQ(*ParseApi("stream"), Api::kStream);
  EXPECT_EQ(*ParseLoop("open"), Loop::kOpen);
  EXPECT_FALSE(ParseApi("bidi").ok());
  EXPECT_FALSE(ParseLoop("half-open").ok());
  EXPECT_EQ(ApiName(Api::kUnary), "unary");
  EXPECT_EQ(LoopName(Loop::kClosed), "closed");
}

}  // namespace
}  // namespace taskmoe::loadtest
