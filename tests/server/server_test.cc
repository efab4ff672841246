// Integration tests of taskmoe-server: the real binary on a loopback port, driven by a real
// gRPC client, on a repository of tiny random subnetworks.
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/sync_stream.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/server/rpc.h"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

using v1::TranslateRequest;
using v1::TranslateResponse;

using ServerTest = RandomRepositoryTest;

// Offline decoding of the same texts with taskmoe-translate.
std::vector<std::string> TranslateOffline(const std::string& model_dir, const std::string& task,
                                          const std::vector<std::string>& texts,
                                          const std::string& extra_flags) {
  const std::string dir = MakeTempDir("offline");
  {
    std::ofstream in(dir + "/in.txt");
    for (const std::string& t : texts) in << t << "\n";
  }
  const std::string command =
      absl::StrCat(TASKMOE_TRANSLATE_BINARY, " --model=", model_dir, " --task=", task, " ",
                   extra_flags, " < ", dir, "/in.txt > ", dir, "/out.txt");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream out(dir + "/out.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(out, line);) lines.push_back(line);
  return lines;
}

const std::vector<std::string> kTexts = {"Hello world.", "How are you today?",
                                         "The quick brown fox jumps over the lazy dog.", "Yes"};

TEST_F(ServerTest, TranslationsEqualOfflineTranslate) {
  auto server = StartServer({"--max_output_tokens=24"});
  ASSERT_NE(server, nullptr);
  for (const std::string task : {"en-de", "fr-en"}) {
    for (int beam : {1, 3}) {
      TranslateRequest request = Request(task, kTexts);
      request.mutable_options()->set_beam_size(beam);
      request.mutable_options()->set_return_tokens(true);
      request.set_request_id("parity-1");
      TranslateResponse response;
      const grpc::Status status = Translate(*server, request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      const std::vector<std::string> expected =
          TranslateOffline(repository_ + "/" + task, task, kTexts,
                           absl::StrCat("--max_output_tokens=24 --beam_size=", beam));
      ASSERT_EQ(response.translations_size(), static_cast<int>(kTexts.size()));
      ASSERT_EQ(expected.size(), kTexts.size());
      int output_tokens = 0;
      for (size_t i = 0; i < kTexts.size(); ++i) {
        EXPECT_EQ(response.translations(i).text(), expected[i]) << task << " beam " << beam;
        EXPECT_EQ(response.translations(i).token_ids_size(),
                  response.translations(i).tokens_size());
        output_tokens += response.translations(i).token_ids_size();
      }
      EXPECT_EQ(response.request_id(), "parity-1");
      EXPECT_EQ(static_cast<int>(response.output_tokens()), output_tokens);
      EXPECT_GT(response.input_tokens(), kTexts.size() * 2);
      EXPECT_EQ(response.model_version().rfind("sha256:", 0), 0u);
    }
  }
}

// Many tasks at once, greedy and beam, in both batching modes: requests arriving together
// share continuous batches (and join them at different steps), a beam request makes the
// running batch drain first; every translation must still be what offline decoding gives.
TEST_F(ServerTest, ConcurrentMixedTrafficEqualsOfflineTranslateInBothBatchingModes) {
  const std::vector<std::string> tasks = RandomRepositoryTasks();
  std::map<std::pair<std::string, int>, std::vector<std::string>> expected;
  for (const std::string& task : tasks) {
    for (int beam : {1, 2, 3}) {
      expected[{task, beam}] =
          TranslateOffline(repository_ + "/" + task, task, kTexts,
                           absl::StrCat("--max_output_tokens=24 --beam_size=", beam));
    }
  }
  for (const char* mode :
       {"--batching=continuous", "--batching=continuous --prefill_first_when_mixed",
        "--batching=continuous --prefill_first", "--batching=per_task"}) {
    std::vector<std::string> flags = {"--max_output_tokens=24", "--max_batch_sentences=6"};
    for (absl::string_view flag : absl::StrSplit(mode, ' ')) flags.emplace_back(flag);
    auto server = StartServer(flags);
    ASSERT_NE(server, nullptr);
    std::vector<std::thread> clients;
    std::atomic<int> mismatches{0}, failures{0};
    for (int c = 0; c < 12; ++c) {
      clients.emplace_back([&, c] {
        const std::string& task = tasks[c % tasks.size()];
        // Greedy and beam search of several widths, sharing the continuous batch's steps.
        const int beam = c % 5 == 4 ? 2 : (c % 5 == 2 ? 3 : 1);
        for (int round = 0; round < 3; ++round) {
          // Texts rotated, so that requests of one task differ and join at different steps.
          std::vector<std::string> texts;
          for (size_t i = 0; i < kTexts.size(); ++i) {
            texts.push_back(kTexts[(i + c + round) % kTexts.size()]);
          }
          TranslateRequest request = Request(task, texts);
          request.mutable_options()->set_beam_size(beam);
          TranslateResponse response;
          const grpc::Status status = Translate(*server, request, &response);
          if (!status.ok() || response.translations_size() != static_cast<int>(texts.size())) {
            ADD_FAILURE() << mode << ": " << status.error_message();
            ++failures;
            continue;
          }
          const std::vector<std::string>& want = expected[{task, beam}];
          for (size_t i = 0; i < texts.size(); ++i) {
            if (response.translations(i).text() != want[(i + c + round) % kTexts.size()]) {
              ++mismatches;
            }
          }
        }
      });
    }
    for (std::thread& t : clients) t.join();
    EXPECT_EQ(failures.load(), 0) << mode;
    EXPECT_EQ(mismatches.load(), 0) << mode;
  }
}

// --prefill_first: a request arriving while a step runs is encoded and takes its first step
// between two of that step's decoder layers (here nearly always: the debug delay before each
// step is most of it), then joins; its translation is still offline decoding's.
TEST_F(ServerTest, PrefillFirstNewcomersJoinBetweenLayersAndEqualOfflineTranslate) {
  auto server =
      StartServer({"--prefill_first", "--debug_step_delay_ms=20", "--max_output_tokens=24"});
  ASSERT_NE(server, nullptr);
  const std::vector<std::string> expected =
      TranslateOffline(repository_ + "/fr-en", "fr-en", kTexts, "--max_output_tokens=24");
  ASSERT_EQ(expected.size(), kTexts.size());
  // A client keeping the batch busy with another task's sentences meanwhile.
  std::atomic<bool> done{false};
  std::thread busy([&] {
    while (!done.load()) {
      TranslateResponse response;
      const grpc::Status status = Translate(*server, Request("en-de", kTexts), &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
  });
  absl::SleepFor(absl::Milliseconds(100));  // the busy request is decoding
  for (size_t i = 0; i < kTexts.size(); ++i) {
    TranslateResponse response;
    const grpc::Status status = Translate(*server, Request("fr-en", {kTexts[i]}), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.translations_size(), 1);
    EXPECT_EQ(response.translations(0).text(), expected[i]) << kTexts[i];
  }
  done = true;
  busy.join();
  absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_GT(MetricValue(*metrics, R"(taskmoe_continuous_admitted_rows_count{at="between_layers"})"),
            0);
}

// With --prefill_first_when_mixed a newcomer takes its first step apart only in mixed
// batches: under one task alone it joins with the running rows at a step boundary, none between
// layers; while a step runs over two tasks, newcomers of a third are taken between its layers.
// By default none is, mixed batches included. Translations are offline decoding's either way.
TEST_F(ServerTest, NewcomersTakeTheirFirstStepApartOnlyInMixedBatchesAndOnlyWhenAsked) {
  auto server = StartServer(
      {"--debug_step_delay_ms=20", "--max_output_tokens=24", "--prefill_first_when_mixed"});
  ASSERT_NE(server, nullptr);
  const auto admitted_between_layers = [&] {
    absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
    EXPECT_TRUE(metrics.ok()) << metrics.status();
    return metrics.ok()
               ? MetricValue(*metrics,
                             R"(taskmoe_continuous_admitted_rows_count{at="between_layers"})")
               : -1.0;
  };
  // Clients keeping the batch busy with `busy_tasks` while `task`'s texts are translated one
  // request at a time; each must equal offline decoding.
  const auto translate_beside = [&](const std::vector<std::string>& busy_tasks,
                                    const std::string& task) {
    const std::vector<std::string> expected =
        TranslateOffline(repository_ + "/" + task, task, kTexts, "--max_output_tokens=24");
    ASSERT_EQ(expected.size(), kTexts.size());
    std::atomic<bool> done{false};
    std::vector<std::thread> busy;
    for (const std::string& busy_task : busy_tasks) {
      busy.emplace_back([&, busy_task] {
        while (!done.load()) {
          TranslateResponse response;
          const grpc::Status status = Translate(*server, Request(busy_task, kTexts), &response);
          EXPECT_TRUE(status.ok()) << status.error_message();
        }
      });
    }
    absl::SleepFor(absl::Milliseconds(100));  // the busy requests are decoding
    for (size_t i = 0; i < kTexts.size(); ++i) {
      TranslateResponse response;
      const grpc::Status status = Translate(*server, Request(task, {kTexts[i]}), &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      ASSERT_EQ(response.translations_size(), 1);
      EXPECT_EQ(response.translations(0).text(), expected[i]) << task << ": " << kTexts[i];
    }
    done = true;
    for (std::thread& t : busy) t.join();
  };
  translate_beside({"en-de"}, "en-de");
  EXPECT_EQ(admitted_between_layers(), 0);
  translate_beside({"en-de", "en-fr"}, "de-en");
  EXPECT_GT(admitted_between_layers(), 0);
  server = StartServer({"--debug_step_delay_ms=20", "--max_output_tokens=24"});
  ASSERT_NE(server, nullptr);
  translate_beside({"en-de", "en-fr"}, "de-en");
  EXPECT_EQ(admitted_between_layers(), 0);
}

TEST_F(ServerTest, ListTasksAndGetTask) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = v1::TranslationService::NewStub(server->channel());
  grpc::ClientContext list_context;
  v1::ListTasksResponse list;
  ASSERT_TRUE(stub->ListTasks(&list_context, {}, &list).ok());
  std::vector<std::string> ids;
  for (const v1::TaskInfo& t : list.tasks()) {
    ids.push_back(t.task());
    EXPECT_TRUE(t.ready());
    EXPECT_EQ(t.precision(), "f32");
    // oneDNN's brgemm where the CPU has AVX-512, our own kernel on AVX2 (kernels/matmul.h).
    EXPECT_TRUE(t.matmul_path() == "onednn_f32" || t.matmul_path() == "avx2_f32")
        << t.matmul_path();
    // The greedy head's int8 candidate filter: an f32 head runs our kernel, which carries it,
    // whichever path the other layers take (PackedLinear::CreateGreedyHead).
    EXPECT_TRUE(t.greedy_head_filter() == "avx2_int8" ||
                t.greedy_head_filter() == "avx_vnni_int8" ||
                t.greedy_head_filter() == "avx512_vnni_int8")
        << t.greedy_head_filter();
    EXPECT_GT(t.parameters(), 0u);
    EXPECT_GT(t.memory_bytes(), 0u);
    // The embeddings and attention layers of the subnetworks are the same bytes: kept once.
    EXPECT_GT(t.shared_memory_bytes(), 0u);
    EXPECT_EQ(t.parent_digest(), ParentDigest(1));
  }
  EXPECT_EQ(ids, RandomRepositoryTasks());

  grpc::ClientContext get_context;
  v1::GetTaskRequest get;
  get.set_task("en-fr");
  v1::TaskInfo info;
  ASSERT_TRUE(stub->GetTask(&get_context, get, &info).ok());
  EXPECT_EQ(info.source_language(), "en");
  EXPECT_EQ(info.target_language(), "fr");

  grpc::ClientContext unknown_context;
  get.set_task("xx-yy");
  const grpc::Status unknown = stub->GetTask(&unknown_context, get, &info);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(unknown.error_message().find("xx-yy"), std::string::npos);
}

struct BadInput {
  std::string name;
  TranslateRequest request;
  grpc::StatusCode code;
  std::string message_part;
};

TEST_F(ServerTest, BadInputsGetClearStatuses) {
  auto server =
      StartServer({"--max_text_chars=50", "--max_texts_per_request=3", "--max_beam_size=4",
                   "--max_output_tokens=16", "--max_queue_sentences=8"});
  ASSERT_NE(server, nullptr);
  std::vector<BadInput> cases;
  cases.push_back({"unknown task", Request("xx-yy", {"Hi"}), grpc::StatusCode::NOT_FOUND,
                   "'xx-yy' is not served here; tasks: de-en, en-de, en-fr, fr-en"});
  cases.push_back(
      {"empty task", Request("", {"Hi"}), grpc::StatusCode::INVALID_ARGUMENT, "task: empty"});
  cases.push_back({"no texts", Request("en-de", {}), grpc::StatusCode::INVALID_ARGUMENT,
                   "texts: no text given"});
  cases.push_back({"empty text", Request("en-de", {"Hi", ""}), grpc::StatusCode::INVALID_ARGUMENT,
                   "texts[1]: empty text"});
  cases.push_back({"invalid UTF-8", Request("en-de", {"Hi", "ab\xff\xfe"}),
                   grpc::StatusCode::INVALID_ARGUMENT,
                   "texts[1]: not valid UTF-8 (bad byte sequence at byte 2)"});
  cases.push_back({"overlong UTF-8", Request("en-de", {"\xc0\xaf"}),
                   grpc::StatusCode::INVALID_ARGUMENT, "texts[0]: not valid UTF-8"});
  cases.push_back({"too long", Request("en-de", {std::string(51, 'a')}),
                   grpc::StatusCode::INVALID_ARGUMENT,
                   "texts[0]: 51 characters, more than the limit of 50"});
  cases.push_back(
      {"huge", Request("en-de", {std::string(1 << 20, 'a')}), grpc::StatusCode::INVALID_ARGUMENT,
       "texts[0]: more than the limit of 50 characters (its 1048576 bytes of UTF-8 hold at "
       "least 262144)"});
  cases.push_back({"too many texts", Request("en-de", {"a", "b", "c", "d"}),
                   grpc::StatusCode::INVALID_ARGUMENT, "texts: 4 texts, more than the limit of 3"});
  TranslateRequest beam = Request("en-de", {"Hi"});
  beam.mutable_options()->set_beam_size(5);
  cases.push_back({"beam", beam, grpc::StatusCode::INVALID_ARGUMENT,
                   "options.beam_size: 5 is more than the server's limit of 4"});
  cases.push_back({"output tokens", Request("en-de", {"Hi"}, 17),
                   grpc::StatusCode::INVALID_ARGUMENT,
                   "options.max_output_tokens: 17 is more than the server's limit of 16"});
  TranslateRequest penalty = Request("en-de", {"Hi"});
  penalty.mutable_options()->set_length_penalty(-1);
  cases.push_back(
      {"penalty", penalty, grpc::StatusCode::INVALID_ARGUMENT, "options.length_penalty"});
  penalty.mutable_options()->set_length_penalty(std::numeric_limits<float>::quiet_NaN());
  cases.push_back(
      {"NaN penalty", penalty, grpc::StatusCode::INVALID_ARGUMENT, "options.length_penalty"});
  TranslateRequest unknowns = Request("en-de", {"Hi"});
  unknowns.mutable_options()->set_unknown_pieces(static_cast<v1::UnknownPieces>(9));
  cases.push_back({"unknown pieces", unknowns, grpc::StatusCode::INVALID_ARGUMENT,
                   "options.unknown_pieces: 9 is not a value of UnknownPieces"});
  // Split, this text is more sentences than the queue can ever hold: no use retrying it.
  cases.push_back({"sentences", Request("en-de", {"Aa. Bb. Cc. Dd. Ee. Ff. Gg. Hh. Ii."}),
                   grpc::StatusCode::INVALID_ARGUMENT,
                   "texts: 9 sentences, more than the 8 a task's queue holds"});
  TranslateRequest id = Request("en-de", {"Hi"});
  id.set_request_id("a\nb");
  cases.push_back({"request id", id, grpc::StatusCode::INVALID_ARGUMENT, "request_id:"});

  for (const BadInput& c : cases) {
    TranslateResponse response;
    const grpc::Status status = Translate(*server, c.request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.message_part), std::string::npos)
        << c.name << ": " << status.error_message();
  }

  // The stream has its own fields.
  auto stub = v1::TranslationService::NewStub(server->channel());
  for (auto [text, beam_size, part] :
       {std::tuple<std::string, int, std::string>{"", 1, "text: empty text"},
        {"\xed\xa0\x80", 1, "text: not valid UTF-8"},
        {"Hi", 2, "TranslateStream decodes greedily"}}) {
    v1::TranslateStreamRequest request;
    request.set_task("en-de");
    request.set_text(text);
    request.mutable_options()->set_beam_size(beam_size);
    grpc::ClientContext context;
    SetDeadline(context, kLongDeadline);
    auto reader = stub->TranslateStream(&context, request);
    v1::TranslateStreamResponse message;
    while (reader->Read(&message)) {
    }
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << part;
    EXPECT_NE(status.error_message().find(part), std::string::npos) << status.error_message();
  }
  // The routing header must name the message's task (a gateway routed the call by it).
  {
    // A call's context with the deadline and the routing header naming `task`.
    const auto routed_to = [](grpc::ClientContext& context, const std::string& task) {
      SetDeadline(context, kLongDeadline);
      context.AddMetadata("x-taskmoe-task", task);
    };
    const auto expect_mismatch = [](const grpc::Status& status) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_NE(status.error_message().find(
                    "x-taskmoe-task header: 'fr-en' is not the request's task 'en-de'"),
                std::string::npos)
          << status.error_message();
    };
    grpc::ClientContext context;
    routed_to(context, "fr-en");
    TranslateResponse response;
    expect_mismatch(stub->Translate(&context, Request("en-de", {"Hi"}), &response));

    grpc::ClientContext stream_context;
    routed_to(stream_context, "fr-en");
    v1::TranslateStreamRequest stream_request;
    stream_request.set_task("en-de");
    stream_request.set_text("Hi");
    auto reader = stub->TranslateStream(&stream_context, stream_request);
    v1::TranslateStreamResponse message;
    while (reader->Read(&message)) {
    }
    expect_mismatch(reader->Finish());

    grpc::ClientContext get_context;
    routed_to(get_context, "fr-en");
    v1::GetTaskRequest get_request;
    get_request.set_task("en-de");
    v1::TaskInfo info;
    expect_mismatch(stub->GetTask(&get_context, get_request, &info));

    // The matching header is served.
    grpc::ClientContext matching;
    routed_to(matching, "en-de");
    EXPECT_TRUE(stub->Translate(&matching, Request("en-de", {"Hi"}), &response).ok());
  }
  // The server is still fine after all of that.
  TranslateResponse response;
  EXPECT_TRUE(Translate(*server, Request("en-de", {"Hi"}), &response).ok());
}

TEST_F(ServerTest, StreamSendsTokensThenTheWholeTranslation) {
  auto server = StartServer({"--max_output_tokens=20"});
  ASSERT_NE(server, nullptr);
  TranslateResponse unary;
  ASSERT_TRUE(Translate(*server, Request("en-de", {kTexts[2]}), &unary).ok());

  auto stub = v1::TranslationService::NewStub(server->channel());
  v1::TranslateStreamRequest request;
  request.set_task("en-de");
  request.set_text(kTexts[2]);
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  auto reader = stub->TranslateStream(&context, request);
  v1::TranslateStreamResponse message;
  std::string deltas, final_text;
  int tokens = 0, done = 0;
  while (reader->Read(&message)) {
    if (message.done()) {
      ++done;
      final_text = message.text();
    } else {
      ++tokens;
      deltas += message.text_delta();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(done, 1);
  EXPECT_GT(tokens, 0);
  EXPECT_EQ(final_text, unary.translations(0).text());
  EXPECT_EQ(deltas, final_text);
}

TEST_F(ServerTest, TextsAreSplitIntoSentencesAndPutBackTogether) {
  auto server = StartServer({"--max_output_tokens=24"});
  ASSERT_NE(server, nullptr);
  const std::vector<std::string> sentences = {"Hello world.", "How are you today?", "Yes"};
  const std::vector<std::string> expected =
      TranslateOffline(repository_ + "/en-de", "en-de", sentences, "--max_output_tokens=24");
  ASSERT_EQ(expected.size(), 3u);
  for (const std::string& e : expected) ASSERT_FALSE(e.empty());

  TranslateRequest request = Request("en-de", {"Hello world.  How are you today?\nYes"});
  request.mutable_options()->set_return_tokens(true);
  TranslateResponse response;
  ASSERT_TRUE(Translate(*server, request, &response).ok());
  ASSERT_EQ(response.translations_size(), 1);
  const v1::Translation& split = response.translations(0);
  EXPECT_EQ(split.text(), expected[0] + "  " + expected[1] + "\n" + expected[2]);
  EXPECT_EQ(split.sentences(), 3u);
  EXPECT_EQ(static_cast<int>(response.output_tokens()), split.token_ids_size());

  // Off on request: one sentence, as the offline tool translates the whole line.
  request.mutable_options()->set_no_sentence_splitting(true);
  ASSERT_TRUE(Translate(*server, request, &response).ok());
  EXPECT_EQ(response.translations(0).sentences(), 1u);

  // The random model runs "How are you today?" into the length cap (taskmoe-translate says
  // so too): the text ends as its sentences do. (DemoModelServerTest has texts that end.)
  EXPECT_EQ(split.finish_reason(), v1::FINISH_REASON_LENGTH);
}

// The trained demo model's en-de subnetwork rather than random weights: it ends sentences,
// and it writes unknown pieces for what its vocabulary lacks, which random weights never do.
class DemoModelServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repository_ = new std::string(MakeTempDir("demo-repository"));
    const std::string extract =
        absl::StrCat(TASKMOE_EXTRACT_BINARY, " --checkpoint=", TASKMOE_DEMO_MODEL_DIR,
                     " --out=", *repository_, " --tasks=en-de > /dev/null");
    ASSERT_EQ(std::system(extract.c_str()), 0) << extract;
  }
  static void TearDownTestSuite() { delete repository_; }

  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(*repository_, {"--max_output_tokens=24"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  static std::string* repository_;  // owned by the suite (gtest's static set-up needs a pointer)
  std::unique_ptr<ServerProcess> server_;
};
std::string* DemoModelServerTest::repository_ = nullptr;

TEST_F(DemoModelServerTest, FinishReasonSaysWhetherTheLengthCapStoppedATranslation) {
  TranslateResponse response;
  ASSERT_TRUE(Translate(*server_, Request("en-de", {"Hello world. Thank you."}), &response).ok());
  EXPECT_EQ(response.translations(0).sentences(), 2u);
  EXPECT_EQ(response.translations(0).finish_reason(), v1::FINISH_REASON_END_OF_SENTENCE);
  ASSERT_TRUE(
      Translate(*server_, Request("en-de", {"Hello world. Thank you."}, 2), &response).ok());
  EXPECT_EQ(response.translations(0).finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(DemoModelServerTest, UnknownPiecesNeverComeBackAsTheUnknownSign) {
  const ServerProcess* server = server_.get();
  const std::string kUnknownSign = "\xE2\x81\x87";  // ⁇
  const std::string kEmoji = "\xF0\x9F\x98\x80";
  // The demo vocabulary has neither the emoji nor "Ł": the demo model writes unknown pieces
  // for them (the offline tool showed " ⁇ " before unknown pieces were handled).
  TranslateRequest request = Request("en-de", {"I like the caf\xC3\xA9 " + kEmoji +
                                               " in \xC5\x81\xC3\xB3"
                                               "d\xC5\xBA"});
  request.mutable_options()->set_return_tokens(true);
  TranslateResponse copied;
  ASSERT_TRUE(Translate(*server, request, &copied).ok());
  const v1::Translation& t = copied.translations(0);
  ASSERT_NE(std::find(t.token_ids().begin(), t.token_ids().end(), 1), t.token_ids().end())
      << "the model wrote no unknown piece: this test needs one";
  EXPECT_EQ(t.text().find(kUnknownSign), std::string::npos) << t.text();
  EXPECT_NE(t.text().find(kEmoji), std::string::npos) << t.text();

  request.mutable_options()->set_unknown_pieces(v1::UNKNOWN_PIECES_DROP);
  TranslateResponse dropped;
  ASSERT_TRUE(Translate(*server, request, &dropped).ok());
  EXPECT_EQ(dropped.translations(0).text().find(kUnknownSign), std::string::npos);
  EXPECT_EQ(dropped.translations(0).text().find(kEmoji), std::string::npos);
  EXPECT_EQ(dropped.translations(0).text().find("  "), std::string::npos)
      << dropped.translations(0).text();
}

TEST_F(ServerTest, StreamOfSeveralSentencesAddsUpToTheUnaryTranslation) {
  auto server = StartServer({"--max_output_tokens=20"});
  ASSERT_NE(server, nullptr);
  const std::string text = "Hello world.\nThe quick brown fox jumps over the lazy dog. Yes";
  TranslateResponse unary;
  ASSERT_TRUE(Translate(*server, Request("en-de", {text}), &unary).ok());
  ASSERT_EQ(unary.translations(0).sentences(), 3u);

  auto stub = v1::TranslationService::NewStub(server->channel());
  v1::TranslateStreamRequest request;
  request.set_task("en-de");
  request.set_text(text);
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  auto reader = stub->TranslateStream(&context, request);
  v1::TranslateStreamResponse message;
  std::string deltas;
  uint32_t last_sentence = 0;
  bool ordered = true;
  v1::TranslateStreamResponse last;
  while (reader->Read(&message)) {
    if (message.done()) {
      last = message;
      continue;
    }
    ordered = ordered && message.sentence() >= last_sentence;
    last_sentence = message.sentence();
    deltas += message.text_delta();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(ordered);
  EXPECT_EQ(last_sentence, 2u);
  EXPECT_TRUE(last.done());
  EXPECT_EQ(last.text(), unary.translations(0).text());
  EXPECT_EQ(deltas, last.text());
  EXPECT_EQ(last.finish_reason(), unary.translations(0).finish_reason());
}

TEST_F(ServerTest, DeadlineStopsDecoding) {
  auto server = StartServer(kSlowFlags);
  ASSERT_NE(server, nullptr);
  TranslateResponse response;
  const absl::Time start = absl::Now();
  const grpc::Status status =
      Translate(*server, Request("en-de", {"Hello", "world"}), &response, absl::Seconds(1));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server stops the decode at its next step (not after 4 s) and says so in its metrics.
  EXPECT_TRUE(WaitForMetric(
      *server,
      R"(taskmoe_requests_total{code="DEADLINE_EXCEEDED",method="Translate",task="en-de"})", 1));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3.5));
  // And is free for the next request.
  EXPECT_TRUE(Translate(*server, Request("en-de", {"Hi"}, 3), &response).ok());
}

TEST_F(ServerTest, ClientCancellationStopsDecoding) {
  auto server = StartServer(kSlowFlags);
  ASSERT_NE(server, nullptr);
  auto stub = v1::TranslationService::NewStub(server->channel());
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  TranslateResponse response;
  const absl::Time start = absl::Now();
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    context.TryCancel();
  });
  const grpc::Status status = stub->Translate(&context, Request("en-de", {"Hello"}), &response);
  canceller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForMetric(
      *server, R"(taskmoe_requests_total{code="CANCELLED",method="Translate",task="en-de"})", 1));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3.5));
}

