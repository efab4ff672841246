// Flag definitions of taskmoe-server. Defaults come from ServerOptions so that tests that
// build options in code and the binary agree.
#include "server/flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/log.h"

namespace {
const taskmoe::server::ServerOptions kDefaults;
}  // namespace

ABSL_FLAG(std::string, model_repository, "",
          "Model repository: one subdirectory per task (named by its task id, e.g. en-de), "
          "each an extracted subnetwork (config.json, model.safetensors, spm.model). Required.");
ABSL_FLAG(std::string, tasks, "",
          "Serve only these task ids of --model_repository (comma-separated, e.g. "
          "en-de,en-fr: a shard of a repository shared with other servers); every one must be "
          "in it. Default: every task");
ABSL_FLAG(std::string, host, kDefaults.host, "Address the gRPC server listens on");
ABSL_FLAG(int, port, kDefaults.port, "gRPC port (0: any free port; see --port_file)");
ABSL_FLAG(std::string, metrics_host, kDefaults.metrics_host,
          "Address of the Prometheus metrics endpoint");
ABSL_FLAG(int, metrics_port, kDefaults.metrics_port,
          "Port of the Prometheus metrics endpoint, served at /metrics (0: any free port, -1: "
          "off)");
ABSL_FLAG(int, http_port, kDefaults.http_port,
          "Port of the HTTP/JSON API (docs/api.md, HTTP/JSON; 0: any free port, -1: off). "
          "Plaintext: not with --tls_cert_file");
ABSL_FLAG(std::string, http_host, kDefaults.http_host, "Address of --http_port");
ABSL_FLAG(int, http_threads, kDefaults.http_threads,
          "HTTP calls served at once (each holds a thread while it waits for its batch)");
ABSL_FLAG(bool, playground, kDefaults.playground,
          "Serve the playground page (pick a task, type, see the translation stream in) at / "
          "of --http_port");
ABSL_FLAG(std::string, port_file, "",
          "If set, write 'grpc_port=N' and 'metrics_port=M' lines (and 'admin_port=A' with "
          "--admin_port, 'http_port=H' with --http_port) here once the ports are bound");
ABSL_FLAG(std::string, precision, "f32", "Weight precision: f32, bf16 or int8");
ABSL_FLAG(int, threads, kDefaults.threads,
          "Compute threads per batch (0: OMP_NUM_THREADS, else all cores)");
ABSL_FLAG(int, workers, kDefaults.batching.workers,
          "Batches decoded at the same time (threads shared by all tasks). With N workers, "
          "use --threads about cores / N");
ABSL_FLAG(std::string, batching, "continuous",
          "How sentences are batched: continuous (one running batch per worker that "
          "sentences of every task join between decoding steps) or per_task (batches of one "
          "task, each decoded to its end)");
ABSL_FLAG(bool, prefill_first, kDefaults.batching.prefill_first,
          "Continuous batching: greedy newcomers take their first step by themselves before "
          "joining the running batch, taken between two decoder layers of a running step too "
          "(shorter time to first token, fewer tokens/s)");
ABSL_FLAG(bool, prefill_first_when_mixed, kDefaults.batching.prefill_first_when_mixed,
          "Continuous batching: as --prefill_first, but in mixed batches only: for newcomers "
          "whose task is not the only one of the running rows, and between the layers of steps "
          "over several tasks (an earlier first token under a mix of tasks, for tokens/s and "
          "tail latency; --prefill_first does it always)");
ABSL_FLAG(int, max_admit_tokens, kDefaults.batching.max_admit_tokens,
          "Continuous batching: source tokens a running batch admits per step (at its start "
          "and between its layers together)");
ABSL_FLAG(int, max_batch_sentences, kDefaults.batching.max_batch_sentences,
          "Most sentences in one batch");
ABSL_FLAG(int, max_batch_tokens, kDefaults.batching.max_batch_tokens,
          "Most source tokens in one batch (a longer single sentence still runs alone)");
ABSL_FLAG(int, max_queue_delay_ms, absl::ToInt64Milliseconds(kDefaults.batching.max_queue_delay),
          "Longest time the oldest queued sentence waits for its batch to fill");
ABSL_FLAG(int, max_queue_sentences, kDefaults.batching.max_queue_sentences,
          "Sentences a task's queue holds; more is refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_total_queue_sentences, kDefaults.batching.max_total_queue_sentences,
          "Sentences all tasks' queues hold together; more is refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_texts_per_request, kDefaults.limits.max_texts_per_request,
          "Most texts in one Translate request");
