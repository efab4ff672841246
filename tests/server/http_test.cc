// Integration tests of the HTTP/JSON gateway: the real server binary with --http_port, driven
// over HTTP and, for comparison, over gRPC. The same request must give the same translation,
// the same refusal message and the same metrics on both transports.
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/server/rpc.h"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

using Json = nlohmann::json;

const std::vector<std::string> kHttpTexts = {"Hello world.", "How are you today? Fine.", "Yes"};

class HttpTest : public RandomRepositoryTest {
 protected:
  std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> flags = {}) {
    flags.push_back("--http_port=0");
    std::unique_ptr<ServerProcess> server = RandomRepositoryTest::StartServer(flags);
    if (server != nullptr) {
      EXPECT_GT(server->http_port(), 0);
    }
    return server;
  }

  // POST of `body` to `path`; the response (a failed request fails the test).
  static HttpResponse Post(const ServerProcess& server, const std::string& path,
                           const std::string& body, const std::vector<std::string>& headers = {}) {
    absl::StatusOr<HttpResponse> response =
        HttpRequest(server.http_port(), "POST", path, headers, body);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *std::move(response) : HttpResponse{};
  }

  static Json Parse(const HttpResponse& response) {
    Json json = Json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(json.is_discarded()) << response.body;
    return json;
  }
};

Json TranslateBody(const std::string& task, const std::vector<std::string>& texts,
                   const Json& options = Json::object()) {
  return {{"task", task}, {"texts", texts}, {"options", options}, {"request_id", "http-1"}};
}

// The gRPC reply and the HTTP one to the same request: the same texts, scores, tokens.
TEST_F(HttpTest, TranslateEqualsGrpc) {
  auto server = StartServer({"--max_output_tokens=24"});
  ASSERT_NE(server, nullptr);
  for (const std::string task : {"en-de", "fr-en"}) {
    for (int beam : {1, 3}) {
      v1::TranslateRequest request = Request(task, kHttpTexts);
      request.mutable_options()->set_beam_size(beam);
      request.mutable_options()->set_return_scores(true);
      request.mutable_options()->set_return_tokens(true);
      request.set_request_id("http-1");
      v1::TranslateResponse grpc_response;
      ASSERT_TRUE(Translate(*server, request, &grpc_response).ok());

      const HttpResponse http = Post(
          *server, "/v1/translate",
          TranslateBody(task, kHttpTexts,
                        {{"beam_size", beam}, {"return_scores", true}, {"return_tokens", true}})
              .dump());
      ASSERT_EQ(http.status, 200) << http.body;
      EXPECT_NE(http.headers.find("Content-Type: application/json"), std::string::npos);
      const Json json = Parse(http);
      ASSERT_EQ(json["translations"].size(), kHttpTexts.size());
      for (size_t i = 0; i < kHttpTexts.size(); ++i) {
        const v1::Translation& want = grpc_response.translations(static_cast<int>(i));
        const Json& got = json["translations"][i];
        EXPECT_EQ(got["text"], want.text()) << task << " beam " << beam;
        EXPECT_FLOAT_EQ(got["score"].get<float>(), want.score());
        EXPECT_EQ(got["token_ids"].get<std::vector<int32_t>>(),
                  std::vector<int32_t>(want.token_ids().begin(), want.token_ids().end()));
        EXPECT_EQ(got["tokens"].size(), static_cast<size_t>(want.tokens_size()));
        EXPECT_EQ(got["sentences"], want.sentences());
        EXPECT_EQ(got["finish_reason"],
                  want.finish_reason() == v1::FINISH_REASON_LENGTH ? "LENGTH" : "END_OF_SENTENCE");
      }
      EXPECT_EQ(json["request_id"], "http-1");
      EXPECT_EQ(json["model_version"], grpc_response.model_version());
      EXPECT_EQ(json["input_tokens"], grpc_response.input_tokens());
      EXPECT_EQ(json["output_tokens"], grpc_response.output_tokens());
    }
  }
}