TEST_F(ServerTest, FullQueueIsResourceExhausted) {
  std::vector<std::string> flags = kSlowFlags;
  flags.insert(flags.end(), {"--max_queue_sentences=4", "--max_total_queue_sentences=6",
                             "--max_texts_per_request=4", "--max_batch_sentences=1"});
  auto server = StartServer(flags);
  ASSERT_NE(server, nullptr);
  auto stub = v1::TranslationService::NewStub(server->channel());
  // A (1 text) and B (3 texts) fill the queue whether or not A has started decoding.
  grpc::ClientContext a_context, b_context;
  TranslateResponse a_response, b_response;
  auto a = std::async(std::launch::async, [&] {
    return stub->Translate(&a_context, Request("en-de", {"a"}), &a_response);
  });
  auto b = std::async(std::launch::async, [&] {
    return stub->Translate(&b_context, Request("en-de", {"b", "c", "d"}), &b_response);
  });
  // Once all four sentences are in (queued, or one decoding) nothing more fits.
  ASSERT_TRUE(WaitForMetric(*server, R"(taskmoe_queue_depth{task="en-de"})", 3));
  TranslateResponse response;
  const grpc::Status full = Translate(*server, Request("en-de", {"e", "f"}), &response);
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(full.error_message().find("task en-de is overloaded"), std::string::npos)
      << full.error_message();
  // Another task's queue is separate: its request is queued (the one worker is busy with
  // en-de), and runs once the en-de requests are cancelled.
  TranslateResponse g_response;
  auto g = std::async(std::launch::async,
                      [&] { return Translate(*server, Request("de-en", {"g"}, 2), &g_response); });
  EXPECT_TRUE(WaitForMetric(*server, R"(taskmoe_queue_depth{task="de-en"})", 1));
  // All queues together hold at most 6: 3 of en-de and 1 of de-en leave room for 2 more, in a
  // task whose own queue is empty.
  const grpc::Status all_full = Translate(*server, Request("fr-en", {"h", "i", "j"}), &response);
  EXPECT_EQ(all_full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(all_full.error_message().find("its queues hold 4 of at most 6 sentences in all"),
            std::string::npos)
      << all_full.error_message();
  grpc::ClientContext k_context;
  TranslateResponse k_response;
  auto k = std::async(std::launch::async, [&] {
    return stub->Translate(&k_context, Request("fr-en", {"k", "l"}), &k_response);
  });
  EXPECT_TRUE(WaitForMetric(*server, R"(taskmoe_queue_depth{task="fr-en"})", 2));
  a_context.TryCancel();
  b_context.TryCancel();
  k_context.TryCancel();
  EXPECT_EQ(a.get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(b.get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(k.get().error_code(), grpc::StatusCode::CANCELLED);
  const grpc::Status g_status = g.get();
  EXPECT_TRUE(g_status.ok()) << g_status.error_message();
}

// One worker, batches of at most 4 sentences that take 20 steps of at least 10 ms each, and 8
// callers keeping en-de's queue full: a de-en request that arrives meanwhile is served after
// the few en-de batches queued before it (its head becomes the oldest), not after the flood.
// This is the no-starvation invariant any scheduler of the server must keep. The same for a
// beam-4 sentence, which decodes as four rows beside the flood's.
TEST_F(ServerTest, ARareTaskIsNotStarvedByAFloodOfAnother) {
  auto server = StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=10",
                             "--max_output_tokens=20", "--workers=1", "--max_batch_sentences=4"});
  ASSERT_NE(server, nullptr);
  constexpr absl::Duration kFlood = absl::Seconds(5);
  const absl::Time flood_end = absl::Now() + kFlood;
  std::atomic<int> flood_served{0};
  std::vector<std::thread> flood;
  for (int i = 0; i < 8; ++i) {
    flood.emplace_back([&] {
      while (absl::Now() < flood_end) {
        TranslateResponse response;
        if (Translate(*server, Request("en-de", {"Hello"}, 20), &response).ok()) ++flood_served;
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(600));
  absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  // The flood keeps sentences waiting, so de-en competes with a backlog.
  EXPECT_GT(MetricValue(*metrics, R"(taskmoe_queue_depth{task="en-de"})"), 0) << *metrics;
  const absl::Time start = absl::Now();
  TranslateResponse response;
  EXPECT_TRUE(Translate(*server, Request("de-en", {"Hallo"}, 20), &response).ok());
  const absl::Duration rare_latency = absl::Now() - start;
  const absl::Time beam_start = absl::Now();
  TranslateRequest beam = Request("de-en", {"Hallo"}, 20);
  beam.mutable_options()->set_beam_size(4);
  EXPECT_TRUE(Translate(*server, beam, &response).ok());
  const absl::Duration beam_latency = absl::Now() - beam_start;
  const bool flooded_throughout = absl::Now() < flood_end;
  for (std::thread& t : flood) t.join();
  // Three batches of about 200 ms at most; starved, it would wait for the flood's end.
  EXPECT_LT(rare_latency, kFlood / 2) << "served after " << absl::FormatDuration(rare_latency);
  EXPECT_LT(beam_latency, kFlood / 2) << "served after " << absl::FormatDuration(beam_latency);
  EXPECT_TRUE(flooded_throughout);
  EXPECT_GT(flood_served.load(), 8);
}

TEST_F(ServerTest, RefusalsBeforeTheCoreAreCounted) {
  // Slow decoding: concurrent translation calls beyond --max_concurrent_rpcs are refused
  // before the translation core sees them (by the server's call limit: Translate runs on
  // gRPC's callback API, which holds no thread a thread quota could count). Messages over
  // --max_request_bytes are refused by gRPC's core before anything else sees them.
  std::vector<std::string> flags = kSlowFlags;
  flags.insert(flags.end(), {"--max_concurrent_rpcs=4", "--max_request_bytes=4096"});
  auto server = StartServer(flags);
  ASSERT_NE(server, nullptr);
  const std::string translate = R"(method="taskmoe.v1.TranslationService/Translate")";
  const auto metric = [&](const std::string& series) {
    absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
    EXPECT_TRUE(metrics.ok()) << metrics.status();
    return metrics.ok() ? MetricValue(*metrics, series) : -1.0;
  };
  const auto core_unfinished = [&] {
    return metric("taskmoe_grpc_core_calls_started_total") -
           metric("taskmoe_grpc_core_calls_succeeded_total") -
           metric("taskmoe_grpc_core_calls_failed_total");
  };
  const double unfinished_before = core_unfinished();

  // Oversized messages: refused in core, seen by nothing but its counters.
  auto stub = v1::TranslationService::NewStub(server->channel());
  for (int i = 0; i < 3; ++i) {
    TranslateResponse response;
    const grpc::Status status =
        Translate(*server, Request("en-de", {std::string(5000, 'a')}), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  EXPECT_EQ(core_unfinished() - unfinished_before, 3);

  // A burst of slow calls, more than the limit: the deadline ends those that get in.
  constexpr int kCalls = 16;
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      TranslateResponse response;
      return Translate(*server, Request("en-de", {"slow"}), &response, absl::Seconds(2));
    }));
  }
  int exhausted = 0, deadline = 0;
  for (auto& call : calls) {
    const grpc::Status status = call.get();
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_NE(status.error_message().find("too many calls in flight (--max_concurrent_rpcs=4)"),
                std::string::npos)
          << status.error_message();
      ++exhausted;
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
      ++deadline;
    }
  }
  ASSERT_GT(exhausted, 0) << "no call was refused by the limit";
  EXPECT_GE(deadline, 4);  // the four that got in, cut by their deadline
  EXPECT_TRUE(WaitForMetric(
      *server,
      absl::StrCat("taskmoe_grpc_calls_total{code=\"RESOURCE_EXHAUSTED\",", translate, "}"),
      exhausted));
  EXPECT_EQ(
      metric(absl::StrCat("taskmoe_grpc_calls_total{code=\"RESOURCE_EXHAUSTED\",", translate, "}")),
      exhausted);
  // The core's own count has only the calls it served; the latency histogram only the
  // successful ones (none here).
  const std::string handler_deadline =
      R"(taskmoe_requests_total{code="DEADLINE_EXCEEDED",method="Translate",task="en-de"})";
  EXPECT_LE(metric(handler_deadline), deadline);
  EXPECT_EQ(metric(R"(taskmoe_request_duration_seconds_count{task="en-de"})"), 0);
  // A method no service has is counted, under one label whatever its name.
  grpc::GenericStub generic(server->channel());
  for (const char* method : {"/no.Such/Method", "/another/one"}) {
    grpc::ClientContext context;
    SetDeadline(context, kLongDeadline);
    grpc::Slice empty_message("");
    grpc::ByteBuffer request(&empty_message, 1), response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status status) { done.set_value(status); });
    EXPECT_EQ(done.get_future().get().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  EXPECT_TRUE(WaitForMetric(
      *server, R"(taskmoe_grpc_calls_total{code="UNIMPLEMENTED",method="unknown"})", 2));
}

// One call of grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with a request
// message encoded by hand (no reflection.proto is installed): `field` is the request's
// oneof field number (4: file_containing_symbol, 7: list_services), `value` its string.
// Returns the response message's bytes, or "" when the call failed.
std::string ReflectionCall(const std::shared_ptr<grpc::Channel>& channel, int field,
                           const std::string& value) {
  std::string request;
  google::protobuf::io::StringOutputStream out(&request);
  {
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.WriteTag(static_cast<uint32_t>(field << 3 | 2));
    coded.WriteVarint32(static_cast<uint32_t>(value.size()));
    coded.WriteString(value);
  }
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(), method, &context));
  grpc::Slice slice(request);
  grpc::ByteBuffer message(&slice, 1), reply;
  if (!stream->Write(message) || !stream->WritesDone() || !stream->Read(&reply)) return "";
  std::vector<grpc::Slice> slices;
  if (!reply.Dump(&slices).ok()) return "";
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  while (stream->Read(&reply)) {
  }
  return stream->Finish().ok() ? bytes : "";
}

