// How many cores this process may really use: the CPUs of its affinity mask (taskset, a
// container's cpuset) and its cgroup's CPU quota (a Kubernetes CPU limit, Docker's --cpus),
// which OpenMP ignores. Running more compute threads than the quota allows makes the kernel
// throttle the whole process for the rest of each period, and a thread that is throttled
// while the others wait for it at a barrier stalls them all.
#ifndef TASKMOE_KERNELS_CPU_BUDGET_H_
#define TASKMOE_KERNELS_CPU_BUDGET_H_

#include <optional>
#include <string>

namespace taskmoe::kernels {

// CPUs of a cgroup v2 "cpu.max" file's content ("max 100000": no limit, nullopt;
// "150000 100000": 1.5 CPUs). Malformed content gives nullopt.
std::optional<double> ParseCgroupV2CpuMax(const std::string& content);
// CPUs of a cgroup v1 quota and period (cpu.cfs_quota_us, cpu.cfs_period_us); a quota of -1
// means no limit (nullopt).
std::optional<double> ParseCgroupV1Quota(const std::string& quota, const std::string& period);

// The CPU quota of a process whose /proc/<pid>/cgroup reads `proc_cgroup`: the smallest quota
// of its cgroup and every ancestor, from the files under `sysfs_cgroup` (cpu.max for cgroup
// v2, cpu/cpu.cfs_quota_us and cpu.cfs_period_us for v1), or nullopt when none is set.
std::optional<double> CgroupCpuQuota(const std::string& sysfs_cgroup,
                                     const std::string& proc_cgroup);
// The same for the calling process (/sys/fs/cgroup, /proc/self/cgroup).
std::optional<double> CgroupCpuQuota();
// CPUs in this process's affinity mask.
int AffinityCpuCount();

// The default compute thread count: the affinity mask's CPUs, capped by the cgroup quota
// rounded up (a quota of 1.5 CPUs gives 2 threads: the half core is still worth having,
// and per-step work is split finely enough to balance), at least 1.
int DefaultComputeThreads();
// Why: "2 (affinity 2 CPUs, cgroup quota none)" for the start-up log and benchmarks.
std::string DescribeComputeThreadBudget();

}  // namespace taskmoe::kernels

#endif  // TASKMOE_KERNELS_CPU_BUDGET_H_
