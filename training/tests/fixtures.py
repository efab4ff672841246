"""Shared test fixtures: import path, tiny configs, a synthetic corpus and a tiny spm model.

Everything is small enough for the whole suite to run on CPU in well under a minute. The corpus
and spm model are built once per test process in a temporary directory.
"""

import atexit
import os
import random
import shutil
import sys
import tempfile

TRAINING_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING_DIR not in sys.path:
    sys.path.insert(0, TRAINING_DIR)

import torch  # noqa: E402

import model as model_lib  # noqa: E402

LANGUAGES = ["de", "en", "fr"]
TASK_PAIRS = [("de", "en"), ("en", "de"), ("en", "fr"), ("fr", "en")]   # sorted by id


def tiny_tasks(languages=LANGUAGES, pairs=TASK_PAIRS, first_tag_id=4):
    """TaskInfo list with made-up tag ids (tag of language l = first_tag_id + its index)."""
    return [model_lib.TaskInfo(f"{s}-{t}", s, t, i, f"<2{t}>", first_tag_id + languages.index(t))
            for i, (s, t) in enumerate(pairs)]


def tiny_config(kind: str = "taskmoe", encoder_routing=None, decoder_routing=None,
                encoder_key="target", decoder_key="target", tie=True, activation="relu",
                num_experts=4, top_k=2, vocab_size=64, layers=(2, 3)) -> model_lib.ModelConfig:
    """A small config; kind dense|tokenmoe|taskmoe, routing overridable per stack."""
    moe = None
    if kind != "dense":
        default = "token" if kind == "tokenmoe" else "task"
        enc, dec = encoder_routing or default, decoder_routing or default
        moe = model_lib.MoEConfig(
            num_experts=num_experts, top_k=top_k,
            encoder_layers=[] if enc == "none" else list(range(1, layers[0], 2)),
            decoder_layers=[] if dec == "none" else list(range(1, layers[1], 2)),
            encoder_routing=enc, decoder_routing=dec,
            encoder_task_key=encoder_key if enc == "task" else None,
            decoder_task_key=decoder_key if dec == "task" else None)
    return model_lib.ModelConfig(
        d_model=16, num_heads=2, encoder_layers=layers[0], decoder_layers=layers[1], d_ff=24,
        vocab_size=vocab_size, activation=activation, max_positions=64, tie_embeddings=tie,
        languages=list(LANGUAGES), tasks=tiny_tasks(), moe=moe)


def random_batch(config: model_lib.ModelConfig, batch=5, src_len=9, tgt_len=7, seed=0, task_ids=None):
    """Padded random src / tgt_in and task ids (varied lengths, so padding is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    first = 8  # above specials and tags
    src = torch.randint(first, config.vocab_size, (batch, src_len), generator=gen)
    tgt = torch.randint(first, config.vocab_size, (batch, tgt_len), generator=gen)
    tgt[:, 0] = config.bos_id
    for row in range(batch):
        cut = src_len - (row % 4)
        src[row, cut - 1] = config.eos_id
        src[row, cut:] = config.pad_id
        tgt[row, tgt_len - (row % 3):] = config.pad_id
    if task_ids is None:
        task_ids = torch.arange(batch) % len(config.tasks)
    task_ids = torch.as_tensor(task_ids, dtype=torch.long)
    for row in range(batch):
        src[row, 0] = config.tasks[int(task_ids[row])].target_tag_id
    return src, tgt, task_ids


# --------------------------------------------------------------------------------------------
# Synthetic corpus + spm
# --------------------------------------------------------------------------------------------

_WORKDIR = None


def _workdir() -> str:
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = tempfile.mkdtemp(prefix="taskmoe-train-test-")
        atexit.register(shutil.rmtree, _WORKDIR, ignore_errors=True)
    return _WORKDIR


def _lexicon(lang: str, size: int = 24):
    rng = random.Random(sum(map(ord, lang)))
    letters = {"en": "aeioustrnl", "de": "aeiouhknrst", "fr": "aeiouclmnpr"}[lang]
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(2, 5))))
    return sorted(words)


def _sentence_pair(rng, src_lang, tgt_lang, lexicons):
    """A toy translation: word-for-word lexicon mapping; French reverses the word order."""
    ids = [rng.randrange(len(lexicons["en"])) for _ in range(rng.randint(2, 7))]
    def render(lang):
        order = list(reversed(ids)) if lang == "fr" else ids
        return " ".join(lexicons[lang][i] for i in order)
    return render(src_lang), render(tgt_lang)


def synthetic_corpus(train_per_task=400, eval_per_task=16) -> str:
    """Writes {split}.{src}-{tgt}.{lang} files once per process; returns the directory."""
    directory = os.path.join(_workdir(), "corpus")
    if os.path.isdir(directory):
        return directory
    os.makedirs(directory)
    lexicons = {lang: _lexicon(lang) for lang in LANGUAGES}
    rng = random.Random(7)
    for src, tgt in TASK_PAIRS:
        for split, count in (("train", train_per_task), ("dev", eval_per_task), ("test", eval_per_task)):
            pairs = [_sentence_pair(rng, src, tgt, lexicons) for _ in range(count)]
            for lang, column in ((src, 0), (tgt, 1)):
                with open(os.path.join(directory, f"{split}.{src}-{tgt}.{lang}"), "w") as f:
                    f.writelines(p[column] + "\n" for p in pairs)
    return directory


def tiny_spm(corpus_dir: str) -> str:
    """Trains a small SentencePiece model with <2xx> tags and pad/unk/bos/eos = 0/1/2/3."""
    path = os.path.join(_workdir(), "spm.model")
    if os.path.exists(path):
        return path
    import sentencepiece as spm
    inputs = sorted(os.path.join(corpus_dir, f) for f in os.listdir(corpus_dir) if f.startswith("train."))
    spm.SentencePieceTrainer.train(
        input=",".join(inputs), model_prefix=path[:-len(".model")], vocab_size=80,
        model_type="unigram", character_coverage=1.0, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        user_defined_symbols=[f"<2{lang}>" for lang in LANGUAGES], minloglevel=2)
    return path
