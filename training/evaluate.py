"""Per-task BLEU and chrF of a checkpoint or an exported model directory.

    /usr/bin/python3 training/evaluate.py --model build/runs/taskmoe/export \
        --corpus build/corpus --split test --max-sentences 500 --json build/runs/taskmoe/test.json

`--model` may be an exported (or extracted) model directory, a training run directory or a
checkpoint file. Tasks are matched to the model by id, so an extracted single-task subnetwork is
evaluated on its own task only. Scores are corpus BLEU (13a tokenization) and chrF from
metrics.py; a table goes to stdout and the numbers (and, with --save-hypotheses, the
translations) to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

import checkpoint
import data as data_lib
import metrics
import model as model_lib
import translate


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    return {"bleu": float(metrics.corpus_bleu(list(hypotheses), list(references))),
            "chrf": float(metrics.corpus_chrf(list(hypotheses), list(references)))}


def evaluate_data(model: model_lib.Transformer, tokenizer: data_lib.Tokenizer,
                  data: data_lib.ParallelData, info: data_lib.CorpusInfo, beam_size: int = 1,
                  length_penalty: float = 1.0, max_tokens: int = 8192, amp: bool = False,
                  keep_hypotheses: bool = False) -> Dict[str, dict]:
    """Translates every example of `data` (which must keep its text) and scores it per task."""
    was_training = model.training
    model.eval()
    device_type = next(model.parameters()).device.type
    known = {t.id: t for t in model.config.tasks}
    results: Dict[str, dict] = {}
    for corpus_index, task_id in enumerate(info.task_ids):
        indices = data.task_indices(corpus_index)
        if task_id not in known or len(indices) == 0:
            continue
        started = time.time()
        sources = [data.src.get(i) for i in indices]
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp):
            pieces = translate.translate_ids(model, known[task_id], sources, max_tokens=max_tokens,
                                             beam_size=beam_size, length_penalty=length_penalty)
        hypotheses = tokenizer.decode(pieces)
        references = [data.references[i] for i in indices]
        result = {"sentences": len(indices), **score(hypotheses, references),
                  "seconds": time.time() - started,
                  "output_tokens": sum(len(p) + 1 for p in pieces)}
        if keep_hypotheses:
            result["hypotheses"] = hypotheses
        results[task_id] = result
    model.train(was_training)
    return results


def averages(results: Dict[str, dict]) -> Dict[str, float]:
    if not results:
        return {"bleu": float("nan"), "chrf": float("nan")}
    return {name: sum(r[name] for r in results.values()) / len(results) for name in ("bleu", "chrf")}


def print_table(results: Dict[str, dict], title: str = "") -> None:
    if title:
        print(title)
    print(f"{'task':<10} {'n':>6} {'BLEU':>7} {'chrF':>7} {'sec':>7}")
    for task_id, r in results.items():
        print(f"{task_id:<10} {r['sentences']:>6} {r['bleu']:>7.2f} {r['chrf']:>7.2f} {r['seconds']:>7.1f}")
    avg = averages(results)
    print(f"{'average':<10} {sum(r['sentences'] for r in results.values()):>6} "
          f"{avg['bleu']:>7.2f} {avg['chrf']:>7.2f}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model dir, run dir or checkpoint file")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--spm", default=None, help="default: the model's spm.model")
    parser.add_argument("--split", default="test", choices=data_lib.EVAL_SPLITS)
    parser.add_argument("--max-sentences", type=int, default=500, help="per task")
    parser.add_argument("--tasks", default=None, help="comma-separated task ids (default: all)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=8192, help="source tokens per decoding batch")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--save-hypotheses", action="store_true")
    args = parser.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, spm_path = checkpoint.load_model(args.model, device)
    if not (args.spm or spm_path):
        raise SystemExit("no spm.model known for this model; pass --spm")
    tokenizer = data_lib.Tokenizer(args.spm or spm_path)
    info = data_lib.discover_corpus(args.corpus)
    wanted = args.tasks.split(",") if args.tasks else [t.id for t in model.config.tasks]
    data = data_lib.load_split(info, args.split, tokenizer, max_per_task=args.max_sentences,
                               keep_text=True, tasks=wanted)
    started = time.time()
    results = evaluate_data(model, tokenizer, data, info, args.beam, args.length_penalty, args.max_tokens,
                            amp=args.amp and device == "cuda", keep_hypotheses=args.save_hypotheses)
    print_table(results, f"{args.model}: {args.split}, {'greedy' if args.beam <= 1 else f'beam {args.beam}'}")
    print(f"decoded in {time.time() - started:.1f}s on {device}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "split": args.split, "beam": args.beam,
                       "length_penalty": args.length_penalty, "tasks": results,
                       "average": averages(results)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
