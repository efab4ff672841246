"""Corpus-level BLEU (13a tokenization) and chrF, matching sacreBLEU 2.x, standard library only.

    /usr/bin/python3 training/metrics.py --hyp hyp.txt --ref ref.txt [--ref ref2.txt]

BLEU (Papineni et al. 2002) as sacreBLEU computes it: each line is tokenized like
mteval-v13a.pl; n-gram counts (n = 1..4, clipped by the largest count in any reference) and
lengths are summed over the corpus; the score is 100 * BP * exp(mean log precision), with the
brevity penalty BP = exp(1 - r/c) when the hypothesis length c is below the reference length r
(the closest reference length per line, the shorter on ties). Smoothing: none by default (an
order without matches makes the score 0); 'exp' (sacreBLEU's default, mteval's), 'floor' and
'add-k' as in sacreBLEU, and its `effective_order` for sentence-level use.

chrF (Popovic 2015) as sacreBLEU's defaults: character n-grams n = 1..6 with whitespace
removed, statistics summed over the corpus; precision and recall averaged over the orders
that occur ("effective order"), then F-beta with beta = 2. `eps_smoothing=True` gives the
chrF++.py / NLTK variant (F per order, averaged over all orders). Scores are 0..100.

References are either one sequence of strings (one reference per line) or, as in sacreBLEU, a
list of reference streams, each as long as the hypotheses.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import re
import sys
from typing import List, Sequence, Tuple, Union

References = Union[Sequence[str], Sequence[Sequence[str]]]

MAX_NGRAM_ORDER = 4
_LOG_OF_ZERO = -9999999999   # what sacreBLEU uses for log(0): exp() of the mean underflows to 0


# --------------------------------------------------------------------------------------------
# Tokenization (mteval-v13a)
# --------------------------------------------------------------------------------------------

# mteval-v13a's language-dependent rules, in order. The first character class is the same
# ranges as the Perl original: { | } ~  [ \ ] ^ _ `  space ! " # $ % &  ( ) * +  : ; < = > ? @  /
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),   # split off punctuation/symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),              # period/comma not after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),              # period/comma not before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),                   # dash after a digit
]


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenization, as sacreBLEU's '13a' tokenizer."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())


def _tokenizer(name: str):
    if name == "13a":
        return tokenize_13a
    if name == "none":
        return lambda line: line
    raise ValueError(f"unknown tokenizer {name!r} (13a or none)")


def _reference_streams(hypotheses: Sequence[str], references: References) -> List[Sequence[str]]:
    """Normalizes references to a list of streams and checks their lengths."""
    if isinstance(references, str):
        raise TypeError("references must be a sequence of lines, not one string")
    references = list(references)
    if not references or all(isinstance(r, str) for r in references):
        streams = [references]
    else:
        streams = [list(stream) for stream in references]
    for stream in streams:
        if len(stream) != len(hypotheses):
            raise ValueError(f"{len(hypotheses)} hypotheses but a reference stream of {len(stream)} lines")
    return streams


# --------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BleuScore:
    score: float                 # 0..100
    counts: List[int]            # matched n-grams per order
    totals: List[int]            # hypothesis n-grams per order
    precisions: List[float]      # per order, percent (after smoothing)
    bp: float
    sys_len: int
    ref_len: int

    def __float__(self) -> float:
        return self.score

    def format(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        ratio = self.sys_len / self.ref_len if self.ref_len else 0.0
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.bp:.3f} ratio = {ratio:.3f} "
                f"hyp_len = {self.sys_len} ref_len = {self.ref_len})")


def _ngrams(tokens: Sequence[str], max_order: int) -> collections.Counter:
    counts = collections.Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def _closest_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length closest to the hypothesis length; the shorter one on ties."""
    return min(ref_lens, key=lambda ref_len: (abs(ref_len - hyp_len), ref_len))


