// taskmoe-loadtest: a load generator for taskmoe-server (DESIGN.md §6 "How we measure").
// Closed or open loop, unary or streaming, a weighted task mix, texts from files or
// synthetic; reports requests/s, generated tokens/s, latency and time-to-first-token
// percentiles and errors by status code, as a table, JSON and (for sweeps) an SVG chart.
//
//   taskmoe-loadtest --target 127.0.0.1:8500 --concurrency 8 --duration 30s --json out.json
//   taskmoe-loadtest --sweep concurrency:1,2,4,8 --requests 200 --plot curve.svg
//   taskmoe-loadtest --compare dense=d.json,taskmoe=t.json --markdown t.md --plot t.svg
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loadtest/compare.h"
#include "loadtest/flags.h"
#include "loadtest/grpc_caller.h"
#include "loadtest/report.h"
#include "loadtest/sweep.h"
#include "loadtest/workload.h"
#include "util/command_line.h"

namespace {

using namespace taskmoe::loadtest;

// Exit codes: 2 for a bad command line (nothing was sent), 1 for a failure while running.
constexpr int kUsageError = 2;
constexpr int kRunError = 1;

int Fail(int code, const absl::Status& status) {
  std::fprintf(stderr, "taskmoe-loadtest: %s%s\n", std::string(status.message()).c_str(),
               code == kUsageError ? " (see --help)" : "");
  return code;
}

int RunCompare(const CompareOptions& c) {
  absl::StatusOr<std::vector<NamedReport>> reports = ReadNamedReports(c.reports);
  if (!reports.ok()) return Fail(kUsageError, reports.status());
  absl::StatusOr<std::string> table = CompareMarkdown(*reports, c.baseline);
  if (!table.ok()) return Fail(kUsageError, table.status());
  std::printf("%s", table->c_str());
  if (!c.markdown_path.empty()) {
    if (absl::Status s = WriteTextFile(c.markdown_path, *table); !s.ok()) {
      return Fail(kRunError, s);
    }
  }
  if (!c.plot_path.empty()) {
    if (absl::Status s = WriteSvgFile(c.plot_path, CompareChart(*reports, c.title)); !s.ok()) {
      return Fail(kRunError, s);
    }
  }
  return 0;
}

int RunLoadTest(const LoadTestOptions& o) {
  // The mix is checked before connecting, so a typo fails at once.
  absl::StatusOr<TaskMix> mix = absl::InvalidArgumentError("no tasks");
  if (!o.tasks.empty()) {
    mix = TaskMix::Parse(o.tasks);
    if (!mix.ok()) return Fail(kUsageError, mix.status());
  }
  absl::StatusOr<std::unique_ptr<GrpcCaller>> caller =
      GrpcCaller::Connect({.target = o.target,
                           .api = o.api,
                           .beam_size = o.beam_size,
                           .max_output_tokens = o.max_output_tokens,
                           .timeout = o.timeout},
                          ConnectTimeoutFromFlags());
  if (!caller.ok()) return Fail(kRunError, caller.status());
  if (o.tasks.empty()) {
    absl::StatusOr<std::vector<std::string>> tasks = (*caller)->ListTasks(o.timeout);
    if (!tasks.ok()) return Fail(kRunError, tasks.status());
    if (tasks->empty()) return Fail(kRunError, absl::NotFoundError("the server lists no task"));
    mix = TaskMix::Uniform(*tasks);
    if (!mix.ok()) return Fail(kRunError, mix.status());
  }
  absl::StatusOr<Workload> workload =
      Workload::Create(*mix, o.texts_file, o.synthetic_words, o.texts_per_request, o.seed);
  if (!workload.ok()) return Fail(kUsageError, workload.status());

  const bool is_stream = o.api == Api::kStream;
  const std::vector<RunReport> runs =
      RunPlan(PlanRuns(o), **caller, *workload, is_stream, o.progress);
  std::printf("%s", FormatTable(runs, is_stream).c_str());
  if (!o.json_path.empty()) {
    if (absl::Status s = WriteJsonFile(o.json_path, ReportToJson(o, *mix, runs)); !s.ok()) {
      return Fail(kRunError, s);
    }
  }
  if (!o.plot_path.empty()) {
    if (absl::Status s =
            WriteSvgFile(o.plot_path, SweepChart(o.sweep.kind, runs, is_stream, o.label));
        !s.ok()) {
      return Fail(kRunError, s);
    }
  }
  int64_t ok = 0;
  for (const RunReport& run : runs) ok += run.summary.ok;
  if (ok == 0) {
    return Fail(kRunError, absl::UnavailableError(
                               "no request succeeded (see the errors above); reports written"));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<char*> positional = taskmoe::util::ParseCommandLine(
      argc, argv,
      "Load generator for taskmoe-server (loopback only).\n"
      "  taskmoe-loadtest --target 127.0.0.1:8500 [--loop closed --concurrency N | --loop open "
      "--rate R]\n"
      "                   [--duration 30s | --requests N] [--warmup 2s] [--api unary|stream]\n"
      "                   [--tasks en-de:3,de-en:1] [--texts FILE] [--sweep KIND:V1,V2,...]\n"
      "                   [--json report.json] [--plot sweep.svg]\n"
      "  taskmoe-loadtest --compare NAME=report.json,... --markdown table.md --plot chart.svg",
      "loadtest/flags.cc");
  if (positional.size() > 1) {
    return Fail(kUsageError, absl::InvalidArgumentError(
                                 absl::StrCat("unexpected argument '", positional[1], "'")));
  }
  absl::StatusOr<CompareOptions> compare = CompareOptionsFromFlags();
  if (!compare.ok()) return Fail(kUsageError, compare.status());
  if (!compare->reports.empty()) return RunCompare(*compare);
  absl::StatusOr<LoadTestOptions> options = LoadTestOptionsFromFlags();
  if (!options.ok()) return Fail(kUsageError, options.status());
  return RunLoadTest(*options);
}
