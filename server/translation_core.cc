// TranslationCore: admission, waiting, replies, whatever the transport.
#include "server/translation_core.h"

#include <map>

#include "absl/memory/memory.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/log.h"
#include "server/routing_header.h"
#include "server/translation_call.h"
#include "server/validation.h"

namespace taskmoe::server {
namespace {

bool Cancelled(const CallContext& call) { return call.cancelled && call.cancelled(); }

}  // namespace

TranslationCore::InFlight::InFlight(TranslationCore& core) : core_(core) {
  std::lock_guard<std::mutex> lock(core_.inflight_mu_);
  ++core_.inflight_;
}

TranslationCore::InFlight::~InFlight() {
  std::lock_guard<std::mutex> lock(core_.inflight_mu_);
  if (--core_.inflight_ == 0) core_.idle_.notify_all();
}

TranslationCore::TranslationCore(TaskRegistry& registry, Scheduler& scheduler, Metrics& metrics,
                                 const RequestLimits& limits)
    : registry_(registry), scheduler_(scheduler), metrics_(metrics), limits_(limits) {}

bool TranslationCore::WaitIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(inflight_mu_);
  return idle_.wait_for(
      lock, absl::ToChronoMicroseconds(std::max(absl::ZeroDuration(), deadline - absl::Now())),
      [&] { return inflight_ == 0; });
}

absl::Status TranslationCore::UnknownTask(const std::string& task) const {
  return absl::NotFoundError(
      absl::StrCat("task '", absl::CHexEscape(task.substr(0, 64)),
                   "' is not served here; tasks: ", absl::StrJoin(registry_.TaskIds(), ", ")));
}

absl::StatusOr<std::shared_ptr<RequestState>> TranslationCore::Admit(
    const CallContext& call, const std::string& task_name,
    const std::vector<absl::string_view>& texts, const v1::DecodeOptions& options,
    const std::string& request_id, bool stream, std::string& task_label,
    std::function<void()> on_progress) {
  if (draining_.load()) {
    return absl::UnavailableError("the server is shutting down; send the request elsewhere");
  }
  if (!ready_.load()) return absl::UnavailableError("the server is still loading its models");
  if (absl::Status s = CheckRequestId(request_id, limits_); !s.ok()) return s;
  if (task_name.empty()) {
    return absl::InvalidArgumentError(
        "task: empty; name a task such as en-de (ListTasks lists them)");
  }
  if (absl::Status s = CheckTaskRoutingHeader(call.routing_header, task_name); !s.ok()) return s;
  std::shared_ptr<const models::TaskModel> task = registry_.Find(task_name);
  if (task == nullptr) {
    if (absl::Status s = TaskFailedToLoad(task_name); !s.ok()) return s;
    return UnknownTask(task_name);
  }
  task_label = task->id();
  absl::StatusOr<PreparedRequest> prepared = PrepareRequest(*task, texts, options, stream, limits_);
  if (!prepared.ok()) return prepared.status();
  if (absl::Now() >= call.deadline) {
    return absl::DeadlineExceededError("the deadline passed before the request was queued");
  }
  auto state = std::make_shared<RequestState>(std::move(task), prepared->settings,
                                              prepared->text_options, std::move(prepared->texts),
                                              call.deadline, /*streams_tokens=*/stream);
  if (on_progress) state->SetProgressListener(std::move(on_progress));
  if (absl::Status s = scheduler_.Enqueue(state); !s.ok()) return s;
  return state;
}

absl::Status TranslationCore::FinalStatus(const CallContext& call,
                                          const RequestState& state) const {
  for (const models::Hypothesis& h : state.results()) {
    if (h.status.ok()) continue;
    if (Cancelled(call)) {
      // gRPC cancels a call whose deadline passed; report that as the deadline.
      if (state.DeadlineExpired()) {
        return absl::DeadlineExceededError("the deadline passed before decoding finished");
      }
      return absl::CancelledError("the client cancelled the request");
    }
    return h.status;
  }
  return absl::OkStatus();
}

void TranslationCore::Record(const std::string& method, const std::string& task_label,
                             const std::string& request_id, const absl::Status& status,
                             absl::Time start, const RequestState* state, int64_t output_tokens) {
  const absl::Duration elapsed = absl::Now() - start;
  metrics_.CountRequest(task_label, method, absl::StatusCodeToString(status.code()));
  // Latency of served calls only: refusals take microseconds and would hide slow service.
  if (!task_label.empty() && status.ok()) {
    TaskMetrics& m = metrics_.ForTask(task_label);
    m.request_duration->Observe(absl::ToDoubleSeconds(elapsed));
    if (state != nullptr) {
      if (std::optional<absl::Time> first_token = state->first_token_time()) {
        m.time_to_first_token->Observe(absl::ToDoubleSeconds(*first_token - state->received()));
      }
      if (std::optional<absl::Duration> per_token = state->TimePerOutputToken()) {
        m.time_per_output_token->Observe(absl::ToDoubleSeconds(*per_token));
      }
    }
  }
  if (LogEnabled(LogLevel::kDebug)) {
    // The id and the error message come from the caller: fields, escaped (log.h).
    Log(LogLevel::kDebug, method,
        {{"id", request_id.empty() ? "-" : request_id},
         {"task", task_label.empty() ? "-" : task_label},
         {"texts", state ? state->size() : 0},
         {"output_tokens", output_tokens},
         {"code", absl::StatusCodeToString(status.code())},
         {"time", absl::FormatDuration(elapsed)},
         {"error", status.message()}});
  }
}

