#!/usr/bin/env bash
# Trains the three models of the demo comparison (dense, TokenMoE, TaskMoE) on the same corpus,
# architecture and wall-clock budget, then scores each on the test sets (greedy, trainer's own
# decoding). This is the one command behind the BLEU table of demo/MODEL_CARD.md.
#
#   training/train_demo.sh [--corpus build/corpus] [--runs build/runs] [--minutes 7]
#                          [--parallel] [--resume] [--no-evaluate] [-- extra train.py flags]
#
# --parallel trains the three at once on one GPU, each with a share of it (on an H200 the three
# together kept it busy: docs/training.md); without it they train one after another, each with
# the whole device. --resume continues runs in --runs.
# --no-evaluate skips the test-set scoring (to score elsewhere, e.g. on CPU with the engine).
# Needs the corpus and the SentencePiece model (build_corpus.py, train_spm.py).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-/usr/bin/python3}"
[[ -x "$python" ]] || python=python3
corpus=build/corpus
runs=build/runs
minutes=7
parallel=0
resume=()
evaluate=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --corpus) corpus="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --parallel) parallel=1; shift ;;
    --resume) resume=(--resume); shift ;;
    --no-evaluate) evaluate=0; shift ;;
    --) shift; break ;;
    *) echo "train_demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

# The demo architecture: Transformer with d_model 256, 4 heads, 4+4 layers, FFN width 512; the
# MoE models make layers 1 and 3 of each stack MoE with 8 experts, top-2. TaskMoE routes the
# encoder by language pair and the decoder by target language, so every stack folds into a dense
# subnetwork; TokenMoE routes every token. Sized so the TaskMoE checkpoint stays under 40 MB in
# bf16 and one task's subnetwork (FFN width 1024 in the folded layers) is close to the dense one.
common=(--corpus "$corpus" --spm "$corpus/spm.model" --d-model 256 --heads 4 --layers 4
        --d-ff 512 --experts 8 --top-k 2 --moe-layers odd --max-tokens 32000 --lr 1.5e-3
        --warmup-steps 800 --dropout 0.1 --label-smoothing 0.1 --max-minutes "$minutes"
        --log-every 200 --eval-every 1000 --save-every 1000 --bleu-per-task 200 --seed 1
        --device auto "${resume[@]}")
declare -A kind_flags=(
  [dense]="--model-kind dense"
  [tokenmoe]="--model-kind tokenmoe --encoder-routing token --decoder-routing token"
  [taskmoe]="--model-kind taskmoe --encoder-routing task --encoder-task-key pair --decoder-routing task --decoder-task-key target"
)
kinds=(dense tokenmoe taskmoe)

mkdir -p "$runs"
train_one() {
  local kind="$1"
  shift
  # shellcheck disable=SC2086  # kind_flags holds several flags
  "$python" "$here/train.py" "${common[@]}" ${kind_flags[$kind]} --out "$runs/$kind" "$@" \
    >>"$runs/$kind.log" 2>&1
}
evaluate_one() {
  "$python" "$here/evaluate.py" --model "$runs/$1" --corpus "$corpus" --split test \
    --max-sentences "${TEST_SENTENCES:-500}" --json "$runs/$1/test.json" >"$runs/$1.test.log" 2>&1
}

started=$(date +%s)
pids=()
for kind in "${kinds[@]}"; do
  if [[ $parallel == 1 ]]; then
    train_one "$kind" "$@" &
    pids+=($!)
  else
    train_one "$kind" "$@"
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "trained ${kinds[*]} in $(( $(date +%s) - started )) s" >&2
[[ $evaluate == 1 ]] || exit 0

pids=()
for kind in "${kinds[@]}"; do
  evaluate_one "$kind" &
  pids+=($!)
  [[ $parallel == 1 ]] || wait "${pids[-1]}"
done
for pid in "${pids[@]}"; do wait "$pid"; done

for kind in "${kinds[@]}"; do
  echo "== $kind"
  grep -E "^model:|stopped|dev nll" "$runs/$kind.log" | tail -3
  tail -n 2 "$runs/$kind.test.log"
done
