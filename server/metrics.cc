// Metric families and per-task handles.
#include "server/metrics.h"

#include <vector>

#include "models/compute.h"

namespace taskmoe::server {
namespace {

using prometheus::Histogram;

// Latencies from 1 ms to about 30 s.
Histogram::BucketBoundaries SecondsBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

// Per-token times: a decoding step takes from under a millisecond to a few hundred.
Histogram::BucketBoundaries TokenSecondsBuckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1};
}

Histogram::BucketBoundaries PowersOfTwo(double largest) {
  Histogram::BucketBoundaries b;
  for (double v = 1; v <= largest; v *= 2) b.push_back(v);
  return b;
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("taskmoe_requests_total")
                    .Help("RPCs finished, by task, method and gRPC status code")
                    .Register(*registry_)),
      grpc_calls_(prometheus::BuildCounter()
                      .Name("taskmoe_grpc_calls_total")
                      .Help("gRPC calls by method and the status they ended with, refusals "
                            "before any handler (e.g. beyond --max_concurrent_rpcs) included")
                      .Register(*registry_)),
      http_requests_(prometheus::BuildCounter()
                         .Name("taskmoe_http_requests_total")
                         .Help("Requests to the HTTP/JSON gateway by route and HTTP status code")
                         .Register(*registry_)),
      connections_accepted_(prometheus::BuildCounter()
                                .Name("taskmoe_connections_accepted_total")
                                .Help("Connections to the gRPC port handed to gRPC")
                                .Register(*registry_)),
      connections_refused_(prometheus::BuildCounter()
                               .Name("taskmoe_connections_refused_total")
                               .Help("Connections to the gRPC port closed at once, by reason: "
                                     "too few file descriptors left, or --max_connections")
                               .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("taskmoe_request_duration_seconds")
                            .Help("Time from receiving an RPC to its reply, for RPCs that "
                                  "succeeded")
                            .Register(*registry_)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("taskmoe_queue_duration_seconds")
                          .Help("Time a sentence waited in its task's queue before decoding")
                          .Register(*registry_)),
      time_to_first_token_(prometheus::BuildHistogram()
                               .Name("taskmoe_time_to_first_token_seconds")
                               .Help("Time from receiving a greedy request to its first token")
                               .Register(*registry_)),
      time_per_output_token_(prometheus::BuildHistogram()
                                 .Name("taskmoe_time_per_output_token_seconds")
                                 .Help("Time per generated token after the first, per greedy "
                                       "request that succeeded with two tokens or more")
                                 .Register(*registry_)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("taskmoe_batch_size")
                      .Help("Sentences per decoded batch")
                      .Register(*registry_)),
      step_rows_(prometheus::BuildHistogram()
                     .Name("taskmoe_decode_step_rows")
                     .Help("Rows each decoding step ran: sentences still decoding (beam "
                           "search: their hypotheses)")
                     .Register(*registry_)),
      batch_tokens_(prometheus::BuildHistogram()
                        .Name("taskmoe_batch_tokens")
                        .Help("Source tokens per decoded batch")
                        .Register(*registry_)),
      input_tokens_(prometheus::BuildCounter()
                        .Name("taskmoe_input_tokens_total")
                        .Help("Source tokens decoded (target tag and EOS included)")
                        .Register(*registry_)),
      generated_tokens_(prometheus::BuildCounter()
                            .Name("taskmoe_generated_tokens_total")
                            .Help("Target tokens generated (EOS excluded)")
                            .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("taskmoe_queue_depth")
                       .Help("Sentences waiting in the task's queue")
                       .Register(*registry_)),
      inflight_(prometheus::BuildGauge()
                    .Name("taskmoe_inflight_requests")
                    .Help("Translation RPCs being served")
                    .Register(*registry_)),
      model_info_(prometheus::BuildGauge()
                      .Name("taskmoe_model_info")
                      .Help("1 for the model version each task serves")
                      .Register(*registry_)),
      cpu_info_(prometheus::BuildGauge()
                    .Name("taskmoe_cpu_info")
                    .Help("1, labelled with the CPU model and the instruction-set level the "
                          "kernels run at")
                    .Register(*registry_)),
      model_memory_(prometheus::BuildGauge()
                        .Name("taskmoe_model_memory_bytes")
                        .Help("Bytes of weights the task's model uses (shared ones included)")
                        .Register(*registry_)),
      load_failures_(prometheus::BuildCounter()
                         .Name("taskmoe_model_load_failures_total")
                         .Help("Model loads (at start or reload) that were refused")
                         .Register(*registry_)),
      task_ready_(prometheus::BuildGauge()
                      .Name("taskmoe_task_ready")
                      .Help("1 while the task is loaded and served, 0 while it failed to load "
                            "(ListTasks says why)")
                      .Register(*registry_)),
      weight_store_bytes_(prometheus::BuildGauge()
                              .Name("taskmoe_weight_store_bytes")
                              .Help("Bytes of weights in memory, all tasks together (kind=total) "
                                    "and the part used by more than one task (kind=shared)")
                              .Register(*registry_)) {
  cpu_info_.Add({{"model", models::CpuModelName()}, {"isa", models::CpuIsaName()}}).Set(1);
  const auto histogram = [&](const char* name, const char* help) -> prometheus::Histogram* {
    return &prometheus::BuildHistogram()
                .Name(name)
                .Help(help)
                .Register(*registry_)
                .Add({}, PowersOfTwo(1024));
  };
  auto& admitted = prometheus::BuildHistogram()
                       .Name("taskmoe_continuous_admitted_rows")
                       .Help(
                           "Sentences encoded and joining a continuous batch, per admission "
                           "(at=step_boundary: between two steps; at=between_layers: while a "
                           "step waits between two decoder layers)")
                       .Register(*registry_);
  continuous_.step_rows = histogram("taskmoe_continuous_step_rows",
                                    "Rows each step of a continuous batch ran, all tasks together");
  continuous_.step_tasks = histogram("taskmoe_continuous_step_tasks",
                                     "Distinct tasks among the rows of each continuous batch step");
  continuous_.admitted_rows = &admitted.Add({{"at", "step_boundary"}}, PowersOfTwo(1024));
  continuous_.admitted_rows_between_layers =
      &admitted.Add({{"at", "between_layers"}}, PowersOfTwo(1024));
  // At 0 from the start, so that rate() and alerts see the first connection.
  connections_accepted_.Add({});
  for (const char* reason : {"file_descriptors", "max_connections"}) {
    connections_refused_.Add({{"reason", reason}});
  }
}

