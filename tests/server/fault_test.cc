// Fault tests of taskmoe-server (the real binary over loopback gRPC): broken model files at
// start and at reload, clients that vanish mid-request, a burst far over capacity, and
// deadlines shorter than one decoding step. Each ends by checking that the server still
// serves normally and that its metrics say what happened.
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/server/rpc.h"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"
#include "util/sanitizer.h"

namespace taskmoe::server::testing {
namespace {

namespace fs = std::filesystem;
using v1::TranslateRequest;
using v1::TranslateResponse;

// One way to break a task directory, and what the server must say about it.
struct ModelFault {
  std::string name;
  std::function<void(const std::string& task_dir, const std::string& scratch)> apply;
  std::string cause;  // part of the message that names the problem
};

void Truncate(const std::string& path, double fraction) {
  fs::resize_file(path, static_cast<uintmax_t>(fs::file_size(path) * fraction));
}

// Overwrites `bytes` at `offset` (written to a new file and renamed over the old one, as a
// deployment replaces files, so the running server's memory-mapped copy is not touched).
void Overwrite(const std::string& path, size_t offset, const std::string& bytes) {
  std::string content = ReadFile(path);
  content.replace(offset, bytes.size(), bytes);
  std::ofstream(path + ".new", std::ios::binary) << content;
  fs::rename(path + ".new", path);
}

void CopyFileOver(const std::string& from, const std::string& to) {
  fs::copy_file(from, to + ".new", fs::copy_options::overwrite_existing);
  fs::rename(to + ".new", to);
}

std::vector<ModelFault> ModelFaults() {
  std::vector<ModelFault> faults;
  faults.push_back({"truncated weights",
                    [](const std::string& dir, const std::string&) {
                      Truncate(dir + "/model.safetensors", 0.6);
                    },
                    "model.safetensors"});
  faults.push_back({"weights header length beyond the file",
                    [](const std::string& dir, const std::string&) {
                      Overwrite(dir + "/model.safetensors", 0, std::string("\xff\xff\xff\x7f", 4));
                    },
                    "model.safetensors"});
  faults.push_back({"corrupted weights header",
                    [](const std::string& dir, const std::string&) {
                      Overwrite(dir + "/model.safetensors", 8, "[[[[");
                    },
                    "model.safetensors"});
  faults.push_back(
      {"missing weights",
       [](const std::string& dir, const std::string&) { fs::remove(dir + "/model.safetensors"); },
       "model.safetensors"});
  faults.push_back(
      {"truncated config",
       [](const std::string& dir, const std::string&) { Truncate(dir + "/config.json", 0.5); },
       "config.json"});
  faults.push_back(
      {"truncated tokenizer",
       [](const std::string& dir, const std::string&) { Truncate(dir + "/spm.model", 0.5); },
       "spm.model"});
  // Weights of a wider model (d_model 48) under this config (d_model 32).
  faults.push_back({"weights of another shape",
                    [](const std::string& dir, const std::string& scratch) {
                      EXPECT_TRUE(WriteRandomTaskOfWidth(scratch, "en-de", 7, 48).ok());
                      CopyFileOver(scratch + "/en-de/model.safetensors",
                                   dir + "/model.safetensors");
                    },
                    "shape"});
  // Only the weights of another task, of the same shape: they load, and before config.json
  // recorded its files' digests "en-de" answered in French.
  faults.push_back({"weights of another task",
                    [](const std::string& dir, const std::string& scratch) {
                      EXPECT_TRUE(WriteRandomTask(scratch, "en-fr", 1).ok());
                      CopyFileOver(scratch + "/en-fr/model.safetensors",
                                   dir + "/model.safetensors");
                    },
                    "model.safetensors has digest sha256:"});
  // Another task's subnetwork in this task's directory.
  faults.push_back({"files of another task",
                    [](const std::string& dir, const std::string& scratch) {
                      EXPECT_TRUE(WriteRandomTask(scratch, "de-en", 1).ok());
                      for (const char* file : {"config.json", "model.safetensors", "spm.model"}) {
                        CopyFileOver(scratch + "/de-en/" + file, dir + "/" + file);
                      }
                    },
                    "task en-de is not served by "});
  return faults;
}

constexpr char kLoadFailures[] = R"(taskmoe_model_load_failures_total{task="en-de"})";

TEST(ModelFaultsTest, BrokenFilesAtStartWithRequireAllTasksStopTheServerNamingTaskAndCause) {
  for (const ModelFault& fault : ModelFaults()) {
    const std::string repository = MakeTempDir("fault-start");
    ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
    fault.apply(repository + "/en-de", MakeTempDir("fault-scratch"));
    const ExitResult result = RunServerToExit({"--model_repository=" + repository, "--port=0",
                                               "--metrics_port=-1", "--require_all_tasks"},
                                              absl::Seconds(60));
    EXPECT_EQ(result.code, 1) << fault.name << ":\n" << result.log;
    EXPECT_NE(result.log.find("task en-de: "), std::string::npos) << fault.name << ":\n"
                                                                  << result.log;
    EXPECT_NE(result.log.find(fault.cause), std::string::npos) << fault.name << ":\n" << result.log;
  }
}

// Without --require_all_tasks a broken task is reported, with its cause, while the others
// serve; a reload brings it in once its files are fixed.
TEST(ModelFaultsTest, BrokenTaskAtStartIsNotReadyWhileTheOthersServe) {
  const std::vector<ModelFault> faults = ModelFaults();
  for (size_t f = 0; f < faults.size(); ++f) {
    const ModelFault& fault = faults[f];
    SCOPED_TRACE(fault.name);
    const std::string repository = MakeTempDir("fault-partial");
    ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
    fault.apply(repository + "/en-de", MakeTempDir("fault-scratch"));
    absl::StatusOr<std::unique_ptr<ServerProcess>> started =
        ServerProcess::Start(repository, {"--enable_admin", "--max_output_tokens=6"});
    ASSERT_TRUE(started.ok()) << started.status();
    ServerProcess& server = **started;
    auto stub = v1::TranslationService::NewStub(server.channel());

    grpc::ClientContext list_context;
    SetDeadline(list_context, kLongDeadline);
    v1::ListTasksResponse list;
    ASSERT_TRUE(stub->ListTasks(&list_context, v1::ListTasksRequest(), &list).ok());
    ASSERT_EQ(list.tasks_size(), 4);
    for (const v1::TaskInfo& info : list.tasks()) {
      if (info.task() == "en-de") {
        EXPECT_FALSE(info.ready());
        EXPECT_NE(info.load_error().find(fault.cause), std::string::npos) << info.load_error();
      } else {
        EXPECT_TRUE(info.ready()) << info.task();
        EXPECT_EQ(info.load_error(), "") << info.task();
      }
    }
    EXPECT_EQ(HealthStatus(server.channel(), "en-de"), "NOT_SERVING");
    EXPECT_EQ(HealthStatus(server.channel(), "fr-en"), "SERVING");
    TranslateResponse response;
    const grpc::Status broken = Translate(server, Request("en-de", {"Hello world."}), &response);
    EXPECT_EQ(broken.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_NE(broken.error_message().find("task en-de failed to load ("), std::string::npos)
        << broken.error_message();
    EXPECT_NE(broken.error_message().find(fault.cause), std::string::npos)
        << broken.error_message();
    EXPECT_TRUE(Translate(server, Request("fr-en", {"Hello world."}), &response).ok());
    absl::StatusOr<std::string> metrics = ScrapeMetrics(server.metrics_port());
    ASSERT_TRUE(metrics.ok());
    EXPECT_EQ(MetricValue(*metrics, R"(taskmoe_task_ready{task="en-de"})"), 0);
    EXPECT_EQ(MetricValue(*metrics, R"(taskmoe_task_ready{task="fr-en"})"), 1);
    EXPECT_EQ(MetricValue(*metrics, kLoadFailures), 1);
    EXPECT_NE(server.Log().find("task failed to load"), std::string::npos) << server.Log();
    if (f + 1 < faults.size()) continue;

    // Fixed files and a reload bring the task in.
    ASSERT_TRUE(WriteRandomTask(repository, "en-de", 1).ok());
    auto admin = v1::AdminService::NewStub(server.channel());
    grpc::ClientContext reload_context;
    SetDeadline(reload_context, kLongDeadline);
    v1::ReloadTaskRequest reload;
    reload.set_task("en-de");
    v1::ReloadTaskResponse reloaded;
    const grpc::Status status = admin->ReloadTask(&reload_context, reload, &reloaded);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(Translate(server, Request("en-de", {"Hello world."}), &response).ok());
    EXPECT_EQ(HealthStatus(server.channel(), "en-de"), "SERVING");
    grpc::ClientContext get_context;
    SetDeadline(get_context, kLongDeadline);
    v1::GetTaskRequest get;
    get.set_task("en-de");
    v1::TaskInfo info;
    ASSERT_TRUE(stub->GetTask(&get_context, get, &info).ok());
    EXPECT_TRUE(info.ready());
    EXPECT_EQ(info.load_error(), "");
    metrics = ScrapeMetrics(server.metrics_port());
    ASSERT_TRUE(metrics.ok());
    EXPECT_EQ(MetricValue(*metrics, R"(taskmoe_task_ready{task="en-de"})"), 1);
  }
}

// With every task broken there is nothing to serve: the start fails, naming each.
TEST(ModelFaultsTest, NoTaskLoadingStopsTheServer) {
  const std::string repository = MakeTempDir("fault-all");
  ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
  for (const char* task : {"de-en", "en-de", "en-fr", "fr-en"}) {
    std::ofstream(repository + "/" + task + "/config.json") << "{ not json";
  }
  const ExitResult result = RunServerToExit(
      {"--model_repository=" + repository, "--port=0", "--metrics_port=-1"}, absl::Seconds(60));
  EXPECT_EQ(result.code, 1) << result.log;
  EXPECT_NE(result.log.find("no task of " + repository + " loaded: task de-en: "),
            std::string::npos)
      << result.log;
  EXPECT_NE(result.log.find("; task fr-en: "), std::string::npos) << result.log;
}

TEST(ModelFaultsTest, BrokenFilesAtReloadKeepTheOldVersionServing) {
  const std::string repository = MakeTempDir("fault-reload");
  ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
  absl::StatusOr<std::unique_ptr<ServerProcess>> started =
      ServerProcess::Start(repository, {"--enable_admin", "--max_output_tokens=6"});
  ASSERT_TRUE(started.ok()) << started.status();
  ServerProcess& server = **started;
  auto admin = v1::AdminService::NewStub(server.channel());
  auto reload = [&](v1::ReloadTaskResponse* response) {
    grpc::ClientContext context;
    SetDeadline(context, kLongDeadline);
    v1::ReloadTaskRequest request;
    request.set_task("en-de");
    return admin->ReloadTask(&context, request, response);
  };
  TranslateResponse before;
  ASSERT_TRUE(Translate(server, Request("en-de", {"Hello world."}), &before).ok());
  const std::string version = before.model_version();

  int failures = 0;
  for (const ModelFault& fault : ModelFaults()) {
    SCOPED_TRACE(fault.name);
    ASSERT_TRUE(WriteRandomTask(repository, "en-de", 1).ok());  // the good files again
    fault.apply(repository + "/en-de", MakeTempDir("fault-scratch"));
    v1::ReloadTaskResponse response;
    const grpc::Status status = reload(&response);
    ++failures;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(status.error_message().find(fault.cause), std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find("still serving version " + version), std::string::npos)
        << status.error_message();
    // The old version answers as before, and the failure is counted and logged.
    TranslateResponse after;
    ASSERT_TRUE(Translate(server, Request("en-de", {"Hello world."}), &after).ok());
    EXPECT_EQ(after.model_version(), version);
    EXPECT_EQ(after.translations(0).text(), before.translations(0).text());
    absl::StatusOr<std::string> metrics = ScrapeMetrics(server.metrics_port());
    ASSERT_TRUE(metrics.ok());
    EXPECT_EQ(MetricValue(*metrics, kLoadFailures), failures);
    // Logged as a quoted field (server/log.h), so with its quotes and backslashes escaped.
    std::string logged = std::string(status.error_message());
    absl::StrReplaceAll({{"\\", "\\\\"}, {"\"", "\\\""}}, &logged);
    EXPECT_NE(server.Log().find(absl::StrCat("error=\"", logged, "\"")), std::string::npos)
        << server.Log();
  }
  // Repaired files load.
  ASSERT_TRUE(WriteRandomTask(repository, "en-de", 1).ok());
  v1::ReloadTaskResponse repaired;
  const grpc::Status status = reload(&repaired);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(repaired.version(), version);

  // A routing header naming another task is refused before anything loads.
  grpc::ClientContext context;
  SetDeadline(context, kLongDeadline);
  context.AddMetadata("x-taskmoe-task", "fr-en");
  v1::ReloadTaskRequest request;
  request.set_task("en-de");
  v1::ReloadTaskResponse response;
  const grpc::Status mismatch = admin->ReloadTask(&context, request, &response);
  EXPECT_EQ(mismatch.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(mismatch.error_message().find("x-taskmoe-task header: 'fr-en'"), std::string::npos)
      << mismatch.error_message();
}

// --- Clients that go away.

// taskmoe-client in the background, translating one text with the slow model.
std::unique_ptr<ChildProcess> StartClient(const ServerProcess& server,
                                          const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {TASKMOE_CLIENT_BINARY, "--target=" + server.address(),
                                   "--task=en-de", "--deadline_ms=60000"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("Hello world.");
  absl::StatusOr<std::unique_ptr<ChildProcess>> client =
      ChildProcess::Spawn(argv, MakeTempDir("client") + "/out");
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

class VanishingClientTest : public RandomRepositoryTest {
 protected:
  void SetUp() override {
    RandomRepositoryTest::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(repository_, kSlowFlags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // Kills a client once the server has decoded a few of its tokens, then checks the server
  // gives up the request as CANCELLED and serves the next one.
  void KillClientMidRequest(const std::vector<std::string>& client_flags,
                            const std::string& method) {
    std::unique_ptr<ChildProcess> client = StartClient(*server_, client_flags);
    ASSERT_NE(client, nullptr);
    // In flight, then a few steps of 10 ms into its 400.
    ASSERT_TRUE(WaitForMetric(*server_, R"(taskmoe_inflight_requests{task="en-de"})", 1))
        << client->Log().substr(0, 1000);
    absl::SleepFor(absl::Milliseconds(300));
    ASSERT_TRUE(client->Running()) << client->Log().substr(0, 1000);
    client->Signal(SIGKILL);
    const absl::Time killed = absl::Now();
    EXPECT_TRUE(WaitForMetric(*server_,
                              absl::StrCat(R"(taskmoe_requests_total{code="CANCELLED",method=")",
                                           method, R"(",task="en-de"})"),
                              1))
        << server_->Log();
    EXPECT_TRUE(WaitForMetricAtMost(*server_, R"(taskmoe_inflight_requests{task="en-de"})", 0));
    // The decode stopped at its next steps, not after its 400 steps of 10 ms.
    EXPECT_LT(absl::Now() - killed, absl::Seconds(3));
    TranslateResponse response;
    EXPECT_TRUE(Translate(*server_, Request("en-de", {"Hi"}, 3), &response).ok());
  }

  std::unique_ptr<ServerProcess> server_;
};

TEST_F(VanishingClientTest, DisconnectMidStream) {
  KillClientMidRequest({"--stream"}, "TranslateStream");
}

TEST_F(VanishingClientTest, DisconnectMidUnaryRequest) { KillClientMidRequest({}, "Translate"); }

// --- Overload.

// VmHWM (peak resident set) of a process in bytes, or -1.
int64_t PeakResidentBytes(pid_t pid) {
  for (absl::string_view line :
       absl::StrSplit(ReadFile(absl::StrCat("/proc/", pid, "/status")), '\n')) {
    if (absl::ConsumePrefix(&line, "VmHWM:")) {
      int64_t kib = 0;
      if (absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(line), " kB"), &kib)) {
        return kib * 1024;
      }
    }
  }
  return -1;
}

TEST(OverloadTest, BurstFarOverCapacityIsRefusedWithBoundedMemoryAndRecovers) {
  const std::string repository = MakeTempDir("repository");
  ASSERT_TRUE(WriteRandomRepository(repository, 1).ok());
  // Capacity: one worker, batches of 4, queues of 16 sentences per task, 20 steps of >= 2 ms
  // per sentence, so a few requests per second. The burst is 600 requests of 4 texts at once.
  absl::StatusOr<std::unique_ptr<ServerProcess>> started =
      ServerProcess::Start(repository, {"--debug_ignore_eos", "--debug_step_delay_ms=2",
                                        "--max_output_tokens=20", "--max_batch_sentences=4",
                                        "--max_queue_sentences=16", "--max_texts_per_request=4"});
  ASSERT_TRUE(started.ok()) << started.status();
  ServerProcess& server = **started;
  const std::vector<std::string> texts = {"The quick brown fox jumps over the lazy dog.",
                                          "How are you today?", "Hello world.", "Yes"};
  TranslateResponse warm;
  ASSERT_TRUE(Translate(server, Request("en-de", texts), &warm).ok());
  const int64_t peak_before = PeakResidentBytes(server.pid());
  ASSERT_GT(peak_before, 0);

  // Every call of the burst in flight at once on one channel, through the callback API.
  constexpr int kBurst = 600;
  const std::vector<std::string> tasks = RandomRepositoryTasks();
  auto stub = v1::TranslationService::NewStub(server.channel());
  struct Call {
    grpc::ClientContext context;
    TranslateRequest request;
    TranslateResponse response;
  };
  std::vector<std::unique_ptr<Call>> calls;
  std::mutex mu;
  std::condition_variable all_done;
  int done = 0;
  std::map<grpc::StatusCode, int> codes;
  std::map<grpc::StatusCode, std::string> messages;  // the first of each code
  bool queue_refusal_seen = false;
  for (int i = 0; i < kBurst; ++i) {
    auto call = std::make_unique<Call>();
    SetDeadline(call->context, kLongDeadline);
    call->request = Request(tasks[i % tasks.size()], texts);
    Call* c = call.get();
    calls.push_back(std::move(call));
    stub->async()->Translate(&c->context, &c->request, &c->response, [&](grpc::Status status) {
      std::lock_guard<std::mutex> lock(mu);
      ++codes[status.error_code()];
      messages.emplace(status.error_code(), status.error_message());
      queue_refusal_seen |= status.error_message().find("is overloaded") != std::string::npos;
      if (++done == kBurst) all_done.notify_one();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(all_done.wait_for(lock, std::chrono::seconds(120), [&] { return done == kBurst; }))
        << done << " of " << kBurst << " calls finished";
  }
  // Some are served, the rest refused as overload; nothing else.
  std::string summary;
  for (const auto& [code, count] : codes) {
    absl::StrAppend(&summary, code, ": ", count, " (", messages[code], ")\n");
  }
  EXPECT_GT(codes[grpc::StatusCode::OK], 0) << summary;
  EXPECT_GT(codes[grpc::StatusCode::RESOURCE_EXHAUSTED], kBurst / 2) << summary;
  EXPECT_EQ(codes[grpc::StatusCode::OK] + codes[grpc::StatusCode::RESOURCE_EXHAUSTED], kBurst)
      << summary;
  // The task queues' limit refused some (gRPC's own limit on concurrent calls may refuse
  // others).
  EXPECT_TRUE(queue_refusal_seen) << summary;

  // Memory stayed bounded: refused requests hold nothing, queues are capped. (Sanitizers keep
  // freed memory in quarantine, so their bound is looser.)
  const int64_t peak_after = PeakResidentBytes(server.pid());
  std::cout << "burst of " << kBurst << " calls, by code:\n"
            << summary << "peak RSS " << (peak_before >> 20) << " MiB before, "
            << (peak_after >> 20) << " MiB after\n";
#ifdef TASKMOE_SANITIZER_BUILD
  const int64_t bound = int64_t{512} << 20;
#else
  const int64_t bound = int64_t{64} << 20;
#endif
  EXPECT_LT(peak_after - peak_before, bound)
      << "peak RSS " << (peak_before >> 20) << " MiB before the burst, " << (peak_after >> 20)
      << " MiB after";

  // And the server recovers: queues drain, the next requests are served as before.
  for (const std::string& task : tasks) {
    EXPECT_TRUE(WaitForMetricAtMost(
        server, absl::StrCat(R"(taskmoe_queue_depth{task=")", task, R"("})"), 0));
    EXPECT_TRUE(WaitForMetricAtMost(
        server, absl::StrCat(R"(taskmoe_inflight_requests{task=")", task, R"("})"), 0));
  }
  TranslateResponse after;
  ASSERT_TRUE(Translate(server, Request("en-de", texts), &after).ok());
  for (int i = 0; i < after.translations_size(); ++i) {
    EXPECT_EQ(after.translations(i).text(), warm.translations(i).text());
  }
}

// --- Deadlines shorter than one decoding step (each step takes >= 200 ms here).

class ShortDeadlineTest : public RandomRepositoryTest {
 protected:
  void SetUp() override {
    RandomRepositoryTest::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
        repository_, {"--debug_ignore_eos", "--debug_step_delay_ms=200", "--max_output_tokens=50"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    // One step: the task's series exist from here on.
    TranslateResponse response;
    ASSERT_TRUE(Translate(*server_, Request("en-de", {"Hi"}, 1), &response).ok());
  }

  double Metric(const std::string& series) {
    absl::StatusOr<std::string> metrics = ScrapeMetrics(server_->metrics_port());
    return metrics.ok() ? MetricValue(*metrics, series) : -1;
  }

  std::unique_ptr<ServerProcess> server_;
};

constexpr char kUnaryDeadlines[] =
    R"(taskmoe_requests_total{code="DEADLINE_EXCEEDED",method="Translate",task="en-de"})";

TEST_F(ShortDeadlineTest, UnaryAndStreamStopWithinAStep) {
  for (absl::Duration deadline :
       {absl::Milliseconds(1), absl::Milliseconds(20), absl::Milliseconds(150)}) {
    SCOPED_TRACE(absl::FormatDuration(deadline));
    TranslateResponse response;
    const absl::Time start = absl::Now();
    const grpc::Status status =
        Translate(*server_, Request("en-de", {"Hello", "world"}), &response, deadline);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
    EXPECT_LT(absl::Now() - start, deadline + absl::Seconds(1));
    // The server is idle again within a step or two, not after 50 steps.
    EXPECT_TRUE(WaitForMetricAtMost(*server_, R"(taskmoe_inflight_requests{task="en-de"})", 0));
  }
  // A call whose deadline passes in transit never reaches a handler; the 150 ms one did.
  EXPECT_GE(Metric(kUnaryDeadlines), 1);

  auto stub = v1::TranslationService::NewStub(server_->channel());
  v1::TranslateStreamRequest request;
  request.set_task("en-de");
  request.set_text("Hello world.");
  grpc::ClientContext context;
  SetDeadline(context, absl::Milliseconds(100));
  auto reader = stub->TranslateStream(&context, request);
  v1::TranslateStreamResponse message;
  int messages = 0;
  while (reader->Read(&message)) ++messages;
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LE(messages, 1);
  EXPECT_TRUE(WaitForMetricAtMost(*server_, R"(taskmoe_inflight_requests{task="en-de"})", 0));

  // A request that fits in its deadline still succeeds (one step: about 200 ms).
  TranslateResponse response;
  const grpc::Status ok =
      Translate(*server_, Request("en-de", {"Hi"}, 1), &response, absl::Seconds(10));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
}

TEST_F(ShortDeadlineTest, DeadlinePassingInTheQueueLeavesItUndecoded) {
  // A long request keeps the only worker busy; one behind it times out while queued.
  grpc::ClientContext long_context;
  SetDeadline(long_context, kLongDeadline);
  TranslateResponse long_response;
  auto stub = v1::TranslationService::NewStub(server_->channel());
  std::mutex mu;
  std::condition_variable finished;
  bool long_done = false;
  grpc::Status long_status;
  TranslateRequest long_request = Request("en-de", {"Hello"});
  stub->async()->Translate(&long_context, &long_request, &long_response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    long_status = std::move(s);
    long_done = true;
    finished.notify_one();
  });
  // Taken by the worker (its queue is empty again) and decoding.
  ASSERT_TRUE(WaitForMetric(*server_, R"(taskmoe_inflight_requests{task="en-de"})", 1));
  ASSERT_TRUE(WaitForMetricAtMost(*server_, R"(taskmoe_queue_depth{task="en-de"})", 0));

  TranslateResponse response;
  const grpc::Status queued =
      Translate(*server_, Request("en-de", {"world"}), &response, absl::Seconds(1));
  EXPECT_EQ(queued.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // It left the queue without waiting for the worker.
  EXPECT_TRUE(WaitForMetric(*server_, kUnaryDeadlines, 1));
  EXPECT_TRUE(WaitForMetricAtMost(*server_, R"(taskmoe_queue_depth{task="en-de"})", 0));
  // A call is counted in taskmoe_requests_total when it finishes and leaves the inflight gauge
  // when gRPC is done with it, a moment later (slow under TSan): wait for that, then only the
  // long request is left.
  EXPECT_TRUE(WaitForMetricAtMost(*server_, R"(taskmoe_inflight_requests{task="en-de"})", 1));
  EXPECT_EQ(Metric(R"(taskmoe_inflight_requests{task="en-de"})"), 1);

  long_context.TryCancel();
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(finished.wait_for(lock, std::chrono::seconds(30), [&] { return long_done; }));
  EXPECT_EQ(long_status.error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace taskmoe::server::testing
