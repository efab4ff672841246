"""evaluate_engine.py (scoring an external translate binary) and bleu_table.py (result tables).

The engine is replaced by small shell scripts with the same command line as taskmoe-translate:
one that answers with the reference translations (BLEU 100), one that answers with the source
(low BLEU), one that fails, and one that drops a line.
"""

import io
import json
import os
import stat
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

TRAINING_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING_DIR not in sys.path:
    sys.path.insert(0, TRAINING_DIR)

import bleu_table  # noqa: E402
import data as data_lib  # noqa: E402
import evaluate_engine  # noqa: E402
import fixtures  # noqa: E402


def write_script(directory: str, name: str, body: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


class EvaluateEngineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.corpus = fixtures.synthetic_corpus()
        cls.info = data_lib.discover_corpus(cls.corpus)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.task = cls.info.task_ids[0]
        # A "perfect engine": prints the test references of the task named by --task=.
        cls.perfect = write_script(cls.tmp.name, "perfect", (
            'for a in "$@"; do case "$a" in --task=*) t="${a#--task=}";; esac; done\n'
            f'cat > /dev/null; tgt="${{t#*-}}"; cat "{cls.corpus}/test.$t.$tgt"'))
        cls.echo = write_script(cls.tmp.name, "echo", "cat")
        cls.failing = write_script(cls.tmp.name, "failing", "echo 'no such task' >&2; exit 3")
        cls.short = write_script(cls.tmp.name, "short", "head -n 1")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_main(self, *args):
        out = io.StringIO()
        with redirect_stdout(out):
            code = evaluate_engine.main(list(args))
        return code, out.getvalue()

    def test_perfect_engine_scores_100_and_writes_json(self):
        result_path = os.path.join(self.tmp.name, "perfect.json")
        code, output = self.run_main("--engine", self.perfect, "--model", "unused",
                                     "--corpus", self.corpus, "--tasks", self.task,
                                     "--json", result_path)
        self.assertEqual(code, 0)
        self.assertIn(self.task, output)
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)["tasks"][self.task]
        self.assertAlmostEqual(result["bleu"], 100.0, places=6)
        self.assertAlmostEqual(result["chrf"], 100.0, places=6)

    def test_compare_reports_difference_and_enforces_limit(self):
        perfect_path = os.path.join(self.tmp.name, "reference.json")
        self.run_main("--engine", self.perfect, "--model", "m", "--corpus", self.corpus,
                      "--tasks", self.task, "--json", perfect_path)
        code, output = self.run_main("--engine", self.echo, "--model", "m",
                                     "--corpus", self.corpus, "--tasks", self.task,
                                     "--compare", perfect_path, "--max-bleu-diff", "0.1")
        self.assertEqual(code, 1)  # echoing the source is far from the references
        self.assertIn("largest |BLEU difference|", output)
        code, _ = self.run_main("--engine", self.perfect, "--model", "m", "--corpus", self.corpus,
                                "--tasks", self.task, "--compare", perfect_path,
                                "--max-bleu-diff", "0.1")
        self.assertEqual(code, 0)

    def test_repository_uses_one_directory_per_task(self):
        args_log = os.path.join(self.tmp.name, "args.log")
        logging_engine = write_script(self.tmp.name, "logging", f'echo "$@" >> "{args_log}"; cat')
        self.run_main("--engine", logging_engine, "--repository", "/repo", "--corpus", self.corpus,
                      "--tasks", self.task, "--engine-flag=--threads=1")
        with open(args_log, encoding="utf-8") as f:
            # Lines are decoded whole, as the trainer decodes them (no sentence splitting).
            self.assertIn(f"--model=/repo/{self.task} --task={self.task} "
                          "--split_sentences=false --threads=1", f.read())

    def test_engine_failures_are_clear_errors(self):
        with self.assertRaisesRegex(SystemExit, "failed .3.: no such task"):
            self.run_main("--engine", self.failing, "--model", "m", "--corpus", self.corpus,
                          "--tasks", self.task)
        with self.assertRaisesRegex(SystemExit, "sources in, 1 lines out"):
            self.run_main("--engine", self.short, "--model", "m", "--corpus", self.corpus,
                          "--tasks", self.task)

    def test_model_or_repository_required(self):
        with redirect_stdout(io.StringIO()), self.assertRaises(SystemExit):
            with open(os.devnull, "w") as devnull:
                stderr, sys.stderr = sys.stderr, devnull
                try:
                    evaluate_engine.main(["--engine", "x", "--corpus", self.corpus])
                finally:
                    sys.stderr = stderr


class BleuTableTest(unittest.TestCase):
    def test_table_rows_means_and_delta(self):
        a = ("dense", {"en-de": {"bleu": 30.0, "chrf": 50.0}, "de-en": {"bleu": 40.0, "chrf": 60.0}})
        b = ("taskmoe", {"en-de": {"bleu": 33.0, "chrf": 52.0}, "de-en": {"bleu": 39.0, "chrf": 61.0}})
        lines = bleu_table.format_table([a, b], "bleu").splitlines()
        self.assertEqual(lines[0], "| task | dense BLEU | taskmoe BLEU | Δ BLEU taskmoe−dense |")
        self.assertEqual(lines[2], "| de-en | 40.00 | 39.00 | -1.00 |")
        self.assertEqual(lines[3], "| en-de | 30.00 | 33.00 | +3.00 |")
        self.assertEqual(lines[4], "| **mean** | 35.00 | 36.00 | +1.00 |")

    def test_missing_task_is_a_dash(self):
        a = ("one", {"en-de": {"bleu": 30.0, "chrf": 50.0}})
        b = ("two", {"en-fr": {"bleu": 20.0, "chrf": 40.0}})
        table = bleu_table.format_table([a, b], "both")
        self.assertIn("| en-de | 30.00 | – | 50.00 | – | – | – |", table)

    def test_bad_argument(self):
        with self.assertRaisesRegex(SystemExit, "NAME=PATH"):
            bleu_table.load("no-equals-sign")


if __name__ == "__main__":
    unittest.main()
