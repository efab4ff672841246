// One reactor object per call (gRPC's callback API). Each owns itself from its start until
// OnDone, gRPC's last reaction to a call, where it reports and is destroyed.
#include "loadtest/grpc_caller.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_callback.h>

#include <chrono>

#include "absl/strings/str_cat.h"

namespace taskmoe::loadtest {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void SetDecodeOptions(const GrpcCallerOptions& options, v1::DecodeOptions& decode) {
  decode.set_beam_size(static_cast<uint32_t>(options.beam_size));
  decode.set_max_output_tokens(static_cast<uint32_t>(options.max_output_tokens));
}

CallResult ResultOf(const grpc::Status& status, Clock::time_point start) {
  CallResult result;
  result.latency_s = SecondsSince(start);
  // grpc::StatusCode and absl::StatusCode both number the codes as google.rpc.Code does.
  result.code = static_cast<absl::StatusCode>(status.error_code());
  if (!status.ok()) result.message = status.error_message();
  return result;
}

class UnaryCall final : public grpc::ClientUnaryReactor {
 public:
  static void Start(v1::TranslationService::Stub& stub, v1::TranslateRequest request,
                    absl::Duration timeout, Caller::Done done) {
    auto owned = std::make_unique<UnaryCall>(std::move(request), timeout, std::move(done));
    UnaryCall& call = *owned;
    call.self_ = std::move(owned);
    stub.async()->Translate(&call.context_, &call.request_, &call.response_, &call);
    call.start_ = Clock::now();
    call.StartCall();
  }

  UnaryCall(v1::TranslateRequest request, absl::Duration timeout, Caller::Done done)
      : request_(std::move(request)), done_(std::move(done)) {
    context_.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  }

  void OnDone(const grpc::Status& status) override {
    const std::unique_ptr<UnaryCall> self = std::move(self_);  // freed when this returns
    CallResult result = ResultOf(status, start_);
    if (status.ok()) {
      result.output_tokens = response_.output_tokens();
      result.input_tokens = response_.input_tokens();
    }
    done_(result);
  }

 private:
  grpc::ClientContext context_;
  v1::TranslateRequest request_;
  v1::TranslateResponse response_;
  Caller::Done done_;
  Clock::time_point start_;
  std::unique_ptr<UnaryCall> self_;
};

class StreamCall final : public grpc::ClientReadReactor<v1::TranslateStreamResponse> {
 public:
  static void Start(v1::TranslationService::Stub& stub, v1::TranslateStreamRequest request,
                    absl::Duration timeout, Caller::Done done) {
    auto owned = std::make_unique<StreamCall>(std::move(request), timeout, std::move(done));
    StreamCall& call = *owned;
    call.self_ = std::move(owned);
    stub.async()->TranslateStream(&call.context_, &call.request_, &call);
    call.start_ = Clock::now();
    call.StartRead(&call.message_);
    call.StartCall();
  }

  StreamCall(v1::TranslateStreamRequest request, absl::Duration timeout, Caller::Done done)
      : request_(std::move(request)), done_(std::move(done)) {
    context_.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream has ended; OnDone follows
    // Every message but the final `done` one carries one generated token.
    if (!message_.done()) {
      if (tokens_ == 0) ttft_s_ = SecondsSince(start_);
      ++tokens_;
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    const std::unique_ptr<StreamCall> self = std::move(self_);  // freed when this returns
    CallResult result = ResultOf(status, start_);
    result.ttft_s = ttft_s_;
    if (status.ok()) result.output_tokens = tokens_;
    done_(result);
  }

 private:
  grpc::ClientContext context_;
  v1::TranslateStreamRequest request_;
  v1::TranslateStreamResponse message_;
  Caller::Done done_;
  Clock::time_point start_;
  double ttft_s_ = -1;
  int64_t tokens_ = 0;
  std::unique_ptr<StreamCall> self_;
};

}  // namespace

GrpcCaller::GrpcCaller(const GrpcCallerOptions& options) : options_(options) {
  // Loopback only (options.h), so plaintext is all there is to speak.
  channel_ = grpc::CreateChannel(options.target, grpc::InsecureChannelCredentials());
  stub_ = v1::TranslationService::NewStub(channel_);
}

absl::StatusOr<std::unique_ptr<GrpcCaller>> GrpcCaller::Connect(const GrpcCallerOptions& options,
                                                                absl::Duration connect_timeout) {
  if (!IsLoopbackTarget(options.target)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target: '", options.target, "' is not a loopback address"));
  }
  std::unique_ptr<GrpcCaller> caller(new GrpcCaller(options));
  const auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoNanoseconds(connect_timeout);
  if (!caller->channel_->WaitForConnected(deadline)) {
    return absl::UnavailableError(absl::StrCat("no server answers at ", options.target, " (waited ",
                                               absl::FormatDuration(connect_timeout),
                                               "); is taskmoe-server running there?"));
  }
  return caller;
}

void GrpcCaller::Start(const RequestSpec& spec, Done done) {
  const std::string id = absl::StrCat("loadtest-", next_id_.fetch_add(1));
  if (options_.api == Api::kStream) {
    v1::TranslateStreamRequest request;
    request.set_task(spec.task);
    if (!spec.texts.empty()) request.set_text(spec.texts.front());
    SetDecodeOptions(options_, *request.mutable_options());
    request.set_request_id(id);
    StreamCall::Start(*stub_, std::move(request), options_.timeout, std::move(done));
    return;
  }
  v1::TranslateRequest request;
  request.set_task(spec.task);
  for (const std::string& text : spec.texts) request.add_texts(text);
  SetDecodeOptions(options_, *request.mutable_options());
  request.set_request_id(id);
  UnaryCall::Start(*stub_, std::move(request), options_.timeout, std::move(done));
}

absl::StatusOr<std::vector<std::string>> GrpcCaller::ListTasks(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  v1::ListTasksRequest request;
  v1::ListTasksResponse response;
  const grpc::Status status = stub_->ListTasks(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("ListTasks: ", status.error_message()));
  }
  std::vector<std::string> tasks;
  for (const v1::TaskInfo& info : response.tasks()) tasks.push_back(info.task());
  return tasks;
}

}  // namespace taskmoe::loadtest
