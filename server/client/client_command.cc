// Validation of taskmoe-client's flags and arguments.
#include "server/client/client_command.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace taskmoe::client {
namespace {

absl::Status InRange(const char* flag, int value, int low, int high) {
  if (value >= low && value <= high) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " must be in [", low, ", ", high, "], got ", value));
}

}  // namespace

absl::StatusOr<ClientCommand> MakeClientCommand(const ClientFlags& flags,
                                                std::vector<std::string> args) {
  ClientCommand command;
  command.flags = flags;
  if (flags.tls_cert_file.empty() != flags.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together: give both or neither");
  }
  if (flags.target.empty()) {
    return absl::InvalidArgumentError("--target is empty; give host:port, e.g. localhost:8500");
  }
  std::vector<std::string> modes;
  if (flags.list_tasks) modes.push_back("--list_tasks");
  if (!flags.get_task.empty()) modes.push_back("--get_task");
  if (flags.health) modes.push_back("--health");
  if (!flags.reload.empty()) modes.push_back("--reload");
  if (modes.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::StrJoin(modes, " and "), " cannot be combined; give one of them"));
  }
  for (absl::Status s : {InRange("deadline_ms", flags.deadline_ms, 0, 3600 * 1000),
                         InRange("beam_size", flags.beam_size, 0, 1024),
                         InRange("max_output_tokens", flags.max_output_tokens, 0, 1 << 20),
                         InRange("texts_per_request", flags.texts_per_request, 1, 1 << 16),
                         InRange("concurrency", flags.concurrency, 1, 1024)}) {
    if (!s.ok()) return s;
  }
  if (!std::isfinite(flags.length_penalty) || flags.length_penalty < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--length_penalty must be >= 0, got ", flags.length_penalty));
  }

  if (!modes.empty()) {
    if (flags.stream) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stream translates; it cannot be combined with ", modes.front()));
    }
    if (flags.health) {
      // The service is --task or the one argument: `--health en-de`, `--health --task en-de`.
      if (args.size() > 1 || (args.size() == 1 && !flags.task.empty())) {
        return absl::InvalidArgumentError(
            "--health checks one service: give it as --task or as the only argument");
      }
      command.mode = ClientMode::kHealth;
      command.health_service = args.empty() ? flags.task : args.front();
      return command;
    }
    if (!args.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(modes.front(), " takes no texts; unexpected argument '", args.front(), "'"));
    }
    if (flags.list_tasks) command.mode = ClientMode::kListTasks;
    if (!flags.get_task.empty()) command.mode = ClientMode::kGetTask;
    if (!flags.reload.empty()) command.mode = ClientMode::kReload;
    return command;
  }

  if (flags.task.empty()) {
    return absl::InvalidArgumentError(
        "--task is required to translate (e.g. --task en-de; --list_tasks lists them)");
  }
  if (flags.stream) {
    if (flags.beam_size > 1) {
      return absl::InvalidArgumentError(
          "--stream decodes greedily; leave --beam_size at 0 or 1 (or drop --stream)");
    }
    if (flags.concurrency > 1) {
      return absl::InvalidArgumentError("--stream sends one text at a time; drop --concurrency");
    }
    command.mode = ClientMode::kStream;
  }
  command.texts = std::move(args);
  command.texts_from_stdin = command.texts.empty();
  return command;
}

}  // namespace taskmoe::client
