// ServerOptions: every setting of taskmoe-server in one value, filled from the command line
// (flags.h) or by tests, and checked once before anything starts.
#ifndef TASKMOE_SERVER_OPTIONS_H_
#define TASKMOE_SERVER_OPTIONS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "models/compute.h"

namespace taskmoe::server {

// How a task's queue is cut into batches (the dynamic batcher; docs/api.md "Batching").
struct BatchingOptions {
  // How greedy sentences are batched (docs/api.md "Batching"). kContinuous: each worker runs
  // one batch that sentences of every task (of models that can share a batch) join between two
  // decoding steps and leave as they finish. kPerTask: batches of one task, each decoded to
  // its end. Beam search always decodes in per-task batches.
  enum class Mode { kContinuous, kPerTask };
  Mode mode = Mode::kContinuous;
  int max_batch_sentences = 32;  // sentences decoded together
  int max_batch_tokens = 4096;   // source tokens (tags and EOS included) in one batch
  // How long the oldest queued sentence may wait for more to join before its batch runs
  // anyway. A full batch runs at once.
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  int max_queue_sentences = 256;  // per task; beyond it a request is RESOURCE_EXHAUSTED
  // All tasks' queues together: many tasks each within its bound must not queue without end.
  int max_total_queue_sentences = 1024;
  int workers = 1;  // threads decoding batches, shared by all tasks
  // Continuous batching: source tokens a running batch admits between two steps (the first
  // sentence always joins), so that encoding newcomers does not stall the rows decoding.
  int max_admit_tokens = 512;
  // Continuous batching: greedy newcomers to a running batch are encoded and take their first
  // decoding step by themselves before they join (ContinuousBatch::AdmitWithFirstStep), so
  // their first token does not wait for a step of the whole batch; the running rows wait for
  // that extra step. Newcomers are also taken while a step waits between two decoder layers
  // (ContinuousBatch::AdmitDuringStep), so that they wait for a layer of the running step,
  // not all of it; the step's admission budget (max_admit_tokens) covers both.
  bool prefill_first = false;
  // The same, but only in mixed batches: for a greedy newcomer joining a running batch with
  // rows of another task than its own, and between the layers of a step over more than one
  // task. A first step apart reads the newcomer's weights (the shared ones and its own) once
  // more: in a batch of its own task alone that is a whole step's weight reading for a token
  // the next step would have given, in a mixed batch, whose steps also read every running
  // task's own weights, a smaller part of a step. Off by default since stop 65: on the demo
  // repository's real test sentences (short UI strings, several newcomers a step) under 16
  // tasks mixed at concurrency 32 it cost 0.82-0.86x plain continuous batching's tokens/s and
  // 1.25-1.30x its p99, for a first token at 0.65-0.70x its time (docs/benchmarks.md, stop
  // 65); on longer synthetic texts (stop 61) a third of the time at 0.81-0.99x the tokens/s.
  bool prefill_first_when_mixed = false;
  // Tests and benchmarks only: never stop at EOS (decode max_output_tokens tokens), and sleep
  // this long before each decoding step. Both make decode time independent of the weights.
  bool ignore_eos = false;
  absl::Duration step_delay = absl::ZeroDuration();
};

// Per-request limits (docs/api.md "Limits").
struct RequestLimits {
  int max_texts_per_request = 64;
  int max_text_chars = 2000;    // Unicode code points per text
  int max_output_tokens = 256;  // cap and default of DecodeOptions.max_output_tokens
  // Per-sentence output limit floor(ratio * source tokens + offset), as taskmoe-translate and
  // the trainer decode; 0 turns it off. It stops degenerate repetitions early and keeps a
  // sentence's translation independent of the batch it lands in.
  float max_output_ratio = 1.5f;
  int max_output_offset = 10;
  int max_beam_size = 8;
  int max_request_id_bytes = 128;
};

// Transport security of the gRPC ports (docs/api.md "Security"). No certificate: plaintext.
struct TlsOptions {
  std::string cert_file;       // PEM certificate chain of the server
  std::string key_file;        // PEM private key of that certificate
  std::string client_ca_file;  // PEM CA bundle: when set, clients must present a certificate
                               // it signed (mutual TLS)
};

struct ServerOptions {
  std::string model_repository;
  // Serve only these task ids of the repository (a shard of a shared repository); empty: all.
  std::vector<std::string> tasks;
  std::string host = "0.0.0.0";
  int port = 8500;          // 0: any free port (see port_file)
  int metrics_port = 9464;  // 0: any free port; -1: no metrics endpoint
  std::string metrics_host = "0.0.0.0";
  // When set, "grpc_port=N\nmetrics_port=M\n" (and "admin_port=A\n" with its own port) is
  // written here once the ports are bound.
  std::string port_file;
  models::Precision precision = models::Precision::kF32;
  // Whether one task that fails to load stops the start; otherwise it is reported as not
  // ready (health, ListTasks, taskmoe_task_ready) and the others are served.
  bool require_all_tasks = false;
  // The HTTP/JSON gateway (http_gateway.h): -1 off; 0 any free port. Plaintext only, so it
  // cannot be combined with TLS (terminate TLS in a proxy in front of it instead).
  int http_port = -1;
  std::string http_host = "0.0.0.0";
  int http_threads = 32;    // HTTP calls served at once
  bool playground = false;  // the playground page at / of the HTTP port
  int threads = 0;          // compute threads per batch; 0: OMP_NUM_THREADS or all cores
  int max_concurrent_rpcs = 512;
  bool enable_admin = false;
  // Where AdminService is served when enable_admin: -1 on the gRPC port with the translation
  // API; otherwise its own port (0: any free port) on admin_host, so that a network policy
  // or the loopback address can keep it private.
  int admin_port = -1;
  std::string admin_host = "127.0.0.1";
  TlsOptions tls;
  // Largest request message accepted (bytes); larger ones fail with RESOURCE_EXHAUSTED before
  // they are parsed.
  int max_request_bytes = 4 << 20;
  // Concurrent calls (HTTP/2 streams) per client connection.
  int max_concurrent_streams = 100;
  // Connections to the gRPC port open at once (server/listener.h); beyond it, and whenever
  // fewer than Listener::kFreeFds file descriptors are left, a new one is closed at once.
  // 0: no cap but the descriptors.
  int max_connections = 4096;
  // A connection with no call for this long is closed (GOAWAY); zero: never.
  absl::Duration max_connection_idle = absl::Minutes(5);
  // A connection is closed gracefully after this long, so that clients spread over new
  // replicas; zero: never.
  absl::Duration max_connection_age = absl::ZeroDuration();
  // With no data on a connection for this long the server pings the client, and closes the
  // connection when no answer comes within keepalive_timeout: a client that vanished (its
  // host crashed, a NAT dropped it) would otherwise hold a descriptor until the idle limit.
  absl::Duration keepalive_time = absl::Minutes(2);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // A connection that has not finished its TLS and HTTP/2 handshake by then is closed (gRPC's
  // default is 120 s: a flood of silent connections would hold descriptors that long).
  absl::Duration handshake_timeout = absl::Seconds(10);
  absl::Duration grace_period = absl::Seconds(30);
  // How often memory the allocator holds unused goes back to the system (server/memory_trimmer.h);
  // zero: never.
  absl::Duration malloc_trim_interval = absl::Seconds(5);
  BatchingOptions batching;
  RequestLimits limits;
};

// Checks ranges and combinations; the message names the flag.
absl::Status ValidateServerOptions(const ServerOptions& options);

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_OPTIONS_H_
