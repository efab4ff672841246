"""Batched greedy and beam-search decoding for the PyTorch reference model.

Decoding is incremental by default: each decoder layer caches its self-attention keys/values
and the cross-attention keys/values of the source, so a step costs one token per hypothesis.
`use_cache=False` recomputes the whole prefix each step (the slow, obviously-correct oracle the
tests compare against).

Beam search semantics (the C++ engine should match them):
* hypotheses are scored by the sum of token log-probabilities (eos included);
* a finished hypothesis of n generated tokens (eos included) is ranked by score / n^alpha,
  alpha = `length_penalty` (0 disables normalisation);
* at each step the 2K best expansions are taken; those ending in eos among the top K ranks
  finish, the best K others continue;
* a sentence stops once K hypotheses have finished or no live one can beat the best finished
  one; the maximum output length is min(max_len, a * source_len + b) tokens (eos included), at
  the last step only eos may follow.
Greedy and beam search never emit `pad` or `bos` (their logits are masked): neither is a valid
output piece.

Command line: `translate.py --model DIR_OR_CHECKPOINT --task en-de [--beam 4] < in > out`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import model as model_lib


def output_limit(src: torch.Tensor, config: model_lib.ModelConfig, max_len: Optional[int],
                 max_len_a: float, max_len_b: int) -> int:
    """Most tokens (eos included) a batch may generate; bos + output fits max_positions."""
    src_len = int(src.ne(config.pad_id).sum(dim=1).max())
    limit = int(max_len_a * src_len + max_len_b)
    if max_len is not None:
        limit = min(limit, max_len)
    return max(1, min(limit, config.max_positions - 1))


def output_limits(src: torch.Tensor, config: model_lib.ModelConfig, max_len: Optional[int],
                  max_len_a: float, max_len_b: int) -> torch.Tensor:
    """Per-sentence step limits (eos included): floor(a * source length + b), the C++ engine's
    DecodeOptions.max_output_ratio / max_output_offset rule, capped like output_limit."""
    src_len = src.ne(config.pad_id).sum(dim=1).double()
    limits = torch.floor(max_len_a * src_len + max_len_b).long()
    cap = config.max_positions - 1 if max_len is None else min(max_len, config.max_positions - 1)
    return limits.clamp(min=1, max=max(1, cap))


def next_token_log_probs(model: model_lib.Transformer, hidden: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next piece with pad and bos excluded; hidden [N, d]."""
    logits = model.project(hidden).float()
    logits[:, model.config.pad_id] = float("-inf")
    logits[:, model.config.bos_id] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def _strip(sequence: Sequence[int], eos: int, pad: Optional[int] = None) -> List[int]:
    """The tokens before the first eos (or pad: rows stopped by their length limit)."""
    out = []
    for token in sequence:
        if token == eos or token == pad:
            break
        out.append(int(token))
    return out


