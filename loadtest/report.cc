// JSON (both ways) and the human table of load-test results.
#include "loadtest/report.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace taskmoe::loadtest {
namespace {

using nlohmann::json;

constexpr int kFormatVersion = 1;

json DistributionMs(const Distribution& d) {
  return {{"count", d.count},   {"min", d.min * 1e3}, {"mean", d.mean * 1e3}, {"p50", d.p50 * 1e3},
          {"p90", d.p90 * 1e3}, {"p99", d.p99 * 1e3}, {"max", d.max * 1e3}};
}

Distribution DistributionFromMs(const json& j) {
  Distribution d;
  d.count = j.at("count").get<int64_t>();
  d.min = j.at("min").get<double>() / 1e3;
  d.mean = j.at("mean").get<double>() / 1e3;
  d.p50 = j.at("p50").get<double>() / 1e3;
  d.p90 = j.at("p90").get<double>() / 1e3;
  d.p99 = j.at("p99").get<double>() / 1e3;
  d.max = j.at("max").get<double>() / 1e3;
  return d;
}

}  // namespace

json RunToJson(const RunReport& run) {
  const Summary& s = run.summary;
  json j = {{"name", run.name},
            {"concurrency", run.concurrency},
            {"rate", run.rate},
            {"texts_per_request", run.texts_per_request},
            {"warmup_requests", run.warmup_requests},
            {"skipped_arrivals", run.skipped_arrivals},
            {"requests", s.requests},
            {"ok", s.ok},
            {"errors", s.errors},
            {"error_examples", run.error_examples},
            {"texts", s.texts},
            {"output_tokens", s.output_tokens},
            {"seconds", s.seconds},
            {"requests_per_second", s.requests_per_second},
            {"texts_per_second", s.texts_per_second},
            {"output_tokens_per_second", s.output_tokens_per_second},
            {"latency_ms", DistributionMs(s.latency_s)}};
  j["ttft_ms"] = s.ttft_s ? DistributionMs(*s.ttft_s) : json(nullptr);
  return j;
}

absl::StatusOr<RunReport> RunFromJson(const json& j) {
  try {
    RunReport run;
    run.name = j.at("name").get<std::string>();
    run.concurrency = j.at("concurrency").get<int>();
    run.rate = j.at("rate").get<double>();
    run.texts_per_request = j.at("texts_per_request").get<int>();
    run.warmup_requests = j.at("warmup_requests").get<int64_t>();
    run.skipped_arrivals = j.at("skipped_arrivals").get<int64_t>();
    Summary& s = run.summary;
    s.requests = j.at("requests").get<int64_t>();
    s.ok = j.at("ok").get<int64_t>();
    s.errors = j.at("errors").get<std::map<std::string, int64_t>>();
    run.error_examples = j.value("error_examples", std::map<std::string, std::string>{});
    s.texts = j.at("texts").get<int64_t>();
    s.output_tokens = j.at("output_tokens").get<int64_t>();
    s.seconds = j.at("seconds").get<double>();
    s.requests_per_second = j.at("requests_per_second").get<double>();
    s.texts_per_second = j.at("texts_per_second").get<double>();
    s.output_tokens_per_second = j.at("output_tokens_per_second").get<double>();
    s.latency_s = DistributionFromMs(j.at("latency_ms"));
    if (!j.at("ttft_ms").is_null()) s.ttft_s = DistributionFromMs(j.at("ttft_ms"));
    return run;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("run record: ", e.what()));
  }
}

json ReportToJson(const LoadTestOptions& o, const TaskMix& mix,
                  const std::vector<RunReport>& runs) {
  json tasks = json::object();
  for (const WeightedTask& t : mix.tasks()) tasks[t.task] = t.weight;
  json run_list = json::array();
  for (const RunReport& run : runs) run_list.push_back(RunToJson(run));
  return {{"tool", "taskmoe-loadtest"},
          {"format_version", kFormatVersion},
          {"label", o.label},
          {"target", o.target},
          {"api", ApiName(o.api)},
          {"loop", LoopName(o.loop)},
          {"sweep", {{"kind", SweepKindName(o.sweep.kind)}, {"values", o.sweep.values}}},
          {"tasks", tasks},
          {"texts", o.texts_file.empty() ? absl::StrCat("synthetic:", o.synthetic_words, " words")
                                         : o.texts_file},
          {"beam_size", o.beam_size},
          {"max_output_tokens", o.max_output_tokens},
          {"duration_s", absl::ToDoubleSeconds(o.duration)},
          {"requests_limit", o.requests},
          {"warmup_s", absl::ToDoubleSeconds(o.warmup)},
          {"timeout_s", absl::ToDoubleSeconds(o.timeout)},
          {"seed", o.seed},
          {"runs", run_list}};
}

absl::StatusOr<LoadedReport> ReadReport(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read report ", path));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  if (j.value("tool", "") != "taskmoe-loadtest" || j.value("format_version", 0) != kFormatVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a taskmoe-loadtest report of format version ", kFormatVersion));
  }
  LoadedReport report;
  report.label = j.value("label", "");
  if (!j.contains("runs") || !j["runs"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no \"runs\" array"));
  }
  for (const json& run_json : j["runs"]) {
    absl::StatusOr<RunReport> run = RunFromJson(run_json);
    if (!run.ok())
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", run.status().message()));
    report.runs.push_back(*std::move(run));
  }
  return report;
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status WriteJsonFile(const std::string& path, const json& j) {
  return WriteTextFile(path, j.dump(2) + "\n");
}

std::string FormatTable(const std::vector<RunReport>& runs, bool is_stream) {
  std::string out = absl::StrFormat("%-16s %8s %9s %10s %9s %9s %9s %9s", "run", "ok", "req/s",
                                    "tokens/s", "p50 ms", "p90 ms", "p99 ms", "max ms");
  if (is_stream) absl::StrAppend(&out, absl::StrFormat(" %10s %10s", "ttft p50", "ttft p99"));
  absl::StrAppend(&out, absl::StrFormat(" %7s\n", "errors"));
  for (const RunReport& run : runs) {
    const Summary& s = run.summary;
    const Distribution& l = s.latency_s;
    absl::StrAppend(
        &out, absl::StrFormat("%-16s %8d %9.2f %10.1f %9.1f %9.1f %9.1f %9.1f", run.name, s.ok,
                              s.requests_per_second, s.output_tokens_per_second, l.p50 * 1e3,
                              l.p90 * 1e3, l.p99 * 1e3, l.max * 1e3));
    if (is_stream) {
      const Distribution t = s.ttft_s.value_or(Distribution{});
      absl::StrAppend(&out, absl::StrFormat(" %10.1f %10.1f", t.p50 * 1e3, t.p99 * 1e3));
    }
    absl::StrAppend(&out, absl::StrFormat(" %7d\n", s.requests - s.ok));
  }
  for (const RunReport& run : runs) {
    for (const auto& [code, count] : run.summary.errors) {
      auto example = run.error_examples.find(code);
      absl::StrAppend(&out,
                      absl::StrFormat("  %s: %d x %s%s\n", run.name, count, code,
                                      example == run.error_examples.end()
                                          ? ""
                                          : absl::StrCat(" (e.g. \"", example->second, "\")")));
    }
    if (run.skipped_arrivals > 0) {
      absl::StrAppend(&out, absl::StrFormat("  %s: %d arrivals skipped (--max_inflight reached)\n",
                                            run.name, run.skipped_arrivals));
    }
  }
  return out;
}

}  // namespace taskmoe::loadtest
