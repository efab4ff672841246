"""Prints a Markdown table of per-task BLEU / chrF from evaluate.py result files, side by side.

    /usr/bin/python3 training/bleu_table.py dense=RUN/dense/test.json \
        tokenmoe=RUN/tokenmoe/test.json taskmoe=RUN/taskmoe/test.json [--metric bleu|chrf|both]

Each argument is NAME=PATH of a JSON file written by `evaluate.py --json`. Rows are tasks (in the
union of the files' tasks), columns the named results; the last row is the unweighted mean over
tasks, and, with more than one column, a last column gives the difference of the last result to
the first.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Tuple


def load(spec: str) -> Tuple[str, Dict[str, dict]]:
    if "=" not in spec:
        raise SystemExit(f"bleu_table: expected NAME=PATH, got {spec!r}")
    name, path = spec.split("=", 1)
    with open(path, encoding="utf-8") as f:
        return name, json.load(f)["tasks"]


def format_table(results: List[Tuple[str, Dict[str, dict]]], metric: str) -> str:
    metrics = ["bleu", "chrf"] if metric == "both" else [metric]
    tasks = sorted({task for _, per_task in results for task in per_task})
    columns = [f"{name} {m.replace('bleu', 'BLEU').replace('chrf', 'chrF')}"
               for m in metrics for name, _ in results]
    with_delta = len(results) > 1
    if with_delta:
        columns += [f"Δ {m.replace('bleu', 'BLEU').replace('chrf', 'chrF')} "
                    f"{results[-1][0]}−{results[0][0]}" for m in metrics]
    lines = ["| task | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]

    def row(label: str, value_of) -> str:
        cells = []
        for m in metrics:
            cells += [value_of(per_task, m) for _, per_task in results]
        if with_delta:
            for m in metrics:
                first, last = value_of(results[0][1], m), value_of(results[-1][1], m)
                cells.append(None if first is None or last is None else last - first)
        text = ["–" if c is None else f"{c:+.2f}" if i >= len(cells) - len(metrics) and with_delta
                else f"{c:.2f}" for i, c in enumerate(cells)]
        return f"| {label} | " + " | ".join(text) + " |"

    for task in tasks:
        lines.append(row(task, lambda per_task, m, t=task: per_task[t][m] if t in per_task else None))

    def mean(per_task: Dict[str, dict], m: str):
        values = [per_task[t][m] for t in tasks if t in per_task]
        return sum(values) / len(values) if values else None

    lines.append(row("**mean**", mean))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="NAME=PATH of evaluate.py --json output")
    parser.add_argument("--metric", choices=["bleu", "chrf", "both"], default="bleu")
    args = parser.parse_args(argv)
    print(format_table([load(spec) for spec in args.results], args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