@torch.no_grad()
def greedy_decode(model: model_lib.Transformer, src: torch.Tensor, task_ids: torch.Tensor,
                  max_len: Optional[int] = None, max_len_a: float = 1.5, max_len_b: int = 10,
                  use_cache: bool = True) -> List[List[int]]:
    """Returns the output pieces of each sentence (no bos/eos)."""
    config = model.config
    limits = output_limits(src, config, max_len, max_len_a, max_len_b)
    memory, src_pad_mask, _ = model.encode(src, task_ids)
    batch = src.shape[0]
    tokens = torch.full((batch, 1), config.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    cache = model.new_cache() if use_cache else None
    for step in range(int(limits.max())):
        if use_cache:
            hidden, _ = model.decode(tokens[:, -1:], memory, src_pad_mask, task_ids, cache, start_pos=step)
        else:
            hidden, _ = model.decode(tokens, memory, src_pad_mask, task_ids)
        next_token = next_token_log_probs(model, hidden[:, -1]).argmax(dim=-1)
        next_token = torch.where(finished, torch.full_like(next_token, config.pad_id), next_token)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token.eq(config.eos_id) | limits.le(step + 1)
        if bool(finished.all()):
            break
    return [_strip(row[1:], config.eos_id, config.pad_id) for row in tokens.tolist()]


@torch.no_grad()
def beam_search(model: model_lib.Transformer, src: torch.Tensor, task_ids: torch.Tensor,
                beam_size: int = 4, length_penalty: float = 1.0, max_len: Optional[int] = None,
                max_len_a: float = 1.5, max_len_b: int = 10) -> Tuple[List[List[int]], List[float]]:
    """Returns (best hypothesis pieces, its normalised score) per sentence."""
    if beam_size == 1:
        return greedy_decode(model, src, task_ids, max_len, max_len_a, max_len_b), []
    config = model.config
    device = src.device
    limit = output_limit(src, config, max_len, max_len_a, max_len_b)
    batch, beam = src.shape[0], beam_size
    memory, src_pad_mask, _ = model.encode(src, task_ids)
    memory = memory.repeat_interleave(beam, dim=0)
    src_pad_mask = src_pad_mask.repeat_interleave(beam, dim=0)
    beam_tasks = task_ids.repeat_interleave(beam, dim=0)

    tokens = torch.full((batch * beam, 1), config.bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(batch, beam, device=device)
    scores[:, 1:] = float("-inf")              # all beams start identical: expand only the first
    best_score = torch.full((batch,), float("-inf"), device=device)
    best_tokens = torch.full((batch, limit + 1), config.pad_id, dtype=torch.long, device=device)
    num_finished = torch.zeros(batch, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    batch_base = (torch.arange(batch, device=device) * beam)[:, None]
    cache = model.new_cache()

    for step in range(limit):
        hidden, _ = model.decode(tokens[:, -1:], memory, src_pad_mask, beam_tasks, cache, start_pos=step)
        log_probs = next_token_log_probs(model, hidden[:, -1])
        vocab = log_probs.shape[-1]
        if step == limit - 1:                  # out of room: only eos may follow
            forced = torch.full_like(log_probs, float("-inf"))
            forced[:, config.eos_id] = log_probs[:, config.eos_id]
            log_probs = forced
        candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
        cand_scores, cand_ids = candidates.topk(2 * beam, dim=1)
        cand_beam, cand_token = cand_ids // vocab, cand_ids % vocab
        is_eos = cand_token.eq(config.eos_id) & torch.isfinite(cand_scores)

        # Finish eos candidates among the top K ranks.
        finishing = is_eos.clone()
        finishing[:, beam:] = False
        finishing &= ~done[:, None]
        normalised = cand_scores / float(step + 1) ** length_penalty
        normalised = torch.where(finishing, normalised, torch.full_like(normalised, float("-inf")))
        step_best, step_rank = normalised.max(dim=1)
        improved = step_best > best_score
        if bool(improved.any()):
            source_row = (batch_base.squeeze(1) + cand_beam.gather(1, step_rank[:, None]).squeeze(1))
            prefix = tokens.index_select(0, source_row)
            candidate_tokens = torch.full_like(best_tokens, config.pad_id)
            candidate_tokens[:, :step + 1] = prefix
            candidate_tokens[:, step + 1] = config.eos_id
            best_tokens = torch.where(improved[:, None], candidate_tokens, best_tokens)
            best_score = torch.where(improved, step_best, best_score)
        num_finished += finishing.sum(dim=1)

        # Continue with the best K non-eos candidates.
        live_scores = cand_scores.masked_fill(is_eos, float("-inf"))
        live_scores, live_rank = live_scores.topk(beam, dim=1)
        next_beam = cand_beam.gather(1, live_rank)
        next_token = cand_token.gather(1, live_rank)
        order = (batch_base + next_beam).view(-1)
        tokens = torch.cat([tokens.index_select(0, order), next_token.view(-1, 1)], dim=1)
        model_lib.reorder_cache(cache, order)
        scores = live_scores

        # A live hypothesis can at best keep its score and reach the maximum length.
        best_possible = scores.max(dim=1).values / float(limit) ** length_penalty \
            if length_penalty >= 0 else scores.max(dim=1).values
        done |= (num_finished >= beam) | (best_score >= best_possible) | ~torch.isfinite(best_possible)
        if bool(done.all()):
            break

    hypotheses = [_strip(row[1:], config.eos_id) for row in best_tokens.tolist()]
    return hypotheses, best_score.tolist()


def decode_batch(model, src, task_ids, beam_size=1, length_penalty=1.0, max_len=None,
                 max_len_a=1.5, max_len_b=10) -> List[List[int]]:
    if beam_size <= 1:
        return greedy_decode(model, src, task_ids, max_len, max_len_a, max_len_b)
    return beam_search(model, src, task_ids, beam_size, length_penalty, max_len, max_len_a, max_len_b)[0]


def source_ids(config: model_lib.ModelConfig, pieces: Sequence[int], task: model_lib.TaskInfo) -> List[int]:
    """[<2tgt>] + pieces + [eos], truncated to max_positions."""
    pieces = list(pieces)[:config.max_positions - 2]
    return [task.target_tag_id] + pieces + [config.eos_id]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def translate_ids(model: model_lib.Transformer, task: model_lib.TaskInfo,
                  sources: Sequence[Sequence[int]], max_tokens: int = 4096, **decode_options) -> List[List[int]]:
    """Translates tokenized sentences (pieces only) of one task, batched by length."""
    device = next(model.parameters()).device
    full = [source_ids(model.config, s, task) for s in sources]
    order = np.argsort([len(s) for s in full], kind="stable")
    results: List[Optional[List[int]]] = [None] * len(full)
    start = 0
    while start < len(order):
        longest, end = 0, start
        while end < len(order) and max(longest, len(full[order[end]])) * (end - start + 1) <= max_tokens:
            longest = max(longest, len(full[order[end]]))
            end += 1
        end = max(end, start + 1)
        chunk = order[start:end]
        src = pad_batch([full[i] for i in chunk], model.config.pad_id).to(device)
        task_ids = torch.full((len(chunk),), task.index, dtype=torch.long, device=device)
        for i, hyp in zip(chunk, decode_batch(model, src, task_ids, **decode_options)):
            results[i] = hyp
        start = end
    return results


def main(argv=None) -> int:
    import checkpoint
    import data as data_lib
    parser = argparse.ArgumentParser(description="Translate stdin line by line.")
    parser.add_argument("--model", required=True, help="exported model dir, training out dir or checkpoint")
    parser.add_argument("--spm", help="SentencePiece model (default: the model's)")
    parser.add_argument("--task", required=True, help="task id, e.g. en-de")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--max-len", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    model, spm_path = checkpoint.load_model(args.model, device)
    tokenizer = data_lib.Tokenizer(args.spm or spm_path)
    lines = [line.rstrip("\n") for line in sys.stdin]
    hyps = translate_ids(model, model.config.task_by_id(args.task), tokenizer.encode(lines),
                         beam_size=args.beam, length_penalty=args.length_penalty, max_len=args.max_len)
    for text in tokenizer.decode(hyps):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
