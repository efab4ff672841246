// Reports: JSON round trip and file reading, the human table, the progress line, and the
// comparison of several reports (Markdown table, chart).
#include "loadtest/report.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "absl/strings/match.h"
#include "loadtest/compare.h"
#include "loadtest/progress.h"
#include "tests/common/process.h"

namespace taskmoe::loadtest {
namespace {

RunReport MakeRun(const std::string& name, int batch, double tokens_per_second) {
  RunReport run;
  run.name = name;
  run.concurrency = 2;
  run.texts_per_request = batch;
  run.warmup_requests = 3;
  run.summary.requests = 12;
  run.summary.ok = 10;
  run.summary.errors = {{"UNAVAILABLE", 2}};
  run.summary.texts = 10 * batch;
  run.summary.output_tokens = 160 * batch;
  run.summary.seconds = 2;
  run.summary.requests_per_second = 5;
  run.summary.output_tokens_per_second = tokens_per_second;
  run.summary.latency_s = {
      .count = 10, .min = 0.01, .mean = 0.02, .p50 = 0.02, .p90 = 0.03, .p99 = 0.04, .max = 0.05};
  run.error_examples = {{"UNAVAILABLE", "connection refused"}};
  return run;
}

std::string TempPath(const std::string& name) {
  const std::string dir = ::taskmoe::testing::MakeTempDir("loadtest-report");
  EXPECT_FALSE(dir.empty());
  return dir + "/" + name;
}

TEST(ReportTest, RunJsonRoundTrip) {
  RunReport run = MakeRun("batch=8", 8, 1234.5);
  run.summary.ttft_s = Distribution{.count = 10, .p50 = 0.005, .max = 0.009};
  const nlohmann::json j = RunToJson(run);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p99"].get<double>(), 40.0);  // milliseconds
  absl::StatusOr<RunReport> back = RunFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->name, "batch=8");
  EXPECT_EQ(back->texts_per_request, 8);
  EXPECT_EQ(back->summary.errors, run.summary.errors);
  EXPECT_EQ(back->error_examples, run.error_examples);
  EXPECT_DOUBLE_EQ(back->summary.output_tokens_per_second, 1234.5);
  EXPECT_NEAR(back->summary.latency_s.p99, 0.04, 1e-12);
  ASSERT_TRUE(back->summary.ttft_s.has_value());
  EXPECT_NEAR(back->summary.ttft_s->p50, 0.005, 1e-12);
  EXPECT_FALSE(RunFromJson(nlohmann::json{{"name", "x"}}).ok());
}

TEST(ReportTest, WrittenReportReadsBack) {
  LoadTestOptions options;
  options.label = "taskmoe";
  options.sweep = {SweepKind::kBatch, {1, 8}};
  absl::StatusOr<TaskMix> mix = TaskMix::Parse("en-de:2");
  ASSERT_TRUE(mix.ok());
  const nlohmann::json j =
      ReportToJson(options, *mix, {MakeRun("batch=1", 1, 100), MakeRun("batch=8", 8, 500)});
  EXPECT_EQ(j["tasks"]["en-de"], 2.0);
  EXPECT_EQ(j["sweep"]["kind"], "batch");
  EXPECT_EQ(j["api"], "unary");
  const std::string path = TempPath("report.json");
  ASSERT_TRUE(WriteJsonFile(path, j).ok());
  absl::StatusOr<LoadedReport> report = ReadReport(path);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->label, "taskmoe");
  ASSERT_EQ(report->runs.size(), 2u);
  EXPECT_EQ(report->runs[1].texts_per_request, 8);
}

