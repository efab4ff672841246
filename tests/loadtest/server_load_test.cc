// End to end: taskmoe-make-model writes a tiny random TaskMoE repository, taskmoe-server
// serves it on a free loopback port (forced output length), and taskmoe-loadtest runs short
// closed-loop, open-loop, streaming and batch-sweep loads against it; the JSON reports are
// checked. Skipped (GTEST_SKIP) only when the build has no taskmoe-server target.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "loadtest/grpc_caller.h"
#include "nlohmann/json.hpp"
#include "tests/common/process.h"

namespace taskmoe::loadtest::testing {
namespace {

using ::taskmoe::testing::ChildProcess;
using ::taskmoe::testing::CommandResult;
using ::taskmoe::testing::MakeTempDir;
using ::taskmoe::testing::ReadFile;
using ::taskmoe::testing::RunCommand;

using nlohmann::json;

constexpr int kOutputTokens = 5;

#ifdef TASKMOE_SERVER_BINARY
class ServerLoadTest : public ::testing::Test {
 protected:
  // One repository and one server for the whole suite: loading is the slow part.
  static void SetUpTestSuite() {
    dir_ = MakeTempDir("loadtest-e2e");
    ASSERT_FALSE(dir_.empty());
    const CommandResult made =
        RunCommand({TASKMOE_MAKE_MODEL_BINARY, "--kind=taskmoe", "--shape=tiny",
                    "--spm=" TASKMOE_SPM_MODEL, "--out=" + dir_ + "/repo", "--tasks=en-de,de-en"},
                   absl::Seconds(60));
    ASSERT_EQ(made.exit_code, 0) << made.output;

    const std::string port_file = dir_ + "/ports";
    absl::StatusOr<std::unique_ptr<ChildProcess>> server = ChildProcess::Spawn(
        {TASKMOE_SERVER_BINARY, "--model_repository=" + dir_ + "/repo", "--host=127.0.0.1",
         "--port=0", "--metrics_port=-1", "--port_file=" + port_file, "--debug_ignore_eos",
         "--max_output_tokens=64", "--threads=1"},
        dir_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);

    // The port file appears once the ports are bound; the tasks are listed once loaded.
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    int port = 0;
    while (port == 0 && absl::Now() < deadline && server_->Running()) {
      const std::string ports = ReadFile(port_file);
      const size_t at = ports.find("grpc_port=");
      if (at != std::string::npos) port = std::atoi(ports.c_str() + at + 10);
      if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_NE(port, 0) << ReadFile(dir_ + "/server.log");
    target_ = absl::StrCat("127.0.0.1:", port);
    absl::StatusOr<std::unique_ptr<GrpcCaller>> caller =
        GrpcCaller::Connect({.target = target_}, absl::Seconds(60));
    ASSERT_TRUE(caller.ok()) << caller.status();
    while (absl::Now() < deadline && server_->Running()) {
      absl::StatusOr<std::vector<std::string>> tasks = (*caller)->ListTasks(absl::Seconds(5));
      if (tasks.ok() && tasks->size() == 2) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "the server did not list its 2 tasks:\n" << ReadFile(dir_ + "/server.log");
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      // SIGTERM drains and exits 0 (server/main.cc).
      EXPECT_EQ(server_->Stop(absl::Seconds(60)), 0) << ReadFile(dir_ + "/server.log");
    }
    server_.reset();
  }

  void SetUp() override {
    if (server_ == nullptr || target_.empty()) GTEST_FAIL() << "no server";
  }

  // Runs the load tester with `args` plus the target and a JSON report; the parsed report.
  json RunLoadtest(std::vector<std::string> args, int expected_exit = 0) {
    const std::string report = absl::StrCat(dir_, "/report-", ++reports_, ".json");
    args.insert(args.begin(),
                {TASKMOE_LOADTEST_BINARY, "--target=" + target_, "--json=" + report,
                 "--progress=false", absl::StrCat("--max_output_tokens=", kOutputTokens)});
    const CommandResult r = RunCommand(args, absl::Seconds(120));
    EXPECT_EQ(r.exit_code, expected_exit) << r.output << "\n" << ReadFile(dir_ + "/server.log");
    std::ifstream in(report);
    json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << "no JSON report: " << r.output;
    return j;
  }

  // Checks the invariants of a successful run's record.
  static void ExpectHealthyRun(const json& run, int texts_per_request) {
    const int64_t ok = run["ok"];
    EXPECT_GT(ok, 0) << run.dump(2);
    EXPECT_EQ(run["requests"], ok) << run.dump(2);
    EXPECT_TRUE(run["errors"].empty()) << run.dump(2);
    EXPECT_EQ(run["texts"], ok * texts_per_request);
    // --debug_ignore_eos: every text decodes exactly max_output_tokens tokens.
    EXPECT_EQ(run["output_tokens"], ok * texts_per_request * kOutputTokens) << run.dump(2);
    const json& latency = run["latency_ms"];
    EXPECT_EQ(latency["count"], ok);
    EXPECT_GT(latency["min"].get<double>(), 0);
    EXPECT_LE(latency["p50"].get<double>(), latency["p90"].get<double>());
    EXPECT_LE(latency["p90"].get<double>(), latency["p99"].get<double>());
    EXPECT_LE(latency["p99"].get<double>(), latency["max"].get<double>());
    EXPECT_GT(run["requests_per_second"].get<double>(), 0);
    EXPECT_GT(run["output_tokens_per_second"].get<double>(), 0);
  }

  static std::string dir_;
  static std::string target_;
  static std::unique_ptr<ChildProcess> server_;
  int reports_ = 0;
};

std::string ServerLoadTest::dir_;
std::string ServerLoadTest::target_;
std::unique_ptr<ChildProcess> ServerLoadTest::server_;

TEST_F(ServerLoadTest, ClosedLoopByCountWithWarmup) {
  const json report = RunLoadtest({"--loop=closed", "--concurrency=3", "--requests=30",
                                   "--duration=0s", "--warmup=300ms", "--tasks=en-de:3,de-en:1"});
  EXPECT_EQ(report["loop"], "closed");
  EXPECT_EQ(report["tasks"]["en-de"], 3.0);
  ASSERT_EQ(report["runs"].size(), 1u);
  const json& run = report["runs"][0];
  EXPECT_EQ(run["requests"], 30);
  EXPECT_EQ(run["concurrency"], 3);
  // The first requests leave at once, inside the warm-up.
  EXPECT_GE(run["warmup_requests"].get<int>(), 1);
  ExpectHealthyRun(run, 1);
}

TEST_F(ServerLoadTest, OpenLoopByDuration) {
  const json report = RunLoadtest(
      {"--loop=open", "--rate=40", "--duration=1s", "--warmup=0s", "--texts_per_request=2"});
  ASSERT_EQ(report["runs"].size(), 1u);
  const json& run = report["runs"][0];
  EXPECT_EQ(run["rate"], 40.0);
  EXPECT_EQ(run["skipped_arrivals"], 0);
  ExpectHealthyRun(run, 2);
  // The tasks the server lists, equally weighted, when --tasks is not given.
  EXPECT_EQ(report["tasks"].size(), 2u);
}

TEST_F(ServerLoadTest, StreamingMeasuresTimeToFirstToken) {
  const json report = RunLoadtest({"--api=stream", "--loop=open", "--rate=50", "--requests=10",
                                   "--duration=0s", "--warmup=0s", "--tasks=de-en"});
  ASSERT_EQ(report["runs"].size(), 1u);
  const json& run = report["runs"][0];
  ExpectHealthyRun(run, 1);
  const json& ttft = run["ttft_ms"];
  ASSERT_FALSE(ttft.is_null());
  EXPECT_EQ(ttft["count"], 10);
  EXPECT_GT(ttft["min"].get<double>(), 0);
  EXPECT_LE(ttft["max"].get<double>(), run["latency_ms"]["max"].get<double>());
}

TEST_F(ServerLoadTest, BatchSweepWithPlot) {
  const std::string plot = dir_ + "/batch.svg";
  const json report = RunLoadtest({"--sweep=batch:1,4", "--requests=3", "--duration=0s",
                                   "--warmup=0s", "--label=tiny-taskmoe", "--plot=" + plot});
  ASSERT_EQ(report["runs"].size(), 2u);
  EXPECT_EQ(report["runs"][1]["name"], "batch=4");
  ExpectHealthyRun(report["runs"][0], 1);
  ExpectHealthyRun(report["runs"][1], 4);
  const std::string svg = ReadFile(plot);
  EXPECT_TRUE(absl::StrContains(svg, "<svg")) << svg;
  EXPECT_TRUE(absl::StrContains(svg, "tiny-taskmoe")) << svg;
}

TEST_F(ServerLoadTest, ErrorsAreReportedByCode) {
  const json report = RunLoadtest({"--tasks=xx-yy", "--requests=3", "--duration=0s", "--warmup=0s"},
                                  /*expected_exit=*/1);
  ASSERT_EQ(report["runs"].size(), 1u);
  const json& run = report["runs"][0];
  EXPECT_EQ(run["ok"], 0);
  EXPECT_EQ(run["errors"]["NOT_FOUND"], 3);
  EXPECT_FALSE(run["error_examples"]["NOT_FOUND"].get<std::string>().empty());
}
#else
TEST(ServerLoadTest, NeedsTheServerTarget) {
  GTEST_SKIP() << "this build has no taskmoe-server target";
}
#endif

}  // namespace
}  // namespace taskmoe::loadtest::testing
