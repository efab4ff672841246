// Statistics of a run: exact percentiles (nearest rank) over the recorded samples, and the
// summary the reports print: requests/s, generated tokens/s, latency and time-to-first-token
// distributions, errors by status code. Every request's sample is kept (a run of a million
// requests is a few tens of MB), so percentiles are exact, not bucketed.
#ifndef TASKMOE_LOADTEST_STATS_H_
#define TASKMOE_LOADTEST_STATS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace taskmoe::loadtest {

// One measured request.
struct Sample {
  double start_s = 0;  // when it was sent, from the start of the measured window
  double end_s = 0;    // when its final status came, same origin
  double ttft_s = -1;  // streams: time to the first token (negative: none)
  int texts = 0;
  int64_t output_tokens = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
};

// The p-th percentile (0 < p <= 100) of `values` by the nearest-rank method: the smallest
// value such that at least p% of the values are <= it. `values` need not be sorted; 0 when
// empty.
double Percentile(std::vector<double> values, double p);

struct Distribution {
  int64_t count = 0;
  double min = 0, mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};
Distribution Summarize(std::vector<double> values);

struct Summary {
  int64_t requests = 0;  // measured requests, answered or not
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;  // by status code name, e.g. "RESOURCE_EXHAUSTED"
  int64_t texts = 0;                      // of the OK requests
  int64_t output_tokens = 0;              // of the OK requests
  // From the first measured request sent to the last measured answer.
  double seconds = 0;
  double requests_per_second = 0;  // OK requests
  double texts_per_second = 0;
  double output_tokens_per_second = 0;
  Distribution latency_s;              // OK requests only
  std::optional<Distribution> ttft_s;  // streams only
};

// `is_stream` adds the time-to-first-token distribution.
Summary Summarize(const std::vector<Sample>& samples, bool is_stream);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_STATS_H_
