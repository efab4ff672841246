// Integration tests of the clients: taskmoe-client (the CLI) and the Python example, run as
// processes against the real server on a repository of tiny random subnetworks. Their output
// is compared with what a direct gRPC call returns.
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/common/process.h"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

using ::taskmoe::testing::RunCommandWithInput;
using CommandResult = ::taskmoe::testing::SeparateOutputs;

class ClientTest : public RandomRepositoryTest {
 protected:
  void StartServer(const std::vector<std::string>& flags) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(repository_, flags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // The translations a direct Translate call returns, one per line.
  std::string Expected(const std::vector<std::string>& texts, int max_output_tokens) {
    auto stub = v1::TranslationService::NewStub(server_->channel());
    v1::TranslateRequest request;
    request.set_task("en-de");
    for (const std::string& t : texts) request.add_texts(t);
    request.mutable_options()->set_max_output_tokens(max_output_tokens);
    v1::TranslateResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(stub->Translate(&context, request, &response).ok());
    std::string lines;
    for (const v1::Translation& t : response.translations())
      absl::StrAppend(&lines, t.text(), "\n");
    return lines;
  }

  std::vector<std::string> Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {TASKMOE_CLIENT_BINARY, "--target=" + server_->address()});
    return args;
  }

  std::unique_ptr<ServerProcess> server_;
};

const std::vector<std::string> kClientTexts = {"Hello world.", "How are you today?", "Yes"};

TEST_F(ClientTest, CliTranslatesStreamsAndDescribes) {
  StartServer({"--max_output_tokens=16", "--enable_admin"});
  const std::string expected = Expected(kClientTexts, 16);

  CommandResult args =
      RunCommandWithInput(Cli({"--task=en-de", kClientTexts[0], kClientTexts[1], kClientTexts[2]}));
  EXPECT_EQ(args.exit_code, 0) << args.err;
  EXPECT_EQ(args.out, expected);

  // Stdin lines, one text per request, concurrently: order kept, blank lines kept.
  CommandResult lines = RunCommandWithInput(
      Cli({"--task=en-de", "--texts_per_request=1", "--concurrency=3", "--stats"}),
      absl::StrCat(kClientTexts[0], "\n\n", kClientTexts[1], "\n", kClientTexts[2], "\n"));
  EXPECT_EQ(lines.exit_code, 0) << lines.err;
  const std::vector<std::string> want = absl::StrSplit(expected, '\n');
  EXPECT_EQ(lines.out, absl::StrCat(want[0], "\n\n", want[1], "\n", want[2], "\n"));
  EXPECT_NE(lines.err.find("stats: 3 texts in 3 requests"), std::string::npos) << lines.err;

  CommandResult stream =
      RunCommandWithInput(Cli({"--task=en-de", "--stream", kClientTexts[0], kClientTexts[2]}));
  EXPECT_EQ(stream.exit_code, 0) << stream.err;
  EXPECT_EQ(stream.out, absl::StrCat(want[0], "\n", want[2], "\n"));

  CommandResult list = RunCommandWithInput(Cli({"--list_tasks"}));
  EXPECT_EQ(list.exit_code, 0) << list.err;
  for (const std::string& task : RandomRepositoryTasks()) {
    EXPECT_NE(list.out.find("\n" + task + " "), std::string::npos) << list.out;
  }

  CommandResult get = RunCommandWithInput(Cli({"--get_task=en-fr"}));
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_NE(get.out.find("target_language: fr\n"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("parent_digest: " + ParentDigest(1)), std::string::npos) << get.out;

  for (const char* service : {"", "en-de", "taskmoe.v1.TranslationService"}) {
    CommandResult health = RunCommandWithInput(Cli({"--health", service}));
    EXPECT_EQ(health.exit_code, 0) << service << ": " << health.err;
    EXPECT_EQ(health.out, "SERVING\n") << service;
  }

  ASSERT_TRUE(WriteRandomTask(repository_, "en-de", 2).ok());
  CommandResult reload = RunCommandWithInput(Cli({"--reload=en-de"}));
  EXPECT_EQ(reload.exit_code, 0) << reload.err;
  EXPECT_EQ(reload.out.rfind("reloaded en-de: sha256:", 0), 0u) << reload.out;
}

TEST_F(ClientTest, CliReportsErrorsWithTheirCode) {
  StartServer({"--max_output_tokens=16"});
  CommandResult unknown = RunCommandWithInput(Cli({"--task=xx-yy", "Hello"}));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(unknown.out, "");
  EXPECT_NE(unknown.err.find("taskmoe-client: NOT_FOUND: task 'xx-yy' is not served here"),
            std::string::npos)
      << unknown.err;

  CommandResult limit =
      RunCommandWithInput(Cli({"--task=en-de", "--max_output_tokens=17", "Hello"}));
  EXPECT_EQ(limit.exit_code, 1);
  EXPECT_NE(limit.err.find("INVALID_ARGUMENT: options.max_output_tokens: 17"), std::string::npos)
      << limit.err;

  CommandResult health = RunCommandWithInput(Cli({"--health", "xx-yy"}));
  EXPECT_EQ(health.exit_code, 1);
  EXPECT_NE(health.err.find("NOT_FOUND"), std::string::npos) << health.err;

  CommandResult admin_off = RunCommandWithInput(Cli({"--reload=en-de"}));
  EXPECT_EQ(admin_off.exit_code, 1);
  EXPECT_NE(admin_off.err.find("UNIMPLEMENTED"), std::string::npos) << admin_off.err;

  CommandResult usage = RunCommandWithInput(Cli({"Hello"}));
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_NE(usage.err.find("--task is required"), std::string::npos) << usage.err;

  // Nothing listens on port 1 of loopback.
  CommandResult down = RunCommandWithInput(
      {TASKMOE_CLIENT_BINARY, "--target=127.0.0.1:1", "--deadline_ms=5000", "--list_tasks"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("taskmoe-client: UNAVAILABLE: "), std::string::npos) << down.err;
}

TEST_F(ClientTest, PythonExample) {
  if (std::system("/usr/bin/python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3-grpcio / python3-grpc-tools are not installed";
  }
  StartServer({"--max_output_tokens=16"});
  const std::vector<std::string> python = {"/usr/bin/python3", TASKMOE_PYTHON_CLIENT,
                                           "--target=" + server_->address()};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.begin(), python.begin(), python.end());
    return args;
  };
  CommandResult translate = RunCommandWithInput(
      with({"--task=en-de", kClientTexts[0], kClientTexts[1], kClientTexts[2]}));
  EXPECT_EQ(translate.exit_code, 0) << translate.err;
  const std::string expected = Expected(kClientTexts, 16);
  EXPECT_EQ(translate.out, expected);

  CommandResult stream =
      RunCommandWithInput(with({"--task=en-de", "--stream"}), kClientTexts[0] + "\n");
  EXPECT_EQ(stream.exit_code, 0) << stream.err;
  EXPECT_EQ(stream.out, expected.substr(0, expected.find('\n') + 1));

  CommandResult list = RunCommandWithInput(with({"--list_tasks"}));
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("fr-en\tfr->en\tsha256:"), std::string::npos) << list.out;

  CommandResult health = RunCommandWithInput(with({"--health", "en-de"}));
  EXPECT_EQ(health.out, "SERVING\n") << health.err;

  CommandResult unknown = RunCommandWithInput(with({"--task=xx-yy", "Hi"}));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("python_client: NOT_FOUND: task 'xx-yy'"), std::string::npos)
      << unknown.err;
}

}  // namespace
}  // namespace taskmoe::server::testing
