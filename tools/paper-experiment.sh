#!/usr/bin/env bash
# The paper's throughput experiment (Kudugunta et al. 2021, "throughput vs batch size"), on this
# machine and through the real server: the TaskMoE per-task subnetwork, the whole TokenMoE
# model and the dense baseline, each at the paper's WMT shape (Transformer Base, 32 experts
# top-2 in every other layer) with random weights, served one at a time by taskmoe-server with
# a forced output length, and driven by taskmoe-loadtest with a batch-size sweep (one request
# of B texts at a time, so B is the batch the engine decodes).
#
# Usage: tools/paper-experiment.sh [--batches 1,8,32,128,512] [--output_tokens 32]
#          [--seconds 10] [--words 20] [--precision f32] [--threads N] [--experts 32]
#          [--out DIR]
# Writes DIR (default build/paper-experiment): one JSON report per model, table.md (tokens/s
# per batch size, ratios to TokenMoE, peaks), throughput.svg and machine.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

batches=1,8,32,128,512
output_tokens=32
seconds=10
words=20
precision=f32
threads=$(nproc)
experts=32
out=build/paper-experiment
while (($# > 0)); do
  case "$1" in
    --batches) batches=$2 ;;
    --output_tokens) output_tokens=$2 ;;
    --seconds) seconds=$2 ;;
    --words) words=$2 ;;
    --precision) precision=$2 ;;
    --threads) threads=$2 ;;
    --experts) experts=$2 ;;
    --out) out=$2 ;;
    *)
      echo "paper-experiment: unknown argument $1 (see the header of $0)" >&2
      exit 2
      ;;
  esac
  shift 2
done

tools/setup.sh serve
tools/build.sh Release -DTASKMOE_BUILD_TESTS=OFF
bin=build/release
spm=demo/taskmoe/spm.model
task=en-de
max_batch=$(tr ',' '\n' <<<"$batches" | sort -n | tail -1)
mkdir -p "$out"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|L3 cache|Flags)' |
    sed -E 's/^(Flags:).*/\1 '"$(grep -o -w -E 'avx512f|avx512_bf16|avx512_vnni|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"'/'
  echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "experts per MoE layer: $experts (top-2), threads: $threads, precision: $precision," \
    "output tokens: $output_tokens (forced)," \
    "source: $words synthetic words, batches: $batches, measured seconds per batch: $seconds"
} >"$out/machine.txt"
cat "$out/machine.txt"

source tools/server-process.sh
trap stop_server EXIT

# name:kind of taskmoe-make-model. The TaskMoE subnetwork is what the extractor leaves of a
# task (top-2 experts, router gone); TokenMoE keeps all its experts and routes every token.
for model in dense:dense taskmoe-subnetwork:taskmoe tokenmoe:tokenmoe; do
  name=${model%%:*}
  kind=${model#*:}
  repository="$out/models/$name"
  # Rebuilt when missing or made with another number of experts.
  made_with=$(cat "$repository/.experts" 2>/dev/null || true)
  if [[ ! -f "$repository/$task/config.json" || "$made_with" != "$experts" ]]; then
    rm -rf "$repository"
    "$bin/tools/taskmoe-make-model" --kind="$kind" --shape=wmt --experts="$experts" --spm="$spm" \
      --tasks="$task" --out="$repository"
    echo "$experts" >"$repository/.experts"
  fi

  start_server "$name" "$out/$name.ports" --model_repository="$repository" \
    --precision="$precision" --threads="$threads" --debug_ignore_eos \
    --max_output_tokens="$output_tokens" --max_batch_sentences="$max_batch" \
    --max_batch_tokens=1000000 --max_texts_per_request="$max_batch" \
    --max_queue_sentences="$max_batch" --max_total_queue_sentences="$max_batch" \
    --max_queue_delay_ms=0 --log_level=warning

  echo "paper-experiment: $name on $target"
  # --warmup=1ms: the first request of each batch size is a warm-up (it builds the oneDNN
  # primitives for the new shapes) and is left out. Requests are then sent one after another
  # for $seconds s; the one running at the end finishes and counts (at the largest batches
  # a single request takes longer than that, and is the measurement).
  "$bin/loadtest/taskmoe-loadtest" --target="$target" --label="$name" --tasks="$task" \
    --loop=closed --concurrency=1 --sweep="batch:$batches" --requests=0 \
    --duration="${seconds}s" --warmup=1ms --timeout=30m --synthetic_words="$words" \
    --max_output_tokens="$output_tokens" --json="$out/$name.json" --plot="$out/$name.svg"
  stop_server
done

"$bin/loadtest/taskmoe-loadtest" \
  --compare="dense=$out/dense.json,taskmoe-subnetwork=$out/taskmoe-subnetwork.json,tokenmoe=$out/tokenmoe.json" \
  --compare_baseline=tokenmoe --markdown="$out/table.md" --plot="$out/throughput.svg" \
  --title="Generated tokens/s by batch size (WMT shape, $experts experts, $precision, $threads threads)"
echo
cat "$out/table.md"
echo "paper-experiment: wrote $out/table.md, $out/throughput.svg and $out/machine.txt"
