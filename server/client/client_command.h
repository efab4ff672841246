// ClientCommand: what one run of taskmoe-client does, built from its flags and positional
// arguments and checked before any connection is made, so that a usage mistake is a clear
// CLI error (exit 2) rather than a confusing gRPC status.
#ifndef TASKMOE_SERVER_CLIENT_CLIENT_COMMAND_H_
#define TASKMOE_SERVER_CLIENT_CLIENT_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace taskmoe::client {

// The flag values as given (client_main.cc defines the flags with these defaults).
struct ClientFlags {
  std::string target = "localhost:8500";
  std::string task;
  bool stream = false;
  int beam_size = 0;          // 0: the server's default (greedy)
  int max_output_tokens = 0;  // 0: the server's default
  double length_penalty = 0.0;
  bool scores = false;
  std::string request_id;
  int deadline_ms = 60000;  // per RPC; 0: none
  int texts_per_request = 16;
  int concurrency = 1;
  bool stats = false;
  bool list_tasks = false;
  std::string get_task;
  bool health = false;
  std::string reload;
  // Transport security: TLS when `tls` or any file is given. No CA file: the system's roots.
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;  // client certificate, for mutual TLS (with tls_key_file)
  std::string tls_key_file;
  std::string tls_server_name;  // name to verify instead of the target's host
};

enum class ClientMode { kTranslate, kStream, kListTasks, kGetTask, kHealth, kReload };

struct ClientCommand {
  ClientMode mode = ClientMode::kTranslate;
  ClientFlags flags;
  // kTranslate / kStream: the texts given as arguments; none means one text per stdin line.
  std::vector<std::string> texts;
  bool texts_from_stdin = false;
  // kHealth: the service checked ("" = the whole server, a task id, or a service name).
  std::string health_service;
};

// Checks the flags and arguments (`args` excludes the program name). INVALID_ARGUMENT names
// the flag at fault.
absl::StatusOr<ClientCommand> MakeClientCommand(const ClientFlags& flags,
                                                std::vector<std::string> args);

}  // namespace taskmoe::client

#endif  // TASKMOE_SERVER_CLIENT_CLIENT_COMMAND_H_
