#!/usr/bin/env bash
# ThreadSanitizer run of the server's concurrency tests: builds taskmoe-server and the server's
# test binaries with -fsanitize=thread into build/tsan and runs them; any report from the test
# process or from a server it starts fails the run (reports are kept in build/tsan/reports).
# Usage: tools/tsan.sh [gtest filter]   (default: every server test)
# Debian's gRPC, Abseil, oneDNN and libgomp are not instrumented: TSan ignores their own
# accesses (ignore_noninstrumented_modules) and tools/tsan-suppressions.txt says which races on
# gRPC's objects are suppressed and why. The servers run with --threads=1, so no OpenMP team
# (whose barriers TSan cannot see) is ever formed; the concurrency under test is between
# RPC handlers, batch workers, reloads and shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
filter="${1:-*}"

cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=Tsan -DTASKMOE_BUILD_TESTS=ON \
  -DTASKMOE_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/tsan -j "$(nproc)" --target server_test server_unit_test

reports="$PWD/build/tsan/reports"
rm -rf "$reports"
mkdir -p "$reports"
export TSAN_OPTIONS="log_path=$reports/tsan ignore_noninstrumented_modules=1 \
suppressions=$PWD/tools/tsan-suppressions.txt second_deadlock_stack=1"
export OMP_NUM_THREADS=1
status=0
for test in server_unit_test server_test; do
  echo "== $test under ThreadSanitizer"
  "build/tsan/tests/server/$test" --gtest_filter="$filter" --gtest_brief=1 || status=1
done
if compgen -G "$reports/tsan.*" >/dev/null; then
  echo "ThreadSanitizer reported races (full reports in $reports):"
  grep -h "SUMMARY: ThreadSanitizer" "$reports"/tsan.* | sort | uniq -c
  status=1
fi
[[ $status == 0 ]] && echo "tsan: no race reported"
exit $status
