#!/usr/bin/env bash
# Continuous against per-task batching through the server (issue 20): the demo repository's 16
# tasks mixed, and en-de alone, at one concurrency, closed loop, one text per request, streamed
# (so that time to first token is measured), for each --batching mode, the modes interleaved
# round by round on one machine; then the idle time to first token (concurrency 1, all tasks).
# Prints a table of medians over the rounds and the ratios the issue asks for. With
# --beam_size above 1 every request is beam-searched, through unary calls (TranslateStream is
# greedy only), so there is no time to first token. --prefill_first adds a third server,
# continuous batching with --prefill_first, to the rounds.
# Usage: tools/batching-bench.sh [--rounds=2] [--seconds=15] [--concurrency=32] [--threads=N]
#                                [--beam_size=1] [--prefill_first]
# Needs build/release (tools/build.sh Release). Texts: the corpus test sets when
# build/corpus exists (training/build_corpus.py), else synthetic 20-word texts. Takes about
# 2 minutes per round.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release
repository=build/demo-repository
out=build/batching-bench
rounds=2
seconds=15
concurrency=32
threads=0
beam_size=1
modes=(per_task continuous)
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds=${arg#*=} ;;
    --seconds=*) seconds=${arg#*=} ;;
    --concurrency=*) concurrency=${arg#*=} ;;
    --threads=*) threads=${arg#*=} ;;
    --beam_size=*) beam_size=${arg#*=} ;;
    --prefill_first) modes+=(prefill_first) ;;
    *)
      echo "batching-bench: unknown argument $arg" >&2
      exit 2
      ;;
  esac
done
for tool in server/taskmoe-server server/taskmoe-client loadtest/taskmoe-loadtest tools/taskmoe-extract; do
  if [[ ! -x $bin/$tool ]]; then
    echo "batching-bench: $bin/$tool is missing (run tools/build.sh Release)" >&2
    exit 2
  fi
done
if [[ ! -f $repository/en-de/config.json ]]; then
  "$bin/tools/taskmoe-extract" --checkpoint=demo/taskmoe --out="$repository"
fi
texts=(--synthetic_words=20)
texts_name="synthetic 20-word texts"
if [[ -f build/corpus/test.en-de.en ]]; then
  texts=(--texts='build/corpus/test.{task}.{src}')
  texts_name="the corpus test sets"
fi
mkdir -p "$out"
rm -f "$out"/*.json

source tools/server-process.sh
trap stop_server EXIT

api=stream
if ((beam_size > 1)); then api=unary; fi
load() {
  local name=$1
  shift
  "$bin/loadtest/taskmoe-loadtest" --target="$target" --api="$api" --beam_size="$beam_size" \
    --loop=closed \
    --duration="${seconds}s" --warmup=3s "${texts[@]}" --json="$out/$name.json" --progress=false \
    "$@" >/dev/null
}

for ((round = 1; round <= rounds; ++round)); do
  for mode in "${modes[@]}"; do
    echo "batching-bench: round $round, $mode" >&2
    batching=(--batching="$mode")
    if [[ $mode == prefill_first ]]; then batching=(--batching=continuous --prefill_first); fi
    start_server "$mode" "$out/server.ports" --model_repository="$repository" \
      --threads="$threads" "${batching[@]}" --log_level=warning
    load "$mode.en-de.$round" --concurrency="$concurrency" --tasks=en-de
    load "$mode.mixed.$round" --concurrency="$concurrency"
    load "$mode.idle.$round" --concurrency=1
    stop_server
  done
done

echo "CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores; texts: $texts_name;" \
  "concurrency $concurrency, beam size $beam_size, ${seconds} s per run, median of $rounds rounds"
/usr/bin/python3 - "$out" "$rounds" "${modes[@]}" <<'EOF'
import json, statistics, sys
out, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def run(name):
    return json.load(open(f"{out}/{name}.json"))["runs"][0]
def median(mode, load, key):
    values = []
    for r in range(1, rounds + 1):
        s = run(f"{mode}.{load}.{r}")
        if key == "tokens/s":
            values.append(s["output_tokens_per_second"])
        elif key == "errors":
            values.append(sum(s["errors"].values()))
        elif key.startswith("ttft"):
            if s.get("ttft_ms") is None:
                return float("nan")  # unary calls (beam search)
            values.append(s["ttft_ms"][key.split()[1]])
        else:
            values.append(s["latency_ms"][key])
    return statistics.median(values)
print()
print("| batching | load | tokens/s | p50 ms | p99 ms | TTFT p50 ms | errors |")
print("|---|---|---:|---:|---:|---:|---:|")
for mode in modes:
    for load in ("en-de", "mixed", "idle"):
        print(f"| {mode} | {load} | {median(mode, load, 'tokens/s'):,.0f} | "
              f"{median(mode, load, 'p50'):.1f} | {median(mode, load, 'p99'):.1f} | "
              f"{median(mode, load, 'ttft p50'):.1f} | {median(mode, load, 'errors'):.0f} |")
print()
for mode in modes:
    mixed = median(mode, "mixed", "tokens/s") / median(mode, "en-de", "tokens/s")
    ttft = median(mode, "mixed", "ttft p50") / median(mode, "idle", "ttft p50")
    print(f"{mode}: mixed / en-de alone throughput {mixed:.2f}x; "
          f"TTFT p50 mixed / idle {ttft:.1f}x")
print(f"continuous / per_task, mixed: throughput "
      f"{median('continuous', 'mixed', 'tokens/s') / median('per_task', 'mixed', 'tokens/s'):.2f}x, "
      f"p99 {median('continuous', 'mixed', 'p99') / median('per_task', 'mixed', 'p99'):.2f}x; "
      f"en-de alone: throughput "
      f"{median('continuous', 'en-de', 'tokens/s') / median('per_task', 'en-de', 'tokens/s'):.2f}x")
if "prefill_first" in modes:
    def ratio(load, key):
        return median("prefill_first", load, key) / median("continuous", load, key)
    print(f"prefill_first / continuous, mixed: throughput {ratio('mixed', 'tokens/s'):.2f}x, "
          f"TTFT p50 {ratio('mixed', 'ttft p50'):.2f}x, p99 {ratio('mixed', 'p99'):.2f}x; "
          f"en-de alone: throughput {ratio('en-de', 'tokens/s'):.2f}x")
EOF