ABSL_FLAG(int, max_text_chars, kDefaults.limits.max_text_chars,
          "Most Unicode characters in one text");
ABSL_FLAG(int, max_output_tokens, kDefaults.limits.max_output_tokens,
          "Default and upper bound of a request's max_output_tokens");
ABSL_FLAG(double, max_output_ratio, kDefaults.limits.max_output_ratio,
          "Per-sentence output limit: at most ratio * source tokens + --max_output_offset "
          "tokens (source tag and EOS counted); 0 turns it off");
ABSL_FLAG(int, max_output_offset, kDefaults.limits.max_output_offset, "See --max_output_ratio");
ABSL_FLAG(int, max_beam_size, kDefaults.limits.max_beam_size, "Largest beam size accepted");
ABSL_FLAG(int, max_concurrent_rpcs, kDefaults.max_concurrent_rpcs,
          "Translate and TranslateStream calls in flight, and threads serving the other RPCs; "
          "calls beyond them are refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, require_all_tasks, kDefaults.require_all_tasks,
          "Refuse to start when any task fails to load; by default such a task is reported as "
          "not ready (health, ListTasks, taskmoe_task_ready) and the others are served");
ABSL_FLAG(bool, enable_admin, kDefaults.enable_admin,
          "Serve taskmoe.v1.AdminService (ReloadTask) on the gRPC port");
ABSL_FLAG(int, admin_port, kDefaults.admin_port,
          "With --enable_admin: serve AdminService on this port of --admin_host instead of the "
          "gRPC port (0: any free port; -1: on the gRPC port)");
ABSL_FLAG(std::string, admin_host, kDefaults.admin_host,
          "Address of --admin_port (default loopback only)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key_file); empty: plaintext");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: require client certificates signed by it (mutual TLS)");
ABSL_FLAG(int, max_request_bytes, kDefaults.max_request_bytes,
          "Largest request message in bytes; larger ones are refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_concurrent_streams, kDefaults.max_concurrent_streams,
          "Concurrent calls per client connection");
ABSL_FLAG(int, max_connections, kDefaults.max_connections,
          "Connections to the gRPC port open at once; beyond it (and whenever the process is "
          "short of file descriptors) new ones are closed at once (0: no cap but descriptors)");
ABSL_FLAG(int, max_connection_idle_s,
          static_cast<int>(absl::ToInt64Seconds(kDefaults.max_connection_idle)),
          "Close a connection that has had no call for this long (0: never)");
ABSL_FLAG(int, max_connection_age_s,
          static_cast<int>(absl::ToInt64Seconds(kDefaults.max_connection_age)),
          "Close every connection gracefully after this long, so clients rebalance over "
          "replicas (0: never)");
ABSL_FLAG(int, handshake_timeout_s,
          static_cast<int>(absl::ToInt64Seconds(kDefaults.handshake_timeout)),
          "Close a connection that has not completed its TLS and HTTP/2 handshake by then");
ABSL_FLAG(int, keepalive_time_s, static_cast<int>(absl::ToInt64Seconds(kDefaults.keepalive_time)),
          "Ping a client after this long without data on its connection...");
ABSL_FLAG(int, keepalive_timeout_s,
          static_cast<int>(absl::ToInt64Seconds(kDefaults.keepalive_timeout)),
          "...and close the connection when the ping is not answered within this");
ABSL_FLAG(int, grace_period_s, static_cast<int>(absl::ToInt64Seconds(kDefaults.grace_period)),
          "On SIGTERM/SIGINT: how long in-flight requests may take to finish before they are "
          "cancelled");
ABSL_FLAG(int, malloc_trim_interval_ms,
          static_cast<int>(absl::ToInt64Milliseconds(kDefaults.malloc_trim_interval)),
          "How often freed memory the allocator keeps is returned to the system (0: never)");
ABSL_FLAG(std::string, log_level, "info",
          "debug (adds one line per request), info (one per event), warning or error");
ABSL_FLAG(std::string, log_format, "text",
          "text: '<time> <LEVEL> <message> key=value ...' lines; json: one JSON object per line "
          "(time, level, msg and the same fields)");
ABSL_FLAG(bool, debug_ignore_eos, false,
          "Tests and benchmarks only: never stop at EOS; every sentence decodes "
          "max_output_tokens tokens");
