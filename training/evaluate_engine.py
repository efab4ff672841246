"""Scores the C++ engine (taskmoe-translate) on a corpus split and compares it with the trainer.

    /usr/bin/python3 training/evaluate_engine.py --engine build/release/tools/taskmoe-translate \
        --model demo/taskmoe --corpus build/corpus [--split test] [--max-sentences 500] \
        [--tasks en-de,...] [--repository REPO] [--compare TRAINER.json] [--json OUT.json] \
        [--engine-flag=--precision=bf16 ...]

For every task, the split's source lines go through `taskmoe-translate --model M --task T` (M is
--model, or REPO/T when --repository names a model repository of extracted subnetworks), and
the output is scored with this project's BLEU and chrF (metrics.py), exactly as evaluate.py
scores the trainer's own decoding. With --compare (an evaluate.py --json file, ideally written
with --save-hypotheses), a per-task table shows both BLEU scores, their difference, and how many
sentences are identical. The JSON output has evaluate.py's layout, so bleu_table.py reads it.
Exits 1 when --max-bleu-diff is given and some task differs by more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

import data as data_lib
import metrics


def translate(engine: str, model_dir: str, task: str, sources: List[str],
              extra_flags: List[str]) -> List[str]:
    # The trainer decodes each line whole: so does the engine here, for a like-for-like score.
    command = [engine, f"--model={model_dir}", f"--task={task}", "--split_sentences=false",
               *extra_flags]
    result = subprocess.run(command, input="\n".join(sources) + "\n", capture_output=True,
                            text=True, encoding="utf-8", check=False)
    if result.returncode != 0:
        raise SystemExit(f"evaluate_engine: {' '.join(command)} failed "
                         f"({result.returncode}): {result.stderr.strip()}")
    lines = result.stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(sources):
        raise SystemExit(f"evaluate_engine: {task}: {len(sources)} sources in, "
                         f"{len(lines)} lines out")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", required=True, help="path of the taskmoe-translate binary")
    parser.add_argument("--model", help="model directory (full model serving every task)")
    parser.add_argument("--repository", help="model repository: one extracted subnetwork per task")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--split", default="test", choices=data_lib.EVAL_SPLITS)
    parser.add_argument("--max-sentences", type=int, default=500, help="per task")
    parser.add_argument("--tasks", default=None, help="comma-separated task ids (default: all)")
    parser.add_argument("--compare", default=None, help="evaluate.py --json result to compare with")
    parser.add_argument("--max-bleu-diff", type=float, default=None,
                        help="exit 1 when a task's BLEU differs from --compare by more")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--engine-flag", action="append", default=[],
                        help="extra flag for taskmoe-translate (repeatable)")
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.repository):
        parser.error("give exactly one of --model and --repository")

    info = data_lib.discover_corpus(args.corpus)
    tasks = args.tasks.split(",") if args.tasks else info.task_ids
    reference: Optional[Dict[str, dict]] = None
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            reference = json.load(f)["tasks"]

    results: Dict[str, dict] = {}
    started = time.time()
    print(f"{'task':<8} {'n':>5} {'BLEU':>7} {'chrF':>7}" +
          (f" {'trainer':>8} {'diff':>6} {'same':>6}" if reference else "") + f" {'sec':>6}")
    worst = 0.0
    for task in tasks:
        src_path, tgt_path = data_lib.split_files(info, args.split, task)
        sources = data_lib.read_lines(src_path)[:args.max_sentences]
        targets = data_lib.read_lines(tgt_path)[:args.max_sentences]
        model_dir = args.model or os.path.join(args.repository, task)
        task_started = time.time()
        hypotheses = translate(args.engine, model_dir, task, sources, args.engine_flag)
        seconds = time.time() - task_started
        result = {"sentences": len(sources),
                  "bleu": float(metrics.corpus_bleu(hypotheses, targets)),
                  "chrf": float(metrics.corpus_chrf(hypotheses, targets)),
                  "seconds": seconds, "hypotheses": hypotheses}
        results[task] = result
        line = f"{task:<8} {len(sources):>5} {result['bleu']:>7.2f} {result['chrf']:>7.2f}"
        if reference is not None and task in reference:
            diff = result["bleu"] - reference[task]["bleu"]
            worst = max(worst, abs(diff))
            same = "–"
            if "hypotheses" in reference[task]:
                same = str(sum(a == b for a, b in zip(hypotheses, reference[task]["hypotheses"])))
            line += f" {reference[task]['bleu']:>8.2f} {diff:>+6.2f} {same:>6}"
        print(line + f" {seconds:>6.1f}", flush=True)
    mean = sum(r["bleu"] for r in results.values()) / max(1, len(results))
    print(f"mean BLEU {mean:.2f} over {len(results)} tasks in {time.time() - started:.0f} s"
          + (f"; largest |BLEU difference| to the trainer {worst:.2f}" if reference else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model or args.repository, "engine": args.engine,
                       "split": args.split, "beam": 1, "tasks": results}, f, indent=2,
                      ensure_ascii=False)
    if args.max_bleu_diff is not None and reference is not None and worst > args.max_bleu_diff:
        print(f"evaluate_engine: BLEU differs by {worst:.2f} > {args.max_bleu_diff}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
