// HttpGateway: civetweb's requests to TranslationCore and back.
#include "server/http_gateway.h"

#include <civetweb.h>
#include <strings.h>

#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "server/http_json.h"
#include "server/log.h"
#include "server/playground.h"
#include "server/routing_header.h"

namespace taskmoe::server {
namespace {

// A relative deadline in milliseconds, as gRPC's grpc-timeout is relative.
constexpr char kDeadlineHeader[] = "x-taskmoe-deadline-ms";
constexpr char kJson[] = "application/json";

void SendResponse(mg_connection* connection, int status, const char* content_type,
                  absl::string_view body) {
  mg_response_header_start(connection, status);
  mg_response_header_add(connection, "Content-Type", content_type, -1);
  mg_response_header_add(connection, "Content-Length", absl::StrCat(body.size()).c_str(), -1);
  mg_response_header_add(connection, "Cache-Control", "no-store", -1);
  mg_response_header_add(connection, "X-Content-Type-Options", "nosniff", -1);
  mg_response_header_send(connection);
  mg_write(connection, body.data(), body.size());
}

int SendJson(mg_connection* connection, int status, absl::string_view json) {
  SendResponse(connection, status, kJson, json);
  return status;
}

int SendError(mg_connection* connection, const absl::Status& status) {
  return SendJson(connection, HttpStatusOf(status.code()), ErrorJson(status));
}

int SendMethodNotAllowed(mg_connection* connection, const char* allowed) {
  const std::string body = ErrorJson(absl::UnimplementedError(
      absl::StrCat("method ", mg_get_request_info(connection)->request_method,
                   " is not allowed here; use ", allowed)));
  mg_response_header_start(connection, 405);
  mg_response_header_add(connection, "Allow", allowed, -1);
  mg_response_header_add(connection, "Content-Type", kJson, -1);
  mg_response_header_add(connection, "Content-Length", absl::StrCat(body.size()).c_str(), -1);
  mg_response_header_send(connection);
  mg_write(connection, body.data(), body.size());
  return 405;
}

// The whole body, refused beyond `max_bytes` before more is read when the length is known.
absl::StatusOr<std::string> ReadBody(mg_connection* connection, int max_bytes) {
  const long long length = mg_get_request_info(connection)->content_length;
  const auto too_big = [max_bytes](long long bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("body: ", bytes,
                                                     " bytes exceed the server's limit of ",
                                                     max_bytes, " (--max_request_bytes)"));
  };
  if (length > max_bytes) return too_big(length);
  std::string body;
  if (length > 0) body.reserve(static_cast<size_t>(length));
  char buffer[16384];
  for (int n; (n = mg_read(connection, buffer, sizeof(buffer))) > 0;) {
    body.append(buffer, static_cast<size_t>(n));
    if (body.size() > static_cast<size_t>(max_bytes)) return too_big(body.size());
  }
  return body;
}

// The call's deadline and routing header from its HTTP headers.
absl::StatusOr<CallContext> CallContextOf(mg_connection* connection) {
  CallContext call;
  const mg_request_info* info = mg_get_request_info(connection);
  for (int i = 0; i < info->num_headers; ++i) {
    const char* name = info->http_headers[i].name;
    const absl::string_view value = info->http_headers[i].value;
    if (strcasecmp(name, kTaskRoutingHeader) == 0) {
      call.routing_header.emplace_back(value);
    } else if (strcasecmp(name, kDeadlineHeader) == 0) {
      int64_t milliseconds = 0;
      if (!absl::SimpleAtoi(value, &milliseconds) || milliseconds <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(kDeadlineHeader, " header: '", value.substr(0, 32),
                         "' is not a positive whole number of milliseconds"));
      }
      call.deadline = std::min(call.deadline, absl::Now() + absl::Milliseconds(milliseconds));
    }
  }
  return call;
}

// The value of `name` in a query string ("" when absent).
std::string QueryValue(const mg_request_info& info, const char* name) {
  if (info.query_string == nullptr) return "";
  char value[256];
  const int n =
      mg_get_var(info.query_string, strlen(info.query_string), name, value, sizeof(value));
  return n > 0 ? std::string(value, static_cast<size_t>(n)) : "";
}

}  // namespace

