// taskmoe-client's RPCs and output.
#include "server/client/client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/pem.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::client {
namespace {

using v1::TranslationService;

// "NOT_FOUND: task 'xx' is not served here; ..." (gRPC and absl share the code numbering).
std::string Describe(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      ": ", status.error_message());
}

int Fail(std::ostream& err, const grpc::Status& status) {
  err << "taskmoe-client: " << Describe(status) << "\n";
  return kExitRpcFailed;
}

void SetDeadline(const ClientFlags& flags, grpc::ClientContext& context) {
  if (flags.deadline_ms > 0) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(flags.deadline_ms)));
  }
}

v1::DecodeOptions DecodeOptionsOf(const ClientFlags& flags) {
  v1::DecodeOptions options;
  options.set_beam_size(static_cast<uint32_t>(flags.beam_size));
  options.set_max_output_tokens(static_cast<uint32_t>(flags.max_output_tokens));
  options.set_length_penalty(static_cast<float>(flags.length_penalty));
  options.set_return_scores(flags.scores);
  return options;
}

double Percentile(std::vector<double> sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[i];
}

// The texts to send, with blank stdin lines left out: they are printed back as blank lines, so
// output lines stay aligned with input lines (the server refuses empty texts).
struct Inputs {
  std::vector<std::string> texts;
  std::vector<std::optional<size_t>> line_to_text;  // per output line
};

Inputs ReadInputs(const ClientCommand& command, std::istream& in) {
  Inputs inputs;
  if (!command.texts_from_stdin) {
    inputs.texts = command.texts;
    for (size_t i = 0; i < inputs.texts.size(); ++i) inputs.line_to_text.push_back(i);
    return inputs;
  }
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      inputs.line_to_text.push_back(std::nullopt);
    } else {
      inputs.line_to_text.push_back(inputs.texts.size());
      inputs.texts.push_back(std::move(line));
    }
  }
  return inputs;
}

// Translate: the texts in requests of --texts_per_request, --concurrency of them at a time.
int RunTranslate(const std::shared_ptr<grpc::Channel>& channel, const ClientCommand& command,
                 std::istream& in, std::ostream& out, std::ostream& err) {
  const ClientFlags& flags = command.flags;
  const Inputs inputs = ReadInputs(command, in);
  const size_t per_request = static_cast<size_t>(flags.texts_per_request);
  const size_t requests = (inputs.texts.size() + per_request - 1) / per_request;
  std::vector<v1::TranslateResponse> responses(requests);
  std::vector<double> latencies(requests, 0.0);
  std::atomic<size_t> next{0};
  std::mutex error_mu;
  std::optional<grpc::Status> error;  // the first failure; later requests are not sent

  auto stub = TranslationService::NewStub(channel);
  const absl::Time start = absl::Now();
  auto worker = [&] {
    for (size_t r; (r = next.fetch_add(1)) < requests;) {
      {
        std::lock_guard<std::mutex> lock(error_mu);
        if (error.has_value()) return;
      }
      v1::TranslateRequest request;
      request.set_task(flags.task);
      request.set_request_id(flags.request_id);
      *request.mutable_options() = DecodeOptionsOf(flags);
      const size_t end = std::min(inputs.texts.size(), (r + 1) * per_request);
      for (size_t t = r * per_request; t < end; ++t) request.add_texts(inputs.texts[t]);
      grpc::ClientContext context;
      SetDeadline(flags, context);
      context.AddMetadata(kTaskHeader, flags.task);
      const absl::Time sent = absl::Now();
      const grpc::Status status = stub->Translate(&context, request, &responses[r]);
      latencies[r] = absl::ToDoubleSeconds(absl::Now() - sent);
      if (!status.ok()) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error.has_value()) error = status;
        return;
      }
    }
  };
  {
    std::vector<std::jthread> threads;
    const size_t n = std::min<size_t>(static_cast<size_t>(flags.concurrency), requests);
    for (size_t i = 0; i < n; ++i) threads.emplace_back(worker);
  }
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  if (error.has_value()) return Fail(err, *error);

  int64_t output_tokens = 0, input_tokens = 0;
  for (size_t r = 0; r < requests; ++r) {
    const size_t sent = std::min(per_request, inputs.texts.size() - r * per_request);
    if (static_cast<size_t>(responses[r].translations_size()) != sent) {
      return Fail(
          err, grpc::Status(grpc::StatusCode::INTERNAL,
                            absl::StrCat("the server answered ", responses[r].translations_size(),
                                         " translations for ", sent, " texts")));
    }
    output_tokens += responses[r].output_tokens();
    input_tokens += responses[r].input_tokens();
  }
  for (const std::optional<size_t>& t : inputs.line_to_text) {
    if (t.has_value()) {
      const v1::Translation& translation =
          responses[*t / per_request].translations(static_cast<int>(*t % per_request));
      if (flags.scores) out << translation.score() << "\t";
      out << translation.text();
    }
    out << "\n";
  }
  out.flush();
  if (flags.stats) {
    std::sort(latencies.begin(), latencies.end());
    err << absl::StrFormat(
        "stats: %d texts in %d requests (concurrency %d) in %.3f s: %.1f texts/s, %.1f output "
        "tokens/s (%d input, %d output tokens); request latency p50 %.4f s, p90 %.4f s, "
        "p99 %.4f s, max %.4f s\n",
        inputs.texts.size(), requests, std::min<size_t>(flags.concurrency, requests), wall,
        wall > 0 ? inputs.texts.size() / wall : 0.0, wall > 0 ? output_tokens / wall : 0.0,
        input_tokens, output_tokens, Percentile(latencies, 0.5), Percentile(latencies, 0.9),
        Percentile(latencies, 0.99), latencies.empty() ? 0.0 : latencies.back());
  }
  return kExitOk;
}

