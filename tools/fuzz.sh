#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan+UBSan, coverage-instrumented) into
# build/fuzz (or the directory below) and runs each for a while over a scratch copy of its seed
# corpus (docs/fuzzing.md). Fails on any crash, sanitizer report, leak, timeout or
# out-of-memory, and says where the input that caused it is and how to reproduce it. The
# repository's corpus is never written to.
# Usage: tools/fuzz.sh [seconds per target (30)] [target...]   (targets: fuzz/*_fuzzer.cc)
# TASKMOE_FUZZ_BUILD_DIR names another build directory already configured with
# TASKMOE_BUILD_FUZZERS (tools/test.sh passes its ASan build, which is also its fuzz build).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/cores.sh
seconds="${1:-30}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: tools/fuzz.sh [seconds per target] [target...]" >&2
  exit 2
fi
if (($# > 0)); then
  targets=("$@")
else
  targets=()
  for source in fuzz/*_fuzzer.cc; do
    name="${source#fuzz/}"
    targets+=("${name%_fuzzer.cc}")
  done
fi
for target in "${targets[@]}"; do
  if [[ ! -f "fuzz/${target}_fuzzer.cc" || ! -d "fuzz/corpus/$target" ]]; then
    echo "fuzz: no target '$target' (fuzz/${target}_fuzzer.cc and fuzz/corpus/$target/)" >&2
    exit 2
  fi
done

dir=${TASKMOE_FUZZ_BUILD_DIR:-build/fuzz}
start=$SECONDS
# A directory already configured for the fuzzers keeps its configuration (its other options,
# such as the tests of tools/test.sh's ASan build); any other is configured for them alone.
if ! grep -qsx 'TASKMOE_BUILD_FUZZERS:BOOL=ON' "$dir/CMakeCache.txt"; then
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Asan \
    -DTASKMOE_BUILD_FUZZERS=ON -DTASKMOE_BUILD_TESTS=OFF -DTASKMOE_BUILD_BENCHMARKS=OFF >/dev/null
fi
cmake --build "$dir" -j "$(usable_cores)" --target "${targets[@]/#/fuzz_}"
echo "fuzz: built in $((SECONDS - start)) s"

# ASan and UBSan stop at the first report; libFuzzer turns it into a crash with its input.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# One kernel thread: the fuzz inputs are tiny, and the machine may have few cores.
export OMP_NUM_THREADS=1

runs="$PWD/$dir/runs"
# Fuzzes one target over a scratch copy of its seed corpus; leaves ok or FAILED in
# $runs/<target>/status and libFuzzer's output in $runs/<target>/fuzz.log.
fuzz_one() {
  local target="$1"
  local work="$runs/$target"
  local binary="$PWD/$dir/fuzz/fuzz_$target"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp -R "fuzz/corpus/$target/." "$work/corpus/"
  # -timeout: one input running this long is a hang; -rss_limit_mb: and this much memory, a
  # leak or an allocation the input should not be able to cause.
  if (cd "$work" && "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" corpus >fuzz.log 2>&1); then
    echo ok >"$work/status"
  else
    echo FAILED >"$work/status"
  fi
}

# One target per core at a time (each fuzzes for $seconds whatever runs beside it).
jobs=$(usable_cores)
running=0
for target in "${targets[@]}"; do
  fuzz_one "$target" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=()
for target in "${targets[@]}"; do
  work="$runs/$target"
  binary="$PWD/$dir/fuzz/fuzz_$target"
  status=$(cat "$work/status" 2>/dev/null || echo FAILED)
  [[ $status == ok ]] || failed+=("$target")
  # The last status line: "#N DONE cov: C ft: F corp: K/S lim: L exec/s: E rss: R".
  line=$(grep -E '^#[0-9]+' "$work/fuzz.log" | tail -n 1 || true)
  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$work/fuzz.log" | grep -oE '[0-9]+$' || true)
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$work/fuzz.log" | grep -oE '[0-9]+$' || true)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$line" | tail -n 1 || true)
  ft=$(grep -oE 'ft: [0-9]+' <<<"$line" | tail -n 1 || true)
  corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$line" | tail -n 1 || true)
  printf 'fuzz: %-20s %-6s %ss, %s execs (%s/s), %s, %s, %s\n' "$target" "$status" "$seconds" \
    "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "${ft:-ft: ?}" "${corpus:-corp: ?}"
  if [[ $status == FAILED ]]; then
    echo "---- last lines of $work/fuzz.log"
    tail -n 60 "$work/fuzz.log"
    echo "----"
    for artifact in "$work"/artifacts/*; do
      [[ -e "$artifact" ]] || continue
      echo "fuzz: $target: input that failed: $artifact"
      echo "fuzz:   reproduce: $binary $artifact"
    done
  fi
done

echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $((SECONDS - start)) s in all" \
  "(logs and corpora: $runs/)"
if ((${#failed[@]} > 0)); then
  echo "fuzz: FAILED: ${failed[*]} (docs/fuzzing.md: turning a crash into a regression test)" >&2
  exit 1
fi