void HttpGateway::Stopper::operator()(mg_context* context) const {
  mg_stop(context);
  mg_exit_library();
}

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(const HttpGatewayOptions& options,
                                                                TranslationCore& core,
                                                                Metrics& metrics) {
  std::unique_ptr<HttpGateway> self(new HttpGateway(options, core, metrics));
  mg_init_library(0);
  const std::string address = absl::StrCat(options.host, ":", options.port);
  const std::string threads = absl::StrCat(options.threads);
  const char* civetweb_options[] = {"listening_ports", address.c_str(), "num_threads",
                                    threads.c_str(),
                                    // civetweb holds a thread per open connection, idle ones too: a
                                    // short keep-alive hands it back to other callers soon.
                                    "enable_keep_alive", "yes", "keep_alive_timeout_ms", "2000",
                                    // Headers and body go out in separate writes: without
                                    // this, Nagle's algorithm holds the body back until the
                                    // client's delayed ACK (40 ms).
                                    "tcp_nodelay", "1",
                                    // Reads and writes that stall this long end the
                                    // connection: a client trickling its request in holds a
                                    // thread, so it gets seconds, not minutes.
                                    "request_timeout_ms", "10000", nullptr};
  mg_callbacks callbacks{};
  // civetweb prints its errors itself; ours go through the server's log.
  callbacks.log_message = [](const mg_connection*, const char* message) {
    Log(LogLevel::kWarning, absl::StrCat("http: ", message));
    return 1;
  };
  mg_context* context = mg_start(&callbacks, nullptr, civetweb_options);
  if (context == nullptr) {
    mg_exit_library();
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", address,
                                               " (in use, or not an address of this host)"));
  }
  self->context_.reset(context);
  mg_set_request_handler(context, "/", &HttpGateway::HandleRequest, self.get());
  mg_server_port ports[4];
  const int count = mg_get_server_ports(context, 4, ports);
  self->port_ = count > 0 ? ports[0].port : options.port;
  return self;
}

HttpGateway::~HttpGateway() {
  std::unique_lock<std::mutex> lock(active_mu_);
  if (!idle_.wait_for(lock, absl::ToChronoMicroseconds(kStopWait), [&] { return active_ == 0; })) {
    Log(LogLevel::kWarning, absl::StrCat("http: ", active_, " replies still being written after ",
                                         absl::FormatDuration(kStopWait), "; stopping anyway"));
  }
  lock.unlock();
  context_.reset();
}

int HttpGateway::HandleRequest(mg_connection* connection, void* gateway) {
  auto& self = *static_cast<HttpGateway*>(gateway);
  {
    std::lock_guard<std::mutex> lock(self.active_mu_);
    ++self.active_;
  }
  absl::string_view route = "other";
  const int status = self.Serve(connection, route);
  self.metrics_.CountHttpRequest(std::string(route), status);
  {
    std::lock_guard<std::mutex> lock(self.active_mu_);
    if (--self.active_ == 0) self.idle_.notify_all();
  }
  return status;  // civetweb: a non-zero return means the request was handled
}