// The stream: one NDJSON line per token, then the whole translation; the deltas add up to it,
// and it equals gRPC's streamed translation, score included when asked for (and only then).
TEST_F(HttpTest, StreamSendsTokensThenTheTranslationLikeGrpc) {
  auto server = StartServer({"--max_output_tokens=24"});
  ASSERT_NE(server, nullptr);
  const std::string text = "How are you today? Fine, thanks.";
  const HttpResponse unscored =
      Post(*server, "/v1/translate:stream", Json{{"task", "en-de"}, {"text", text}}.dump());
  ASSERT_EQ(unscored.status, 200) << unscored.body;
  const std::vector<std::string> unscored_lines =
      absl::StrSplit(unscored.body, '\n', absl::SkipEmpty());
  ASSERT_FALSE(unscored_lines.empty());
  const Json unscored_last = Json::parse(unscored_lines.back());
  EXPECT_TRUE(unscored_last.contains("done")) << unscored.body;
  EXPECT_FALSE(unscored_last.contains("score")) << unscored.body;

  const HttpResponse http =
      Post(*server, "/v1/translate:stream",
           Json{{"task", "en-de"}, {"text", text}, {"options", {{"return_scores", true}}}}.dump());
  ASSERT_EQ(http.status, 200) << http.body;
  EXPECT_NE(http.headers.find("application/x-ndjson"), std::string::npos);
  std::string deltas;
  Json last;
  int tokens = 0;
  for (absl::string_view line : absl::StrSplit(http.body, '\n', absl::SkipEmpty())) {
    last = Json::parse(line);
    if (last.contains("done")) break;
    deltas += last["text_delta"].get<std::string>();
    EXPECT_TRUE(last["token"].is_string());
    ++tokens;
  }
  ASSERT_TRUE(last.contains("done")) << http.body;
  EXPECT_GT(tokens, 0);
  EXPECT_EQ(last["text"], deltas);

  auto stub = v1::TranslationService::NewStub(server->channel());
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  v1::TranslateStreamRequest request;
  request.set_task("en-de");
  request.set_text(text);
  request.mutable_options()->set_return_scores(true);
  auto reader = stub->TranslateStream(&context, request);
  v1::TranslateStreamResponse message, grpc_last;
  while (reader->Read(&message)) grpc_last = message;
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(last["text"], grpc_last.text());
  EXPECT_EQ(last["text"], unscored_last["text"]);
  EXPECT_LT(grpc_last.score(), 0.0f);
  EXPECT_FLOAT_EQ(last["score"].get<float>(), grpc_last.score());
}

// Bad requests are refused with the status and message gRPC gives for the same request.
TEST_F(HttpTest, RefusalsMatchGrpcStatusAndMessage) {
  auto server = StartServer({"--max_texts_per_request=4", "--max_text_chars=50"});
  ASSERT_NE(server, nullptr);
  struct Case {
    std::string name;
    v1::TranslateRequest request;
    int http_status;
  };
  std::vector<Case> cases;
  cases.push_back({"unknown task", Request("xx-yy", {"Hi"}), 404});
  cases.push_back({"no task", Request("", {"Hi"}), 400});
  cases.push_back({"no texts", Request("en-de", {}), 400});
  cases.push_back({"too many texts", Request("en-de", {"a", "b", "c", "d", "e"}), 400});
  cases.push_back({"empty text", Request("en-de", {"Hi", ""}), 400});
  cases.push_back({"long text", Request("en-de", {std::string(51, 'a')}), 400});
  Case beam{"beam too wide", Request("en-de", {"Hi"}), 400};
  beam.request.mutable_options()->set_beam_size(99);
  cases.push_back(beam);
  Case id{"request id", Request("en-de", {"Hi"}), 400};
  id.request.set_request_id("bad\nid");
  cases.push_back(id);
  for (const Case& c : cases) {
    v1::TranslateResponse response;
    const grpc::Status grpc_status = Translate(*server, c.request, &response);
    ASSERT_FALSE(grpc_status.ok()) << c.name;
    Json body = {
        {"task", c.request.task()},
        {"texts", std::vector<std::string>(c.request.texts().begin(), c.request.texts().end())}};
    if (c.request.options().beam_size() != 0) {
      body["options"] = {{"beam_size", c.request.options().beam_size()}};
    }
    if (!c.request.request_id().empty()) body["request_id"] = c.request.request_id();
    const HttpResponse http = Post(*server, "/v1/translate", body.dump());
    EXPECT_EQ(http.status, c.http_status) << c.name << ": " << http.body;
    const Json json = Parse(http);
    EXPECT_EQ(json["error"]["message"], grpc_status.error_message()) << c.name;
    EXPECT_EQ(json["error"]["code"],
              absl::StatusCodeToString(static_cast<absl::StatusCode>(grpc_status.error_code())))
        << c.name;
  }
}

