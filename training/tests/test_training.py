"""Training end to end on the tiny synthetic corpus: loss goes down, resume is exact, the
export loads back, and evaluation runs."""

import contextlib
import importlib.util
import io
import json
import os
import tempfile
import unittest

import torch

import fixtures
import checkpoint
import export
import train

HAS_METRICS = importlib.util.find_spec("metrics") is not None


def tiny_args(corpus, spm, out, *extra):
    return train.parse_args([
        "--corpus", corpus, "--spm", spm, "--out", out, "--cache-dir", os.path.join(out, "cache"),
        "--d-model", "32", "--heads", "2", "--layers", "2", "--d-ff", "64", "--experts", "4",
        "--max-tokens", "400", "--max-len", "40", "--max-positions", "64",
        "--lr", "3e-3", "--warmup-steps", "5", "--device", "cpu", "--threads", "1",
        "--eval-every", "0", "--save-every", "0", "--bleu-per-task", "0", "--dev-per-task", "8",
        "--no-export", *extra])


def quiet_train(args):
    """train.train with its progress lines swallowed (they are in train.log.jsonl anyway)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return train.train(args)


def read_log(out):
    with open(os.path.join(out, "train.log.jsonl")) as f:
        return [json.loads(line) for line in f]


class Training(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.corpus = fixtures.synthetic_corpus()
        cls.spm = fixtures.tiny_spm(cls.corpus)

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def out(self, name):
        return os.path.join(self.tmp.name, name)

    def test_thirty_steps_lower_the_loss(self):
        for kind, extra in (("taskmoe", ["--encoder-routing", "token"]), ("tokenmoe", []), ("dense", [])):
            with self.subTest(kind=kind):
                out = self.out(kind)
                summary = quiet_train(tiny_args(self.corpus, self.spm, out, "--model-kind", kind,
                                                "--max-steps", "30", "--log-every", "5", *extra))
                losses = [r["ce"] for r in read_log(out) if "ce" in r]
                self.assertEqual(summary["steps"], 30)
                self.assertLess(losses[-1], losses[0] - 0.5, losses)

    def test_resume_continues_identically(self):
        common = ["--model-kind", "taskmoe", "--encoder-routing", "token", "--log-every", "1",
                  "--dropout", "0.2", "--router-noise", "0.1"]
        straight = self.out("straight")
        quiet_train(tiny_args(self.corpus, self.spm, straight, "--max-steps", "6", *common))
        resumed = self.out("resumed")
        quiet_train(tiny_args(self.corpus, self.spm, resumed, "--max-steps", "3", *common))
        quiet_train(tiny_args(self.corpus, self.spm, resumed, "--max-steps", "6", "--resume", *common))

        def losses(out):
            return {r["step"]: r["loss"] for r in read_log(out) if "loss" in r}
        a, b = losses(straight), losses(resumed)
        for step in (4, 5, 6):
            self.assertEqual(a[step], b[step], f"step {step}")
        state_a = checkpoint.torch_load(os.path.join(straight, "checkpoint.pt"))["model"]
        state_b = checkpoint.torch_load(os.path.join(resumed, "checkpoint.pt"))["model"]
        for name in state_a:
            torch.testing.assert_close(state_a[name], state_b[name], rtol=0, atol=0)

    def test_max_minutes_stops_and_exports(self):
        out = self.out("budget")
        args = tiny_args(self.corpus, self.spm, out, "--model-kind", "taskmoe", "--max-steps", "100000",
                         "--max-minutes", "0.05", "--export-dtype", "bf16")
        args.no_export = False
        if HAS_METRICS:
            args.bleu_per_task = 4
        summary = quiet_train(args)
        self.assertEqual(summary["stop_reason"], "max-minutes")
        model, dtypes = export.load_model_dir(os.path.join(out, "export"))
        self.assertEqual(set(dtypes.values()), {"BF16"})
        self.assertTrue(os.path.exists(os.path.join(out, "export", "spm.model")))
        self.assertEqual(model.config.training["kind"], "taskmoe")
        if HAS_METRICS:
            self.assertEqual(len(summary["dev_bleu"]), 4)

    @unittest.skipUnless(HAS_METRICS, "metrics.py not available")
    def test_evaluate_exported_model(self):
        import evaluate
        out = self.out("eval")
        args = tiny_args(self.corpus, self.spm, out, "--model-kind", "dense", "--max-steps", "3")
        args.no_export = False
        quiet_train(args)
        report = os.path.join(out, "test.json")
        with contextlib.redirect_stdout(io.StringIO()):
            evaluate.main(["--model", os.path.join(out, "export"), "--corpus", self.corpus, "--split", "test",
                           "--max-sentences", "4", "--device", "cpu", "--json", report, "--beam", "2"])
        with open(report) as f:
            result = json.load(f)
        self.assertEqual(sorted(result["tasks"]), ["de-en", "en-de", "en-fr", "fr-en"])


if __name__ == "__main__":
    unittest.main()
