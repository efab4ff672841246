// End-to-end test of the monitoring set-up of deploy/: Debian's real Prometheus server
// (/usr/bin/prometheus) scrapes a real taskmoe-server on loopback every second, with the
// alerting rules of deploy/prometheus/taskmoe-rules.yml loaded, while taskmoe-client sends
// Translate traffic. Prometheus' HTTP query API must then show exactly the requests sent,
// every alerting rule must evaluate without error against the server's real series, and every
// query of the Grafana dashboards in deploy/grafana must run.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

// Every wait of this test is bounded by this (generous: reaching it means a bug, not a slow
// machine; Prometheus scrapes and evaluates every second).
constexpr absl::Duration kWait = absl::Seconds(60);

// A loopback TCP port that was free a moment ago (the kernel's choice for port 0).
absl::StatusOr<int> FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("cannot bind a loopback port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// Percent-encoding of a URL query value.
std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// Prometheus on loopback, scraping one metrics endpoint every second, with `rules_file`; its
// configuration, storage and log in `dir`.
class PrometheusProcess {
 public:
  static absl::StatusOr<std::unique_ptr<PrometheusProcess>> Start(int metrics_port,
                                                                  const std::string& rules_file,
                                                                  const std::string& dir) {
    std::unique_ptr<PrometheusProcess> p(new PrometheusProcess());
    const std::string config = dir + "/prometheus.yml";
    std::ofstream(config) << absl::StrFormat(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        "  - %s\n"
        "scrape_configs:\n"
        "  - job_name: taskmoe-server\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n",
        rules_file, metrics_port);
    // The port is free when chosen but could be taken before Prometheus binds it: then it
    // exits at once, and another port is tried.
    absl::Status last = absl::UnavailableError("not started");
    for (int attempt = 0; attempt < 5; ++attempt) {
      absl::StatusOr<int> port = FreePort();
      if (!port.ok()) return port.status();
      absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Spawn(
          {TASKMOE_PROMETHEUS_BINARY, "--config.file=" + config,
           absl::StrCat("--storage.tsdb.path=", dir, "/data-", attempt),
           absl::StrCat("--web.listen-address=127.0.0.1:", *port), "--log.level=warn"},
          absl::StrCat(dir, "/prometheus-", attempt, ".log"));
      if (!child.ok()) return child.status();
      p->child_ = *std::move(child);
      p->port_ = *port;
      last = p->WaitReady();
      if (last.ok()) return p;
      if (!p->child_->Wait(absl::ZeroDuration()).has_value()) return last;  // running, not ready
    }
    return last;
  }

  // GET <path> from Prometheus' HTTP API: the parsed JSON of a "success" answer.
  absl::StatusOr<nlohmann::json> Api(const std::string& path) const {
    absl::StatusOr<std::string> body = HttpGet(port_, path);
    if (!body.ok()) return body.status();
    nlohmann::json json = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || json.value("status", "") != "success") {
      return absl::InternalError(absl::StrCat(path, ": ", body->substr(0, 500)));
    }
    return json;
  }

  // The value of the instant query `promql`, which must select one series or none (0).
  absl::StatusOr<double> Query(const std::string& promql) const {
    absl::StatusOr<nlohmann::json> json = Api("/api/v1/query?query=" + UrlEncode(promql));
    if (!json.ok()) return json.status();
    const nlohmann::json& result = (*json)["data"]["result"];
    if (result.empty()) return 0.0;
    if (result.size() != 1) return absl::InternalError("more than one series: " + json->dump());
    return std::stod(result[0]["value"][1].get<std::string>());
  }

  std::string Log() const { return child_->Log(); }

 private:
  PrometheusProcess() = default;

  // Until /-/ready answers 200 (Prometheus loaded its TSDB and configuration).
  absl::Status WaitReady() {
    const absl::Time deadline = absl::Now() + kWait;
    while (absl::Now() < deadline) {
      if (child_->Wait(absl::ZeroDuration()).has_value()) {
        return absl::UnavailableError("prometheus exited:\n" + child_->Log());
      }
      if (HttpGet(port_, "/-/ready").ok()) return absl::OkStatus();
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::DeadlineExceededError("prometheus never ready:\n" + child_->Log());
  }

  std::unique_ptr<ChildProcess> child_;
  int port_ = 0;
};

class PrometheusScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(TASKMOE_PROMETHEUS_BINARY, X_OK), 0)
        << TASKMOE_PROMETHEUS_BINARY << " is missing: Debian's package prometheus "
        << "(tools/setup.sh test installs it)";
    const std::string repository = TempDir("repository");
    ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(repository, {"--max_output_tokens=8"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    absl::StatusOr<std::unique_ptr<PrometheusProcess>> prometheus = PrometheusProcess::Start(
        server_->metrics_port(), TASKMOE_PROMETHEUS_RULES, TempDir("prometheus"));
    ASSERT_TRUE(prometheus.ok()) << prometheus.status();
    prometheus_ = *std::move(prometheus);
  }

  // Stops both processes, then removes the test's directories, unless it failed: then they
  // stay for the logs, and their paths are printed.
  void TearDown() override {
    prometheus_.reset();
    server_.reset();
    for (const std::string& dir : temp_dirs_) {
      if (HasFailure()) {
        std::cerr << "kept " << dir << "\n";
      } else {
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
      }
    }
  }

  // A new temporary directory, removed by TearDown.
  std::string TempDir(const std::string& name) {
    std::string dir = MakeTempDir(name);
    EXPECT_FALSE(dir.empty()) << "cannot make a temporary directory";
    temp_dirs_.push_back(dir);
    return dir;
  }

  // Polls `promql` until it equals `want` (true) or kWait passes; `last` is its last value.
  bool WaitForValue(const std::string& promql, double want, double* last) {
    const absl::Time deadline = absl::Now() + kWait;
    while (absl::Now() < deadline) {
      absl::StatusOr<double> value = prometheus_->Query(promql);
      if (value.ok()) {
        *last = *value;
        if (*value == want) return true;
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  // Runs taskmoe-client against the server with `args`, `lines` on stdin: its exit code and
  // output.
  std::pair<int, std::string> RunClient(const std::vector<std::string>& args,
                                        const std::vector<std::string>& lines) {
    const std::string dir = TempDir("client");
    std::ofstream(dir + "/in") << absl::StrJoin(lines, "\n") << "\n";
    std::vector<std::string> argv = {TASKMOE_CLIENT_BINARY, "--target=" + server_->address(),
                                     "--deadline_ms=30000"};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<std::unique_ptr<ChildProcess>> client =
        ChildProcess::Spawn(argv, dir + "/out", dir + "/in");
    if (!client.ok()) return {-1, client.status().ToString()};
    const std::optional<int> code = (*client)->Wait(kWait);
    return {code.value_or(-1), (*client)->Log()};
  }

  std::vector<std::string> temp_dirs_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<PrometheusProcess> prometheus_;
};

TEST_F(PrometheusScrapeTest, PrometheusSeesTheRequestsSent) {
  // Prometheus has scraped the server at least once.
  double up = 0;
  ASSERT_TRUE(WaitForValue(R"(up{job="taskmoe-server"})", 1, &up)) << "up = " << up << "\n"
                                                                   << prometheus_->Log();
  const std::string requests =
      R"(sum(taskmoe_requests_total{task="en-de",method="Translate",code="OK"}))";
  absl::StatusOr<double> before = prometheus_->Query(requests);
  ASSERT_TRUE(before.ok()) << before.status();

  // 6 texts, 2 per Translate request: 3 requests.
  const std::vector<std::string> texts = {"Hello world.",   "How are you today?",        "Yes",
                                          "Open the file.", "Save the document as PDF.", "No"};
  constexpr int kRequests = 3;
  const auto [code, output] = RunClient({"--task=en-de", "--texts_per_request=2"}, texts);
  ASSERT_EQ(code, 0) << output << "\n" << server_->Log();
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(output, '\n')).size(), texts.size() + 1)
      << output;

  double seen = -1;
  EXPECT_TRUE(WaitForValue(requests, *before + kRequests, &seen))
      << requests << " = " << seen << ", expected " << *before + kRequests << "\n"
      << prometheus_->Log();
  // The tokens those requests generated reached Prometheus too.
  absl::StatusOr<double> tokens =
      prometheus_->Query(R"(sum(taskmoe_generated_tokens_total{task="en-de"}))");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_GT(*tokens, 0);
  double histogram_count = -1;
  EXPECT_TRUE(WaitForValue(R"(sum(taskmoe_request_duration_seconds_count{task="en-de"}))",
                           kRequests, &histogram_count))
      << histogram_count;
}

TEST_F(PrometheusScrapeTest, AlertingRulesEvaluateOnTheServersSeries) {
  // Some traffic, so that the rules' series exist, and Prometheus has stored it.
  const auto [code, output] = RunClient({"--task=fr-en"}, {"Bonjour.", "Merci."});
  ASSERT_EQ(code, 0) << output;
  double requests = 0;
  ASSERT_TRUE(WaitForValue(R"(sum(taskmoe_requests_total{task="fr-en",code="OK"}))", 1, &requests))
      << requests << "\n"
      << prometheus_->Log();

  // Each rule's last evaluation now; the ones after it see the traffic's series.
  absl::StatusOr<nlohmann::json> before = prometheus_->Api("/api/v1/rules");
  ASSERT_TRUE(before.ok()) << before.status();
  std::map<std::string, std::string> evaluated_at;
  for (const nlohmann::json& group : (*before)["data"]["groups"]) {
    for (const nlohmann::json& rule : group["rules"]) {
      evaluated_at[rule.value("name", "")] = rule.value("lastEvaluation", "");
    }
  }
  ASSERT_FALSE(evaluated_at.empty()) << "no rules loaded from " << TASKMOE_PROMETHEUS_RULES << "\n"
                                     << before->dump(1);

  // Every rule evaluated again, none with an error (e.g. a label matching error, which
  // promtool's static check cannot see).
  const absl::Time deadline = absl::Now() + kWait;
  while (true) {
    absl::StatusOr<nlohmann::json> json = prometheus_->Api("/api/v1/rules");
    ASSERT_TRUE(json.ok()) << json.status();
    size_t again = 0;
    for (const nlohmann::json& group : (*json)["data"]["groups"]) {
      for (const nlohmann::json& rule : group["rules"]) {
        const std::string name = rule.value("name", "");
        if (rule.value("lastEvaluation", "") == evaluated_at[name]) continue;
        ++again;
        EXPECT_EQ(rule.value("health", ""), "ok") << name << ": " << rule.value("lastError", "");
      }
    }
    if (again == evaluated_at.size()) break;
    ASSERT_LT(absl::Now(), deadline) << "rules not evaluated again:\n" << json->dump(1);
    absl::SleepFor(absl::Milliseconds(200));
  }
  // A healthy server fires none of them.
  absl::StatusOr<nlohmann::json> alerts = prometheus_->Api("/api/v1/alerts");
  ASSERT_TRUE(alerts.ok()) << alerts.status();
  for (const nlohmann::json& alert : (*alerts)["data"]["alerts"]) {
    ADD_FAILURE() << "alert " << alert.dump();
  }
}

// Every PromQL expression of every Grafana dashboard in deploy/grafana, with its template
// variables filled in as Grafana would, runs in the real Prometheus without error.
TEST_F(PrometheusScrapeTest, DashboardQueriesRun) {
  const auto [code, output] = RunClient({"--task=en-fr"}, {"Hello.", "Thank you."});
  ASSERT_EQ(code, 0) << output;
  double up = 0;
  ASSERT_TRUE(WaitForValue(R"(up{job="taskmoe-server"})", 1, &up)) << prometheus_->Log();
  int queries = 0;
  for (const std::filesystem::directory_entry& file :
       std::filesystem::directory_iterator(TASKMOE_GRAFANA_DIR)) {
    if (file.path().extension() != ".json") continue;
    const nlohmann::json dashboard =
        nlohmann::json::parse(ReadFile(file.path()), nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(dashboard.is_discarded()) << file.path();
    std::vector<const nlohmann::json*> stack = {&dashboard};
    while (!stack.empty()) {
      const nlohmann::json& node = *stack.back();
      stack.pop_back();
      if (node.is_object() && node.contains("expr") && node["expr"].is_string()) {
        // All tasks selected ($task is a regex matcher), and a 1-minute rate window.
        const std::string expr = absl::StrReplaceAll(node["expr"].get<std::string>(),
                                                     {{"$task", ".*"}, {"$__rate_interval", "1m"}});
        absl::StatusOr<nlohmann::json> result =
            prometheus_->Api(absl::StrCat("/api/v1/query?query=", UrlEncode(expr)));
        EXPECT_TRUE(result.ok()) << file.path() << ": " << expr << ": " << result.status();
        ++queries;
      }
      if (node.is_structured()) {
        for (const nlohmann::json& child : node) stack.push_back(&child);
      }
    }
  }
  EXPECT_GT(queries, 10) << "expected the dashboards of " << TASKMOE_GRAFANA_DIR;
}

}  // namespace
}  // namespace taskmoe::server::testing
