// Percentiles and run summaries.
#include "loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace taskmoe::loadtest {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  const size_t n = values.size();
  // Nearest rank: rank = ceil(p/100 * n), 1-based. The small epsilon keeps p/100 * n that is
  // an integer in exact arithmetic (e.g. 0.9 * 10) from rounding up to the next rank.
  const double exact = p / 100.0 * static_cast<double>(n);
  size_t rank = static_cast<size_t>(std::ceil(exact - 1e-9));
  rank = std::clamp<size_t>(rank, 1, n);
  std::nth_element(values.begin(), values.begin() + (rank - 1), values.end());
  return values[rank - 1];
}

Distribution Summarize(std::vector<double> values) {
  Distribution d;
  d.count = static_cast<int64_t>(values.size());
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.min = values.front();
  d.max = values.back();
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(d.count);
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  return d;
}

Summary Summarize(const std::vector<Sample>& samples, bool is_stream) {
  Summary s;
  std::vector<double> latencies;
  std::vector<double> ttfts;
  // The window runs from the first measured request's start, not from the end of the warm-up
  // period: in a closed loop with long requests, the first measured one starts only when a
  // warm-up request is answered, well after the warm-up period ends.
  double first_start = samples.empty() ? 0.0 : samples.front().start_s;
  double last_end = 0.0;
  for (const Sample& sample : samples) {
    ++s.requests;
    first_start = std::min(first_start, sample.start_s);
    last_end = std::max(last_end, sample.end_s);
    if (sample.code != absl::StatusCode::kOk) {
      ++s.errors[absl::StatusCodeToString(sample.code)];
      continue;
    }
    ++s.ok;
    s.texts += sample.texts;
    s.output_tokens += sample.output_tokens;
    latencies.push_back(sample.end_s - sample.start_s);
    if (sample.ttft_s >= 0) ttfts.push_back(sample.ttft_s);
  }
  s.seconds = std::max(0.0, last_end - first_start);
  if (s.seconds > 0) {
    s.requests_per_second = static_cast<double>(s.ok) / s.seconds;
    s.texts_per_second = static_cast<double>(s.texts) / s.seconds;
    s.output_tokens_per_second = static_cast<double>(s.output_tokens) / s.seconds;
  }
  s.latency_s = Summarize(std::move(latencies));
  if (is_stream) s.ttft_s = Summarize(std::move(ttfts));
  return s;
}

}  // namespace taskmoe::loadtest
