#!/usr/bin/env bash
# The engine under CPU contention (issue 18): taskmoe-bench's decoding throughput on a quiet
# machine, then with one busy competitor process pinned to each CPU it may use, then (where this
# process may make cgroups) under a CPU quota of half the cores, each as a ratio to the quiet
# run. Production cores are shared: a noisy neighbour or a Kubernetes CPU limit is this
# situation. Competitors left unpinned wander between CPUs, and the same binary's busy figure
# moved up to 1.7x between runs; pinned, about 10 % (docs/benchmarks.md, stop 57). The quota
# run leaves --threads out, so that the engine's default (kernels/cpu_budget.h) follows the
# quota, as a server's would.
# Usage: tools/contention-bench.sh [--precision=P] [--threads=N] [--batches=1,8,32]
#                                  [--models=taskmoe-extracted] [other taskmoe-bench flags]
# Needs build/release (tools/build.sh Release), or TASKMOE_BENCH=path/to/taskmoe-bench. Takes
# about 2 minutes per precision.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${TASKMOE_BENCH:-build/release/tools/taskmoe-bench}
if [[ ! -x $bench ]]; then
  echo "contention-bench: $bench is missing (run tools/build.sh Release)" >&2
  exit 2
fi
args=(--models=taskmoe-extracted --batches=1,8,32 --min_seconds=2 --roofline=false "$@")
source tools/cores.sh
cores=$(usable_cores)

competitors=()
cgroup_dir=""
cleanup() {
  if ((${#competitors[@]} > 0)); then kill "${competitors[@]}" 2>/dev/null || true; fi
  competitors=()
  if [[ -n $cgroup_dir && -d $cgroup_dir ]]; then rmdir "$cgroup_dir" 2>/dev/null || true; fi
}
trap cleanup EXIT

# "batch tokens/s" lines of one taskmoe-bench run.
run_bench() {
  "$@" | tee -a /dev/stderr | awk '$1 == "batch" && $4 == "tokens/s" { print $2, $3 }'
}

echo "== quiet" >&2
quiet=$(run_bench "$bench" "${args[@]}")

# The CPUs this process may run on, one per line (Cpus_allowed_list reads like "0-3,6").
allowed_cpus() {
  local list part
  list=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
  for part in ${list//,/ }; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}

echo "== one busy competitor pinned to each CPU ($cores)" >&2
for cpu in $(allowed_cpus); do
  taskset -c "$cpu" bash -c 'while :; do :; done' &
  competitors+=($!)
done
contended=$(run_bench "$bench" "${args[@]}")
cleanup

# A CPU quota of half the cores: cgroup v2 (cpu.max) or v1 (cpu.cfs_quota_us), if this
# process may create a cgroup; the bench's default thread count then follows the quota.
quota=""
period=100000
half=$((cores * period / 2))
if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  cgroup_dir=/sys/fs/cgroup/taskmoe-contention-$$
  if mkdir "$cgroup_dir" 2>/dev/null && echo "$half $period" >"$cgroup_dir/cpu.max" 2>/dev/null; then
    quota="cgroup v2 cpu.max $half $period"
  fi
elif [[ -d /sys/fs/cgroup/cpu ]]; then
  cgroup_dir=/sys/fs/cgroup/cpu/taskmoe-contention-$$
  if mkdir "$cgroup_dir" 2>/dev/null && echo "$period" >"$cgroup_dir/cpu.cfs_period_us" &&
    echo "$half" >"$cgroup_dir/cpu.cfs_quota_us" 2>/dev/null; then
    quota="cgroup v1 cpu.cfs_quota_us $half / $period"
  fi
fi
limited=""
quota_args=()
for arg in "${args[@]}"; do [[ $arg == --threads=* ]] || quota_args+=("$arg"); done
if [[ -n $quota ]]; then
  echo "== under a CPU quota of $((cores / 2)) cores ($quota)" >&2
  limited=$(run_bench bash -c "echo \$\$ > '$cgroup_dir/cgroup.procs' 2>/dev/null ||
                               echo \$\$ > '$cgroup_dir/tasks'; exec $bench ${quota_args[*]}")
else
  echo "== CPU quota: skipped (this process cannot create a cgroup with a CPU limit here)" >&2
fi

echo
echo "contention-bench: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $cores cores; ${args[*]}"
printf '%-6s %12s %12s %8s %12s %8s\n' batch quiet busy ratio quota ratio
while read -r batch q; do
  c=$(awk -v b="$batch" '$1 == b { print $2 }' <<<"$contended")
  l=$(awk -v b="$batch" '$1 == b { print $2 }' <<<"$limited")
  printf '%-6s %12s %12s %8s %12s %8s\n' "$batch" "$q" "${c:--}" \
    "$(awk -v a="$c" -v b="$q" 'BEGIN { if (a == "") print "-"; else printf "%.2f", a / b }')" \
    "${l:--}" \
    "$(awk -v a="$l" -v b="$q" 'BEGIN { if (a == "") print "-"; else printf "%.2f", a / b }')"
done <<<"$quiet"