// What only HTTP can get wrong: the body, the JSON types, the headers, the route, the method.
TEST_F(HttpTest, MalformedRequestsGetClearErrors) {
  auto server = StartServer({"--max_request_bytes=4096"});
  ASSERT_NE(server, nullptr);
  struct Case {
    std::string path, body;
    std::vector<std::string> headers;
    int status;
    std::string message;  // a part of the error message
  };
  const std::vector<Case> cases = {
      {"/v1/translate", "", {}, 400, "body: empty"},
      {"/v1/translate", "{\"task\": ", {}, 400, "body: not valid JSON"},
      {"/v1/translate", "[1, 2]", {}, 400, "body: not a JSON object"},
      {"/v1/translate",
       "{\"task\": \"en-de\", \"texts\": [\"\xff\xfe\"]}",
       {},
       400,
       "body: not valid JSON"},
      {"/v1/translate", std::string(10, '[') + std::string(10, ']'), {}, 400, "nested deeper"},
      // Once an exception out of the parser (fuzz/corpus/http_json/regression-*).
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"], "options": {"beam_size": 1e999}})",
       {},
       400,
       "body: not valid JSON: number overflow parsing '1e999'"},
      {"/v1/translate",
       R"({"task": 7, "texts": ["Hi"]})",
       {},
       400,
       "task: expected a string, got number"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": "Hi"})",
       {},
       400,
       "texts: expected an array of strings, got string"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi", null]})",
       {},
       400,
       "texts[1]: expected a string, got null"},
      {"/v1/translate",
       R"({"task": "en-de", "text": ["Hi"]})",
       {},
       400,
       "text: unknown field; known: task, texts, options, request_id"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"], "options": {"beam": 2}})",
       {},
       400,
       "options.beam: unknown field"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"], "options": {"beam_size": -1}})",
       {},
       400,
       "options.beam_size: -1 is out of range"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"], "options": {"beam_size": 1.5}})",
       {},
       400,
       "options.beam_size: expected a non-negative integer, got number"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"], "options": {"unknown_pieces": "KEEP"}})",
       {},
       400,
       "options.unknown_pieces: expected \"COPY_SOURCE\" or \"DROP\""},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"], "options": {"return_tokens": 1}})",
       {},
       400,
       "options.return_tokens: expected true or false, got number"},
      {"/v1/translate:stream",
       R"({"task": "en-de", "texts": ["Hi"]})",
       {},
       400,
       "texts: unknown field; known: task, text, options, request_id"},
      {"/v1/translate:stream",
       R"({"task": "en-de", "text": "Hi", "options": {"beam_size": 2}})",
       {},
       400,
       "options.beam_size"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"]})",
       {"x-taskmoe-task: fr-en"},
       400,
       "x-taskmoe-task header: 'fr-en' is not the request's task 'en-de'"},
      {"/v1/translate",
       R"({"task": "en-de", "texts": ["Hi"]})",
       {"x-taskmoe-deadline-ms: soon"},
       400,
       "x-taskmoe-deadline-ms header: 'soon' is not a positive whole number"},
      {"/v1/translate", std::string(5000, ' '), {}, 413, "body: 5000 bytes exceed"},
      {"/v1/nothing", "{}", {}, 404, "no endpoint /v1/nothing"},
  };
  for (const Case& c : cases) {
    const HttpResponse http = Post(*server, c.path, c.body, c.headers);
    EXPECT_EQ(http.status, c.status) << c.path << " " << c.body.substr(0, 80) << ": " << http.body;
    const Json json = Parse(http);
    EXPECT_NE(json["error"]["message"].get<std::string>().find(c.message), std::string::npos)
        << json.dump();
  }
  // Methods: GET where POST is needed, and the other way round.
  absl::StatusOr<HttpResponse> get = HttpRequest(server->http_port(), "GET", "/v1/translate");
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->status, 405);
  EXPECT_NE(get->headers.find("Allow: POST"), std::string::npos);
  const HttpResponse post = Post(*server, "/v1/tasks", "{}");
  EXPECT_EQ(post.status, 405);
  // The playground is off unless asked for.
  absl::StatusOr<HttpResponse> page = HttpRequest(server->http_port(), "GET", "/");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->status, 404);
  // And the server still serves after all of it.
  const HttpResponse fine = Post(*server, "/v1/translate", R"({"task": "en-de", "texts": ["Hi"]})");
  EXPECT_EQ(fine.status, 200) << fine.body;
}