def bleu_statistics(hypothesis: str, references: Sequence[str], tokenize: str = "13a",
                    lowercase: bool = False, max_order: int = MAX_NGRAM_ORDER) -> List[int]:
    """[hyp_len, ref_len, correct_1..max_order, total_1..max_order] of one line."""
    tokenizer = _tokenizer(tokenize)

    def prepare(text: str) -> List[str]:
        text = text.lower() if lowercase else text
        return tokenizer(text.rstrip()).split()

    hyp_tokens = prepare(hypothesis)
    max_ref_counts = collections.Counter()
    ref_lens = []
    for reference in references:
        ref_tokens = prepare(reference)
        ref_lens.append(len(ref_tokens))
        for ngram, count in _ngrams(ref_tokens, max_order).items():
            max_ref_counts[ngram] = max(max_ref_counts[ngram], count)
    correct, total = [0] * max_order, [0] * max_order
    for ngram, count in _ngrams(hyp_tokens, max_order).items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, max_ref_counts.get(ngram, 0))
    return [len(hyp_tokens), _closest_length(len(hyp_tokens), ref_lens)] + correct + total


def bleu_from_statistics(correct: Sequence[float], total: Sequence[float], sys_len: int, ref_len: int,
                         smooth_method: str = "none", smooth_value=None,
                         effective_order: bool = False) -> BleuScore:
    """BLEU from summed statistics, smoothing as sacreBLEU's compute_bleu."""
    defaults = {"none": None, "exp": None, "floor": 0.1, "add-k": 1}
    if smooth_method not in defaults:
        raise ValueError(f"unknown smooth_method {smooth_method!r} ({', '.join(defaults)})")
    if smooth_value is None:
        smooth_value = defaults[smooth_method]
    correct, total = list(correct), list(total)
    max_order = len(correct)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * max_order
    if not any(correct):
        return BleuScore(0.0, correct, total, precisions, bp, sys_len, ref_len)

    exp_divisor = 1.0
    order = max_order
    for n in range(1, max_order + 1):
        if smooth_method == "add-k" and n > 1:
            correct[n - 1] += smooth_value
            total[n - 1] += smooth_value
        if total[n - 1] == 0:
            break   # no n-grams of this order (or higher): their precision stays 0
        if effective_order:
            order = n   # only orders the hypothesis has count
        if correct[n - 1] == 0:
            if smooth_method == "exp":
                exp_divisor *= 2
                precisions[n - 1] = 100.0 / (exp_divisor * total[n - 1])
            elif smooth_method == "floor":
                precisions[n - 1] = 100.0 * smooth_value / total[n - 1]
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    log_sum = sum(math.log(p) if p > 0 else _LOG_OF_ZERO for p in precisions[:order])
    return BleuScore(bp * math.exp(log_sum / order), correct, total, precisions, bp, sys_len, ref_len)


def corpus_bleu_details(hypotheses: Sequence[str], references: References, tokenize: str = "13a",
                        lowercase: bool = False, smooth_method: str = "none", smooth_value=None,
                        effective_order: bool = False, max_order: int = MAX_NGRAM_ORDER) -> BleuScore:
    """Corpus BLEU with its statistics; see the module docstring."""
    streams = _reference_streams(hypotheses, references)
    sums = [0] * (2 + 2 * max_order)
    for i, hypothesis in enumerate(hypotheses):
        stats = bleu_statistics(hypothesis, [stream[i] for stream in streams], tokenize, lowercase, max_order)
        sums = [a + b for a, b in zip(sums, stats)]
    return bleu_from_statistics(sums[2:2 + max_order], sums[2 + max_order:], sums[0], sums[1],
                                smooth_method, smooth_value, effective_order)


def corpus_bleu(hypotheses: Sequence[str], references: References, **options) -> float:
    """Corpus BLEU, 0..100 (13a tokenization, no smoothing unless asked)."""
    return corpus_bleu_details(hypotheses, references, **options).score


# --------------------------------------------------------------------------------------------
# chrF
# --------------------------------------------------------------------------------------------

