// The command lines of taskmoe-loadtest and taskmoe-make-model: bad input is a clear message
// and exit code 2 before anything is sent or written; --help documents the flags.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/common/process.h"

namespace taskmoe::loadtest::testing {
namespace {

using ::taskmoe::testing::CommandResult;
using ::taskmoe::testing::RunCommand;

struct BadCommand {
  std::vector<std::string> args;
  std::string expected;  // part of the error message
};

CommandResult Loadtest(std::vector<std::string> args) {
  args.insert(args.begin(), TASKMOE_LOADTEST_BINARY);
  return RunCommand(args, absl::Seconds(30));
}

TEST(LoadtestCliTest, BadFlagsAreClearErrors) {
  const std::vector<BadCommand> cases = {
      {{"--concurrency=0"}, "--concurrency: must be in [1, 4096], not 0"},
      {{"--target=192.168.0.1:8500"}, "--target: '192.168.0.1:8500' is not a loopback"},
      {{"--api=bidi"}, "--api: 'bidi' is not unary or stream"},
      {{"--loop=half"}, "--loop: 'half' is not closed or open"},
      {{"--sweep=speed:1,2"}, "--sweep: unknown kind 'speed'"},
      {{"--sweep=batch:1,x"}, "--sweep: 'x' is not a positive number"},
      {{"--api=stream", "--texts_per_request=8"}, "--texts_per_request: TranslateStream"},
      {{"--duration=0s", "--requests=0"}, "a run needs a bound"},
      {{"--plot=x.svg"}, "--plot: a plot shows a sweep"},
      {{"--markdown=t.md"}, "belong to --compare"},
      {{"--compare=a=x.json"}, "--compare: say where to write"},
      {{"--compare=bad", "--markdown=t.md"}, "is not NAME=REPORT.json"},
      {{"extra-argument"}, "unexpected argument 'extra-argument'"},
      {{"--tasks=en-de:0", "--target=127.0.0.1:9"}, "--tasks: weight of en-de"},
  };
  for (const BadCommand& c : cases) {
    const CommandResult r = Loadtest(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args[0] << ": " << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, c.expected)) << c.args[0] << ": " << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "taskmoe-loadtest: ")) << r.output;
  }
}

TEST(LoadtestCliTest, UnparsableValuesAndUnknownFlagsFail) {
  // absl's own parser: its message names the flag; the exit code is non-zero.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--duration=soon"}, {"--concurrency=many"}, {"--no_such_flag"}}) {
    const CommandResult r = Loadtest(args);
    EXPECT_NE(r.exit_code, 0) << args[0];
    EXPECT_FALSE(r.output.empty()) << args[0];
  }
}

TEST(LoadtestCliTest, NoServerIsARunError) {
  // A loopback port bound by this test but not listening: connections to it are refused, and
  // nothing else can take it while the socket is open.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string target = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  const CommandResult r =
      Loadtest({"--target=" + target, "--connect_timeout=300ms", "--requests=1"});
  close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "no server answers at " + target)) << r.output;
}

TEST(LoadtestCliTest, HelpListsTheFlags) {
  const CommandResult r = Loadtest({"--help"});
  for (const char* flag : {"--concurrency", "--rate", "--duration", "--requests", "--warmup",
                           "--tasks", "--texts", "--sweep", "--json", "--plot", "--compare"}) {
    EXPECT_TRUE(absl::StrContains(r.output, flag)) << flag;
  }
}

TEST(MakeModelCliTest, BadFlagsAreClearErrors) {
  const std::vector<BadCommand> cases = {
      {{}, "--spm and --out are required"},
      {{"--spm=" TASKMOE_SPM_MODEL, "--out=/tmp/x", "--kind=sparse"}, "--kind: 'sparse'"},
      {{"--spm=" TASKMOE_SPM_MODEL, "--out=/tmp/x", "--shape=huge"}, "--shape: 'huge'"},
      {{"--spm=" TASKMOE_SPM_MODEL, "--out=/tmp/x", "--d_model=30", "--heads=4"},
       "is not a multiple of --heads"},
      {{"--spm=" TASKMOE_SPM_MODEL, "--out=/tmp/x", "--top_k=9", "--experts=4"}, "exceeds"},
      {{"--spm=" TASKMOE_SPM_MODEL, "--out=/tmp/x", "--shape=tiny", "--tasks=en-xx"},
       "--tasks: no task en-xx"},
      {{"--spm=/nonexistent.model", "--out=/tmp/x", "--shape=tiny"}, "--spm: cannot load"},
      {{"--spm=" TASKMOE_SPM_MODEL, "--out=/tmp/x", "--dtype=f8"}, "--dtype"},
  };
  for (const BadCommand& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.begin(), TASKMOE_MAKE_MODEL_BINARY);
    const CommandResult r = RunCommand(args, absl::Seconds(30));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, c.expected)) << c.expected << ": " << r.output;
  }
}

}  // namespace
}  // namespace taskmoe::loadtest::testing
