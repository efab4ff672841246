// LoadTestOptions: every setting of one taskmoe-loadtest invocation in one value, filled from
// the command line (flags.h) or by tests, and checked once (ValidateOptions) before any
// traffic is sent, so that a bad combination is a clear error rather than a strange run.
#ifndef TASKMOE_LOADTEST_OPTIONS_H_
#define TASKMOE_LOADTEST_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskmoe::loadtest {

// Closed loop: a fixed number of callers, each sending its next request when the previous
// one is answered (measures the server at a given concurrency). Open loop: requests arrive
// by a Poisson process at a given rate whether or not earlier ones were answered (measures
// latency under an offered load, including queueing).
enum class Loop { kClosed, kOpen };
// Unary Translate (a batch of texts per request) or TranslateStream (one text, tokens
// streamed, time to first token measured).
enum class Api { kUnary, kStream };

// What a sweep varies from one run to the next: the closed loop's callers, the open loop's
// rate, or the texts per request.
enum class SweepKind { kNone, kConcurrency, kRate, kBatch };

struct Sweep {
  SweepKind kind = SweepKind::kNone;
  std::vector<double> values;
};

struct LoadTestOptions {
  // Server address; must be a loopback address (the load tester never leaves the machine).
  std::string target = "127.0.0.1:8500";
  Api api = Api::kUnary;
  Loop loop = Loop::kClosed;
  int concurrency = 1;      // closed loop: callers
  double rate = 10.0;       // open loop: mean requests per second
  int max_inflight = 1024;  // open loop: arrivals beyond this many unanswered are skipped
  absl::Duration duration = absl::Seconds(10);  // measured time per run (0: no limit)
  int64_t requests = 0;                         // measured requests per run (0: no limit)
  absl::Duration warmup = absl::Seconds(1);     // traffic before measuring starts
  absl::Duration timeout = absl::Seconds(60);   // deadline of each request
  uint64_t seed = 1;

  // Task mix: "en-de:3,de-en:1" (weight 1 when omitted); empty: every task the server lists,
  // equally weighted.
  std::string tasks;
  // Texts: a file of one text per line ("{task}" and "{src}" in the path are replaced by the
  // task id and its source language), or, when empty, synthetic texts of synthetic_words.
  std::string texts_file;
  int synthetic_words = 20;
  int texts_per_request = 1;  // Translate only; TranslateStream sends one text

  // Decode options sent with every request.
  int beam_size = 1;
  int max_output_tokens = 0;  // 0: the server's default

  Sweep sweep;
  std::string json_path;  // report file ("" : none)
  std::string plot_path;  // SVG of a sweep ("" : none)
  std::string label;      // names this run in reports (e.g. the model under test)
  bool progress = true;   // one line a second on stderr
};

// "concurrency:1,2,4,8", "rate:5,10,20" or "batch:1,8,32" (empty: no sweep).
absl::StatusOr<Sweep> ParseSweep(absl::string_view text);
absl::string_view SweepKindName(SweepKind kind);

// "unary"/"stream", "closed"/"open".
absl::StatusOr<Api> ParseApi(absl::string_view text);
absl::StatusOr<Loop> ParseLoop(absl::string_view text);
absl::string_view ApiName(Api api);
absl::string_view LoopName(Loop loop);

// True for "127.0.0.1:N", "localhost:N", "[::1]:N" (any 127.x.y.z address).
bool IsLoopbackTarget(absl::string_view target);

// Checks ranges and combinations; the message names the flag and says why.
absl::Status ValidateOptions(const LoadTestOptions& options);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_OPTIONS_H_
