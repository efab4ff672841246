// Flag definitions of taskmoe-loadtest. Defaults come from LoadTestOptions so that tests that
// build options in code and the binary agree.
#include "loadtest/flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

namespace {
const taskmoe::loadtest::LoadTestOptions kDefaults;
}  // namespace

// Where and how.
ABSL_FLAG(std::string, target, kDefaults.target,
          "Server address HOST:PORT; loopback only (127.0.0.1, localhost or [::1])");
ABSL_FLAG(std::string, api, "unary",
          "unary: Translate, texts_per_request texts per request; stream: TranslateStream, one "
          "text per request, time to first token measured");
ABSL_FLAG(std::string, loop, "closed",
          "closed: --concurrency callers, each sending its next request when answered; open: "
          "Poisson arrivals at --rate requests/s whatever the answers");
ABSL_FLAG(int, concurrency, kDefaults.concurrency, "Closed loop: requests kept in flight");
ABSL_FLAG(double, rate, kDefaults.rate, "Open loop: mean arrival rate, requests per second");
ABSL_FLAG(int, max_inflight, kDefaults.max_inflight,
          "Open loop: most unanswered requests; arrivals beyond it are skipped and reported");
// How long.
ABSL_FLAG(absl::Duration, duration, kDefaults.duration,
          "Measured time of each run, e.g. 30s or 2m (0: bounded by --requests alone)");
ABSL_FLAG(int64_t, requests, kDefaults.requests,
          "Measured requests of each run (0: bounded by --duration alone); with both, the "
          "first reached ends the run");
ABSL_FLAG(absl::Duration, warmup, kDefaults.warmup,
          "Traffic sent before each run's measurement starts, left out of the statistics");
ABSL_FLAG(absl::Duration, timeout, kDefaults.timeout, "Deadline of each request");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(10),
          "How long to wait for the server to accept the connection");
ABSL_FLAG(uint64_t, seed, kDefaults.seed, "Seed of the arrival times, task choice and texts");
// What.
ABSL_FLAG(std::string, tasks, "",
          "Task mix, e.g. en-de:3,de-en:1 (weight 1 if omitted); empty: every task the server "
          "lists, equally");
ABSL_FLAG(std::string, texts, "",
          "File of source texts, one per line; {task} and {src} in the path become the task "
          "id and its source language, e.g. build/corpus/test.{task}.{src}. Empty: synthetic "
          "texts of --synthetic_words words");
ABSL_FLAG(int, synthetic_words, kDefaults.synthetic_words, "Words per synthetic text");
ABSL_FLAG(int, texts_per_request, kDefaults.texts_per_request,
          "Texts in each Translate request (the server's --max_texts_per_request caps it)");
ABSL_FLAG(int, beam_size, kDefaults.beam_size, "DecodeOptions.beam_size (0 or 1: greedy)");
ABSL_FLAG(int, max_output_tokens, kDefaults.max_output_tokens,
          "DecodeOptions.max_output_tokens (0: the server's default). With a server started "
          "with --debug_ignore_eos, every text decodes exactly this many tokens");
// Sweeps and reports.
ABSL_FLAG(std::string, sweep, "",
          "Runs one measurement per value: concurrency:1,2,4,8 (closed loop), rate:5,10,20 "
          "(open loop) or batch:1,8,32 (texts per request)");
ABSL_FLAG(std::string, json, "", "Write the report as JSON to this file");
ABSL_FLAG(std::string, plot, "",
          "Write an SVG chart of the sweep (or, with --compare, of the comparison) here");
ABSL_FLAG(std::string, label, "", "Name of this load test in reports, e.g. the model served");
ABSL_FLAG(bool, progress, kDefaults.progress, "Print a progress line every second on stderr");
// Comparison mode.
ABSL_FLAG(std::string, compare, "",
          "Send nothing; merge batch-sweep reports NAME=FILE.json,... into --markdown and "
          "--plot");
ABSL_FLAG(std::string, compare_baseline, "",
          "With --compare: the NAME the other models' tokens/s are divided by");
ABSL_FLAG(std::string, markdown, "", "With --compare: write the Markdown table here");
ABSL_FLAG(std::string, title, "Generated tokens/s by texts per request",
          "With --compare: the chart's title");

namespace taskmoe::loadtest {

absl::StatusOr<LoadTestOptions> LoadTestOptionsFromFlags() {
  LoadTestOptions o;
  o.target = absl::GetFlag(FLAGS_target);
  absl::StatusOr<Api> api = ParseApi(absl::GetFlag(FLAGS_api));
  if (!api.ok()) return api.status();
  o.api = *api;
  absl::StatusOr<Loop> loop = ParseLoop(absl::GetFlag(FLAGS_loop));
  if (!loop.ok()) return loop.status();
  o.loop = *loop;
  o.concurrency = absl::GetFlag(FLAGS_concurrency);
  o.rate = absl::GetFlag(FLAGS_rate);
  o.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  o.duration = absl::GetFlag(FLAGS_duration);
  o.requests = absl::GetFlag(FLAGS_requests);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  o.timeout = absl::GetFlag(FLAGS_timeout);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.tasks = absl::GetFlag(FLAGS_tasks);
  o.texts_file = absl::GetFlag(FLAGS_texts);
  o.synthetic_words = absl::GetFlag(FLAGS_synthetic_words);
  o.texts_per_request = absl::GetFlag(FLAGS_texts_per_request);
  o.beam_size = absl::GetFlag(FLAGS_beam_size);
  o.max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens);
  absl::StatusOr<Sweep> sweep = ParseSweep(absl::GetFlag(FLAGS_sweep));
  if (!sweep.ok()) return sweep.status();
  o.sweep = *std::move(sweep);
  o.json_path = absl::GetFlag(FLAGS_json);
  o.plot_path = absl::GetFlag(FLAGS_plot);
  o.label = absl::GetFlag(FLAGS_label);
  o.progress = absl::GetFlag(FLAGS_progress);
  if (absl::Status s = ValidateOptions(o); !s.ok()) return s;
  return o;
}

absl::Duration ConnectTimeoutFromFlags() { return absl::GetFlag(FLAGS_connect_timeout); }

absl::StatusOr<CompareOptions> CompareOptionsFromFlags() {
  CompareOptions c;
  c.reports = absl::GetFlag(FLAGS_compare);
  c.baseline = absl::GetFlag(FLAGS_compare_baseline);
  c.markdown_path = absl::GetFlag(FLAGS_markdown);
  c.plot_path = absl::GetFlag(FLAGS_plot);
  c.title = absl::GetFlag(FLAGS_title);
  if (c.reports.empty()) {
    if (!c.baseline.empty() || !c.markdown_path.empty()) {
      return absl::InvalidArgumentError(
          "--compare_baseline and --markdown belong to --compare (merging reports)");
    }
    return c;
  }
  if (c.markdown_path.empty() && c.plot_path.empty()) {
    return absl::InvalidArgumentError("--compare: say where to write with --markdown or --plot");
  }
  return c;
}

}  // namespace taskmoe::loadtest
