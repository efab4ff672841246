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

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  // Stops listening and waits for the calls being served (TranslationCore drains them first).
  ~HttpGateway() = default;
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  int port() const { return port_; }

 private:
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
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_HTTP_GATEWAY_H_
