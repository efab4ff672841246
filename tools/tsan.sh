#!/usr/bin/env bash
# ThreadSanitizer run of the server's concurrency tests and of the kernel threads' work sharing:
# builds taskmoe-server, the server's test binaries and kernels_test with clang's
# -fsanitize=thread into build/tsan and runs the server tests and kernels_test's WorkSharing and
# TimeSliceWatch suites (the work-sharing team, its carried control flow on fibers included);
# any report from a test process or from a server it starts fails the run (reports are kept in
# build/tsan/reports).
# Usage: tools/tsan.sh [gtest filter]   (default: every server test)
# Debian's gRPC, Abseil, oneDNN and libgomp are not instrumented: TSan ignores their own
# accesses (ignore_noninstrumented_modules) and tools/tsan-suppressions.txt says which races on
# gRPC's objects are suppressed and why. The servers run with --threads=1, so no OpenMP team
# (whose barriers TSan cannot see) is ever formed; the concurrency under test is between
# RPC handlers, batch workers, reloads and shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/cores.sh
filter="${1:-*}"

# clang's ThreadSanitizer: on 2 cores it builds these targets in about two thirds of gcc's time
# and runs the tests in 0.7x (docs/reliability.md, "The test command's time"). A build/tsan that
# gcc configured is made afresh (tools/build.sh).
CC=clang CXX=clang++ tools/build.sh Tsan -DTASKMOE_BUILD_TESTS=ON -DTASKMOE_BUILD_BENCHMARKS=OFF \
  -- server_test server_unit_test kernels_test

reports="$PWD/build/tsan/reports"
rm -rf "$reports"
mkdir -p "$reports"
export TSAN_OPTIONS="log_path=$reports/tsan ignore_noninstrumented_modules=1 \
suppressions=$PWD/tools/tsan-suppressions.txt second_deadlock_stack=1"
export OMP_NUM_THREADS=1
status=0
# The team's own threads, one to nine per team, fibers carrying control flows between them
# (fiber.h tells the sanitizer of every switch).
echo "== kernels_test (work sharing) under ThreadSanitizer"
build/tsan/tests/kernels/kernels_test --gtest_filter='WorkSharing.*:TimeSliceWatch.*' \
  --gtest_brief=1 || status=1
echo "== server_unit_test under ThreadSanitizer"
build/tsan/tests/server/server_unit_test --gtest_filter="$filter" --gtest_brief=1 || status=1
# server_test in one shard per core (at most 4), side by side: its cases spend part of their
# time waiting on the servers they start (2 cores: 3.4 min in two shards, 4.3 in one). Each
# shard's output is printed whole.
shards=$(usable_cores)
((shards > 4)) && shards=4
pids=()
for ((shard = 0; shard < shards; ++shard)); do
  GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$shard build/tsan/tests/server/server_test \
    --gtest_filter="$filter" --gtest_brief=1 >"$reports/server_test.shard$shard.log" 2>&1 &
  pids+=($!)
done
for ((shard = 0; shard < shards; ++shard)); do
  echo "== server_test under ThreadSanitizer, shard $((shard + 1)) of $shards"
  wait "${pids[$shard]}" || status=1
  cat "$reports/server_test.shard$shard.log"
done
if compgen -G "$reports/tsan.*" >/dev/null; then
  echo "ThreadSanitizer reported races (full reports in $reports):"
  grep -h "SUMMARY: ThreadSanitizer" "$reports"/tsan.* | sort | uniq -c
  status=1
fi
[[ $status == 0 ]] && echo "tsan: no race reported"
exit $status
