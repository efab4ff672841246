"""Corpus reading, cached tokenization and token-bounded, task-mixing batching.

Corpus layout (written by build_corpus.py): one directory with line-aligned files
`{split}.{src}-{tgt}.{lang}`, split in train/dev/test, e.g. `train.en-de.en` and
`train.en-de.de`. Every `src-tgt` pair with both train files is a task. Tasks are ordered by id
and languages alphabetically; that order is the `index` / task key of config.json.

Sequences follow docs/model-format.md: source = [<2tgt>] + pieces + [eos], decoder input =
[bos] + pieces, labels = pieces + [eos]. Tokenized pieces (without tag/bos/eos) are cached as
numpy arrays keyed by the text file and the SentencePiece model, so a second run, or three runs
in parallel, do not tokenize again (cache files are written atomically).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

SPLITS = ("train", "dev", "test")
# Splits a model can be scored on: dev and test, and `general` (build_corpus.py --gettext or
# --debconf: text from programs and packages held out of training).
EVAL_SPLITS = ("dev", "test", "general", "train")
_FILE_RE = re.compile(r"^(train|dev|test)\.([A-Za-z_]+)-([A-Za-z_]+)\.([A-Za-z_]+)$")


def language_tag(lang: str) -> str:
    """The user-defined SentencePiece piece that asks for output in `lang`."""
    return f"<2{lang}>"


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

class Tokenizer:
    """Thin wrapper over a SentencePiece model with the ids the model format fixes."""

    def __init__(self, spm_path: str):
        import sentencepiece as spm
        self.path = spm_path
        self.processor = spm.SentencePieceProcessor(model_file=spm_path)
        self.pad_id = self.processor.pad_id()
        self.unk_id = self.processor.unk_id()
        self.bos_id = self.processor.bos_id()
        self.eos_id = self.processor.eos_id()
        self._digest = None

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def special_tokens(self) -> Dict[str, int]:
        return {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id}

    def piece_to_id(self, piece: str) -> int:
        token_id = self.processor.piece_to_id(piece)
        if token_id == self.unk_id and piece != self.processor.id_to_piece(self.unk_id):
            raise KeyError(f"{self.path}: no piece {piece!r} (is the language tag missing?)")
        return token_id

    def encode(self, lines: Sequence[str]) -> List[List[int]]:
        return self.processor.encode(list(lines), num_threads=os.cpu_count() or 1)

    def decode(self, ids: Sequence[Sequence[int]]) -> List[str]:
        return [self.processor.decode(list(map(int, seq))) for seq in ids]

    def digest(self) -> str:
        if self._digest is None:
            with open(self.path, "rb") as f:
                self._digest = hashlib.sha256(f.read()).hexdigest()[:16]
        return self._digest


# --------------------------------------------------------------------------------------------
# Corpus discovery
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CorpusInfo:
    directory: str
    languages: List[str]
    task_ids: List[str]              # "src-tgt", index = position

    def task_languages(self, task_index: int):
        source, target = self.task_ids[task_index].split("-")
        return source, target


def discover_corpus(directory: str) -> CorpusInfo:
    """Finds every task with both train files; raises if there is none."""
    pairs = set()
    present = set(os.listdir(directory))
    for name in present:
        match = _FILE_RE.match(name)
        if match and match.group(1) == "train":
            src, tgt = match.group(2), match.group(3)
            if f"train.{src}-{tgt}.{src}" in present and f"train.{src}-{tgt}.{tgt}" in present:
                pairs.add((src, tgt))
    if not pairs:
        raise FileNotFoundError(f"{directory}: no train.SRC-TGT.SRC/.TGT file pairs")
    task_ids = sorted(f"{s}-{t}" for s, t in pairs)
    languages = sorted({lang for pair in pairs for lang in pair})
    return CorpusInfo(directory, languages, task_ids)


def split_files(info: CorpusInfo, split: str, task_id: str):
    src, tgt = task_id.split("-")
    base = os.path.join(info.directory, f"{split}.{task_id}")
    return f"{base}.{src}", f"{base}.{tgt}"


def read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# --------------------------------------------------------------------------------------------
# Tokenized data
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Ragged:
    """A list of int sequences as one flat array plus offsets (cheap to cache and slice)."""

    ids: np.ndarray        # int32 [total]
    offsets: np.ndarray    # int64 [n + 1]

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> "Ragged":
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, parts: Sequence["Ragged"]) -> "Ragged":
        ids = np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.int32)
        offsets, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        return cls(ids, np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]


def _tokenize_cached(tokenizer: Tokenizer, path: str, cache_dir: Optional[str]) -> Ragged:
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|"
                         f"{tokenizer.digest()}".encode()).hexdigest()[:16]
    cache_path = None
    if cache_dir:
        cache_path = os.path.join(cache_dir, f"{os.path.basename(path)}.{key}.npz")
        if os.path.exists(cache_path):
            with np.load(cache_path) as cached:
                return Ragged(cached["ids"], cached["offsets"])
    ragged = Ragged.from_lists(tokenizer.encode(read_lines(path)))
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache_path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, ids=ragged.ids, offsets=ragged.offsets)
        os.replace(tmp, cache_path)  # atomic: parallel runs may race to write the same file
    return ragged


@dataclasses.dataclass
class ParallelData:
    """All examples of one split, every task concatenated; example i belongs to task[i]."""

    src: Ragged               # pieces only (tag and eos are added at collation)
    tgt: Ragged               # pieces only (bos / eos are added at collation)
    task: np.ndarray          # int64 [n] task index
    references: Optional[List[str]] = None  # raw target text (dev/test, for BLEU)
    sources: Optional[List[str]] = None     # raw source text

    def __len__(self) -> int:
        return len(self.task)

    def src_lengths(self) -> np.ndarray:
        return self.src.lengths() + 2   # tag + eos

    def tgt_lengths(self) -> np.ndarray:
        return self.tgt.lengths() + 1   # bos or eos

    def task_indices(self, task_index: int) -> np.ndarray:
        return np.nonzero(self.task == task_index)[0]


def load_split(info: CorpusInfo, split: str, tokenizer: Tokenizer, cache_dir: Optional[str] = None,
               max_per_task: Optional[int] = None, keep_text: bool = False,
               tasks: Optional[Sequence[str]] = None) -> ParallelData:
    """Tokenizes (or loads from cache) `split` of every task; tasks lacking the split are skipped."""
    srcs, tgts, task_index, refs, sources = [], [], [], [], []
    for index, task_id in enumerate(info.task_ids):
        if tasks is not None and task_id not in tasks:
            continue
        src_path, tgt_path = split_files(info, split, task_id)
        if not (os.path.exists(src_path) and os.path.exists(tgt_path)):
            continue
        src, tgt = _tokenize_cached(tokenizer, src_path, cache_dir), _tokenize_cached(tokenizer, tgt_path, cache_dir)
        if len(src) != len(tgt):
            raise ValueError(f"{src_path} and {tgt_path} differ in line count ({len(src)} vs {len(tgt)})")
        count = len(src) if max_per_task is None else min(len(src), max_per_task)
        srcs.append(_head(src, count))
        tgts.append(_head(tgt, count))
        task_index.append(np.full(count, index, dtype=np.int64))
        if keep_text:
            refs.extend(read_lines(tgt_path)[:count])
            sources.extend(read_lines(src_path)[:count])
    if not srcs:
        raise FileNotFoundError(f"{info.directory}: no {split} files for the requested tasks")
    return ParallelData(Ragged.concat(srcs), Ragged.concat(tgts), np.concatenate(task_index),
                        refs if keep_text else None, sources if keep_text else None)


def _head(ragged: Ragged, count: int) -> Ragged:
    return Ragged(ragged.ids[:ragged.offsets[count]], ragged.offsets[:count + 1])


# --------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Vocab:
    """The ids collation needs: specials and the per-task target tag."""

    pad: int
    bos: int
    eos: int
    task_tag: List[int]            # task index -> <2tgt> id
    task_source_lang: List[int]    # task index -> language index
    task_target_lang: List[int]

    @classmethod
    def build(cls, info: CorpusInfo, tokenizer: Tokenizer) -> "Vocab":
        tags, src_langs, tgt_langs = [], [], []
        for index in range(len(info.task_ids)):
            source, target = info.task_languages(index)
            tags.append(tokenizer.piece_to_id(language_tag(target)))
            src_langs.append(info.languages.index(source))
            tgt_langs.append(info.languages.index(target))
        return cls(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tags, src_langs, tgt_langs)


def collate(data: ParallelData, indices: Sequence[int], vocab: Vocab,
            max_len: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Pads examples into tensors: src, tgt_in, labels [B, T], task/src_lang/tgt_lang [B].

    `max_len` truncates (dev/test only; training filters long examples instead) while keeping
    the tag and eos.
    """
    indices = np.asarray(indices, dtype=np.int64)
    srcs = [data.src.get(i) for i in indices]
    tgts = [data.tgt.get(i) for i in indices]
    if max_len is not None:
        srcs = [s[:max_len - 2] for s in srcs]
        tgts = [t[:max_len - 1] for t in tgts]
    batch = len(indices)
    src = np.full((batch, max(len(s) for s in srcs) + 2), vocab.pad, dtype=np.int64)
    tgt_len = max(len(t) for t in tgts) + 1
    tgt_in = np.full((batch, tgt_len), vocab.pad, dtype=np.int64)
    labels = np.full((batch, tgt_len), vocab.pad, dtype=np.int64)
    tasks = data.task[indices]
    for row, (s, t, task) in enumerate(zip(srcs, tgts, tasks)):
        src[row, 0] = vocab.task_tag[task]
        src[row, 1:len(s) + 1] = s
        src[row, len(s) + 1] = vocab.eos
        tgt_in[row, 0] = vocab.bos
        tgt_in[row, 1:len(t) + 1] = t
        labels[row, :len(t)] = t
        labels[row, len(t)] = vocab.eos
    return {
        "src": torch.from_numpy(src),
        "tgt_in": torch.from_numpy(tgt_in),
        "labels": torch.from_numpy(labels),
        "task": torch.from_numpy(tasks.copy()),
        "src_lang": torch.tensor([vocab.task_source_lang[t] for t in tasks], dtype=torch.long),
        "tgt_lang": torch.tensor([vocab.task_target_lang[t] for t in tasks], dtype=torch.long),
        "indices": torch.from_numpy(indices),
    }


