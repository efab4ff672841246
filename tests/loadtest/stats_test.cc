// Percentiles (nearest rank) and run summaries.
#include "loadtest/stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace taskmoe::loadtest {
namespace {

TEST(PercentileTest, NearestRankOnOneToHundred) {
  std::vector<double> values;
  for (int i = 100; i >= 1; --i) values.push_back(i);  // unsorted on purpose
  EXPECT_EQ(Percentile(values, 50), 50);
  EXPECT_EQ(Percentile(values, 90), 90);
  EXPECT_EQ(Percentile(values, 99), 99);
  EXPECT_EQ(Percentile(values, 99.5), 100);
  EXPECT_EQ(Percentile(values, 100), 100);
  EXPECT_EQ(Percentile(values, 0.5), 1);
}

TEST(PercentileTest, SmallSamples) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({7}, 1), 7);
  EXPECT_EQ(Percentile({7}, 99), 7);
  // Ranks ceil(0.5 * 4) = 2 and ceil(0.9 * 4) = 4.
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 50), 2);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 90), 4);
  // 0.9 * 10 is 9 exactly in decimal but not in binary: still rank 9.
  EXPECT_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90), 9);
}

TEST(PercentileTest, MatchesSortedIndexOnRandomData) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> dist(0, 1000);
  std::vector<double> values(1001);
  for (double& v : values) v = dist(rng);
  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(Percentile(values, 50), sorted[500]);  // rank ceil(500.5) = 501
  EXPECT_EQ(Percentile(values, 99), sorted[990]);  // rank ceil(990.99) = 991
}

TEST(SummarizeTest, Distribution) {
  const Distribution d = Summarize(std::vector<double>{3, 1, 2, 4});
  EXPECT_EQ(d.count, 4);
  EXPECT_EQ(d.min, 1);
  EXPECT_EQ(d.max, 4);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_EQ(d.p50, 2);
  EXPECT_EQ(d.p99, 4);
  EXPECT_EQ(Summarize(std::vector<double>{}).count, 0);
}

TEST(SummarizeTest, WindowStartsAtTheFirstMeasuredRequest) {
  // Measured requests that start 5 s after the warm-up period (a long warm-up request held the
  // only slot): the rate covers their 2 s, not 7.
  const std::vector<Sample> samples = {
      {.start_s = 5.0, .end_s = 6.0, .texts = 1, .output_tokens = 10},
      {.start_s = 6.0, .end_s = 7.0, .texts = 1, .output_tokens = 10},
  };
  const Summary s = Summarize(samples, /*is_stream=*/false);
  EXPECT_DOUBLE_EQ(s.seconds, 2.0);
  EXPECT_DOUBLE_EQ(s.output_tokens_per_second, 10.0);
}

TEST(SummarizeTest, RunSummaryCountsRatesAndErrors) {
  std::vector<Sample> samples = {
      {.start_s = 0.0, .end_s = 0.5, .ttft_s = 0.1, .texts = 2, .output_tokens = 20},
      {.start_s = 0.5, .end_s = 1.0, .ttft_s = 0.2, .texts = 2, .output_tokens = 20},
      {.start_s = 1.0, .end_s = 2.0, .texts = 2, .code = absl::StatusCode::kResourceExhausted},
      {.start_s = 1.0, .end_s = 1.5, .texts = 2, .code = absl::StatusCode::kResourceExhausted},
      {.start_s = 1.0, .end_s = 1.1, .texts = 1, .code = absl::StatusCode::kNotFound},
  };
  const Summary s = Summarize(samples, /*is_stream=*/true);
  EXPECT_EQ(s.requests, 5);
  EXPECT_EQ(s.ok, 2);
  EXPECT_EQ(s.texts, 4);
  EXPECT_EQ(s.output_tokens, 40);
  EXPECT_DOUBLE_EQ(s.seconds, 2.0);  // the last answer, an error, ends the window
  EXPECT_DOUBLE_EQ(s.requests_per_second, 1.0);
  EXPECT_DOUBLE_EQ(s.texts_per_second, 2.0);
  EXPECT_DOUBLE_EQ(s.output_tokens_per_second, 20.0);
  EXPECT_EQ(s.errors.at("RESOURCE_EXHAUSTED"), 2);
  EXPECT_EQ(s.errors.at("NOT_FOUND"), 1);
  EXPECT_EQ(s.latency_s.count, 2);  // OK requests only
  EXPECT_DOUBLE_EQ(s.latency_s.max, 0.5);
  ASSERT_TRUE(s.ttft_s.has_value());
  EXPECT_DOUBLE_EQ(s.ttft_s->p50, 0.1);
  EXPECT_DOUBLE_EQ(s.ttft_s->max, 0.2);
  EXPECT_FALSE(Summarize(samples, /*is_stream=*/false).ttft_s.has_value());
}

TEST(SummarizeTest, EmptyRunHasZeroRates) {
  const Summary s = Summarize(std::vector<Sample>{}, false);
  EXPECT_EQ(s.requests, 0);
  EXPECT_EQ(s.requests_per_second, 0);
  EXPECT_EQ(s.latency_s.count, 0);
}

}  // namespace
}  // namespace taskmoe::loadtest
