#!/usr/bin/env bash
# Continuous against per-task batching through the server (issue 20): the demo repository's 16
# tasks mixed, and en-de alone, at one concurrency, closed loop, one text per request, streamed
# (so that time to first token is measured), for each server mode, the modes interleaved round
# by round on one machine; then the idle time to first token (concurrency 1, all tasks).
# Prints a table of medians over the rounds and the ratios the issue asks for. With
# --beam_size above 1 every request is beam-searched, through unary calls (TranslateStream is
# greedy only), so there is no time to first token.
# A mode is a batching (per_task or continuous) with optional '+'-joined options:
#   +prefill_first  the server's --prefill_first
#   +plain          the server's --noprefill_first_when_mixed (every newcomer joins at a step
#                   boundary and takes its first step with the running rows: the default
#                   before stop 61 and again since stop 65)
#   +when_mixed     the server's --prefill_first_when_mixed (the default of stops 61-64)
#   +folded         subnetworks extracted folded (taskmoe-extract's default) instead of with
#                   --keep_experts (experts apart, shared by tasks: what tools/serve-demo.sh
#                   serves)
#   +int8, +bf16    the server's --precision (f32 otherwise)
#   +rowsN          the server's --max_batch_sentences=N (32 otherwise)
#   +notrim         the server's --malloc_trim_interval_ms=0 (no periodic malloc_trim)
# The default modes are per_task+folded (the server before issue 20), continuous+folded and
# continuous. --prefill_first (kept for old command lines) adds continuous+prefill_first.
# --baseline=SERVER (a taskmoe-server binary, e.g. one built from an earlier commit and copied
# aside) runs every mode with that server too, as MODE@baseline, in the same rounds, and prints
# each mode's ratios to its baseline: a change measured against the code before it, in one run.
# Usage: tools/batching-bench.sh [--rounds=2] [--seconds=15] [--concurrency=32] [--threads=N]
#                                [--beam_size=1] [--modes=MODE,...] [--prefill_first]
#                                [--baseline=SERVER]
# Needs build/release (tools/build.sh Release). Texts: the corpus test sets when
# build/corpus exists (training/build_corpus.py), else synthetic 20-word texts. Takes about
# 1 minute per mode and round.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release
repository=build/demo-repository
folded_repository=build/demo-repository-folded
out=build/batching-bench
rounds=2
seconds=15
concurrency=32
threads=0
beam_size=1
baseline=
modes=(per_task+folded continuous+folded continuous)
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds=${arg#*=} ;;
    --seconds=*) seconds=${arg#*=} ;;
    --concurrency=*) concurrency=${arg#*=} ;;
    --threads=*) threads=${arg#*=} ;;
    --beam_size=*) beam_size=${arg#*=} ;;
    --modes=*) IFS=, read -r -a modes <<<"${arg#*=}" ;;
    --prefill_first) modes+=(continuous+prefill_first) ;;
    --baseline=*) baseline=${arg#*=} ;;
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
if [[ -n "$baseline" ]]; then
  if [[ ! -x "$baseline" ]]; then
    echo "batching-bench: --baseline=$baseline is not an executable server" >&2
    exit 2
  fi
  baseline=$(realpath "$baseline")
  with_baselines=()
  for mode in "${modes[@]}"; do with_baselines+=("$mode" "$mode@baseline"); done
  modes=("${with_baselines[@]}")
fi
# The server flags of a mode, into the array `flags`, and its binary into `server_binary`
# (empty: $bin's); exits on a mode it does not know.
mode_flags() {
  local mode=${1%@baseline} part models=$repository
  local -a parts
  server_binary=
  [[ $1 == *@baseline ]] && server_binary=$baseline
  IFS=+ read -r -a parts <<<"$mode"
  case "${parts[0]}" in
    per_task | continuous) flags=(--batching="${parts[0]}") ;;
    *)
      echo "batching-bench: mode $mode: expected per_task or continuous first" >&2
      exit 2
      ;;
  esac
  for part in "${parts[@]:1}"; do
    case "$part" in
      prefill_first) flags+=(--prefill_first) ;;
      plain) flags+=(--noprefill_first_when_mixed) ;;
      when_mixed) flags+=(--prefill_first_when_mixed) ;;
      folded) models=$folded_repository ;;
      int8 | bf16 | f32) flags+=(--precision="$part") ;;
      rows[0-9]*) flags+=(--max_batch_sentences="${part#rows}") ;;
      notrim) flags+=(--malloc_trim_interval_ms=0) ;;
      *)
        echo "batching-bench: mode $mode: unknown option $part (prefill_first, plain, when_mixed, folded, int8, bf16, rowsN, notrim)" >&2
        exit 2
        ;;
    esac
  done
  flags+=(--model_repository="$models")
}
for mode in "${modes[@]}"; do mode_flags "$mode"; done
source tools/demo-repository.sh
demo_repository "$repository" --keep_experts
demo_repository "$folded_repository"
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
    mode_flags "$mode"
    start_server "$mode" "$out/server.ports" --threads="$threads" "${flags[@]}" \
      --log_level=warning
    load "$mode.en-de.$round" --concurrency="$concurrency" --tasks=en-de
    load "$mode.mixed.$round" --concurrency="$concurrency"
    load "$mode.idle.$round" --concurrency=1
    stop_server
  done
done

# The vector instruction sets the kernels choose between (figures differ per ISA).
isa=$(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_tile' /proc/cpuinfo | sort -u |
  paste -sd ' ' -)
# ONEDNN_MAX_CPU_ISA caps what the server chooses as well (kernels/cpu_features.h): say so.
echo "CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores, ISA: ${isa:-unknown}${ONEDNN_MAX_CPU_ISA:+ (capped by ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA)};" \
  "texts: $texts_name;" \
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
PRECISIONS = ("int8", "bf16", "f32")
def precision(mode):
    return next((p for p in mode.removesuffix("@baseline").split("+") if p in PRECISIONS), "f32")
for mode in modes:
    base = mode + "@baseline"
    if base not in modes:
        continue
    def to_base(load, key):
        return median(mode, load, key) / median(base, load, key)
    print(f"{mode} / its baseline: mixed throughput {to_base('mixed', 'tokens/s'):.2f}x, "
          f"p99 {to_base('mixed', 'p99'):.2f}x, TTFT p50 {to_base('mixed', 'ttft p50'):.2f}x; "
          f"en-de alone throughput {to_base('en-de', 'tokens/s'):.2f}x; "
          f"idle TTFT p50 {to_base('idle', 'ttft p50'):.2f}x")
# Each continuous mode is compared with the per-task mode of its precision (the first
# per-task mode when none has it), run by the same server (its baseline's or this build's).
def on_baseline(mode):
    return mode.endswith("@baseline")
for same in (False, True):
    per_task = [m for m in modes if m.startswith("per_task") and on_baseline(m) == same]
    if not per_task:
        continue
    for mode in modes:
        if mode in per_task or on_baseline(mode) != same or mode.startswith("per_task"):
            continue
        before = next((m for m in per_task if precision(m) == precision(mode)), per_task[0])
        def ratio(load, key):
            return median(mode, load, key) / median(before, load, key)
        print(f"{mode} / {before}, mixed: throughput {ratio('mixed', 'tokens/s'):.2f}x, "
              f"p99 {ratio('mixed', 'p99'):.2f}x; "
              f"en-de alone: throughput {ratio('en-de', 'tokens/s'):.2f}x")
EOF
