// HttpGateway: the translation API as HTTP/JSON for callers without gRPC (curl, browsers,
// scripts), on its own port, served by civetweb (the library the metrics endpoint already
// uses). Requests become the API's messages (http_json.h) and go through TranslationCore like
// gRPC calls: the same validation, limits, queue, metrics and messages; statuses map to HTTP
// codes. Endpoints (docs/api.md "HTTP/JSON"):
//   POST /v1/translate         {"task", "texts", "options", "request_id"} -> translations
//   POST /v1/translate:stream  {"task", "text", ...} -> NDJSON, one line per token, then done
//   GET  /v1/tasks, /v1/tasks/{task}
//   GET  /healthz (the process answers), /readyz[?task=ID] (200 SERVING / 503 NOT_SERVING)
//   GET  /  the playground page (playground.h), when enabled
// The x-taskmoe-task header is checked as on gRPC; x-taskmoe-deadline-ms sets a deadline.
#ifndef TASKMOE_SERVER_HTTP_GATEWAY_H_
#define TASKMOE_SERVER_HTTP_GATEWAY_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "server/translation_core.h"

struct mg_context;
struct mg_connection;

namespace taskmoe::server {

struct HttpGatewayOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // 0: any free port
  // Calls served at once: each holds one of civetweb's threads while it waits for its batch;
  // further connections wait in the listen queue.
  int threads = 32;
  // Largest request body accepted (bytes); larger ones get 413 RESOURCE_EXHAUSTED.
  int max_request_bytes = 4 << 20;
  bool playground = false;
};

class HttpGateway {
 public:
  // Binds and starts serving; UNAVAILABLE naming the address when it cannot listen.
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(const HttpGatewayOptions& options,
                                                            TranslationCore& core,
                                                            Metrics& metrics);
  // Waits (up to kStopWait) for the requests being answered to finish writing their replies,
  // then stops civetweb. Call it once TranslationCore has drained: civetweb drops whatever a
  // handler writes after it is told to stop, so a reply cut off here would reach the client
  // as a broken response.
  ~HttpGateway();
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  int port() const { return port_; }

 private:
  // Replies still being written after the calls drained (a slow client's socket) get this long.
  static constexpr absl::Duration kStopWait = absl::Seconds(5);

  HttpGateway(const HttpGatewayOptions& options, TranslationCore& core, Metrics& metrics)
      : options_(options), core_(core), metrics_(metrics) {}
  static int HandleRequest(mg_connection* connection, void* gateway);
  // Serves one request; returns the HTTP status sent and sets `route` (the metrics label).
  int Serve(mg_connection* connection, absl::string_view& route);

  struct Stopper {
    void operator()(mg_context* context) const;  // mg_stop
  };

  const HttpGatewayOptions options_;
  TranslationCore& core_;
  Metrics& metrics_;
  std::unique_ptr<mg_context, Stopper> context_;
  int port_ = -1;
  // Requests in a handler (reading, waiting for the core, or writing the reply).
  std::mutex active_mu_;
  std::condition_variable idle_;
  int active_ = 0;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_HTTP_GATEWAY_H_
