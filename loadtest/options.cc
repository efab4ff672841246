// Parsing of the option values that are not plain numbers, and the checks of the whole set.
#include "loadtest/options.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace taskmoe::loadtest {
namespace {

// Bounds that keep every run finite and every report meaningful; generous for real use.
constexpr int kMaxConcurrency = 4096;
constexpr int kMaxTextsPerRequest = 4096;
constexpr double kMaxRate = 1e6;
constexpr size_t kMaxSweepPoints = 64;

bool IsWholeNumber(double v) { return v == std::floor(v); }

}  // namespace

absl::string_view SweepKindName(SweepKind kind) {
  switch (kind) {
    case SweepKind::kNone:
      return "none";
    case SweepKind::kConcurrency:
      return "concurrency";
    case SweepKind::kRate:
      return "rate";
    case SweepKind::kBatch:
      return "batch";
  }
  return "none";
}

absl::StatusOr<Sweep> ParseSweep(absl::string_view text) {
  Sweep sweep;
  if (text.empty()) return sweep;
  const std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits(':', 1));
  if (parts.size() != 2 || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sweep: '", text, "' is not KIND:V1,V2,... (e.g. concurrency:1,2,4,8 or batch:1,8,32)"));
  }
  if (parts[0] == "concurrency") {
    sweep.kind = SweepKind::kConcurrency;
  } else if (parts[0] == "rate") {
    sweep.kind = SweepKind::kRate;
  } else if (parts[0] == "batch") {
    sweep.kind = SweepKind::kBatch;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--sweep: unknown kind '", parts[0], "' (concurrency, rate or batch)"));
  }
  for (absl::string_view v : absl::StrSplit(parts[1], ',')) {
    double value = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(v), &value) || !(value > 0) ||
        !std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sweep: '", v, "' is not a positive number"));
    }
    if (sweep.kind != SweepKind::kRate && !IsWholeNumber(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sweep: ", parts[0], " values are whole numbers, not '", v, "'"));
    }
    sweep.values.push_back(value);
  }
  if (sweep.values.size() > kMaxSweepPoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sweep: at most ", kMaxSweepPoints, " values"));
  }
  return sweep;
}

absl::StatusOr<Api> ParseApi(absl::string_view text) {
  if (text == "unary") return Api::kUnary;
  if (text == "stream") return Api::kStream;
  return absl::InvalidArgumentError(absl::StrCat("--api: '", text, "' is not unary or stream"));
}

absl::StatusOr<Loop> ParseLoop(absl::string_view text) {
  if (text == "closed") return Loop::kClosed;
  if (text == "open") return Loop::kOpen;
  return absl::InvalidArgumentError(absl::StrCat("--loop: '", text, "' is not closed or open"));
}

absl::string_view ApiName(Api api) { return api == Api::kUnary ? "unary" : "stream"; }
absl::string_view LoopName(Loop loop) { return loop == Loop::kClosed ? "closed" : "open"; }

bool IsLoopbackTarget(absl::string_view target) {
  absl::string_view host;
  absl::string_view port;
  if (absl::ConsumePrefix(&target, "[")) {
    const size_t close = target.find(']');
    if (close == absl::string_view::npos || close + 1 >= target.size() ||
        target[close + 1] != ':') {
      return false;
    }
    host = target.substr(0, close);
    port = target.substr(close + 2);
  } else {
    const size_t colon = target.rfind(':');
    if (colon == absl::string_view::npos) return false;
    host = target.substr(0, colon);
    port = target.substr(colon + 1);
  }
  int port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535) {
    return false;
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8: four decimal octets, the first 127.
  const std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4 || octets[0] != "127") return false;
  for (absl::string_view o : octets) {
    int v = 0;
    if (o.empty() || o.size() > 3 || !absl::SimpleAtoi(o, &v) || v < 0 || v > 255) return false;
  }
  return true;
}

absl::Status ValidateOptions(const LoadTestOptions& o) {
  auto bad = [](absl::string_view flag, auto... why) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why...));
  };
  if (!IsLoopbackTarget(o.target)) {
    return bad("target", "'", o.target,
               "' is not a loopback HOST:PORT (127.0.0.1, localhost or [::1]); the load tester "
               "only talks to a server on this machine");
  }
  if (o.concurrency < 1 || o.concurrency > kMaxConcurrency) {
    return bad("concurrency", "must be in [1, ", kMaxConcurrency, "], not ", o.concurrency);
  }
  if (!(o.rate > 0) || o.rate > kMaxRate) {
    return bad("rate", "must be in (0, ", kMaxRate, "] requests/s, not ", o.rate);
  }
  if (o.max_inflight < 1 || o.max_inflight > 65536) {
    return bad("max_inflight", "must be in [1, 65536], not ", o.max_inflight);
  }
  if (o.duration < absl::ZeroDuration()) return bad("duration", "must not be negative");
  if (o.requests < 0) return bad("requests", "must not be negative");
  if (o.duration == absl::ZeroDuration() && o.requests == 0) {
    return bad("duration", "a run needs a bound: set --duration or --requests (or both)");
  }
  if (o.warmup < absl::ZeroDuration()) return bad("warmup", "must not be negative");
  if (o.timeout <= absl::ZeroDuration()) return bad("timeout", "must be positive");
  if (o.texts_file.empty() && (o.synthetic_words < 1 || o.synthetic_words > 1000)) {
    return bad("synthetic_words", "must be in [1, 1000], not ", o.synthetic_words);
  }
  if (o.texts_per_request < 1 || o.texts_per_request > kMaxTextsPerRequest) {
    return bad("texts_per_request", "must be in [1, ", kMaxTextsPerRequest, "], not ",
               o.texts_per_request);
  }
  if (o.beam_size < 0) return bad("beam_size", "must not be negative");
  if (o.max_output_tokens < 0) return bad("max_output_tokens", "must not be negative");
  if (o.api == Api::kStream) {
    if (o.texts_per_request != 1) {
      return bad("texts_per_request",
                 "TranslateStream sends one text per request; use "
                 "--api=unary for batches");
    }
    if (o.sweep.kind == SweepKind::kBatch) {
      return bad("sweep", "a batch sweep needs --api=unary (a stream carries one text)");
    }
    if (o.beam_size > 1) return bad("beam_size", "TranslateStream decodes greedily only");
  }
  if (o.sweep.kind == SweepKind::kConcurrency && o.loop != Loop::kClosed) {
    return bad("sweep", "a concurrency sweep needs --loop=closed");
  }
  if (o.sweep.kind == SweepKind::kRate && o.loop != Loop::kOpen) {
    return bad("sweep", "a rate sweep needs --loop=open");
  }
  for (double v : o.sweep.values) {
    if (o.sweep.kind == SweepKind::kConcurrency && v > kMaxConcurrency) {
      return bad("sweep", "concurrency ", v, " is above ", kMaxConcurrency);
    }
    if (o.sweep.kind == SweepKind::kBatch && v > kMaxTextsPerRequest) {
      return bad("sweep", "batch ", v, " is above ", kMaxTextsPerRequest);
    }
    if (o.sweep.kind == SweepKind::kRate && v > kMaxRate) {
      return bad("sweep", "rate ", v, " is above ", kMaxRate);
    }
  }
  if (!o.plot_path.empty() && o.sweep.kind == SweepKind::kNone) {
    return bad("plot", "a plot shows a sweep: add --sweep");
  }
  return absl::OkStatus();
}

}  // namespace taskmoe::loadtest
