// Process metrics in Prometheus' standard names (process_cpu_seconds_total,
// process_resident_memory_bytes, ...), read from /proc at each scrape. prometheus-cpp has no
// process collector of its own.
#ifndef TASKMOE_SERVER_PROCESS_METRICS_H_
#define TASKMOE_SERVER_PROCESS_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <vector>

namespace taskmoe::server {

class ProcessMetrics : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace taskmoe::server

#endif  // TASKMOE_SERVER_PROCESS_METRICS_H_