// TranslateStream: one text at a time, its pieces printed as they arrive.
int RunStream(const std::shared_ptr<grpc::Channel>& channel, const ClientCommand& command,
              std::istream& in, std::ostream& out, std::ostream& err) {
  const ClientFlags& flags = command.flags;
  const Inputs inputs = ReadInputs(command, in);
  auto stub = TranslationService::NewStub(channel);
  for (const std::optional<size_t>& t : inputs.line_to_text) {
    if (!t.has_value()) {
      out << "\n";
      continue;
    }
    v1::TranslateStreamRequest request;
    request.set_task(flags.task);
    request.set_text(inputs.texts[*t]);
    request.set_request_id(flags.request_id);
    *request.mutable_options() = DecodeOptionsOf(flags);
    grpc::ClientContext context;
    SetDeadline(flags, context);
    context.AddMetadata(kTaskHeader, flags.task);
    auto reader = stub->TranslateStream(&context, request);
    std::string printed;
    v1::TranslateStreamResponse message;
    while (reader->Read(&message)) {
      if (message.done()) {
        // The deltas add up to the final text; print whatever they have not covered.
        const std::string& text = message.text();
        if (text.starts_with(printed)) out << text.substr(printed.size());
        if (flags.scores) out << "\t" << message.score();
      } else {
        out << message.text_delta();
        printed += message.text_delta();
      }
      out.flush();
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) {
      out << "\n";
      out.flush();
      return Fail(err, status);
    }
    out << "\n";
  }
  out.flush();
  return kExitOk;
}

void PrintTask(const v1::TaskInfo& t, std::ostream& out) {
  out << "task: " << t.task() << "\n"
      << "source_language: " << t.source_language() << "\n"
      << "target_language: " << t.target_language() << "\n"
      << "version: " << t.version() << "\n"
      << "parameters: " << t.parameters() << "\n"
      << "memory_bytes: " << t.memory_bytes() << "\n"
      << "shared_memory_bytes: " << t.shared_memory_bytes() << "\n"
      << "precision: " << t.precision() << "\n"
      << "parent_digest: " << t.parent_digest() << "\n"
      << "ready: " << (t.ready() ? "true" : "false") << "\n";
  if (!t.load_error().empty()) out << "load_error: " << t.load_error() << "\n";
}