int HttpGateway::Serve(mg_connection* connection, absl::string_view& route) {
  const mg_request_info& info = *mg_get_request_info(connection);
  const absl::string_view path = info.local_uri != nullptr ? info.local_uri : "";
  const absl::string_view method = info.request_method;
  const bool get = method == "GET";

  if (path == "/healthz") {
    route = "/healthz";
    if (!get) return SendMethodNotAllowed(connection, "GET");
    return SendJson(connection, 200, R"({"status":"ALIVE"})");
  }
  if (path == "/readyz") {
    route = "/readyz";
    if (!get) return SendMethodNotAllowed(connection, "GET");
    const std::string task = QueryValue(info, "task");
    bool ready = core_.serving();
    if (ready && !task.empty()) {
      v1::GetTaskRequest request;
      request.set_task(task);
      v1::TaskInfo task_info;
      ready = core_.GetTask(request, CallContext{}, task_info).ok() && task_info.ready();
    }
    return SendJson(connection, ready ? 200 : 503,
                    ready ? R"({"status":"SERVING"})" : R"({"status":"NOT_SERVING"})");
  }
  if (path == "/" && options_.playground) {
    route = "/";
    if (!get) return SendMethodNotAllowed(connection, "GET");
    SendResponse(connection, 200, "text/html; charset=utf-8", PlaygroundPage());
    return 200;
  }
  if (path == "/v1/tasks") {
    route = "/v1/tasks";
    if (!get) return SendMethodNotAllowed(connection, "GET");
    v1::ListTasksResponse response;
    core_.ListTasks(response);
    return SendJson(connection, 200, ListTasksJson(response));
  }
  if (absl::StartsWith(path, "/v1/tasks/")) {
    route = "/v1/tasks/{task}";
    if (!get) return SendMethodNotAllowed(connection, "GET");
    absl::StatusOr<CallContext> call = CallContextOf(connection);
    if (!call.ok()) return SendError(connection, call.status());
    v1::GetTaskRequest request;
    request.set_task(std::string(path.substr(strlen("/v1/tasks/"))));
    v1::TaskInfo response;
    if (absl::Status s = core_.GetTask(request, *call, response); !s.ok()) {
      return SendError(connection, s);
    }
    return SendJson(connection, 200, TaskInfoJson(response));
  }
  if (path == "/v1/translate" || path == "/v1/translate:stream") {
    const bool stream = path == "/v1/translate:stream";
    route = stream ? "/v1/translate:stream" : "/v1/translate";
    if (method != "POST") return SendMethodNotAllowed(connection, "POST");
    absl::StatusOr<CallContext> call = CallContextOf(connection);
    if (!call.ok()) return SendError(connection, call.status());
    absl::StatusOr<std::string> body = ReadBody(connection, options_.max_request_bytes);
    // 413 Content Too Large rather than RESOURCE_EXHAUSTED's 429: retrying will not help.
    if (!body.ok()) return SendJson(connection, 413, ErrorJson(body.status()));
    if (!stream) {
      absl::StatusOr<v1::TranslateRequest> request = ParseTranslateRequest(*body);
      if (!request.ok()) return SendError(connection, request.status());
      v1::TranslateResponse response;
      if (absl::Status s = core_.Translate(*request, *call, response); !s.ok()) {
        return SendError(connection, s);
      }
      return SendJson(connection, 200, TranslateResponseJson(response));
    }
    absl::StatusOr<v1::TranslateStreamRequest> request = ParseTranslateStreamRequest(*body);
    if (!request.ok()) return SendError(connection, request.status());
    // The status line goes out with the first message: errors found before it (admission)
    // are HTTP errors; a later one is the stream's last line, {"error": ...}.
    bool started = false;
    const auto send_line = [connection](const std::string& json) {
      const std::string line = absl::StrCat(json, "\n");
      return mg_send_chunk(connection, line.data(), static_cast<unsigned>(line.size())) > 0;
    };
    const absl::Status status =
        core_.TranslateStream(*request, *call, [&](const v1::TranslateStreamResponse& message) {
          if (!started) {
            started = true;
            mg_response_header_start(connection, 200);
            mg_response_header_add(connection, "Content-Type", "application/x-ndjson", -1);
            mg_response_header_add(connection, "Transfer-Encoding", "chunked", -1);
            mg_response_header_add(connection, "Cache-Control", "no-store", -1);
            mg_response_header_add(connection, "X-Content-Type-Options", "nosniff", -1);
            mg_response_header_send(connection);
          }
          return send_line(StreamMessageJson(message));
        });
    if (!started) return SendError(connection, status);
    if (!status.ok()) send_line(ErrorJson(status));
    mg_send_chunk(connection, "", 0);  // the last chunk: the stream ends
    return 200;
  }
  route = "other";
  return SendError(connection,
                   absl::NotFoundError(absl::StrCat(
                       "no endpoint ", absl::CHexEscape(path.substr(0, 64)),
                       "; endpoints: POST /v1/translate, POST /v1/translate:stream, GET "
                       "/v1/tasks, GET /v1/tasks/{task}, GET /healthz, GET /readyz")));
}

}  // namespace taskmoe::server