absl::Status TranslationCore::Translate(const v1::TranslateRequest& request,
                                        const CallContext& call, v1::TranslateResponse& response) {
  absl::StatusOr<std::unique_ptr<PendingTranslation>> pending =
      StartTranslate(request, call, /*on_progress=*/nullptr);
  if (!pending.ok()) return pending.status();
  while (!(*pending)->done()) (*pending)->WaitForProgress();
  return (*pending)->Finish(response);
}

template <typename Call, typename Request>
absl::StatusOr<std::unique_ptr<Call>> TranslationCore::StartCall(
    const char* method, const Request& request, const std::vector<absl::string_view>& texts,
    bool stream, CallContext call, std::function<void()> on_progress) {
  const absl::Time start = absl::Now();
  // Counted from the start, so that shutdown waits for a call being admitted.
  auto in_flight = std::make_unique<InFlight>(*this);
  std::string task_label;
  absl::StatusOr<std::shared_ptr<RequestState>> state =
      Admit(call, request.task(), texts, request.options(), request.request_id(), stream,
            task_label, std::move(on_progress));
  if (!state.ok()) {
    Record(method, task_label, request.request_id(), state.status(), start, nullptr, 0);
    return state.status();
  }
  return absl::WrapUnique(new Call(*this, std::move(in_flight), std::move(call), request,
                                   std::move(task_label), start, *std::move(state)));
}

absl::StatusOr<std::unique_ptr<PendingTranslation>> TranslationCore::StartTranslate(
    const v1::TranslateRequest& request, CallContext call, std::function<void()> on_progress) {
  return StartCall<PendingTranslation>("Translate", request,
                                       {request.texts().begin(), request.texts().end()},
                                       /*stream=*/false, std::move(call), std::move(on_progress));
}

absl::Status TranslationCore::TranslateStream(
    const v1::TranslateStreamRequest& request, const CallContext& call,
    absl::FunctionRef<bool(const v1::TranslateStreamResponse&)> write) {
  absl::StatusOr<std::unique_ptr<TranslationStream>> stream =
      StartStream(request, call, /*on_progress=*/nullptr);
  if (!stream.ok()) return stream.status();
  std::vector<v1::TranslateStreamResponse> messages;
  for (;;) {
    const bool complete = (*stream)->TakeMessages(messages);
    for (const v1::TranslateStreamResponse& message : messages) {
      if (!write(message)) {
        (*stream)->WriteFailed();
        break;
      }
    }
    messages.clear();
    if (complete) break;
    (*stream)->WaitForProgress();
  }
  return (*stream)->Finish();
}

absl::StatusOr<std::unique_ptr<TranslationStream>> TranslationCore::StartStream(
    const v1::TranslateStreamRequest& request, CallContext call,
    std::function<void()> on_progress) {
  return StartCall<TranslationStream>("TranslateStream", request, {request.text()},
                                      /*stream=*/true, std::move(call), std::move(on_progress));
}

void TranslationCore::FillTaskInfo(const models::TaskModel& task, v1::TaskInfo& info) const {
  const models::TaskDescription& d = task.description();
  info.set_task(d.id);
  info.set_source_language(d.source_language);
  info.set_target_language(d.target_language);
  info.set_version(d.version);
  info.set_parameters(static_cast<uint64_t>(d.parameters));
  info.set_memory_bytes(d.memory_bytes);
  info.set_shared_memory_bytes(registry_.shared_weight_bytes());
  info.set_precision(d.precision);
  info.set_matmul_path(d.matmul_path);
  info.set_greedy_head_filter(d.greedy_head_filter);
  info.set_parent_digest(d.parent_digest);
  info.set_ready(serving());
}

void TranslationCore::FillBrokenTaskInfo(const std::string& task, const std::string& reason,
                                         v1::TaskInfo& info) {
  info.set_task(task);
  info.set_ready(false);
  info.set_load_error(reason);
}

absl::Status TranslationCore::TaskFailedToLoad(const std::string& task) const {
  const std::string reason = registry_.LoadError(task);
  if (reason.empty()) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("task ", task, " failed to load (", reason, "); fix its files and reload it"));
}

void TranslationCore::ListTasks(v1::ListTasksResponse& response) const {
  // Loaded and broken tasks together, by id.
  std::map<std::string, v1::TaskInfo> tasks;
  for (const auto& task : registry_.List()) FillTaskInfo(*task, tasks[task->id()]);
  for (const auto& [id, reason] : registry_.LoadErrors()) FillBrokenTaskInfo(id, reason, tasks[id]);
  for (auto& [id, info] : tasks) *response.add_tasks() = std::move(info);
}

absl::Status TranslationCore::GetTask(const v1::GetTaskRequest& request, const CallContext& call,
                                      v1::TaskInfo& response) const {
  if (request.task().empty()) {
    return absl::InvalidArgumentError("task: empty; name a task such as en-de");
  }
  if (absl::Status s = CheckTaskRoutingHeader(call.routing_header, request.task()); !s.ok()) {
    return s;
  }
  std::shared_ptr<const models::TaskModel> task = registry_.Find(request.task());
  if (task == nullptr) {
    if (const std::string reason = registry_.LoadError(request.task()); !reason.empty()) {
      FillBrokenTaskInfo(request.task(), reason, response);
      return absl::OkStatus();
    }
    return UnknownTask(request.task());
  }
  FillTaskInfo(*task, response);
  return absl::OkStatus();
}

}  // namespace taskmoe::server
