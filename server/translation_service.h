// TranslationService (DESIGN.md §4): admission (validation, task lookup, tokenisation, the
// task's queue), waiting for the batch workers while watching for cancellation and the
// deadline, and the replies; plus ListTasks/GetTask. It also tracks the RPCs in flight, so
// that shutdown can wait for them to drain.
#ifndef TASKMOE_SERVER_TRANSLATION_SERVICE_H_
#define TASKMOE_SERVER_TRANSLATION_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/scheduler.h"
#include "server/task_registry.h"
#include "taskmoe/v1/translation.grpc.pb.h"

namespace taskmoe::server {

class TranslationServiceImpl final : public v1::TranslationService::Service {
 public:
  TranslationServiceImpl(TaskRegistry& registry, Scheduler& scheduler, Metrics& metrics,
                         const RequestLimits& limits);

  grpc::Status Translate(grpc::ServerContext* context, const v1::TranslateRequest* request,
                         v1::TranslateResponse* response) override;
  grpc::Status TranslateStream(grpc::ServerContext* context,
                               const v1::TranslateStreamRequest* request,
                               grpc::ServerWriter<v1::TranslateStreamResponse>* writer) override;
  grpc::Status ListTasks(grpc::ServerContext* context, const v1::ListTasksRequest* request,
                         v1::ListTasksResponse* response) override;
  grpc::Status GetTask(grpc::ServerContext* context, const v1::GetTaskRequest* request,
                       v1::TaskInfo* response) override;

  // Until SetReady, translation calls are UNAVAILABLE (models still loading).
  void SetReady() { ready_.store(true); }
  // From now on translation calls are UNAVAILABLE (shutting down).
  void StartDraining() { draining_.store(true); }
  // Waits until no translation RPC is in flight or `deadline`; true when none is.
  bool WaitIdle(absl::Time deadline);

 private:
  class InFlight;

  // Everything up to the queue: returns the request state, queued, or why not.
  absl::StatusOr<std::shared_ptr<RequestState>> Admit(grpc::ServerContext* context,
                                                      const std::string& task_name,
                                                      const std::vector<absl::string_view>& texts,
                                                      const v1::DecodeOptions& options,
                                                      const std::string& request_id, bool stream,
                                                      std::string& task_label);
  // Polls for client cancellation (only this thread may touch the call) until `state` is
  // done or, for streams, has new tokens.
  bool WaitForProgress(grpc::ServerContext* context, RequestState& state);
  // The status of a finished request: OK, or the first sentence's error (CANCELLED when
  // the client went away).
  absl::Status FinalStatus(grpc::ServerContext* context, const RequestState& state) const;
  void Record(const std::string& method, const std::string& task_label,
              const std::string& request_id, const absl::Status& status, absl::Time start,
              const RequestState* state, int64_t output_tokens);
  void FillTaskInfo(const models::TaskModel& task, v1::TaskInfo& info) const;
  // A task that failed to load: its id, not ready, and why (the proto's load_error).
  static void FillBrokenTaskInfo(const std::string& task, const std::string& reason,
                                 v1::TaskInfo& info);
  // UNAVAILABLE with the reason when `task` failed to load at start; else OK.
  absl::Status TaskFailedToLoad(const std::string& task) const;

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

#endif  // TASKMOE_SERVER_TRANSLATION_SERVICE_H_
