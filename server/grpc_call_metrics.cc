// Counting the statuses of every gRPC call, and reading gRPC core's call counters.
#include "server/grpc_call_metrics.h"

#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpcpp/support/interceptor.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

// The method label of every method no service here has.
constexpr char kUnknownMethod[] = "unknown";

class CallStatusInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallStatusInterceptor(Metrics& metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // No message: its bytes did not parse (or gRPC refused the call and dropped them).
      message_unparsed_ = methods->GetRecvMessage() == nullptr;
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      // gRPC answers a message that does not parse with an anonymous INTERNAL (sync methods)
      // or UNIMPLEMENTED (callback methods: Translate, TranslateStream); it is the caller's
      // mistake, most often a JSON body (gRPC accepts any application/grpc+... content type
      // and parses the body as protobuf whatever it says). An unknown method is UNIMPLEMENTED
      // too, and stays so.
      const bool anonymous_refusal = status.error_code() == grpc::StatusCode::INTERNAL ||
                                     (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
                                      status.error_message().empty() && method_ != kUnknownMethod);
      if (message_unparsed_ && anonymous_refusal) {
        status = grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            "request: not a valid protobuf message of this method's request type (the server "
            "reads binary protobuf only, content-type application/grpc; JSON is not supported)");
        methods->ModifySendStatus(status);
      }
      metrics_.CountGrpcCall(method_, StatusCodeName(status.error_code()));
    }
    methods->Proceed();
  }

 private:
  static std::string StatusCodeName(grpc::StatusCode code) {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  }

  Metrics& metrics_;
  const std::string method_;
  bool message_unparsed_ = false;
};

}  // namespace

CallStatusInterceptorFactory::CallStatusInterceptorFactory(Metrics& metrics,
                                                           std::set<std::string> methods)
    : metrics_(metrics), methods_(std::move(methods)) {}

grpc::experimental::Interceptor* CallStatusInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  // The label is bounded: a method name is the client's to choose.
  const bool known = method != nullptr && methods_.count(method) > 0;
  // gRPC takes ownership of the interceptor (a raw pointer is its interface).
  return new CallStatusInterceptor(metrics_, known ? std::string(method + 1) : kUnknownMethod);
}

std::set<std::string> CallStatusInterceptorFactory::ServedMethods() {
  std::set<std::string> methods = {
      "/grpc.health.v1.Health/Check",
      "/grpc.health.v1.Health/Watch",
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
  };
  for (const char* name :
       {v1::TranslationService::service_full_name(), v1::AdminService::service_full_name()}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    if (service == nullptr) continue;  // not linked: no calls to count either
    for (int i = 0; i < service->method_count(); ++i) {
      methods.insert(absl::StrCat("/", service->full_name(), "/", service->method(i)->name()));
    }
  }
  return methods;
}

std::vector<prometheus::MetricFamily> GrpcCoreCallCounters::Collect() const {
  double started = 0, succeeded = 0, failed = 0;
  // channelz JSON: {"server": [{"data": {"callsStarted": "4", "callsSucceeded": "1", ...}}]};
  // 64-bit counters are strings, and a zero counter is left out.
  std::unique_ptr<char, void (*)(void*)> json(grpc_channelz_get_servers(0), gpr_free);
  if (json != nullptr) {
    const nlohmann::json servers = nlohmann::json::parse(json.get(), nullptr, false);
    if (servers.is_object() && servers.contains("server") && servers["server"].is_array()) {
      for (const nlohmann::json& server : servers["server"]) {
        const nlohmann::json data = server.value("data", nlohmann::json::object());
        const auto count = [&](const char* key) {
          const nlohmann::json value = data.value(key, nlohmann::json("0"));
          return value.is_string() ? std::stod(value.get<std::string>()) : 0.0;
        };
        started += count("callsStarted");
        succeeded += count("callsSucceeded");
        failed += count("callsFailed");
      }
    }
  }
  std::vector<prometheus::MetricFamily> out;
  for (auto [name, help, value] :
       {std::tuple{"taskmoe_grpc_core_calls_started_total",
                   "Calls gRPC core started (every call that reached the server)", started},
        {"taskmoe_grpc_core_calls_succeeded_total", "Calls gRPC core ended with status OK",
         succeeded},
        {"taskmoe_grpc_core_calls_failed_total",
         "Calls gRPC core ended with another status after a handler or interceptor saw them",
         failed}}) {
    prometheus::MetricFamily family;
    family.name = name;
    family.help = help;
    family.type = prometheus::MetricType::Counter;
    prometheus::ClientMetric metric;
    metric.counter.value = value;
    family.metric.push_back(metric);
    out.push_back(std::move(family));
  }
  return out;
}

}  // namespace taskmoe::server
