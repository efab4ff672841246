// The open loop's Poisson arrival schedule: deterministic in its seed, strictly increasing,
// with the requested mean rate and exponential gaps.
#include "loadtest/schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace taskmoe::loadtest {
namespace {

std::vector<double> Arrivals(double rate, uint64_t seed, int n) {
  PoissonSchedule schedule(rate, seed);
  std::vector<double> out;
  for (int i = 0; i < n; ++i) out.push_back(schedule.NextArrival());
  return out;
}

TEST(PoissonScheduleTest, SameSeedSameSchedule) {
  EXPECT_EQ(Arrivals(50, 7, 100), Arrivals(50, 7, 100));
  EXPECT_NE(Arrivals(50, 7, 100), Arrivals(50, 8, 100));
}

TEST(PoissonScheduleTest, StrictlyIncreasingAndPositive) {
  const std::vector<double> t = Arrivals(1000, 1, 10000);
  EXPECT_GT(t.front(), 0);
  for (size_t i = 1; i < t.size(); ++i) ASSERT_LT(t[i - 1], t[i]) << "at " << i;
}

TEST(PoissonScheduleTest, MeanRateAndExponentialGaps) {
  constexpr double kRate = 200;
  constexpr int kN = 20000;
  const std::vector<double> t = Arrivals(kRate, 42, kN);
  // n arrivals of a rate-r process take n / r seconds on average; with 20000 gaps the
  // standard error of the mean gap is 1/sqrt(20000) = 0.7%, so 3% is > 4 sigma.
  const double observed_rate = kN / t.back();
  EXPECT_NEAR(observed_rate, kRate, 0.03 * kRate);
  // Exponential gaps: standard deviation equal to the mean (coefficient of variation 1),
  // and P(gap > mean) = 1/e.
  double sum = 0, sum_sq = 0;
  int longer_than_mean = 0;
  double previous = 0;
  for (double arrival : t) {
    const double gap = arrival - previous;
    previous = arrival;
    sum += gap;
    sum_sq += gap * gap;
    if (gap > 1.0 / kRate) ++longer_than_mean;
  }
  const double mean = sum / kN;
  const double stddev = std::sqrt(sum_sq / kN - mean * mean);
  EXPECT_NEAR(stddev / mean, 1.0, 0.05);
  EXPECT_NEAR(static_cast<double>(longer_than_mean) / kN, std::exp(-1.0), 0.02);
}

TEST(PoissonScheduleTest, RateScalesTheSchedule) {
  // The same seed at twice the rate gives the same arrivals at half the times.
  const std::vector<double> slow = Arrivals(10, 5, 50);
  const std::vector<double> fast = Arrivals(20, 5, 50);
  for (size_t i = 0; i < slow.size(); ++i) EXPECT_NEAR(fast[i], slow[i] / 2, 1e-9);
}

}  // namespace
}  // namespace taskmoe::loadtest
