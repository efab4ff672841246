// The server's Prometheus metrics (DESIGN.md §5; the list is in docs/api.md "Metrics"): one
// registry, families created once, and per-task handles created on first use. Exposition over
// HTTP is MetricsEndpoint's job; this file only records.
#ifndef TASKMOE_SERVER_METRICS_H_
#define TASKMOE_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace taskmoe::server {

// Metrics of one task; pointers stay valid as long as the Metrics object.
struct TaskMetrics {
  prometheus::Histogram* request_duration = nullptr;  // seconds, whole RPC
  prometheus::Histogram* queue_duration = nullptr;    // seconds, per sentence
  prometheus::Histogram* time_to_first_token = nullptr;
  // Seconds per generated token after the first, per greedy request.
  prometheus::Histogram* time_per_output_token = nullptr;
  prometheus::Histogram* batch_size = nullptr;    // sentences
  prometheus::Histogram* step_rows = nullptr;     // rows (sentences, beam hypotheses) per step
  prometheus::Histogram* batch_tokens = nullptr;  // source tokens
  prometheus::Counter* input_tokens = nullptr;
  prometheus::Counter* generated_tokens = nullptr;
  prometheus::Gauge* queue_depth = nullptr;  // queued sentences
  prometheus::Gauge* inflight = nullptr;     // RPCs being served
  prometheus::Gauge* memory_bytes = nullptr;
};

// Metrics of the continuous batches (all tasks together), per decoding step.
struct ContinuousBatchMetrics {
  prometheus::Histogram* step_rows = nullptr;   // rows each step ran, all tasks
  prometheus::Histogram* step_tasks = nullptr;  // distinct tasks among them
  // Sentences encoded and joining, per admission: at a step boundary, and between two decoder
  // layers of a running step (BatchingOptions::prefill_first, or prefill_first_when_mixed in a
  // step over several tasks).
  prometheus::Histogram* admitted_rows = nullptr;
  prometheus::Histogram* admitted_rows_between_layers = nullptr;
};

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  TaskMetrics& ForTask(const std::string& task);
  const ContinuousBatchMetrics& continuous() const { return continuous_; }
  // `task` is "" for requests naming no loaded task (so bad names add no label values).
  void CountRequest(const std::string& task, const std::string& method, const std::string& code);
  // taskmoe_grpc_calls_total{method,code}: every call's final status (grpc_call_metrics.h).
  void CountGrpcCall(const std::string& method, const std::string& code);
  // taskmoe_http_requests_total{route,code}: every request to the HTTP gateway, by its route
  // (a fixed set, http_gateway.h) and HTTP status code.
  void CountHttpRequest(const std::string& route, int http_status);
  // A connection to the gRPC port: accepted when `refused_because` is empty, else
  // taskmoe_connections_refused_total{reason=refused_because} (server/listener.h).
  void CountConnection(const std::string& refused_because);
  // taskmoe_model_info{task,version,precision,matmul_path,greedy_head_filter} = 1, replacing
  // the task's previous version. matmul_path is the kernel path its linear layers run
  // (kernels/matmul.h); greedy_head_filter the int8 path of its greedy head's candidate filter,
  // empty without one (models::TaskDescription).
  void SetModelInfo(const std::string& task, const std::string& version,
                    const std::string& precision, const std::string& matmul_path,
                    const std::string& greedy_head_filter);
  void CountLoadFailure(const std::string& task);
  // taskmoe_task_ready{task}: 1 while the task is loaded and served, 0 while it failed to load.
  void SetTaskReady(const std::string& task, bool ready);
  void SetWeightStoreBytes(double total, double shared);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& grpc_calls_;
  prometheus::Family<prometheus::Counter>& http_requests_;
  prometheus::Family<prometheus::Counter>& connections_accepted_;
  prometheus::Family<prometheus::Counter>& connections_refused_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& time_to_first_token_;
  prometheus::Family<prometheus::Histogram>& time_per_output_token_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& step_rows_;
  prometheus::Family<prometheus::Histogram>& batch_tokens_;
  prometheus::Family<prometheus::Counter>& input_tokens_;
  prometheus::Family<prometheus::Counter>& generated_tokens_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& inflight_;
  prometheus::Family<prometheus::Gauge>& model_info_;
  prometheus::Family<prometheus::Gauge>& cpu_info_;
  prometheus::Family<prometheus::Gauge>& model_memory_;
  prometheus::Family<prometheus::Counter>& load_failures_;
  prometheus::Family<prometheus::Gauge>& task_ready_;
  prometheus::Family<prometheus::Gauge>& weight_store_bytes_;
  ContinuousBatchMetrics continuous_;

  std::mutex mu_;
  std::map<std::string, std::unique_ptr<TaskMetrics>> tasks_;
  std::map<std::string, prometheus::Gauge*> model_info_by_task_;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_METRICS_H_
