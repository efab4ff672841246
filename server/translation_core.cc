// TranslationCore: admission, waiting, replies, whatever the transport.
#include "server/translation_core.h"

#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/log.h"
#include "server/routing_header.h"
#include "server/validation.h"

namespace taskmoe::server {
namespace {

// How often a waiting call checks whether its caller went away. Cancellation reaches the
// decoder within this plus one decoding step.
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);

v1::FinishReason ToProto(models::FinishReason reason) {
  switch (reason) {
    case models::FinishReason::kEndOfSentence:
      return v1::FINISH_REASON_END_OF_SENTENCE;
    case models::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

bool Cancelled(const CallContext& call) { return call.cancelled && call.cancelled(); }

}  // namespace

// Counts a translation call as in flight for its lifetime (for draining at shutdown).
class TranslationCore::InFlight {
 public:
  explicit InFlight(TranslationCore& core) : core_(core) {
    std::lock_guard<std::mutex> lock(core_.inflight_mu_);
    ++core_.inflight_;
  }
  ~InFlight() {
    std::lock_guard<std::mutex> lock(core_.inflight_mu_);
    if (--core_.inflight_ == 0) core_.idle_.notify_all();
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  TranslationCore& core_;
};

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
    const std::string& request_id, bool stream, std::string& task_label) {
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
  if (absl::Status s = scheduler_.Enqueue(state); !s.ok()) return s;
  return state;
}

bool TranslationCore::WaitForProgress(const CallContext& call, RequestState& state) {
  const bool done = state.Wait(kPollInterval);
  if (!done) {
    if (Cancelled(call)) state.Cancel();
    // Queued sentences of a stopped request leave the queue now, not when a worker gets to
    // them; running ones leave their batch at its next step.
    if (state.ShouldStop()) scheduler_.Withdraw(state);
  }
  return done;
}

absl::Status TranslationCore::FinalStatus(const CallContext& call,
                                          const RequestState& state) const {
  for (const models::Hypothesis& h : state.results()) {
    if (h.status.ok()) continue;
    if (Cancelled(call)) {
      // gRPC cancels a call whose deadline passed; report that as the deadline.
      if (absl::Now() >= state.deadline()) {
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
  const absl::Time start = absl::Now();
  InFlight in_flight(*this);
  std::string task_label;
  std::vector<absl::string_view> texts(request.texts().begin(), request.texts().end());
  absl::StatusOr<std::shared_ptr<RequestState>> state =
      Admit(call, request.task(), texts, request.options(), request.request_id(),
            /*stream=*/false, task_label);
  if (!state.ok()) {
    Record("Translate", task_label, request.request_id(), state.status(), start, nullptr, 0);
    return state.status();
  }
  prometheus::Gauge& inflight = *metrics_.ForTask(task_label).inflight;
  inflight.Increment();
  while (!WaitForProgress(call, **state)) {
  }
  inflight.Decrement();
  absl::Status status = FinalStatus(call, **state);
  int64_t output_tokens = 0;
  if (status.ok()) {
    const models::TaskModel& task = (*state)->task();
    const v1::DecodeOptions& options = request.options();
    int64_t input_tokens = 0;
    for (int i = 0; i < (*state)->size(); ++i) input_tokens += (*state)->source(i).size();
    for (int t = 0; t < (*state)->text_count(); ++t) {
      absl::StatusOr<models::TextTranslation> text =
          task.FinishText((*state)->TextSentences(t), (*state)->TextResults(t),
                          (*state)->text_options().unknown_pieces);
      if (!text.ok()) {
        status = absl::InternalError(absl::StrCat("detokenising: ", text.status().message()));
        break;
      }
      v1::Translation* translation = response.add_translations();
      translation->set_text(std::move(text->text));
      if (options.return_scores()) translation->set_score(text->score);
      if (options.return_tokens()) {
        for (int32_t id : text->token_ids) {
          translation->add_token_ids(id);
          translation->add_tokens(task.Piece(id));
        }
      }
      translation->set_finish_reason(ToProto(text->finish_reason));
      translation->set_sentences(static_cast<uint32_t>((*state)->TextSentences(t).size()));
      output_tokens += static_cast<int64_t>(text->token_ids.size());
    }
    response.set_request_id(request.request_id());
    response.set_model_version(task.version());
    response.set_input_tokens(static_cast<uint32_t>(input_tokens));
    response.set_output_tokens(static_cast<uint32_t>(output_tokens));
  }
  if (!status.ok()) response.Clear();
  Record("Translate", task_label, request.request_id(), status, start, state->get(), output_tokens);
  return status;
}

absl::Status TranslationCore::TranslateStream(
    const v1::TranslateStreamRequest& request, const CallContext& call,
    absl::FunctionRef<bool(const v1::TranslateStreamResponse&)> write) {
  const absl::Time start = absl::Now();
  InFlight in_flight(*this);
  std::string task_label;
  absl::StatusOr<std::shared_ptr<RequestState>> state =
      Admit(call, request.task(), {request.text()}, request.options(), request.request_id(),
            /*stream=*/true, task_label);
  if (!state.ok()) {
    Record("TranslateStream", task_label, request.request_id(), state.status(), start, nullptr, 0);
    return state.status();
  }
  prometheus::Gauge& inflight = *metrics_.ForTask(task_label).inflight;
  inflight.Increment();
  const models::TaskModel& task = (*state)->task();
  const int32_t eos = task.eos_id();
  const absl::Span<const models::SourceSentence> sentences = (*state)->TextSentences(0);
  const models::UnknownPieces unknowns = (*state)->text_options().unknown_pieces;
  const int sentence_count = static_cast<int>(sentences.size());
  // Text deltas token by token, in time linear in the tokens (TextStream).
  models::TextStream text_stream = task.StartStream(sentences, unknowns);
  bool caller_gone = false;
  while (text_stream.sentence() < sentence_count) {
    WaitForProgress(call, **state);
    while (text_stream.sentence() < sentence_count) {
      const int sentence = text_stream.sentence();
      // Done first: tokens are all added before a sentence is done, so none are missed.
      const bool sentence_done = (*state)->SentenceDone(sentence);
      for (int32_t token : (*state)->TakeTokens(sentence)) {
        if (token == eos) continue;
        v1::TranslateStreamResponse message;
        message.set_token_id(token);
        message.set_token(task.Piece(token));
        message.set_sentence(static_cast<uint32_t>(sentence));
        message.set_text_delta(text_stream.AddToken(token));
        if (!(*state)->ShouldStop() && !write(message)) {
          caller_gone = true;
          (*state)->Cancel();
        }
      }
      if (!sentence_done) break;
      text_stream.EndSentence();
    }
  }
  inflight.Decrement();
  absl::Status status = FinalStatus(call, **state);
  if (!status.ok() && caller_gone && !Cancelled(call)) {
    status = absl::CancelledError("the client went away");
  }
  int64_t output_tokens = 0;
  if (status.ok()) {
    absl::StatusOr<models::TextTranslation> text =
        task.FinishText(sentences, (*state)->TextResults(0), unknowns);
    if (!text.ok()) {
      status = absl::InternalError(absl::StrCat("detokenising: ", text.status().message()));
    } else {
      output_tokens = static_cast<int64_t>(text->token_ids.size());
      v1::TranslateStreamResponse last;
      last.set_done(true);
      last.set_text(std::move(text->text));
      last.set_score(text->score);
      last.set_finish_reason(ToProto(text->finish_reason));
      last.set_sentence(static_cast<uint32_t>(sentence_count - 1));
      if (!write(last)) status = absl::CancelledError("the client went away");
    }
  }
  Record("TranslateStream", task_label, request.request_id(), status, start, state->get(),
         output_tokens);
  return status;
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