def _char_ngrams(text: str, max_order: int, whitespace: bool) -> List[collections.Counter]:
    if not whitespace:
        text = "".join(text.split())
    return [collections.Counter(text[i:i + n] for i in range(len(text) - n + 1))
            for n in range(1, max_order + 1)]


def _chrf_match(hyp: List[collections.Counter], ref: List[collections.Counter]) -> List[int]:
    """[hyp, ref, match] counts per order, flattened."""
    stats = []
    for hyp_counts, ref_counts in zip(hyp, ref):
        matched = sum(min(count, ref_counts[ngram]) for ngram, count in hyp_counts.items() if ngram in ref_counts)
        # Like sacreBLEU: hypothesis n-grams of an order the reference lacks are not counted,
        # so a reference shorter than n characters does not penalize precision.
        stats += [sum(hyp_counts.values()) if ref_counts else 0, sum(ref_counts.values()), matched]
    return stats


def chrf_from_statistics(stats: Sequence[int], beta: float = 2.0, eps_smoothing: bool = False) -> float:
    """chrF (0..100) from [hyp, ref, match] counts per order."""
    eps = 1e-16
    factor = beta ** 2
    orders = len(stats) // 3
    f_sum, precision_sum, recall_sum, effective = 0.0, 0.0, 0.0, 0
    for i in range(orders):
        n_hyp, n_ref, n_match = stats[3 * i:3 * i + 3]
        precision = n_match / n_hyp if n_hyp > 0 else eps
        recall = n_match / n_ref if n_ref > 0 else eps
        denominator = factor * precision + recall
        f_sum += (1 + factor) * precision * recall / denominator if denominator > 0 else eps
        if n_hyp > 0 and n_ref > 0:
            precision_sum += precision
            recall_sum += recall
            effective += 1
    if eps_smoothing:
        return 100 * f_sum / orders
    if effective == 0:
        return 0.0
    precision, recall = precision_sum / effective, recall_sum / effective
    if precision + recall == 0:
        return 0.0
    return 100 * (1 + factor) * precision * recall / (factor * precision + recall)


def corpus_chrf(hypotheses: Sequence[str], references: References, char_order: int = 6,
                beta: float = 2.0, whitespace: bool = False, eps_smoothing: bool = False) -> float:
    """Corpus chrF, 0..100 (sacreBLEU defaults: n = 6, beta = 2, whitespace removed).

    With several references, each line uses the one giving it the best chrF."""
    streams = _reference_streams(hypotheses, references)
    sums = [0] * (3 * char_order)
    for i, hypothesis in enumerate(hypotheses):
        hyp_ngrams = _char_ngrams(hypothesis, char_order, whitespace)
        best, best_f = None, -1.0
        for stream in streams:
            stats = _chrf_match(hyp_ngrams, _char_ngrams(stream[i], char_order, whitespace))
            f = chrf_from_statistics(stats, beta, eps_smoothing)
            if f > best_f:
                best, best_f = stats, f
        sums = [a + b for a, b in zip(sums, best)]
    return chrf_from_statistics(sums, beta, eps_smoothing)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Corpus BLEU (13a) and chrF of a hypothesis file.")
    parser.add_argument("--hyp", required=True, help="hypotheses, one per line")
    parser.add_argument("--ref", required=True, action="append", help="references (repeat for more)")
    parser.add_argument("--tokenize", default="13a", choices=["13a", "none"])
    parser.add_argument("--smooth", default="none", choices=["none", "exp", "floor", "add-k"])
    parser.add_argument("--lowercase", action="store_true")
    args = parser.parse_args(argv)

    hypotheses = _read_lines(args.hyp)
    references = [_read_lines(path) for path in args.ref]
    try:
        bleu = corpus_bleu_details(hypotheses, references, tokenize=args.tokenize,
                                   lowercase=args.lowercase, smooth_method=args.smooth)
        chrf = corpus_chrf(hypotheses, references)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(bleu.format())
    print(f"chrF2 = {chrf:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
