"""BLEU and chrF against sacreBLEU's published test values, plus hand-checked edge cases.

The expected numbers are those of sacreBLEU's own test suite (github.com/mjpost/sacrebleu,
test/test_bleu.py, test_sentence_bleu.py, test_chrf.py); the settings each one was computed
with are spelled out next to it.
"""

import io
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

TRAINING_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING_DIR not in sys.path:
    sys.path.insert(0, TRAINING_DIR)

import metrics  # noqa: E402

TOLERANCE = 0.01

# sacreBLEU README example: three hypotheses, two reference streams.
HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]

# sacreBLEU's "raw" BLEU: no tokenization, floor smoothing, effective order.
RAW = dict(tokenize="none", smooth_method="floor", smooth_value=0.01, effective_order=True)

# sacreBLEU issue #98 example, scored at sentence level (effective order).
RO_REF = "producţia de zahăr brut se exprimă în zahăr alb;"
RO_HYP = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;"


class Tokenize13a(unittest.TestCase):
    def test_punctuation_is_split_off(self):
        self.assertEqual(metrics.tokenize_13a("Hello, world!"), "Hello , world !")
        self.assertEqual(metrics.tokenize_13a("(a) [b] {c} x/y a:b"), "( a ) [ b ] { c } x / y a : b")

    def test_numbers_keep_their_separators(self):
        # '.' and ',' stay inside numbers, a dash after a digit is split, other dashes stay.
        self.assertEqual(metrics.tokenize_13a("It costs $3.50, i.e. 3,000 units in 1990-2000 (well-known)."),
                         "It costs $ 3.50 , i . e . 3,000 units in 1990 - 2000 ( well-known ) .")

    def test_entities_and_whitespace(self):
        self.assertEqual(metrics.tokenize_13a("&quot;a&quot; &amp; b&lt;c&gt;  \t d"), '" a " & b < c > d')
        self.assertEqual(metrics.tokenize_13a("hyphen-\nated line\nbreak"), "hyphenated line break")
        self.assertEqual(metrics.tokenize_13a("   "), "")


class Bleu(unittest.TestCase):
    def test_sacrebleu_corpus_cases(self):
        self.assertAlmostEqual(metrics.corpus_bleu(HYPS, REFS), 48.530827, delta=TOLERANCE)
        self.assertAlmostEqual(metrics.corpus_bleu(HYPS, REFS, smooth_method="exp"), 48.530827, delta=TOLERANCE)
        self.assertAlmostEqual(metrics.corpus_bleu(HYPS, REFS, tokenize="none"), 49.1919566, delta=TOLERANCE)
        self.assertEqual(metrics.corpus_bleu(["", "", ""], REFS), 0.0)   # empty lines are kept, score 0

    def test_sacrebleu_raw_cases(self):
        self.assertAlmostEqual(metrics.corpus_bleu(["this is a fest"], ["this is a test"], **RAW), 22.3606797749979,
                               delta=TOLERANCE)
        self.assertAlmostEqual(metrics.corpus_bleu(["this is a test"], ["this is a test"], **RAW), 100.0, delta=TOLERANCE)
        self.assertEqual(metrics.corpus_bleu(["this is a test", "another test"], ["ref1", "ref2"], **RAW), 0.0)

    def test_sacrebleu_statistics_and_floor(self):
        details = metrics.corpus_bleu_details(["am I am a character sequence"], ["I am a symbol string sequence a a"],
                                              tokenize="none", smooth_method="floor", effective_order=True)
        self.assertEqual(details.counts, [4, 2, 1, 0])
        self.assertEqual(details.totals, [6, 5, 4, 3])
        self.assertAlmostEqual(details.score, 15.55722182, delta=TOLERANCE)   # floor 0.1 (default)
        no_floor = dict(tokenize="none", smooth_method="floor", smooth_value=0.0, effective_order=True)
        self.assertEqual(metrics.corpus_bleu(["am I am a character sequence"], ["I am a symbol string sequence a a"],
                                             **no_floor), 0.0)

    def test_sacrebleu_scoring_from_statistics(self):
        score = metrics.bleu_from_statistics([9, 7, 5, 3], [10, 8, 6, 4], sys_len=11, ref_len=11).score
        self.assertAlmostEqual(score, 83.75922397, delta=TOLERANCE)

    def test_sacrebleu_effective_order(self):
        for hyp, expected in (("test", 36.78794411714425), ("a test", 100.0), ("a little test", 3.218297948685433)):
            with self.subTest(hyp=hyp):
                self.assertAlmostEqual(metrics.corpus_bleu([hyp], ["a test"], **RAW), expected, delta=TOLERANCE)

    def test_sacrebleu_sentence_smoothing(self):
        cases = [("exp", None, "13a", 8.493), ("none", None, "13a", 0.0), ("floor", None, "13a", 4.51688),
                 ("floor", 0.5, "13a", 10.10), ("add-k", None, "13a", 14.882), ("add-k", 2, "13a", 21.389),
                 ("exp", None, "none", 7.347)]
        for method, value, tokenize, expected in cases:
            with self.subTest(method=method, value=value, tokenize=tokenize):
                score = metrics.corpus_bleu([RO_HYP], [RO_REF], smooth_method=method, smooth_value=value,
                                            tokenize=tokenize, effective_order=True)
                self.assertAlmostEqual(score, expected, delta=TOLERANCE)

    def test_edge_cases(self):
        sentence = "The quick brown fox jumps over the lazy dog ."
        self.assertAlmostEqual(metrics.corpus_bleu([sentence], [sentence]), 100.0, places=9)
        self.assertEqual(metrics.corpus_bleu([""], [sentence]), 0.0)
        self.assertEqual(metrics.corpus_bleu([], []), 0.0)
        # Tokenization makes "dog." and "dog ." the same; without it they differ.
        self.assertAlmostEqual(metrics.corpus_bleu(["a b c d dog."], ["a b c d dog ."]), 100.0, places=9)
        self.assertLess(metrics.corpus_bleu(["a b c d dog."], ["a b c d dog ."], tokenize="none"), 100.0)
        # No smoothing: a corpus without any matching 4-gram scores 0.
        self.assertEqual(metrics.corpus_bleu(["a b c"], ["a b c"]), 0.0)

    def test_brevity_penalty(self):
        details = metrics.corpus_bleu_details(["a b c d"], ["a b c d e f g h"])
        self.assertAlmostEqual(details.bp, 0.36787944117144233, places=12)   # exp(1 - 8/4)
        self.assertAlmostEqual(details.score, 100 * details.bp, places=9)

    def test_reference_forms_and_lengths(self):
        single = metrics.corpus_bleu(HYPS, REFS[0])
        self.assertEqual(single, metrics.corpus_bleu(HYPS, [REFS[0]]))
        with self.assertRaises(ValueError):
            metrics.corpus_bleu(HYPS, REFS[0][:2])
        self.assertIsInstance(metrics.corpus_bleu(HYPS, REFS[0]), float)


