#!/usr/bin/env bash
# The paper's throughput comparison redone as it matters for serving (issue 20): all 16 tasks
# at once, one sentence per request, through the real server with continuous batching. The
# TaskMoE per-task subnetworks (16 models sharing their attention, embeddings and dense layers
# through the weight store, each step running every layer once per distinct weight), the same
# subnetworks extracted with their experts kept apart (taskmoe-extract --keep_experts: an
# expert two tasks chose is held once, and each task-routed layer of a step runs each distinct
# expert once over the rows of every task that chose it), the whole TaskMoE model routed by
# task at run time (grouped by expert in the same way, at the full model's memory), against
# the whole TokenMoE model serving the same mix (every task's rows in one batch, every token
# routed to its own top-2 experts), and the TaskMoE subnetworks again with per-task batching
# (the serving before continuous batching). Paper's WMT shape (tools/paper-experiment.sh), random
# weights, forced output length, closed loop at each --concurrencies value; peak tokens/s and
# resident memory after loading per model, and the ratios to TokenMoE.
#
# Usage: tools/paper-experiment-mixed.sh [--concurrencies 8,32,64] [--output_tokens 32]
#          [--seconds 15] [--words 20] [--precision f32] [--threads N] [--experts 32]
#          [--out DIR]
# Writes DIR (default build/paper-experiment-mixed): one JSON report per model, table.md and
# machine.txt. Needs about 14 GB of disk for the models (stored bf16) and 25 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

concurrencies=8,32,64
output_tokens=32
seconds=15
words=20
precision=f32
threads=$(nproc)
experts=32
out=build/paper-experiment-mixed
while (($# > 0)); do
  case "$1" in
    --concurrencies) concurrencies=$2 ;;
    --output_tokens) output_tokens=$2 ;;
    --seconds) seconds=$2 ;;
    --words) words=$2 ;;
    --precision) precision=$2 ;;
    --threads) threads=$2 ;;
    --experts) experts=$2 ;;
    --out) out=$2 ;;
    *)
      echo "paper-experiment-mixed: unknown argument $1 (see the header of $0)" >&2
      exit 2
      ;;
  esac
  shift 2
done

tools/setup.sh serve
tools/build.sh Release -DTASKMOE_BUILD_TESTS=OFF
bin=build/release
spm=demo/taskmoe/spm.model
max_rows=$(tr ',' '\n' <<<"$concurrencies" | sort -n | tail -1)
mkdir -p "$out"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  lscpu | grep -E '^(Model name|CPU\(s\)|L3 cache)'
  echo "isa flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|avx512_vnni|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "experts per MoE layer: $experts (top-2), threads: $threads, precision: $precision," \
    "output tokens: $output_tokens (forced), source: $words synthetic words, 16 tasks mixed," \
    "concurrencies: $concurrencies, seconds per point: $seconds"
} >"$out/machine.txt"
cat "$out/machine.txt"

source tools/server-process.sh
trap stop_server EXIT

: >"$out/memory.txt"
# name:kind of taskmoe-make-model:batching of the server:repository directory:make-model flag.
for model in taskmoe-subnetworks:taskmoe:continuous:taskmoe: \
  taskmoe-unfolded:taskmoe:continuous:taskmoe-unfolded:--keep_experts \
  taskmoe-full:taskmoe-full:continuous:taskmoe-full: tokenmoe:tokenmoe:continuous:tokenmoe: \
  taskmoe-subnetworks-per-task:taskmoe:per_task:taskmoe:; do
  IFS=: read -r name kind batching directory make_flag <<<"$model"
  repository="$out/models/$directory"
  made_with=$(cat "$repository/.experts" 2>/dev/null || true)
  if [[ ! -f "$repository/en-de/config.json" || "$made_with" != "$experts" ]]; then
    rm -rf "$repository"
    "$bin/tools/taskmoe-make-model" --kind="$kind" --shape=wmt --experts="$experts" --spm="$spm" \
      --dtype=bf16 --out="$repository" ${make_flag:+"$make_flag"}
    echo "$experts" >"$repository/.experts"
  fi

  start_server "$name" "$out/$name.ports" --model_repository="$repository" \
    --precision="$precision" --threads="$threads" --batching="$batching" --debug_ignore_eos \
    --max_output_tokens="$output_tokens" --max_batch_sentences="$max_rows" \
    --max_queue_delay_ms=5 --log_level=warning
  rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")
  echo "$name $rss_kib" >>"$out/memory.txt"

  echo "paper-experiment-mixed: $name ($batching batching) on $target, RSS $((rss_kib / 1024)) MiB"
  "$bin/loadtest/taskmoe-loadtest" --target="$target" --label="$name" --loop=closed \
    --sweep="concurrency:$concurrencies" --duration="${seconds}s" --warmup=3s --timeout=5m \
    --synthetic_words="$words" --max_output_tokens="$output_tokens" --progress=false \
    --json="$out/$name.json"
  stop_server
done

/usr/bin/python3 - "$out" <<'EOF' | tee "$out/table.md"
import json, sys
out = sys.argv[1]
names = ["taskmoe-subnetworks", "taskmoe-unfolded", "taskmoe-full", "tokenmoe",
         "taskmoe-subnetworks-per-task"]
runs = {n: json.load(open(f"{out}/{n}.json"))["runs"] for n in names}
memory = dict(line.split() for line in open(f"{out}/memory.txt"))
concurrencies = [r["concurrency"] for r in runs[names[0]]]
print("| model (batching) | " + " | ".join(f"conc {c}" for c in concurrencies) +
      " | peak tokens/s | peak vs TokenMoE | RSS MiB | RSS vs TokenMoE |")
print("|---|" + "---:|" * (len(concurrencies) + 4))
peak = {n: max(r["output_tokens_per_second"] for r in runs[n]) for n in names}
for n in names:
    cells = " | ".join(f"{r['output_tokens_per_second']:,.0f}" for r in runs[n])
    rss = int(memory[n]) / 1024
    print(f"| {n} | {cells} | {peak[n]:,.0f} | {peak[n] / peak['tokenmoe']:.2f}x | {rss:,.0f} | "
          f"{rss / (int(memory['tokenmoe']) / 1024):.2f}x |")
EOF
echo "paper-experiment-mixed: wrote $out/table.md and $out/machine.txt"