def to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    # Plain copies: the batch is small, and pinning fresh host memory every step costs more
    # than the asynchronous copy would save.
    return {k: v.to(device) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------

def batches_by_tokens(indices: np.ndarray, lengths: np.ndarray, max_tokens: int,
                      max_sentences: Optional[int] = None) -> List[np.ndarray]:
    """Cuts `indices`, sorted by length, into batches whose padded size B*T <= max_tokens."""
    order = indices[np.argsort(lengths[indices], kind="stable")]
    batches, current, longest = [], [], 0
    for index in order:
        length = int(lengths[index])
        new_longest = max(longest, length)
        too_big = current and (new_longest * (len(current) + 1) > max_tokens
                               or (max_sentences is not None and len(current) >= max_sentences))
        if too_big:
            batches.append(np.asarray(current, dtype=np.int64))
            current, new_longest = [], length
        current.append(index)
        longest = new_longest
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


def task_sampling_probs(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """p_t proportional to n_t^(1/T); T <= 0 means uniform over tasks."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if temperature <= 0:
        weights = (sizes > 0).astype(np.float64)
    else:
        weights = np.power(sizes, 1.0 / temperature)
    return weights / weights.sum()


class TaskMixingBatchSampler:
    """An endless, resumable stream of training batches that mixes tasks in every batch.

    A *pool* of examples is drawn (task chosen per example with temperature sampling, examples
    of a task in a reshuffled-per-epoch order), sorted by length and cut into token-bounded
    batches, which are emitted in random order. All state is in `state_dict()`, so a resumed
    run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, data: ParallelData, num_tasks: int, max_tokens: int, max_len: int,
                 temperature: float = 5.0, seed: int = 1, pool_batches: int = 64):
        self.data = data
        self.max_tokens = max_tokens
        self.lengths = np.maximum(data.src_lengths(), data.tgt_lengths())
        keep = (self.lengths <= max_len) & (data.src.lengths() > 0) & (data.tgt.lengths() > 0)
        self.by_task = [np.nonzero(keep & (data.task == t))[0] for t in range(num_tasks)]
        self.probs = task_sampling_probs([len(x) for x in self.by_task], temperature)
        mean_len = float(self.lengths[keep].mean()) if keep.any() else 1.0
        self.pool_size = max(1, int(pool_batches * max_tokens / mean_len))
        self.rng = np.random.default_rng(seed)
        self.perms = [self.rng.permutation(x) for x in self.by_task]
        self.cursors = [0] * num_tasks
        self.pending: List[np.ndarray] = []

    def num_examples(self) -> int:
        return sum(len(x) for x in self.by_task)

    def _take(self, task: int, count: int) -> np.ndarray:
        taken = []
        while count > 0:
            perm = self.perms[task]
            chunk = perm[self.cursors[task]:self.cursors[task] + count]
            taken.append(chunk)
            count -= len(chunk)
            self.cursors[task] += len(chunk)
            if self.cursors[task] >= len(perm):   # epoch of this task done: reshuffle
                self.perms[task] = self.rng.permutation(self.by_task[task])
                self.cursors[task] = 0
        return np.concatenate(taken)

    def _refill(self) -> None:
        counts = np.bincount(self.rng.choice(len(self.probs), size=self.pool_size, p=self.probs),
                             minlength=len(self.probs))
        pool = np.concatenate([self._take(t, int(c)) for t, c in enumerate(counts) if c > 0])
        batches = batches_by_tokens(pool, self.lengths, self.max_tokens)
        order = self.rng.permutation(len(batches))
        self.pending = [batches[i] for i in order]

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            if not self.pending:
                self._refill()
            yield self.pending.pop()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "perms": [p.copy() for p in self.perms],
                "cursors": list(self.cursors), "pending": [p.copy() for p in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perms = [np.asarray(p) for p in state["perms"]]
        self.cursors = list(state["cursors"])
        self.pending = [np.asarray(p) for p in state["pending"]]


def eval_batches(data: ParallelData, max_tokens: int, indices: Optional[np.ndarray] = None,
                 max_len: Optional[int] = None) -> List[np.ndarray]:
    """Deterministic length-sorted batches over `indices` (default: all examples)."""
    if indices is None:
        indices = np.arange(len(data))
    lengths = np.maximum(data.src_lengths(), data.tgt_lengths())
    if max_len is not None:
        lengths = np.minimum(lengths, max_len)
    return batches_by_tokens(np.asarray(indices, dtype=np.int64), lengths, max_tokens)
