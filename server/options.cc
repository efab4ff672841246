// Validation of ServerOptions.
#include "server/options.h"

#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "models/task_model.h"

namespace taskmoe::server {
namespace {

absl::Status AtLeast(const char* flag, int64_t value, int64_t minimum) {
  if (value >= minimum) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " must be >= ", minimum, ", got ", value));
}

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& o) {
  if (o.model_repository.empty()) {
    return absl::InvalidArgumentError("--model_repository is required");
  }
  std::set<std::string> tasks;
  for (const std::string& task : o.tasks) {
    if (!models::IsValidTaskName(task)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tasks: '", absl::CHexEscape(task),
                       "' is not a task id (letters, digits, '-', '_' and '.')"));
    }
    if (!tasks.insert(task).second) {
      return absl::InvalidArgumentError(absl::StrCat("--tasks: ", task, " is listed twice"));
    }
  }
  if (o.port < 0 || o.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port must be in [0, 65535], got ", o.port));
  }
  if (o.metrics_port < -1 || o.metrics_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_port must be -1 (off) or in [0, 65535], got ", o.metrics_port));
  }
  if (o.admin_port < -1 || o.admin_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--admin_port must be -1 (the gRPC port) or in [0, 65535], got ", o.admin_port));
  }
  if (o.admin_port >= 0 && !o.enable_admin) {
    return absl::InvalidArgumentError("--admin_port is set but --enable_admin is not");
  }
  if (o.http_port < -1 || o.http_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http_port must be -1 (off) or in [0, 65535], got ", o.http_port));
  }
  if (o.playground && o.http_port < 0) {
    return absl::InvalidArgumentError("--playground is served on --http_port, which is off");
  }
  if (o.http_port >= 0 && !o.tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--http_port serves plaintext HTTP, which would bypass --tls_cert_file; terminate TLS "
        "in a proxy in front of the HTTP port, or leave --http_port off");
  }
  if (o.tls.cert_file.empty() != o.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together: give both or neither");
  }
  if (!o.tls.client_ca_file.empty() && o.tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file (mutual TLS) needs --tls_cert_file and --tls_key_file");
  }
  const BatchingOptions& b = o.batching;
  const RequestLimits& l = o.limits;
  for (absl::Status s :
       {AtLeast("threads", o.threads, 0), AtLeast("max_concurrent_rpcs", o.max_concurrent_rpcs, 4),
        AtLeast("http_threads", o.http_threads, 1),
        AtLeast("max_batch_sentences", b.max_batch_sentences, 1),
        AtLeast("max_batch_tokens", b.max_batch_tokens, 1),
        AtLeast("max_admit_tokens", b.max_admit_tokens, 1),
        AtLeast("max_queue_sentences", b.max_queue_sentences, 1), AtLeast("workers", b.workers, 1),
        AtLeast("max_texts_per_request", l.max_texts_per_request, 1),
        AtLeast("max_text_chars", l.max_text_chars, 1),
        AtLeast("max_output_tokens", l.max_output_tokens, 1),
        AtLeast("max_beam_size", l.max_beam_size, 1),
        AtLeast("max_output_offset", l.max_output_offset, 0),
        AtLeast("max_request_bytes", o.max_request_bytes, 1024),
        AtLeast("max_concurrent_streams", o.max_concurrent_streams, 1),
        AtLeast("max_connections", o.max_connections, 0)}) {
    if (!s.ok()) return s;
  }
  if (!(l.max_output_ratio >= 0.0f && l.max_output_ratio <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_output_ratio must be in [0, 100] (0: off), got ", l.max_output_ratio));
  }
  if (b.prefill_first && b.mode != BatchingOptions::Mode::kContinuous) {
    return absl::InvalidArgumentError(
        "--prefill_first needs --batching=continuous (per-task batches start together)");
  }
  if (b.max_queue_sentences > b.max_total_queue_sentences) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_queue_sentences (", b.max_queue_sentences,
        ") must not exceed --max_total_queue_sentences (", b.max_total_queue_sentences, ")"));
  }
  if (l.max_texts_per_request > b.max_queue_sentences) {
    // Otherwise a request within limits could never be queued.
    return absl::InvalidArgumentError(
        absl::StrCat("--max_texts_per_request (", l.max_texts_per_request,
                     ") must not exceed --max_queue_sentences (", b.max_queue_sentences, ")"));
  }
  if (b.max_queue_delay < absl::ZeroDuration() || b.step_delay < absl::ZeroDuration() ||
      o.grace_period < absl::ZeroDuration() || o.malloc_trim_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--max_queue_delay_ms, --grace_period_s, --malloc_trim_interval_ms and "
        "--debug_step_delay_ms must be >= 0");
  }
  if (o.max_connection_idle < absl::ZeroDuration() || o.max_connection_age < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--max_connection_idle_s and --max_connection_age_s must be "
        ">= 0 (0: never)");
  }
  if (o.handshake_timeout < absl::Seconds(1) || o.keepalive_time < absl::Seconds(1) ||
      o.keepalive_timeout < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--handshake_timeout_s, --keepalive_time_s and --keepalive_timeout_s must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace taskmoe::server