class Chrf(unittest.TestCase):
    def test_sacrebleu_eps_smoothing_beta3(self):
        cases = [
            (["abcdefg"], ["hijklmnop"], 0.0), (["a"], ["b"], 0.0), ([""], ["b"], 0.0), ([""], ["reference"], 0.0),
            (["aa"], ["ab"], 8.3333), (["a", "b"], ["a", "c"], 8.3333), (["a"], ["a"], 16.6667),
            (["a b c"], ["a b c"], 50.0), (["a b c"], ["abc"], 50.0),
            ([" risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."],
             ["risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."],
             63.361730),
            ([" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "],
             ["Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."], 64.1302698),
            (["Niemand hat die Absicht, eine Mauer zu errichten"], ["Niemand hat die Absicht, eine Mauer zu errichten"], 100.0),
        ]
        for hyps, refs, expected in cases:
            with self.subTest(hyps=hyps):
                self.assertAlmostEqual(metrics.corpus_chrf(hyps, refs, beta=3, eps_smoothing=True), expected,
                                       delta=TOLERANCE)

    def test_sacrebleu_effective_order_beta3(self):
        cases = [(["a"], ["a"], 100.0), ([""], ["reference"], 0.0), (["a b c"], ["a b c"], 100.0),
                 (["a b c"], ["abc"], 100.0), ([""], ["c"], 0.0), (["a", "b"], ["a", "c"], 50.0), (["aa"], ["ab"], 25.0)]
        for hyps, refs, expected in cases:
            with self.subTest(hyps=hyps):
                self.assertAlmostEqual(metrics.corpus_chrf(hyps, refs, beta=3), expected, delta=TOLERANCE)

    def test_sacrebleu_keep_whitespace(self):
        cases = [(["Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich."],
                  ["Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."], 67.3481606),
                 (["risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."],
                  ["risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."],
                  65.2414427)]
        for hyps, refs, expected in cases:
            self.assertAlmostEqual(metrics.corpus_chrf(hyps, refs, beta=3, whitespace=True), expected, delta=TOLERANCE)

    def test_sacrebleu_sentence_level_beta2(self):
        cases = [("Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.",
                  "Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře.", 39.14078509),
                 ("Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři.",
                  "A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři.", 31.22557079),
                 ("Lapali po dechu, jejich životy skončily dřív, než skutečně začaly.",
                  "Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli.", 57.15704367)]
        for hyp, ref, expected in cases:
            self.assertAlmostEqual(metrics.corpus_chrf([hyp], [ref], eps_smoothing=True), expected, delta=TOLERANCE)

    def test_defaults_edge_cases(self):
        self.assertAlmostEqual(metrics.corpus_chrf(["Ein Test."], ["Ein Test."]), 100.0, places=9)
        self.assertEqual(metrics.corpus_chrf([""], ["Ein Test."]), 0.0)
        # Whitespace is ignored by default.
        self.assertAlmostEqual(metrics.corpus_chrf(["a b  c"], ["abc"]), 100.0, places=9)

    def test_multiple_references_take_the_best(self):
        best = metrics.corpus_chrf(["the cat sat"], [["a dog ran"], ["the cat sat"]])
        self.assertAlmostEqual(best, 100.0, places=9)


class Cli(unittest.TestCase):
    def test_prints_bleu_and_chrf(self):
        with tempfile.TemporaryDirectory() as directory:
            paths = []
            for name, lines in (("hyp", HYPS), ("ref1", REFS[0]), ("ref2", REFS[1])):
                paths.append(os.path.join(directory, name))
                with open(paths[-1], "w", encoding="utf-8") as f:
                    f.writelines(line + "\n" for line in lines)
            out = io.StringIO()
            with redirect_stdout(out):
                code = metrics.main(["--hyp", paths[0], "--ref", paths[1], "--ref", paths[2]])
        self.assertEqual(code, 0)
        self.assertIn("BLEU = 48.53", out.getvalue())
        self.assertIn("chrF2 = ", out.getvalue())


if __name__ == "__main__":
    unittest.main()
