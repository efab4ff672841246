// Integration tests of TranslateStream on gRPC's callback API (server/translate_stream_reactor.h;
// Translate's reactor is driven by the rest of the server tests): no thread waits for a call,
// so everything a waiting handler did by polling (the caller going away, the deadline,
// shutdown) must reach decoding through callbacks, and the calls in flight must be bounded by
// the server itself.
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/server/rpc.h"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

using StreamTest = RandomRepositoryTest;

v1::TranslateStreamRequest StreamRequest(const std::string& task, const std::string& text,
                                         int max_output_tokens = 0) {
  v1::TranslateStreamRequest request;
  request.set_task(task);
  request.set_text(text);
  if (max_output_tokens > 0) request.mutable_options()->set_max_output_tokens(max_output_tokens);
  return request;
}

// What a whole stream brought.
struct StreamResult {
  grpc::Status status;
  int tokens = 0;
  int done = 0;
  std::string deltas;
  std::string text;  // of the done message
};

StreamResult ReadStream(v1::TranslationService::Stub& stub, grpc::ClientContext& context,
                        const v1::TranslateStreamRequest& request) {
  StreamResult result;
  auto reader = stub.TranslateStream(&context, request);
  v1::TranslateStreamResponse message;
  while (reader->Read(&message)) {
    if (message.done()) {
      ++result.done;
      result.text = message.text();
    } else {
      ++result.tokens;
      result.deltas += message.text_delta();
    }
  }
  result.status = reader->Finish();
  return result;
}

StreamResult Stream(const ServerProcess& server, const v1::TranslateStreamRequest& request,
                    absl::Duration timeout = kLongDeadline) {
  auto stub = v1::TranslationService::NewStub(server.channel());
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  return ReadStream(*stub, context, request);
}

const std::string kInflight = R"(taskmoe_inflight_requests{task="en-de"})";

TEST_F(StreamTest, ManyConcurrentStreamsEachEqualTheirUnaryTranslation) {
  // Workers write tokens of many streams at once while gRPC's callbacks write the rest: every
  // stream still gets its tokens in order, and they add up to the unary translation.
  auto server = StartServer({"--max_output_tokens=24", "--workers=2", "--threads=1"});
  ASSERT_NE(server, nullptr);
  const std::vector<std::string> tasks = RandomRepositoryTasks();
  const std::vector<std::string> texts = {"Hello world.", "How are you today?",
                                          "The quick brown fox jumps over the lazy dog.", "Yes"};
  std::vector<std::future<void>> calls;
  for (int i = 0; i < 24; ++i) {
    const std::string task = tasks[i % tasks.size()];
    const std::string text = texts[i % texts.size()];
    calls.push_back(std::async(std::launch::async, [&server, task, text] {
      v1::TranslateResponse unary;
      ASSERT_TRUE(Translate(*server, Request(task, {text}), &unary).ok());
      const StreamResult streamed = Stream(*server, StreamRequest(task, text));
      ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
      EXPECT_EQ(streamed.done, 1);
      EXPECT_EQ(streamed.text, unary.translations(0).text()) << task << ": " << text;
      EXPECT_EQ(streamed.deltas, streamed.text);
    }));
  }
  for (auto& call : calls) call.get();
  EXPECT_TRUE(WaitForMetricAtMost(*server, kInflight, 0));
}

TEST_F(StreamTest, DeadlineAndCancellationStopDecoding) {
  auto server = StartServer(kSlowFlags);  // 400 steps of 10 ms: 4 s a sentence
  ASSERT_NE(server, nullptr);
  absl::Time start = absl::Now();
  // 1 s: on a loaded machine under TSan a shorter deadline could pass before the server has the
  // call at all, and gRPC would refuse it unseen and uncounted.
  const StreamResult expired = Stream(*server, StreamRequest("en-de", "Hello"), absl::Seconds(1));
  EXPECT_EQ(expired.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(expired.done, 0);
  EXPECT_TRUE(WaitForMetric(
      *server,
      R"(taskmoe_requests_total{code="DEADLINE_EXCEEDED",method="TranslateStream",task="en-de"})",
      1));
  EXPECT_TRUE(WaitForMetricAtMost(*server, kInflight, 0));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3.5));

  // Cancelled after its first tokens: decoding stops within a step, not after 4 s.
  auto stub = v1::TranslationService::NewStub(server->channel());
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  start = absl::Now();
  auto reader = stub->TranslateStream(&context, StreamRequest("en-de", "Hello"));
  v1::TranslateStreamResponse message;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&message));
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForMetric(
      *server, R"(taskmoe_requests_total{code="CANCELLED",method="TranslateStream",task="en-de"})",
      1));
  EXPECT_TRUE(WaitForMetricAtMost(*server, kInflight, 0));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3.5));

  // A caller that goes away while its sentence is still queued frees its place too: with one
  // worker and one sentence a batch, the second stream waits behind the first.
  auto queued_server =
      StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=10", "--max_output_tokens=400",
                   "--workers=1", "--max_batch_sentences=1"});
  ASSERT_NE(queued_server, nullptr);
  grpc::ClientContext running_context;
  SetDeadline(running_context, kLongDeadline);
  auto queued_stub = v1::TranslationService::NewStub(queued_server->channel());
  auto running = queued_stub->TranslateStream(&running_context, StreamRequest("en-de", "Hello"));
  ASSERT_TRUE(running->Read(&message));
  const StreamResult gave_up =
      Stream(*queued_server, StreamRequest("en-de", "world"), absl::Milliseconds(200));
  EXPECT_EQ(gave_up.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitForMetricAtMost(*queued_server, R"(taskmoe_queue_depth{task="en-de"})", 0));
  running_context.TryCancel();
  while (running->Read(&message)) {
  }
  EXPECT_EQ(running->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // And the server serves the next stream.
  const StreamResult next = Stream(*queued_server, StreamRequest("en-de", "Hi", 3));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.tokens, 3);
}