TEST_F(HttpTest, TasksHealthAndReadiness) {
  auto server = StartServer({"--playground"});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::string> tasks = HttpGet(server->http_port(), "/v1/tasks");
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  const Json list = Json::parse(*tasks);
  std::vector<std::string> ids;
  for (const Json& task : list["tasks"]) {
    ids.push_back(task["task"]);
    EXPECT_EQ(task["ready"], true);
    EXPECT_EQ(task["precision"], "f32");
  }
  EXPECT_EQ(ids, RandomRepositoryTasks());

  absl::StatusOr<std::string> one = HttpGet(server->http_port(), "/v1/tasks/en-de");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(Json::parse(*one)["target_language"], "de");
  absl::StatusOr<HttpResponse> missing = HttpRequest(server->http_port(), "GET", "/v1/tasks/xx-yy");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);

  EXPECT_TRUE(HttpGet(server->http_port(), "/healthz").ok());
  absl::StatusOr<std::string> ready = HttpGet(server->http_port(), "/readyz");
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(Json::parse(*ready)["status"], "SERVING");
  EXPECT_TRUE(HttpGet(server->http_port(), "/readyz?task=en-de").ok());
  absl::StatusOr<HttpResponse> not_served =
      HttpRequest(server->http_port(), "GET", "/readyz?task=xx-yy");
  ASSERT_TRUE(not_served.ok());
  EXPECT_EQ(not_served->status, 503);

  absl::StatusOr<std::string> page = HttpGet(server->http_port(), "/");
  ASSERT_TRUE(page.ok());
  EXPECT_NE(page->find("id=\"translate\""), std::string::npos);
}

// HTTP requests count in the same request metrics as gRPC calls, and in their own counter.
TEST_F(HttpTest, MetricsCountHttpRequests) {
  auto server = StartServer({"--max_output_tokens=8"});
  ASSERT_NE(server, nullptr);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Post(*server, "/v1/translate", TranslateBody("en-de", {"Hi"}).dump()).status, 200);
  }
  EXPECT_EQ(Post(*server, "/v1/translate", TranslateBody("xx-yy", {"Hi"}).dump()).status, 404);
  absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(
      MetricValue(*metrics, R"(taskmoe_http_requests_total{code="200",route="/v1/translate"})"), 3);
  EXPECT_EQ(
      MetricValue(*metrics, R"(taskmoe_http_requests_total{code="404",route="/v1/translate"})"), 1);
  EXPECT_EQ(
      MetricValue(*metrics, R"(taskmoe_requests_total{code="OK",method="Translate",task="en-de"})"),
      3);
  EXPECT_EQ(MetricValue(*metrics, R"(taskmoe_request_duration_seconds_count{task="en-de"})"), 3);
}

