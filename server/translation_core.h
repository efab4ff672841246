// TranslationCore (DESIGN.md §4): the translation API with no transport. Admission
// (validation, task lookup, the routing header, tokenisation, the scheduler's queue), waiting
// for the batch workers while watching for cancellation and the deadline (or, for a stream on
// a transport that does not wait, a TranslationStream it pumps when told of progress), the
// replies as the API's messages, the request metrics, and the count of calls in flight that
// shutdown drains.
// Every front end calls it the same way: the gRPC service (translation_service.h) and the
// HTTP/JSON gateway (http_gateway.h) only carry messages and map statuses.
#ifndef TASKMOE_SERVER_TRANSLATION_CORE_H_
#define TASKMOE_SERVER_TRANSLATION_CORE_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/scheduler.h"
#include "server/task_registry.h"
#include "taskmoe/v1/translation.pb.h"

namespace taskmoe::server {

// What a call carries besides its message, whatever the transport.
struct CallContext {
  absl::Time deadline = absl::InfiniteFuture();
  // Values of the x-taskmoe-task header (routing_header.h); empty when absent.
  std::vector<std::string> routing_header;
  // True once the caller went away; empty: never. A transport that waits polls it from the
  // thread that made the call (gRPC's sync API allows IsCancelled there only); one that
  // listens (TranslateStreamReactor) reads a flag its OnCancel set.
  std::function<bool()> cancelled;
};

class TranslationCall;
class PendingTranslation;
class TranslationStream;

class TranslationCore {
 public:
  TranslationCore(TaskRegistry& registry, Scheduler& scheduler, Metrics& metrics,
                  const RequestLimits& limits);
  TranslationCore(const TranslationCore&) = delete;
  TranslationCore& operator=(const TranslationCore&) = delete;

  // Translates `request`'s texts; on error `response` is left empty. The calling thread
  // waits throughout (for transports that block: the HTTP gateway).
  absl::Status Translate(const v1::TranslateRequest& request, const CallContext& call,
                         v1::TranslateResponse& response);
  // Starts translating `request`'s texts for a transport that does not wait (translation_call.h):
  // `on_progress` is called from the scheduler's threads (RequestState::SetProgressListener)
  // after each sentence finishes, possibly before this returns; once the call is done(), its
  // Finish gives the response. A refused call's status comes back, recorded.
  absl::StatusOr<std::unique_ptr<PendingTranslation>> StartTranslate(
      const v1::TranslateRequest& request, CallContext call, std::function<void()> on_progress);
  // Translates one text, handing each decoded token to `write` as it comes and the whole
  // translation last (done). `write` returns false when the caller is gone: decoding stops.
  // The calling thread waits throughout (for transports that block: the HTTP gateway).
  absl::Status TranslateStream(const v1::TranslateStreamRequest& request, const CallContext& call,
                               absl::FunctionRef<bool(const v1::TranslateStreamResponse&)> write);
  // Starts translating one text for a transport that does not wait: as StartTranslate, with
  // `on_progress` called whenever the stream's TakeMessages may have more.
  absl::StatusOr<std::unique_ptr<TranslationStream>> StartStream(
      const v1::TranslateStreamRequest& request, CallContext call,
      std::function<void()> on_progress);
  // Loaded tasks and tasks that failed to load, by id.
  void ListTasks(v1::ListTasksResponse& response) const;
  absl::Status GetTask(const v1::GetTaskRequest& request, const CallContext& call,
                       v1::TaskInfo& response) const;

  // Until SetReady, translation calls are UNAVAILABLE (models still loading).
  void SetReady() { ready_.store(true); }
  // From now on translation calls are UNAVAILABLE (shutting down).
  void StartDraining() { draining_.store(true); }
  // Ready and not draining: what readiness probes report.
  bool serving() const { return ready_.load() && !draining_.load(); }
  // Waits until no translation call is in flight or `deadline`; true when none is.
  bool WaitIdle(absl::Time deadline);

  const RequestLimits& limits() const { return limits_; }

 private:
  friend class TranslationCall;
  friend class PendingTranslation;
  friend class TranslationStream;
  // Counts a translation call as in flight for its lifetime (for draining at shutdown).
  class InFlight {
   public:
    explicit InFlight(TranslationCore& core);
    ~InFlight();
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

   private:
    TranslationCore& core_;
  };

  // Everything up to the queue: returns the request state, queued, or why not.
  // `on_progress`: the state's progress listener, when not empty.
  absl::StatusOr<std::shared_ptr<RequestState>> Admit(const CallContext& call,
                                                      const std::string& task_name,
                                                      const std::vector<absl::string_view>& texts,
                                                      const v1::DecodeOptions& options,
                                                      const std::string& request_id, bool stream,
                                                      std::string& task_label,
                                                      std::function<void()> on_progress = nullptr);
  // StartTranslate and StartStream: admits `texts` of `request` (recording a refusal under
  // `method`) and returns the call in flight.
  template <typename Call, typename Request>
  absl::StatusOr<std::unique_ptr<Call>> StartCall(const char* method, const Request& request,
                                                  const std::vector<absl::string_view>& texts,
                                                  bool stream, CallContext call,
                                                  std::function<void()> on_progress);
  // The status of a finished request: OK, or the first sentence's error (CANCELLED when
  // the caller went away).
  absl::Status FinalStatus(const CallContext& call, const RequestState& state) const;
  void Record(const std::string& method, const std::string& task_label,
              const std::string& request_id, const absl::Status& status, absl::Time start,
              const RequestState* state, int64_t output_tokens);
  void FillTaskInfo(const models::TaskModel& task, v1::TaskInfo& info) const;
  // A task that failed to load: its id, not ready, and why (the proto's load_error).
  static void FillBrokenTaskInfo(const std::string& task, const std::string& reason,
                                 v1::TaskInfo& info);
  // UNAVAILABLE with the reason when `task` failed to load at start; else OK.
  absl::Status TaskFailedToLoad(const std::string& task) const;
  // NOT_FOUND naming the tasks served here.
  absl::Status UnknownTask(const std::string& task) const;

  TaskRegistry& registry_;
  Scheduler& scheduler_;
  Metrics& metrics_;
  const RequestLimits limits_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::mutex inflight_mu_;
  std::condition_variable idle_;
  int inflight_ = 0;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_TRANSLATION_CORE_H_