TaskMetrics& Metrics::ForTask(const std::string& task) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<TaskMetrics>& m = tasks_[task];
  if (m == nullptr) {
    m = std::make_unique<TaskMetrics>();
    const prometheus::Labels labels{{"task", task}};
    m->request_duration = &request_duration_.Add(labels, SecondsBuckets());
    m->queue_duration = &queue_duration_.Add(labels, SecondsBuckets());
    m->time_to_first_token = &time_to_first_token_.Add(labels, SecondsBuckets());
    m->time_per_output_token = &time_per_output_token_.Add(labels, TokenSecondsBuckets());
    m->batch_size = &batch_size_.Add(labels, PowersOfTwo(256));
    m->step_rows = &step_rows_.Add(labels, PowersOfTwo(1024));
    m->batch_tokens = &batch_tokens_.Add(labels, PowersOfTwo(65536));
    m->input_tokens = &input_tokens_.Add(labels);
    m->generated_tokens = &generated_tokens_.Add(labels);
    m->queue_depth = &queue_depth_.Add(labels);
    m->inflight = &inflight_.Add(labels);
    m->memory_bytes = &model_memory_.Add(labels);
    // The served calls' series exist from the start at 0, so that rate() and alerts on them
    // see the first request as an increase rather than a series appearing.
    for (const char* method : {"Translate", "TranslateStream"}) {
      requests_.Add({{"task", task}, {"method", method}, {"code", "OK"}});
    }
  }
  return *m;
}

void Metrics::CountRequest(const std::string& task, const std::string& method,
                           const std::string& code) {
  requests_.Add({{"task", task}, {"method", method}, {"code", code}}).Increment();
}

void Metrics::CountGrpcCall(const std::string& method, const std::string& code) {
  grpc_calls_.Add({{"method", method}, {"code", code}}).Increment();
}

void Metrics::CountHttpRequest(const std::string& route, int http_status) {
  http_requests_.Add({{"route", route}, {"code", std::to_string(http_status)}}).Increment();
}

void Metrics::CountConnection(const std::string& refused_because) {
  if (refused_because.empty()) {
    connections_accepted_.Add({}).Increment();
  } else {
    connections_refused_.Add({{"reason", refused_because}}).Increment();
  }
}

void Metrics::SetModelInfo(const std::string& task, const std::string& version,
                           const std::string& precision, const std::string& matmul_path,
                           const std::string& greedy_head_filter) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = model_info_by_task_.find(task);
  if (it != model_info_by_task_.end()) model_info_.Remove(it->second);
  model_info_by_task_[task] = &model_info_.Add({{"task", task},
                                                {"version", version},
                                                {"precision", precision},
                                                {"matmul_path", matmul_path},
                                                {"greedy_head_filter", greedy_head_filter}});
  model_info_by_task_[task]->Set(1);
}

void Metrics::CountLoadFailure(const std::string& task) {
  load_failures_.Add({{"task", task}}).Increment();
}

void Metrics::SetTaskReady(const std::string& task, bool ready) {
  task_ready_.Add({{"task", task}}).Set(ready ? 1 : 0);
}

void Metrics::SetWeightStoreBytes(double total, double shared) {
  weight_store_bytes_.Add({{"kind", "total"}}).Set(total);
  weight_store_bytes_.Add({{"kind", "shared"}}).Set(shared);
}

}  // namespace taskmoe::server