TEST_F(HttpTest, DeadlineHeaderBoundsTheCall) {
  auto server = StartServer(kSlowFlags);
  ASSERT_NE(server, nullptr);
  const absl::Time start = absl::Now();
  const HttpResponse http = Post(*server, "/v1/translate", TranslateBody("en-de", {"Hi"}).dump(),
                                 {"x-taskmoe-deadline-ms: 300"});
  EXPECT_EQ(http.status, 504) << http.body;
  EXPECT_EQ(Parse(http)["error"]["code"], "DEADLINE_EXCEEDED");
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

// A streaming client that goes away stops its decoding (the write fails), as on gRPC.
TEST_F(HttpTest, StreamClientGoneCancelsDecoding) {
  auto server = StartServer(kSlowFlags);
  ASSERT_NE(server, nullptr);
  absl::StatusOr<int> fd = ::taskmoe::testing::ConnectToLoopback(server->http_port());
  ASSERT_TRUE(fd.ok());
  const std::string body = Json{{"task", "en-de"}, {"text", "Hi"}}.dump();
  const std::string request =
      absl::StrCat("POST /v1/translate:stream HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                   "\r\n\r\n", body);
  ASSERT_EQ(write(*fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  char buffer[256];
  ASSERT_GT(read(*fd, buffer, sizeof(buffer)), 0);  // the first tokens are coming
  close(*fd);
  // 400 steps of 10 ms would take 4 s; the cancelled request leaves within a few writes.
  EXPECT_TRUE(WaitForMetric(
      *server, R"(taskmoe_requests_total{code="CANCELLED",method="TranslateStream",task="en-de"})",
      1))
      << server->Log();
}

// SIGTERM: readiness turns 503 and new calls are UNAVAILABLE while a call in flight finishes.
TEST_F(HttpTest, SigtermDrainsHttpCalls) {
  auto server =
      StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=10", "--max_output_tokens=60"});
  ASSERT_NE(server, nullptr);
  auto in_flight = std::async(std::launch::async, [&] {
    return Post(*server, "/v1/translate", TranslateBody("en-de", {"Hello", "world"}).dump());
  });
  ASSERT_TRUE(WaitForMetric(*server, R"(taskmoe_inflight_requests{task="en-de"})", 1));
  server->Signal(SIGTERM);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  int ready_status = 200;
  while (ready_status == 200 && absl::Now() < deadline) {
    absl::StatusOr<HttpResponse> ready = HttpRequest(server->http_port(), "GET", "/readyz");
    ready_status = ready.ok() ? ready->status : 0;
  }
  EXPECT_EQ(ready_status, 503);
  const HttpResponse refused =
      Post(*server, "/v1/translate", TranslateBody("en-de", {"Hi"}).dump());
  EXPECT_EQ(refused.status, 503) << refused.body;
  const HttpResponse drained = in_flight.get();
  EXPECT_EQ(drained.status, 200) << drained.body;
  EXPECT_EQ(Parse(drained)["output_tokens"], 120);
  EXPECT_EQ(server->WaitExit(absl::Seconds(30)), 0) << server->Log();
}

// Many HTTP clients at once (more than the gateway's threads) all get their translations.
TEST_F(HttpTest, ConcurrentCallsAllSucceed) {
  auto server = StartServer({"--max_output_tokens=16", "--http_threads=4"});
  ASSERT_NE(server, nullptr);
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 12; ++c) {
    clients.emplace_back([&, c] {
      const std::string task = RandomRepositoryTasks()[c % RandomRepositoryTasks().size()];
      for (int round = 0; round < 3; ++round) {
        const HttpResponse http =
            Post(*server, "/v1/translate", TranslateBody(task, kHttpTexts).dump());
        if (http.status == 200 && Parse(http)["translations"].size() == kHttpTexts.size()) ++ok;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok.load(), 36);
}

TEST_F(HttpTest, BadHttpFlagsAreRefusedAtStart) {
  const std::string repo = "--model_repository=" + repository_;
  ExitResult playground = RunServerToExit({repo, "--playground"}, absl::Seconds(30));
  EXPECT_EQ(playground.code, 2);  // bad flags
  EXPECT_NE(playground.log.find("--playground is served on --http_port, which is off"),
            std::string::npos)
      << playground.log;
  ExitResult range = RunServerToExit({repo, "--http_port=70000"}, absl::Seconds(30));
  EXPECT_EQ(range.code, 2);
  EXPECT_NE(range.log.find("--http_port must be -1 (off) or in [0, 65535]"), std::string::npos);
  ExitResult tls = RunServerToExit(
      {repo, "--http_port=0", "--tls_cert_file=/nonexistent", "--tls_key_file=/nonexistent"},
      absl::Seconds(30));
  EXPECT_EQ(tls.code, 2);
  EXPECT_NE(tls.log.find("--http_port serves plaintext HTTP"), std::string::npos) << tls.log;
  // A port in use: the server says so and exits.
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  ExitResult in_use = RunServerToExit(
      {repo, "--port=0", "--metrics_port=-1", absl::StrCat("--http_port=", server->http_port())},
      absl::Seconds(30));
  EXPECT_EQ(in_use.code, 1);
  EXPECT_NE(in_use.log.find("cannot serve HTTP on"), std::string::npos) << in_use.log;
}

}  // namespace
}  // namespace taskmoe::server::testing