// The length-delimited fields number `field` of a serialised message.
std::vector<std::string> Fields(const std::string& message, int field) {
  std::vector<std::string> found;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(message.data()),
                                            static_cast<int>(message.size()));
  for (uint32_t tag; (tag = in.ReadTag()) != 0;) {
    if ((tag & 7) == 2) {
      uint32_t length = 0;
      std::string value;
      if (!in.ReadVarint32(&length) || !in.ReadString(&value, static_cast<int>(length))) break;
      if (static_cast<int>(tag >> 3) == field) found.push_back(value);
    } else if (!google::protobuf::internal::WireFormatLite::SkipField(&in, tag)) {
      break;
    }
  }
  return found;
}

TEST_F(ServerTest, ReflectionDescribesEveryServiceItLists) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  // list_services: ListServiceResponse (field 6) holds ServiceResponse messages (field 1),
  // each with its name (field 1).
  const std::string listed = ReflectionCall(server->channel(), 7, "*");
  ASSERT_FALSE(listed.empty());
  std::set<std::string> services;
  for (const std::string& list : Fields(listed, 6)) {
    for (const std::string& service : Fields(list, 1)) {
      for (const std::string& name : Fields(service, 1)) services.insert(name);
    }
  }
  EXPECT_TRUE(services.count("grpc.health.v1.Health")) << absl::StrJoin(services, ", ");
  EXPECT_TRUE(services.count("taskmoe.v1.TranslationService")) << absl::StrJoin(services, ", ");
  for (const std::string& service : services) {
    // file_containing_symbol: FileDescriptorResponse (field 4) with serialised
    // FileDescriptorProtos (field 1); an ErrorResponse is field 7.
    const std::string reply = ReflectionCall(server->channel(), 4, service);
    EXPECT_TRUE(Fields(reply, 7).empty()) << service << " cannot be described";
    bool described = false;
    for (const std::string& response : Fields(reply, 4)) {
      for (const std::string& file : Fields(response, 1)) {
        google::protobuf::FileDescriptorProto proto;
        ASSERT_TRUE(proto.ParseFromString(file));
        for (const auto& s : proto.service()) {
          described = described || absl::StrCat(proto.package(), ".", s.name()) == service;
        }
      }
    }
    EXPECT_TRUE(described) << service;
  }
}