ABSL_FLAG(int, debug_step_delay_ms, 0,
          "Tests only: sleep this long before every decoding step (a slow model on demand)");

namespace taskmoe::server {

absl::StatusOr<ServerOptions> ServerOptionsFromFlags() {
  absl::StatusOr<LogLevel> level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return level.status();
  SetLogLevel(*level);
  absl::StatusOr<LogFormat> format = ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) return format.status();
  SetLogFormat(*format);
  ServerOptions o;
  o.model_repository = absl::GetFlag(FLAGS_model_repository);
  for (absl::string_view task :
       absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipWhitespace())) {
    o.tasks.emplace_back(absl::StripAsciiWhitespace(task));
  }
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.port_file = absl::GetFlag(FLAGS_port_file);
  o.http_port = absl::GetFlag(FLAGS_http_port);
  o.http_host = absl::GetFlag(FLAGS_http_host);
  o.http_threads = absl::GetFlag(FLAGS_http_threads);
  o.playground = absl::GetFlag(FLAGS_playground);
  absl::StatusOr<models::Precision> precision =
      models::ParsePrecision(absl::GetFlag(FLAGS_precision));
  if (!precision.ok()) return precision.status();
  o.precision = *precision;
  o.threads = absl::GetFlag(FLAGS_threads);
  o.max_concurrent_rpcs = absl::GetFlag(FLAGS_max_concurrent_rpcs);
  o.require_all_tasks = absl::GetFlag(FLAGS_require_all_tasks);
  o.enable_admin = absl::GetFlag(FLAGS_enable_admin);
  o.admin_port = absl::GetFlag(FLAGS_admin_port);
  o.admin_host = absl::GetFlag(FLAGS_admin_host);
  o.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  o.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  o.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  o.max_connections = absl::GetFlag(FLAGS_max_connections);
  o.max_connection_idle = absl::Seconds(absl::GetFlag(FLAGS_max_connection_idle_s));
  o.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_s));
  o.handshake_timeout = absl::Seconds(absl::GetFlag(FLAGS_handshake_timeout_s));
  o.keepalive_time = absl::Seconds(absl::GetFlag(FLAGS_keepalive_time_s));
  o.keepalive_timeout = absl::Seconds(absl::GetFlag(FLAGS_keepalive_timeout_s));
  o.grace_period = absl::Seconds(absl::GetFlag(FLAGS_grace_period_s));
  o.malloc_trim_interval = absl::Milliseconds(absl::GetFlag(FLAGS_malloc_trim_interval_ms));
  o.batching.workers = absl::GetFlag(FLAGS_workers);
  const std::string batching = absl::GetFlag(FLAGS_batching);
  if (batching == "continuous") {
    o.batching.mode = BatchingOptions::Mode::kContinuous;
  } else if (batching == "per_task") {
    o.batching.mode = BatchingOptions::Mode::kPerTask;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--batching: '", batching, "' is neither continuous nor per_task"));
  }
  o.batching.max_admit_tokens = absl::GetFlag(FLAGS_max_admit_tokens);
  o.batching.prefill_first = absl::GetFlag(FLAGS_prefill_first);
  o.batching.prefill_first_when_mixed = absl::GetFlag(FLAGS_prefill_first_when_mixed);
  o.batching.max_batch_sentences = absl::GetFlag(FLAGS_max_batch_sentences);
  o.batching.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  o.batching.max_queue_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_queue_delay_ms));
  o.batching.max_queue_sentences = absl::GetFlag(FLAGS_max_queue_sentences);
  o.batching.max_total_queue_sentences = absl::GetFlag(FLAGS_max_total_queue_sentences);
  o.batching.ignore_eos = absl::GetFlag(FLAGS_debug_ignore_eos);
  o.batching.step_delay = absl::Milliseconds(absl::GetFlag(FLAGS_debug_step_delay_ms));
  o.limits.max_texts_per_request = absl::GetFlag(FLAGS_max_texts_per_request);
  o.limits.max_text_chars = absl::GetFlag(FLAGS_max_text_chars);
  o.limits.max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens);
  o.limits.max_beam_size = absl::GetFlag(FLAGS_max_beam_size);
  o.limits.max_output_ratio = static_cast<float>(absl::GetFlag(FLAGS_max_output_ratio));
  o.limits.max_output_offset = absl::GetFlag(FLAGS_max_output_offset);
  if (absl::Status s = ValidateServerOptions(o); !s.ok()) return s;
  return o;
}

}  // namespace taskmoe::server