TEST(ReportTest, ReadReportRefusesOtherFiles) {
  const std::string path = TempPath("other.json");
  ASSERT_TRUE(WriteTextFile(path, "{\"tool\": \"something-else\"}").ok());
  EXPECT_FALSE(ReadReport(path).ok());
  ASSERT_TRUE(WriteTextFile(path, "not json").ok());
  EXPECT_FALSE(ReadReport(path).ok());
  EXPECT_EQ(ReadReport(path + ".missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(WriteTextFile("/nonexistent-dir/x.json", "{}").ok());
}

TEST(ReportTest, TableShowsRunsAndErrors) {
  const std::string table = FormatTable({MakeRun("concurrency=2", 1, 321.0)}, false);
  EXPECT_TRUE(absl::StrContains(table, "concurrency=2")) << table;
  EXPECT_TRUE(absl::StrContains(table, "321.0")) << table;
  EXPECT_TRUE(absl::StrContains(table, "p99 ms")) << table;
  EXPECT_FALSE(absl::StrContains(table, "ttft")) << table;
  EXPECT_TRUE(absl::StrContains(table, "2 x UNAVAILABLE (e.g. \"connection refused\")")) << table;
  EXPECT_TRUE(absl::StrContains(FormatTable({MakeRun("r", 1, 1)}, true), "ttft p50"));
}

TEST(ProgressTest, LineShowsTotalsAndRecentRates) {
  const ProgressSnapshot previous{.elapsed_s = 1, .completed = 10, .output_tokens = 100};
  const ProgressSnapshot now{.elapsed_s = 3,
                             .measuring = true,
                             .completed = 30,
                             .errors = 1,
                             .inflight = 4,
                             .output_tokens = 500};
  const std::string line = FormatProgress("batch=8", now, previous);
  EXPECT_TRUE(absl::StrContains(line, "batch=8")) << line;
  EXPECT_TRUE(absl::StrContains(line, "measure")) << line;
  EXPECT_TRUE(absl::StrContains(line, "30 done, 10.0 req/s, 200 tok/s, 1 errors, 4 in flight"))
      << line;
  EXPECT_FALSE(absl::StrContains(line, "skipped")) << line;
  ProgressSnapshot skipping = now;
  skipping.skipped = 7;
  EXPECT_TRUE(absl::StrContains(FormatProgress("r", skipping, previous), "7 skipped"));
}

std::vector<NamedReport> TwoModels() {
  NamedReport tokenmoe{
      .name = "tokenmoe",
      .report = {.label = "", .runs = {MakeRun("batch=1", 1, 100), MakeRun("batch=8", 8, 400)}}};
  NamedReport taskmoe{
      .name = "taskmoe",
      .report = {.label = "", .runs = {MakeRun("batch=1", 1, 150), MakeRun("batch=8", 8, 800)}}};
  return {taskmoe, tokenmoe};
}

TEST(CompareTest, MarkdownTableWithRatios) {
  absl::StatusOr<std::string> table = CompareMarkdown(TwoModels(), "tokenmoe");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_TRUE(absl::StrContains(
      *table, "| texts/request | taskmoe tokens/s | tokenmoe tokens/s | taskmoe / tokenmoe |"))
      << *table;
  EXPECT_TRUE(absl::StrContains(*table, "| 1 | 150.0 | 100.0 | 1.50x |")) << *table;
  EXPECT_TRUE(absl::StrContains(*table, "| 8 | 800.0 | 400.0 | 2.00x |")) << *table;
  EXPECT_TRUE(absl::StrContains(*table, "| **peak** | 800.0 | 400.0 | 2.00x |")) << *table;
  EXPECT_FALSE(CompareMarkdown(TwoModels(), "dense").ok());
  absl::StatusOr<std::string> plain = CompareMarkdown(TwoModels(), "");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(absl::StrContains(*plain, " / ")) << *plain;
}

TEST(CompareTest, ChartHasOneSeriesPerModel) {
  const Chart chart = CompareChart(TwoModels(), "paper");
  ASSERT_EQ(chart.series.size(), 2u);
  EXPECT_EQ(chart.series[0].name, "taskmoe");
  EXPECT_EQ(chart.series[1].points[1], std::make_pair(8.0, 400.0));
  EXPECT_TRUE(chart.log_x);
}

TEST(CompareTest, NamedReportSpecErrors) {
  EXPECT_FALSE(ReadNamedReports("").ok());
  EXPECT_FALSE(ReadNamedReports("noequals").ok());
  EXPECT_FALSE(ReadNamedReports("=file.json").ok());
  EXPECT_EQ(ReadNamedReports("a=/nonexistent/r.json").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace taskmoe::loadtest