TEST_F(ServerTest, AJsonBodyIsInvalidArgumentSayingSo) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  // gRPC accepts any application/grpc+... content type and reads the body as protobuf: a
  // JSON body arrives here whatever its content type said.
  grpc::GenericStub generic(server->channel());
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  grpc::Slice json(std::string(R"({"task": "en-de", "texts": ["Hello"]})"));
  grpc::ByteBuffer request(&json, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/taskmoe.v1.TranslationService/Translate", grpc::StubOptions(),
                    &request, &response, [&](grpc::Status status) { done.set_value(status); });
  const grpc::Status status = done.get_future().get();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("JSON is not supported"), std::string::npos)
      << status.error_message();
  EXPECT_TRUE(WaitForMetric(
      *server,
      R"(taskmoe_grpc_calls_total{code="INVALID_ARGUMENT",method="taskmoe.v1.TranslationService/Translate"})",
      1));
}

TEST_F(ServerTest, SigtermDrainsInFlightRequestsAndExitsZero) {
  // 60 steps of >= 10 ms: in flight for at least 0.6 s.
  auto server = StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=10"});
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(HealthStatus(server->channel(), ""), "SERVING");
  EXPECT_EQ(HealthStatus(server->channel(), "taskmoe.v1.TranslationService"), "SERVING");
  EXPECT_EQ(HealthStatus(server->channel(), "en-de"), "SERVING");
  EXPECT_EQ(HealthStatus(server->channel(), "xx-yy"),
            absl::StrCat("error ", grpc::StatusCode::NOT_FOUND));

  TranslateResponse in_flight_response;
  auto in_flight = std::async(std::launch::async, [&] {
    return Translate(*server, Request("en-de", {"Hello", "world"}, 60), &in_flight_response);
  });
  ASSERT_TRUE(WaitForMetric(*server, R"(taskmoe_inflight_requests{task="en-de"})", 1));
  server->Signal(SIGTERM);
  // Health turns NOT_SERVING and new work is refused while the request drains.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (HealthStatus(server->channel(), "") == "SERVING" && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(HealthStatus(server->channel(), "en-de"), "NOT_SERVING");
  TranslateResponse refused;
  const grpc::Status status = Translate(*server, Request("en-de", {"Hi"}), &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();

  const grpc::Status drained = in_flight.get();
  EXPECT_TRUE(drained.ok()) << drained.error_message();
  ASSERT_EQ(in_flight_response.translations_size(), 2);
  EXPECT_EQ(in_flight_response.output_tokens(), 120u);
  EXPECT_EQ(server->WaitExit(absl::Seconds(30)), 0) << server->Log();
}

TEST_F(ServerTest, SigtermCancelsWhatOutlivesTheGracePeriod) {
  auto server = StartServer({"--debug_ignore_eos", "--debug_step_delay_ms=20",
                             "--max_output_tokens=500", "--grace_period_s=1"});
  ASSERT_NE(server, nullptr);
  TranslateResponse response;
  auto in_flight = std::async(std::launch::async, [&] {
    return Translate(*server, Request("en-de", {"Hello"}), &response);
  });
  ASSERT_TRUE(WaitForMetric(*server, R"(taskmoe_inflight_requests{task="en-de"})", 1));
  const absl::Time start = absl::Now();
  server->Signal(SIGTERM);
  const grpc::Status status = in_flight.get();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(server->WaitExit(absl::Seconds(30)), 0) << server->Log();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
}

// --tasks: a shard of a shared repository serves only its tasks, and says so for the others;
// the list is checked against the repository before anything loads.
TEST_F(ServerTest, TasksFlagServesOnlyThoseTasks) {
  auto server = StartServer({"--tasks=en-de, fr-en", "--enable_admin"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TranslationService::NewStub(server->channel());
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  v1::ListTasksResponse list;
  ASSERT_TRUE(stub->ListTasks(&context, v1::ListTasksRequest(), &list).ok());
  std::vector<std::string> ids;
  for (const v1::TaskInfo& task : list.tasks()) ids.push_back(task.task());
  EXPECT_EQ(ids, (std::vector<std::string>{"en-de", "fr-en"}));
  TranslateResponse response;
  EXPECT_TRUE(Translate(*server, Request("fr-en", {"Bonjour"}), &response).ok());
  const grpc::Status other = Translate(*server, Request("de-en", {"Hallo"}), &response);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(other.error_message().find("tasks: en-de, fr-en"), std::string::npos);
  // Nor can a reload bring in a task of the repository outside the list.
  auto admin = v1::AdminService::NewStub(server->channel());
  grpc::ClientContext reload_context;
  SetDeadline(reload_context, kLongDeadline);
  v1::ReloadTaskRequest reload;
  reload.set_task("de-en");
  v1::ReloadTaskResponse reloaded;
  const grpc::Status refused = admin->ReloadTask(&reload_context, reload, &reloaded);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(refused.error_message().find("not among the tasks this server serves (--tasks="),
            std::string::npos)
      << refused.error_message();

  const std::string repo = "--model_repository=" + repository_;
  ExitResult missing = RunServerToExit(
      {repo, "--port=0", "--metrics_port=-1", "--tasks=en-de,xx-yy,zz"}, absl::Seconds(60));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.log.find("--tasks: xx-yy, zz not in the model repository"), std::string::npos)
      << missing.log;
  EXPECT_NE(missing.log.find("(it holds de-en, en-de, en-fr, fr-en)"), std::string::npos);
  ExitResult twice = RunServerToExit({repo, "--tasks=en-de,en-de"}, absl::Seconds(60));
  EXPECT_EQ(twice.code, 2);
  EXPECT_NE(twice.log.find("--tasks: en-de is listed twice"), std::string::npos) << twice.log;
  ExitResult bad = RunServerToExit({repo, "--tasks=en-de,../x"}, absl::Seconds(60));
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.log.find("--tasks: '../x' is not a task id"), std::string::npos) << bad.log;
}

TEST_F(ServerTest, ReloadUnderTrafficDropsNothing) {
  auto server = StartServer({"--enable_admin", "--max_output_tokens=8"});
  ASSERT_NE(server, nullptr);
  auto admin = v1::AdminService::NewStub(server->channel());
  auto reload = [&](const std::string& task, v1::ReloadTaskResponse* response) {
    grpc::ClientContext context;
    SetDeadline(context, kLongDeadline);
    v1::ReloadTaskRequest request;
    request.set_task(task);
    return admin->ReloadTask(&context, request, response);
  };

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::vector<std::string> failures;
  std::mutex mu;
  std::set<std::string> versions;
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        TranslateResponse response;
        const grpc::Status status = Translate(*server, Request("en-de", kTexts), &response);
        std::lock_guard<std::mutex> lock(mu);
        if (status.ok()) {
          ++ok;
          versions.insert(response.model_version());
        } else {
          failures.push_back(status.error_message());
        }
      }
    });
  }
  v1::ReloadTaskResponse first;
  ASSERT_TRUE(WriteRandomTask(repository_, "en-de", 2).ok());
  ASSERT_TRUE(reload("en-de", &first).ok());
  EXPECT_NE(first.previous_version(), first.version());
  absl::SleepFor(absl::Milliseconds(200));

  // A corrupt new version (written by rename, as a deployment would) is refused.
  const std::string weights = repository_ + "/en-de/model.safetensors";
  {
    std::ofstream bad(weights + ".new");
    bad << "not a safetensors file";
  }
  std::filesystem::rename(weights + ".new", weights);
  v1::ReloadTaskResponse refused;
  const grpc::Status corrupt = reload("en-de", &refused);
  EXPECT_EQ(corrupt.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(corrupt.error_message().find("still serving version " + first.version()),
            std::string::npos)
      << corrupt.error_message();
  absl::SleepFor(absl::Milliseconds(200));

  // Back to a good version.
  ASSERT_TRUE(WriteRandomTask(repository_, "en-de", 3).ok());
  v1::ReloadTaskResponse third;
  ASSERT_TRUE(reload("en-de", &third).ok());
  EXPECT_EQ(third.previous_version(), first.version());
  absl::SleepFor(absl::Milliseconds(200));
  stop.store(true);
  for (std::thread& t : clients) t.join();

  EXPECT_TRUE(failures.empty()) << absl::StrJoin(failures, "\n");
  EXPECT_GT(ok.load(), 3);
  EXPECT_TRUE(versions.count(first.version()) == 1) << absl::StrJoin(versions, ", ");
  // The last version serves what offline decoding of its files gives.
  TranslateResponse response;
  ASSERT_TRUE(Translate(*server, Request("en-de", kTexts), &response).ok());
  EXPECT_EQ(response.model_version(), third.version());
  const std::vector<std::string> expected =
      TranslateOffline(repository_ + "/en-de", "en-de", kTexts, "--max_output_tokens=8");
  for (size_t i = 0; i < kTexts.size(); ++i) {
    EXPECT_EQ(response.translations(i).text(), expected[i]);
  }
  absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, R"(taskmoe_model_load_failures_total{task="en-de"})"), 1);

  v1::ReloadTaskResponse unused;
  EXPECT_EQ(reload("xx-yy", &unused).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(reload("../etc", &unused).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(reload("", &unused).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, AdminServiceIsOffByDefault) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto admin = v1::AdminService::NewStub(server->channel());
  grpc::ClientContext context;
  v1::ReloadTaskRequest request;
  request.set_task("en-de");
  v1::ReloadTaskResponse response;
  EXPECT_EQ(admin->ReloadTask(&context, request, &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(ServerTest, MetricsPassPromtool) {
  auto server = StartServer({"--max_output_tokens=8"});
  ASSERT_NE(server, nullptr);
  TranslateResponse response;
  ASSERT_TRUE(Translate(*server, Request("en-de", kTexts), &response).ok());
  EXPECT_EQ(Translate(*server, Request("xx-yy", kTexts), &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  absl::StatusOr<std::string> metrics = ScrapeMetrics(server->metrics_port());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  for (const char* series :
       {R"(taskmoe_requests_total{code="OK",method="Translate",task="en-de"})",
        R"(taskmoe_requests_total{code="NOT_FOUND",method="Translate",task=""})",
        R"(taskmoe_request_duration_seconds_count{task="en-de"})",
        R"(taskmoe_queue_duration_seconds_count{task="en-de"})",
        R"(taskmoe_time_to_first_token_seconds_count{task="en-de"})",
        R"(taskmoe_time_per_output_token_seconds_count{task="en-de"})",
        R"(taskmoe_decode_step_rows_count{task="en-de"})",
        R"(taskmoe_batch_size_count{task="en-de"})", R"(taskmoe_batch_tokens_count{task="en-de"})",
        R"(taskmoe_input_tokens_total{task="en-de"})", "taskmoe_continuous_step_rows_count",
        "taskmoe_continuous_step_tasks_count",
        R"(taskmoe_continuous_admitted_rows_count{at="step_boundary"})",
        R"(taskmoe_model_memory_bytes{task="fr-en"})",
        R"(taskmoe_weight_store_bytes{kind="shared"})", "process_resident_memory_bytes",
        "process_cpu_seconds_total"}) {
    EXPECT_GT(MetricValue(*metrics, series), 0) << series;
  }
  // f32 on oneDNN (AVX-512; the head on our kernel with the greedy filter) or on our kernel
  // (AVX2, with the filter).
  bool found_model_info = false;
  for (const char* paths : {R"(greedy_head_filter="avx512_vnni_int8",matmul_path="onednn_f32")",
                            R"(greedy_head_filter="avx2_int8",matmul_path="avx2_f32")",
                            R"(greedy_head_filter="avx_vnni_int8",matmul_path="avx2_f32")",
                            R"(greedy_head_filter="avx512_vnni_int8",matmul_path="avx2_f32")"}) {
    found_model_info =
        found_model_info ||
        metrics->find(absl::StrCat("taskmoe_model_info{", paths,
                                   R"(,precision="f32",task="en-de",version="sha256:)")) !=
            std::string::npos;
  }
  EXPECT_TRUE(found_model_info);
  EXPECT_NE(metrics->find("taskmoe_cpu_info{isa=\""), std::string::npos);
  const std::string file = MakeTempDir("metrics") + "/scrape.txt";
  std::ofstream(file) << *metrics;
  const std::string command = absl::StrCat("promtool check metrics < ", file, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << "promtool (Debian package prometheus; tools/setup.sh test installs "
                          "it) says:\n"
                       << output;
}

// A request id is logged at debug level: a caller once forged fields with it ("x code=OK
// task=en-fr" logged bare). In text it is one quoted value; in JSON every line parses.
TEST_F(ServerTest, RequestLogLinesCannotBeForgedByTheCaller) {
  const std::string forged = "x code=OK task=en-fr";
  for (const std::string format : {"text", "json"}) {
    SCOPED_TRACE(format);
    auto server = StartServer({"--log_level=debug", "--log_format=" + format});
    ASSERT_NE(server, nullptr);
    TranslateRequest request = Request("no-such-task", {"Hello world."});
    request.set_request_id(forged);
    TranslateResponse response;
    EXPECT_EQ(Translate(*server, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (server->Log().find("no-such-task") == std::string::npos && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    const std::string log = server->Log();
    if (format == "text") {
      EXPECT_NE(log.find(" DEBUG Translate id=\"x code=OK task=en-fr\" task=-"), std::string::npos)
          << log;
      EXPECT_EQ(log.find("id=x "), std::string::npos) << log;
      continue;
    }
    int request_lines = 0;
    for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
      const nlohmann::json parsed =
          nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(parsed.is_discarded()) << "not JSON: " << line;
      ASSERT_TRUE(parsed.contains("time") && parsed.contains("level") && parsed.contains("msg"))
          << line;
      if (parsed["msg"] != "Translate") continue;
      ++request_lines;
      EXPECT_EQ(parsed["id"], forged);
      EXPECT_EQ(parsed["code"], "NOT_FOUND");
      EXPECT_EQ(parsed["task"], "-");
    }
    EXPECT_EQ(request_lines, 1) << log;
  }
}

// config.json records its weights' digest: the offline tool refuses another task's weights
// too (the server's start and reload: fault_test's "weights of another task").
TEST_F(ServerTest, OfflineTranslateRefusesWeightsOfAnotherTask) {
  std::filesystem::copy_file(repository_ + "/en-fr/model.safetensors",
                             repository_ + "/en-de/model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  const CommandResult result =
      RunCommand({TASKMOE_TRANSLATE_BINARY, "--model=" + repository_ + "/en-de", "--task=en-de"},
                 absl::Seconds(60));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("model.safetensors has digest sha256:"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find(" but config.json records sha256:"), std::string::npos)
      << result.output;
}

// A second server on a port the first one holds must refuse to start: with gRPC's default
// SO_REUSEPORT it used to start and take half of the new connections.
TEST_F(ServerTest, PortsInUseAreRefusedAtStart) {
  std::unique_ptr<ServerProcess> first = StartServer({"--admin_port=0", "--enable_admin"});
  ASSERT_NE(first, nullptr);
  const std::string grpc_port = first->address().substr(first->address().rfind(':') + 1);
  const std::string repository = "--model_repository=" + repository_;
  const std::string host = "--host=127.0.0.1";
  const std::string metrics_host = "--metrics_host=127.0.0.1";

  ExitResult grpc_taken = RunServerToExit(
      {repository, host, "--port=" + grpc_port, "--metrics_port=-1"}, absl::Seconds(60));
  EXPECT_EQ(grpc_taken.code, 1) << grpc_taken.log;
  EXPECT_NE(grpc_taken.log.find("cannot listen on 127.0.0.1:" + grpc_port + " (in use"),
            std::string::npos)
      << grpc_taken.log;

  ExitResult admin_taken =
      RunServerToExit({repository, host, "--port=0", "--metrics_port=-1", "--enable_admin",
                       absl::StrCat("--admin_port=", first->admin_port())},
                      absl::Seconds(60));
  EXPECT_EQ(admin_taken.code, 1) << admin_taken.log;
  EXPECT_NE(admin_taken.log.find("for --admin_port (in use"), std::string::npos) << admin_taken.log;

  ExitResult metrics_taken =
      RunServerToExit({repository, host, "--port=0", metrics_host,
                       absl::StrCat("--metrics_port=", first->metrics_port())},
                      absl::Seconds(60));
  EXPECT_EQ(metrics_taken.code, 1) << metrics_taken.log;
  EXPECT_NE(metrics_taken.log.find("cannot serve metrics on"), std::string::npos)
      << metrics_taken.log;

  // The first server still answers every call.
  EXPECT_EQ(HealthStatus(first->channel(), ""), "SERVING");
}

TEST(ServerStartup, RefusesBadFlagsAndBadRepositories) {
  ExitResult no_repository = RunServerToExit({}, absl::Seconds(60));
  EXPECT_EQ(no_repository.code, 2);
  EXPECT_NE(no_repository.log.find("--model_repository is required"), std::string::npos);

  ExitResult bad_flag = RunServerToExit(
      {"--model_repository=/nonexistent", "--max_batch_sentences=0"}, absl::Seconds(60));
  EXPECT_EQ(bad_flag.code, 2);
  EXPECT_NE(bad_flag.log.find("--max_batch_sentences must be >= 1"), std::string::npos);

  for (auto [flag, message] :
       {std::pair<std::string, std::string>{"--max_connections=-1",
                                            "--max_connections must be >= 0"},
        {"--handshake_timeout_s=0", "--handshake_timeout_s, --keepalive_time_s and"},
        {"--batching=fast", "--batching: 'fast' is neither continuous nor per_task"},
        {"--batching=per_task --prefill_first", "--prefill_first needs --batching=continuous"},
        {"--max_admit_tokens=0", "--max_admit_tokens must be >= 1"},
        {"--max_total_queue_sentences=100",
         "--max_queue_sentences (256) must not exceed --max_total_queue_sentences (100)"},
        {"--max_connection_idle_s=-5", "--max_connection_idle_s and --max_connection_age_s"}}) {
    std::vector<std::string> args = {"--model_repository=/nonexistent"};
    for (absl::string_view part : absl::StrSplit(flag, ' ')) args.emplace_back(part);
    ExitResult refused = RunServerToExit(args, absl::Seconds(60));
    EXPECT_EQ(refused.code, 2) << flag;
    EXPECT_NE(refused.log.find(message), std::string::npos) << flag << ": " << refused.log;
  }

  ExitResult bad_log_format =
      RunServerToExit({"--model_repository=/nonexistent", "--log_format=xml"}, absl::Seconds(60));
  EXPECT_EQ(bad_log_format.code, 2);
  EXPECT_NE(bad_log_format.log.find("unknown log format 'xml' (expected text or json)"),
            std::string::npos)
      << bad_log_format.log;

  const std::string common = "--port=0";
  ExitResult missing = RunServerToExit(
      {"--model_repository=/nonexistent/repo", common, "--metrics_port=-1"}, absl::Seconds(60));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.log.find("/nonexistent/repo is not a directory"), std::string::npos)
      << missing.log;

  // One corrupt task with --require_all_tasks: the server refuses to start and names it.
  const std::string repository = MakeTempDir("corrupt");
  ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
  std::ofstream(repository + "/fr-en/config.json") << "{ not json";
  ExitResult corrupt = RunServerToExit(
      {"--model_repository=" + repository, common, "--metrics_port=-1", "--require_all_tasks"},
      absl::Seconds(60));
  EXPECT_EQ(corrupt.code, 1);
  EXPECT_NE(corrupt.log.find("task fr-en:"), std::string::npos) << corrupt.log;
}

}  // namespace
}  // namespace taskmoe::server::testing
