// taskmoe-client: a command-line client of taskmoe-server (docs/api.md "Command-line
// client"). Translates texts given as arguments or as stdin lines, streams tokens, lists and
// describes tasks, checks health and reloads a task.
//
//   taskmoe-client --target localhost:8500 --task en-de "Hello world."
//   taskmoe-client --task en-de < input.txt > output.txt
//   taskmoe-client --list_tasks | --get_task en-de | --health [en-de] | --reload en-de
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "server/client/client.h"
#include "server/client/client_command.h"
#include "util/command_line.h"

namespace {
const taskmoe::client::ClientFlags kDefaults;
}  // namespace

ABSL_FLAG(std::string, target, kDefaults.target, "Server address, host:port");
ABSL_FLAG(std::string, task, "", "Task to translate with, e.g. en-de (or the --health service)");
ABSL_FLAG(bool, stream, false,
          "Use TranslateStream: print each text's translation piece by piece as it is decoded "
          "(greedy only; one text at a time)");
ABSL_FLAG(int, beam_size, kDefaults.beam_size,
          "Beam size (0: the server's default, greedy; 1: greedy; more: beam search)");
ABSL_FLAG(int, max_output_tokens, kDefaults.max_output_tokens,
          "Most tokens generated per text (0: the server's default and limit)");
ABSL_FLAG(double, length_penalty, kDefaults.length_penalty,
          "Beam search length penalty alpha (0: none)");
ABSL_FLAG(bool, scores, false, "Print each translation's score before it, tab-separated");
ABSL_FLAG(std::string, request_id, "", "Request id sent with every request (the server logs it)");
ABSL_FLAG(int, deadline_ms, kDefaults.deadline_ms, "Deadline of each RPC in ms (0: none)");
ABSL_FLAG(int, texts_per_request, kDefaults.texts_per_request,
          "Texts sent in one Translate request (at most the server's --max_texts_per_request)");
ABSL_FLAG(int, concurrency, kDefaults.concurrency,
          "Translate requests in flight at once (output order is kept)");
ABSL_FLAG(bool, stats, false,
          "After translating, print to stderr: texts/s, output tokens/s and request latency "
          "percentiles");
ABSL_FLAG(bool, tls, false, "Connect over TLS, verifying the server with the system's CAs");
ABSL_FLAG(std::string, tls_ca_file, "", "PEM CA bundle to verify the server with (implies --tls)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM client certificate for mutual TLS (with --tls_key_file; implies --tls)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the server's certificate instead of the --target host");
ABSL_FLAG(bool, list_tasks, false, "List the server's tasks (ListTasks)");
ABSL_FLAG(std::string, get_task, "", "Describe this task (GetTask)");
ABSL_FLAG(bool, health, false,
          "Check health (grpc.health.v1): of the whole server, or of the service or task given "
          "as the argument or --task. Prints SERVING/NOT_SERVING; exit 0 only when SERVING");
ABSL_FLAG(std::string, reload, "",
          "Reload this task from the server's model repository (AdminService.ReloadTask; the "
          "server needs --enable_admin)");

int main(int argc, char** argv) {
  std::vector<char*> positional = taskmoe::util::ParseCommandLine(
      argc, argv,
      "Command-line client of taskmoe-server. Translations go to stdout, one per line; errors "
      "to stderr as 'taskmoe-client: CODE: message' with exit code 1 (2 for bad flags).\n"
      "  taskmoe-client [--target localhost:8500] --task en-de [TEXT ...]   "
      "(no TEXT: one text per stdin line)\n"
      "  taskmoe-client --task en-de --stream \"Hello world.\"\n"
      "  taskmoe-client --list_tasks | --get_task en-de | --health [SERVICE] | --reload en-de",
      "client_main.cc");
  taskmoe::client::ClientFlags flags;
  flags.target = absl::GetFlag(FLAGS_target);
  flags.task = absl::GetFlag(FLAGS_task);
  flags.stream = absl::GetFlag(FLAGS_stream);
  flags.beam_size = absl::GetFlag(FLAGS_beam_size);
  flags.max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens);
  flags.length_penalty = absl::GetFlag(FLAGS_length_penalty);
  flags.scores = absl::GetFlag(FLAGS_scores);
  flags.request_id = absl::GetFlag(FLAGS_request_id);
  flags.deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  flags.texts_per_request = absl::GetFlag(FLAGS_texts_per_request);
  flags.concurrency = absl::GetFlag(FLAGS_concurrency);
  flags.stats = absl::GetFlag(FLAGS_stats);
  flags.list_tasks = absl::GetFlag(FLAGS_list_tasks);
  flags.get_task = absl::GetFlag(FLAGS_get_task);
  flags.health = absl::GetFlag(FLAGS_health);
  flags.reload = absl::GetFlag(FLAGS_reload);
  flags.tls = absl::GetFlag(FLAGS_tls);
  flags.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  flags.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  flags.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  flags.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  absl::StatusOr<taskmoe::client::ClientCommand> command = taskmoe::client::MakeClientCommand(
      flags, std::vector<std::string>(positional.begin() + 1, positional.end()));
  if (!command.ok()) {
    std::fprintf(stderr, "taskmoe-client: %s (see --help)\n",
                 std::string(command.status().message()).c_str());
    return taskmoe::client::kExitUsage;
  }
  return taskmoe::client::RunClient(*command, std::cin, std::cout, std::cerr);
}
