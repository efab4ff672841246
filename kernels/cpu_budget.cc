// Affinity mask and cgroup CPU quota, for the default thread count.
#include "kernels/cpu_budget.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace taskmoe::kernels {
namespace {

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace

std::optional<double> ParseCgroupV2CpuMax(const std::string& content) {
  std::vector<std::string> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(content), ' ', absl::SkipEmpty());
  if (fields.size() != 2 || fields[0] == "max") return std::nullopt;
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(fields[0], &quota) || !absl::SimpleAtoi(fields[1], &period) || quota <= 0 ||
      period <= 0) {
    return std::nullopt;
  }
  return static_cast<double>(quota) / static_cast<double>(period);
}

std::optional<double> ParseCgroupV1Quota(const std::string& quota, const std::string& period) {
  int64_t q = 0, p = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota), &q) ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(period), &p) || q <= 0 || p <= 0) {
    return std::nullopt;  // -1 is "no limit"
  }
  return static_cast<double>(q) / static_cast<double>(p);
}

std::optional<double> CgroupCpuQuota(const std::string& sysfs_cgroup,
                                     const std::string& proc_cgroup) {
  // Lines "0::/path" (v2) and "N:cpu,cpuacct:/path" (v1): the cgroup under each hierarchy.
  std::string v2_path, v1_path;
  bool v1 = false;
  for (absl::string_view line : absl::StrSplit(proc_cgroup, '\n', absl::SkipEmpty())) {
    std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    if (fields[0] == "0" && fields[1].empty()) v2_path = fields[2];
    for (absl::string_view controller : absl::StrSplit(fields[1], ',')) {
      if (controller == "cpu") {
        v1 = true;
        v1_path = fields[2];
      }
    }
  }
  std::optional<double> smallest;
  auto take = [&smallest](std::optional<double> quota) {
    if (quota && (!smallest || *quota < *smallest)) smallest = quota;
  };
  // Every cgroup from the process's own up to the root (a quota anywhere above limits it too).
  auto for_each_ancestor = [](std::string path, auto visit) {
    while (true) {
      visit(path == "/" ? std::string() : path);
      const size_t slash = path.find_last_of('/');
      if (path.empty() || path == "/" || slash == std::string::npos) break;
      path = slash == 0 ? "/" : path.substr(0, slash);
    }
  };
  if (v1) {
    for (const char* dir : {"/cpu", "/cpu,cpuacct", "/cpuacct,cpu"}) {
      for_each_ancestor(v1_path, [&](const std::string& path) {
        const std::string base = sysfs_cgroup + dir + path;
        std::optional<std::string> quota = ReadSmallFile(base + "/cpu.cfs_quota_us");
        std::optional<std::string> period = ReadSmallFile(base + "/cpu.cfs_period_us");
        if (quota && period) take(ParseCgroupV1Quota(*quota, *period));
      });
    }
  } else {
    for_each_ancestor(v2_path, [&](const std::string& path) {
      if (std::optional<std::string> max = ReadSmallFile(sysfs_cgroup + path + "/cpu.max")) {
        take(ParseCgroupV2CpuMax(*max));
      }
    });
  }
  return smallest;
}

std::optional<double> CgroupCpuQuota() {
  return CgroupCpuQuota("/sys/fs/cgroup", ReadSmallFile("/proc/self/cgroup").value_or(""));
}

int AffinityCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

namespace {

int ThreadsWithin(int affinity_cpus, std::optional<double> quota) {
  int threads = affinity_cpus;
  if (quota) threads = std::min(threads, static_cast<int>(std::ceil(*quota - 1e-9)));
  return std::max(1, threads);
}

}  // namespace

int DefaultComputeThreads() { return ThreadsWithin(AffinityCpuCount(), CgroupCpuQuota()); }

std::string DescribeComputeThreadBudget() {
  // Read once, so that the line's figures agree with each other.
  const int affinity = AffinityCpuCount();
  const std::optional<double> quota = CgroupCpuQuota();
  return absl::StrCat(ThreadsWithin(affinity, quota), " (affinity ", affinity,
                      " CPUs, cgroup quota ", quota ? absl::StrCat(*quota, " CPUs") : "none", ")");
}

}  // namespace taskmoe::kernels