int RunListTasks(const std::shared_ptr<grpc::Channel>& channel, const ClientFlags& flags,
                 std::ostream& out, std::ostream& err) {
  auto stub = TranslationService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(flags, context);
  v1::ListTasksResponse response;
  const grpc::Status status = stub->ListTasks(&context, {}, &response);
  if (!status.ok()) return Fail(err, status);
  out << absl::StrFormat("%-10s %-6s %-6s %-24s %12s %10s %10s %-9s %s\n", "TASK", "SOURCE",
                         "TARGET", "VERSION", "PARAMETERS", "MEMORY_MB", "SHARED_MB", "PRECISION",
                         "READY");
  for (const v1::TaskInfo& t : response.tasks()) {
    out << absl::StrFormat("%-10s %-6s %-6s %-24s %12d %10.1f %10.1f %-9s %s\n", t.task(),
                           t.source_language(), t.target_language(), t.version(), t.parameters(),
                           t.memory_bytes() / 1048576.0, t.shared_memory_bytes() / 1048576.0,
                           t.precision(), t.ready() ? "yes" : "no");
    if (!t.load_error().empty()) out << "  failed to load: " << t.load_error() << "\n";
  }
  return kExitOk;
}

int RunGetTask(const std::shared_ptr<grpc::Channel>& channel, const ClientFlags& flags,
               std::ostream& out, std::ostream& err) {
  auto stub = TranslationService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(flags, context);
  context.AddMetadata(kTaskHeader, flags.get_task);
  v1::GetTaskRequest request;
  request.set_task(flags.get_task);
  v1::TaskInfo response;
  const grpc::Status status = stub->GetTask(&context, request, &response);
  if (!status.ok()) return Fail(err, status);
  PrintTask(response, out);
  return kExitOk;
}

int RunHealth(const std::shared_ptr<grpc::Channel>& channel, const ClientCommand& command,
              std::ostream& out, std::ostream& err) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(command.flags, context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(command.health_service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(err, status);
  out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                             : kExitRpcFailed;
}

int RunReload(const std::shared_ptr<grpc::Channel>& channel, const ClientFlags& flags,
              std::ostream& out, std::ostream& err) {
  auto stub = v1::AdminService::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(flags, context);
  context.AddMetadata(kTaskHeader, flags.reload);
  v1::ReloadTaskRequest request;
  request.set_task(flags.reload);
  v1::ReloadTaskResponse response;
  const grpc::Status status = stub->ReloadTask(&context, request, &response);
  if (!status.ok()) return Fail(err, status);
  out << "reloaded " << response.task() << ": "
      << (response.previous_version().empty() ? "(new)" : response.previous_version()) << " -> "
      << response.version() << "\n";
  return kExitOk;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ClientFlags& flags) {
  const bool tls = flags.tls || !flags.tls_ca_file.empty() || !flags.tls_cert_file.empty();
  if (!tls) return grpc::CreateChannel(flags.target, grpc::InsecureChannelCredentials());
  grpc::SslCredentialsOptions options;
  if (!flags.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = server::ReadPemFile("tls_ca_file", flags.tls_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  if (!flags.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = server::ReadPemFile("tls_cert_file", flags.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = server::ReadPemFile("tls_key_file", flags.tls_key_file);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  grpc::ChannelArguments arguments;
  if (!flags.tls_server_name.empty()) {
    arguments.SetSslTargetNameOverride(flags.tls_server_name);
  }
  return grpc::CreateCustomChannel(flags.target, grpc::SslCredentials(options), arguments);
}

int RunClient(const ClientCommand& command, std::istream& in, std::ostream& out,
              std::ostream& err) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = OpenChannel(command.flags);
  if (!channel.ok()) {
    err << "taskmoe-client: " << channel.status().message() << "\n";
    return kExitUsage;
  }
  switch (command.mode) {
    case ClientMode::kTranslate:
      return RunTranslate(*channel, command, in, out, err);
    case ClientMode::kStream:
      return RunStream(*channel, command, in, out, err);
    case ClientMode::kListTasks:
      return RunListTasks(*channel, command.flags, out, err);
    case ClientMode::kGetTask:
      return RunGetTask(*channel, command.flags, out, err);
    case ClientMode::kHealth:
      return RunHealth(*channel, command, out, err);
    case ClientMode::kReload:
      return RunReload(*channel, command.flags, out, err);
  }
  return kExitUsage;
}

}  // namespace taskmoe::client
