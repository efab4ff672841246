"""Trains the shared SentencePiece model of the corpus (one vocabulary for all languages).

    /usr/bin/python3 training/train_spm.py [--corpus build/corpus] [--out build/corpus]
        [--vocab-size 16000] [--sentences-per-language 40000] [--seed 1] [--byte-fallback]

Input: the train files of a corpus directory written by build_corpus.py
(`train.{src}-{tgt}.{lang}`). Every language's distinct training sentences are pooled (English
appears in every task, so it is counted once) and at most --sentences-per-language of each are
sampled (seeded), so that English, or a large language, does not dominate the vocabulary.

Output: OUT/spm.model and OUT/spm.vocab, a unigram model with the ids docs/model-format.md
fixes: pad=0, unk=1, bos=2, eos=3, then the user-defined target tags `<2xx>` of every language
(sorted, so `<2de>` = 4, `<2en>` = 5, ...), character coverage 0.9995 and the default
nmt_nfkc normalization. With --byte-fallback the model also holds the 256 byte pieces
<0x00>..<0xFF> and encodes a character it lacks as its UTF-8 bytes instead of the unknown
piece, so no character of any text maps to " ⁇ " (the C++ engine reads such models:
docs/model-format.md). Trains with python3-sentencepiece when it is installed, else with
Debian's `spm_train` binary (same options).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

_TRAIN_FILE = re.compile(r"^train\.([A-Za-z_]+)-([A-Za-z_]+)\.([A-Za-z_]+)$")
SPECIAL_IDS = {"pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}


def language_tag(lang: str) -> str:
    return f"<2{lang}>"   # the same spelling as data.language_tag


def training_sentences(corpus: str) -> Dict[str, List[str]]:
    """Language -> its distinct training sentences (sorted, for a deterministic sample)."""
    sentences: Dict[str, set] = {}
    for name in sorted(os.listdir(corpus)):
        match = _TRAIN_FILE.match(name)
        if not match or match.group(3) not in (match.group(1), match.group(2)):
            continue
        with open(os.path.join(corpus, name), encoding="utf-8") as f:
            sentences.setdefault(match.group(3), set()).update(line.rstrip("\n") for line in f)
    if not sentences:
        raise SystemExit(f"{corpus}: no train.SRC-TGT.LANG files (run build_corpus.py first)")
    return {lang: sorted(s for s in lines if s) for lang, lines in sorted(sentences.items())}


def balanced_sample(sentences: Dict[str, List[str]], per_language: int, seed: int) -> List[str]:
    """At most per_language sentences of each language, shuffled together."""
    rng = random.Random(seed)
    sample = []
    for lang, lines in sentences.items():
        sample.extend(lines if len(lines) <= per_language else rng.sample(lines, per_language))
    rng.shuffle(sample)
    return sample


def trainer_options(input_path: str, model_prefix: str, vocab_size: int, languages: List[str],
                    character_coverage: float, threads: int,
                    byte_fallback: bool = False) -> Dict[str, object]:
    return {
        "byte_fallback": byte_fallback,
        "input": input_path, "model_prefix": model_prefix, "vocab_size": vocab_size,
        "model_type": "unigram", "character_coverage": character_coverage,
        "user_defined_symbols": ",".join(language_tag(lang) for lang in languages),
        "input_sentence_size": 0,            # the input is already a balanced sample: use it all
        "shuffle_input_sentence": True, "num_threads": threads,
        **SPECIAL_IDS,
    }


def train(options: Dict[str, object]) -> str:
    """Trains with the Python module if importable, else spm_train; returns which one."""
    try:
        import sentencepiece as spm
    except ImportError:
        spm = None
    if spm is not None:
        spm.SentencePieceTrainer.train(**options, minloglevel=1)
        return f"python3-sentencepiece {getattr(spm, '__version__', '?')}"
    binary = shutil.which("spm_train")
    if binary is None:
        raise SystemExit("neither python3-sentencepiece nor spm_train is installed")
    args = [binary] + [f"--{key}={str(value).lower() if isinstance(value, bool) else value}"
                       for key, value in options.items()]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return binary


def check_model(model_path: str, languages: List[str], samples: Dict[str, List[str]]) -> None:
    """Verifies the special ids and tags, prints them and pieces per sentence per language."""
    try:
        import sentencepiece as spm
    except ImportError:
        print("(python3-sentencepiece missing: model not checked)")
        return
    processor = spm.SentencePieceProcessor(model_file=model_path)
    found = {"pad_id": processor.pad_id(), "unk_id": processor.unk_id(),
             "bos_id": processor.bos_id(), "eos_id": processor.eos_id()}
    if found != SPECIAL_IDS:
        raise SystemExit(f"{model_path}: special ids {found}, expected {SPECIAL_IDS}")
    tags = {}
    for lang in languages:
        tag = language_tag(lang)
        tag_id = processor.piece_to_id(tag)
        # data.py looks tags up by piece (never by encoding text); a user-defined piece is
        # also never split when it appears in text.
        if tag_id == processor.unk_id() or tag not in processor.encode(f"x {tag} x", out_type=str):
            raise SystemExit(f"{model_path}: {tag} is not a piece of its own")
        tags[tag] = tag_id
    print(f"vocab {processor.get_piece_size()}  specials {found}")
    print("tags  " + "  ".join(f"{tag}={tag_id}" for tag, tag_id in tags.items()))
    print(f"{'lang':<5} {'pieces/sent':>11} {'chars/piece':>11} {'unk/1k':>7} {'bytes/1k':>8}")
    for lang, lines in samples.items():
        lines = lines[:2000]
        ids = processor.encode(lines)
        pieces = sum(map(len, ids)) or 1
        unknown = sum(seq.count(processor.unk_id()) for seq in ids)
        byte_pieces = sum(processor.is_byte(i) for seq in ids for i in seq)
        chars = sum(len(line) for line in lines)
        print(f"{lang:<5} {pieces / max(len(lines), 1):>11.1f} {chars / pieces:>11.2f} "
              f"{1000 * unknown / pieces:>7.2f} {1000 * byte_pieces / pieces:>8.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="build/corpus")
    parser.add_argument("--out", default=None, help="directory of spm.model (default: --corpus)")
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--sentences-per-language", type=int, default=40000)
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--byte-fallback", action="store_true",
                        help="characters the vocabulary lacks encode as byte pieces, never unk")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    started = time.time()
    out = args.out or args.corpus
    os.makedirs(out, exist_ok=True)
    sentences = training_sentences(args.corpus)
    languages = sorted(sentences)
    sample = balanced_sample(sentences, args.sentences_per_language, args.seed)
    print("sentences per language (distinct / sampled): " + ", ".join(
        f"{lang} {len(lines)}/{min(len(lines), args.sentences_per_language)}" for lang, lines in sentences.items()))

    with tempfile.TemporaryDirectory(prefix="spm-") as tmp:
        input_path = os.path.join(tmp, "input.txt")
        with open(input_path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in sample)
        prefix = os.path.join(tmp, "spm")
        trainer = train(trainer_options(input_path, prefix, args.vocab_size, languages,
                                        args.character_coverage, args.threads,
                                        args.byte_fallback))
        for suffix in (".model", ".vocab"):
            # Copy, then rename: a reader never sees a half-written model.
            shutil.copyfile(prefix + suffix, os.path.join(out, f"spm{suffix}.tmp"))
            os.replace(os.path.join(out, f"spm{suffix}.tmp"), os.path.join(out, f"spm{suffix}"))
    model_path = os.path.join(out, "spm.model")
    print(f"trained {model_path} with {trainer} on {len(sample)} sentences in {time.time() - started:.0f} s")
    check_model(model_path, languages, {lang: random.Random(args.seed).sample(lines, min(len(lines), 2000))
                                        for lang, lines in sentences.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