TEST_F(StreamTest, CallsBeyondTheLimitAreRefusedAndTheirPlacesComeBack) {
  std::vector<std::string> flags = kSlowFlags;
  flags.push_back("--max_concurrent_rpcs=4");
  auto server = StartServer(flags);
  ASSERT_NE(server, nullptr);
  auto stub = v1::TranslationService::NewStub(server->channel());
  // Four slow streams hold the four places...
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::TranslateStreamResponse>>> readers;
  v1::TranslateStreamResponse message;
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    SetDeadline(*contexts.back(), kLongDeadline);
    readers.push_back(stub->TranslateStream(contexts.back().get(), StreamRequest("en-de", "Hi")));
    ASSERT_TRUE(readers.back()->Read(&message));
  }
  // ...so the fifth is refused at once, naming the flag.
  const StreamResult refused = Stream(*server, StreamRequest("en-de", "Hello"));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.status.error_message().find("--max_concurrent_rpcs=4"), std::string::npos)
      << refused.status.error_message();
  EXPECT_TRUE(WaitForMetric(
      *server,
      R"(taskmoe_grpc_calls_total{code="RESOURCE_EXHAUSTED",method="taskmoe.v1.TranslationService/TranslateStream"})",
      1));
  // Unary calls share the places.
  v1::TranslateResponse unary;
  const grpc::Status unary_refused = Translate(*server, Request("en-de", {"Hello"}), &unary);
  EXPECT_EQ(unary_refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(unary_refused.error_message().find("too many calls in flight"), std::string::npos)
      << unary_refused.error_message();
  // Once they end, their places are free again.
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(WaitForMetricAtMost(*server, kInflight, 0));
  std::vector<std::future<StreamResult>> again;
  for (int i = 0; i < 4; ++i) {
    again.push_back(std::async(std::launch::async,
                               [&] { return Stream(*server, StreamRequest("en-de", "Hi", 5)); }));
  }
  for (auto& call : again) {
    const StreamResult result = call.get();
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.tokens, 5);
  }
}

// A TranslateStream call whose request message is `body` as it stands (not a serialised
// TranslateStreamRequest): gRPC's generic stub, on a completion queue.
grpc::Status RawStreamCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& body) {
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  grpc::CompletionQueue queue;
  auto call =
      generic.PrepareCall(&context, "/taskmoe.v1.TranslationService/TranslateStream", &queue);
  // Each operation's tag is its number; this waits for each in turn.
  void* tag = nullptr;
  bool ok = false;
  auto wait_for = [&](intptr_t expected) {
    while (queue.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) != expected) {
    }
  };
  call->StartCall(reinterpret_cast<void*>(1));
  wait_for(1);
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  wait_for(2);
  call->WritesDone(reinterpret_cast<void*>(3));
  wait_for(3);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  wait_for(4);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

TEST_F(StreamTest, AJsonBodyIsInvalidArgumentSayingSo) {
  // gRPC answers a callback method's unparsable message UNIMPLEMENTED with no message; the
  // server's interceptor says what is wrong instead, as for the sync methods.
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const grpc::Status status =
      RawStreamCall(server->channel(), R"({"task": "en-de", "text": "Hello"})");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("JSON is not supported"), std::string::npos)
      << status.error_message();
  EXPECT_TRUE(WaitForMetric(
      *server,
      R"(taskmoe_grpc_calls_total{code="INVALID_ARGUMENT",method="taskmoe.v1.TranslationService/TranslateStream"})",
      1));
  // And a well-formed stream still works.
  const StreamResult next = Stream(*server, StreamRequest("en-de", "Hi", 3));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
}

TEST_F(StreamTest, SigtermDrainsAStreamInFlight) {
  // 60 steps of >= 10 ms: in flight for at least 0.6 s.
  auto server = StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=10"});
  ASSERT_NE(server, nullptr);
  auto in_flight = std::async(std::launch::async,
                              [&] { return Stream(*server, StreamRequest("en-de", "Hello", 60)); });
  ASSERT_TRUE(WaitForMetric(*server, kInflight, 1));
  server->Signal(SIGTERM);
  const StreamResult drained = in_flight.get();
  EXPECT_TRUE(drained.status.ok()) << drained.status.error_message();
  EXPECT_EQ(drained.tokens, 60);
  EXPECT_EQ(drained.done, 1);
  EXPECT_EQ(server->WaitExit(absl::Seconds(30)), 0) << server->Log();
}

TEST_F(StreamTest, SigtermCancelsAStreamThatOutlivesTheGracePeriod) {
  auto server = StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=20",
                             "--max_output_tokens=500", "--grace_period_s=1"});
  ASSERT_NE(server, nullptr);
  auto in_flight =
      std::async(std::launch::async, [&] { return Stream(*server, StreamRequest("en-de", "Hi")); });
  ASSERT_TRUE(WaitForMetric(*server, kInflight, 1));
  const absl::Time start = absl::Now();
  server->Signal(SIGTERM);
  const StreamResult cut = in_flight.get();
  EXPECT_EQ(cut.status.error_code(), grpc::StatusCode::UNAVAILABLE) << cut.status.error_message();
  EXPECT_GT(cut.tokens, 0);
  EXPECT_EQ(cut.done, 0);
  EXPECT_EQ(server->WaitExit(absl::Seconds(30)), 0) << server->Log();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
}

}  // namespace
}  // namespace taskmoe::server::testing
