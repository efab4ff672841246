// Unit tests of taskmoe-client's flag and argument checks (no server needed).
#include "server/client/client_command.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "server/client/client.h"
#include "tests/common/process.h"

namespace taskmoe::client {
namespace {

ClientFlags Translating(const std::string& task = "en-de") {
  ClientFlags flags;
  flags.task = task;
  return flags;
}

// The message of the error MakeClientCommand gives, or "" when it succeeds.
std::string ErrorOf(const ClientFlags& flags, std::vector<std::string> args = {}) {
  absl::StatusOr<ClientCommand> command = MakeClientCommand(flags, std::move(args));
  if (command.ok()) return "";
  EXPECT_EQ(command.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(command.status().message());
}

TEST(ClientCommand, TranslatesArgumentsOrStdin) {
  absl::StatusOr<ClientCommand> args = MakeClientCommand(Translating(), {"Hello", "World"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->mode, ClientMode::kTranslate);
  EXPECT_EQ(args->texts, (std::vector<std::string>{"Hello", "World"}));
  EXPECT_FALSE(args->texts_from_stdin);

  absl::StatusOr<ClientCommand> stdin_texts = MakeClientCommand(Translating(), {});
  ASSERT_TRUE(stdin_texts.ok());
  EXPECT_TRUE(stdin_texts->texts_from_stdin);

  ClientFlags stream = Translating();
  stream.stream = true;
  absl::StatusOr<ClientCommand> streaming = MakeClientCommand(stream, {"Hi"});
  ASSERT_TRUE(streaming.ok());
  EXPECT_EQ(streaming->mode, ClientMode::kStream);
}

TEST(ClientCommand, OtherModes) {
  ClientFlags list;
  list.list_tasks = true;
  EXPECT_EQ(MakeClientCommand(list, {})->mode, ClientMode::kListTasks);
  ClientFlags get;
  get.get_task = "en-de";
  EXPECT_EQ(MakeClientCommand(get, {})->mode, ClientMode::kGetTask);
  ClientFlags reload;
  reload.reload = "en-de";
  EXPECT_EQ(MakeClientCommand(reload, {})->mode, ClientMode::kReload);

  ClientFlags health;
  health.health = true;
  absl::StatusOr<ClientCommand> overall = MakeClientCommand(health, {});
  ASSERT_TRUE(overall.ok());
  EXPECT_EQ(overall->mode, ClientMode::kHealth);
  EXPECT_EQ(overall->health_service, "");
  EXPECT_EQ(MakeClientCommand(health, {"en-de"})->health_service, "en-de");
  health.task = "fr-en";
  EXPECT_EQ(MakeClientCommand(health, {})->health_service, "fr-en");
}

TEST(ClientCommand, RefusesBadFlagsNamingThem) {
  EXPECT_NE(ErrorOf(Translating(""), {"Hi"}).find("--task is required"), std::string::npos);
  ClientFlags flags = Translating();
  flags.target = "";
  EXPECT_NE(ErrorOf(flags).find("--target is empty"), std::string::npos);

  flags = Translating();
  flags.tls_cert_file = "client.pem";
  EXPECT_NE(ErrorOf(flags, {"Hi"}).find("--tls_cert_file and --tls_key_file go together"),
            std::string::npos);

  flags = Translating();
  flags.list_tasks = true;
  flags.health = true;
  EXPECT_NE(ErrorOf(flags).find("--list_tasks and --health cannot be combined"), std::string::npos);

  flags = Translating();
  flags.stream = true;
  flags.beam_size = 4;
  EXPECT_NE(ErrorOf(flags, {"Hi"}).find("--stream decodes greedily"), std::string::npos);
  flags.beam_size = 0;
  flags.concurrency = 4;
  EXPECT_NE(ErrorOf(flags, {"Hi"}).find("drop --concurrency"), std::string::npos);

  for (auto [field, message] : std::vector<std::pair<int ClientFlags::*, std::string>>{
           {&ClientFlags::beam_size, "--beam_size must be in [0, 1024], got -1"},
           {&ClientFlags::max_output_tokens, "--max_output_tokens must be in"},
           {&ClientFlags::deadline_ms, "--deadline_ms must be in"},
           {&ClientFlags::texts_per_request, "--texts_per_request must be in [1,"},
           {&ClientFlags::concurrency, "--concurrency must be in [1,"}}) {
    flags = Translating();
    flags.*field = -1;
    EXPECT_NE(ErrorOf(flags).find(message), std::string::npos) << message;
  }
  flags = Translating();
  flags.length_penalty = -0.5;
  EXPECT_NE(ErrorOf(flags).find("--length_penalty must be >= 0"), std::string::npos);

  ClientFlags list;
  list.list_tasks = true;
  EXPECT_NE(ErrorOf(list, {"Hello"}).find("--list_tasks takes no texts"), std::string::npos);
  list.stream = true;
  EXPECT_NE(ErrorOf(list).find("--stream translates"), std::string::npos);
  ClientFlags health;
  health.health = true;
  EXPECT_NE(ErrorOf(health, {"a", "b"}).find("--health checks one service"), std::string::npos);
}

// TLS files are read before anything is sent; a bad one is a clear error naming the flag.
TEST(OpenChannel, RefusesUnreadableOrNonPemTlsFiles) {
  ClientFlags flags = Translating();
  flags.tls_ca_file = "/nonexistent/ca.pem";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> missing = OpenChannel(flags);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "--tls_ca_file: cannot read /nonexistent/ca.pem");

  // In a directory of its own, removed when the test exits (tests/common/process.h).
  const std::string not_pem = taskmoe::testing::MakeTempDir("client-tls") + "/not-pem.txt";
  std::ofstream(not_pem) << "just text\n";
  flags.tls_ca_file = not_pem;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> text = OpenChannel(flags);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(text.status().message().find("--tls_ca_file: " + not_pem + " is not a PEM file"),
            std::string::npos)
      << text.status();

  flags.tls_ca_file.clear();
  flags.tls_cert_file = not_pem;
  EXPECT_NE(OpenChannel(flags).status().message().find("--tls_cert_file:"), std::string::npos);
}

}  // namespace
}  // namespace taskmoe::client
