// /proc/self readers for ProcessMetrics.
#include "server/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace taskmoe::server {
namespace {

prometheus::MetricFamily Single(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  // /proc/self/stat: the fields after the parenthesised command name, which may itself hold
  // spaces, so parsing starts after the last ')'.
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  std::vector<std::string> f;  // f[0] is field 3 (state)
  while (fields >> field) f.push_back(field);
  if (f.size() < 22) return out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;  // utime + stime
  const double start_ticks = std::stod(f[19]);                       // since boot
  const double vsize = std::stod(f[20]);
  const double rss = std::stod(f[21]) * page;

  double boot_time = 0;
  std::ifstream proc_stat("/proc/stat");
  for (std::string line; std::getline(proc_stat, line);) {
    if (line.rfind("btime ", 0) == 0) boot_time = std::stod(line.substr(6));
  }
  double open_fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++open_fds;
  }
  using prometheus::MetricType;
  out.push_back(Single("process_cpu_seconds_total", "User and system CPU time in seconds",
                       MetricType::Counter, cpu));
  out.push_back(
      Single("process_resident_memory_bytes", "Resident memory in bytes", MetricType::Gauge, rss));
  out.push_back(
      Single("process_virtual_memory_bytes", "Virtual memory in bytes", MetricType::Gauge, vsize));
  out.push_back(Single("process_open_fds", "Open file descriptors", MetricType::Gauge, open_fds));
  rlimit fd_limit{};
  if (getrlimit(RLIMIT_NOFILE, &fd_limit) == 0 && fd_limit.rlim_cur != RLIM_INFINITY) {
    out.push_back(Single("process_max_fds", "Soft limit on open file descriptors",
                         MetricType::Gauge, static_cast<double>(fd_limit.rlim_cur)));
  }
  out.push_back(Single("process_start_time_seconds", "Start time since the Unix epoch in seconds",
                       MetricType::Gauge, boot_time + start_ticks / ticks));
  return out;
}

}  // namespace taskmoe::server
