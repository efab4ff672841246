"""Train a dense, TokenMoE or TaskMoE translation model, then evaluate and export it.

One command per run, e.g.

    /usr/bin/python3 training/train.py --corpus build/corpus --spm build/corpus/spm.model \
        --model-kind taskmoe --out build/runs/taskmoe --max-minutes 8 --device auto --amp

The run writes into --out: `checkpoint.pt` (model, optimizer, step, sampler and RNG state;
refreshed every --save-every steps and at the end), `train.log.jsonl` (one JSON object per
progress line), `summary.json` (final dev loss / BLEU, sizes, timings) and `export/` (config.json,
model.safetensors, spm.model in the docs/model-format.md layout). `--resume` continues from
out/checkpoint.pt exactly as if the run had not stopped. `--max-minutes` bounds the training
loop of this invocation; the final dev BLEU and the export come after it (seconds on a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

import checkpoint as ckpt
import data as data_lib
import export
import model as model_lib

KINDS = ("dense", "tokenmoe", "taskmoe")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("input / output")
    io.add_argument("--corpus", required=True, help="directory of {split}.{src}-{tgt}.{lang} files")
    io.add_argument("--spm", required=True, help="shared SentencePiece model")
    io.add_argument("--out", required=True, help="run directory")
    io.add_argument("--cache-dir", default=None, help="token cache (default: CORPUS/.tokcache)")
    io.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="resume from OUT/checkpoint.pt (or the given checkpoint)")

    arch = p.add_argument_group("architecture")
    arch.add_argument("--model-kind", choices=KINDS, required=True)
    arch.add_argument("--d-model", type=int, default=256)
    arch.add_argument("--heads", type=int, default=4)
    arch.add_argument("--layers", type=int, default=4, help="layers per stack")
    arch.add_argument("--encoder-layers", type=int, default=None, help="overrides --layers")
    arch.add_argument("--decoder-layers", type=int, default=None, help="overrides --layers")
    arch.add_argument("--d-ff", type=int, default=1024, help="dense FFN width and expert width")
    arch.add_argument("--activation", choices=model_lib.ACTIVATIONS, default="relu")
    arch.add_argument("--max-positions", type=int, default=512)
    arch.add_argument("--untied", action="store_true", help="separate encoder/decoder/output embeddings")
    arch.add_argument("--experts", type=int, default=8)
    arch.add_argument("--top-k", type=int, default=2)
    arch.add_argument("--moe-layers", default="odd",
                      help="MoE layer indices of both stacks: 'odd' (1,3,5..), 'even', 'all' or '1,3'")
    arch.add_argument("--encoder-moe-layers", default=None, help="overrides --moe-layers for the encoder")
    arch.add_argument("--decoder-moe-layers", default=None, help="overrides --moe-layers for the decoder")
    arch.add_argument("--encoder-routing", choices=model_lib.ROUTINGS, default=None,
                      help="default: token for tokenmoe, task for taskmoe")
    arch.add_argument("--decoder-routing", choices=model_lib.ROUTINGS, default=None,
                      help="default: token for tokenmoe, task for taskmoe")
    arch.add_argument("--encoder-task-key", choices=model_lib.TASK_KEYS, default="target")
    arch.add_argument("--decoder-task-key", choices=model_lib.TASK_KEYS, default="target")

    train = p.add_argument_group("training")
    train.add_argument("--max-steps", type=int, default=100000)
    train.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of the training loop")
    train.add_argument("--max-tokens", type=int, default=8192, help="padded tokens per batch (larger side)")
    train.add_argument("--max-len", type=int, default=128, help="drop training pairs longer than this")
    train.add_argument("--sampling-temperature", type=float, default=5.0,
                       help="task sampling p ~ n^(1/T); <= 0 means uniform over tasks")
    train.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    train.add_argument("--warmup-steps", type=int, default=1000)
    train.add_argument("--adam-betas", default="0.9,0.98")
    train.add_argument("--adam-eps", type=float, default=1e-9)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--clip-norm", type=float, default=1.0)
    train.add_argument("--label-smoothing", type=float, default=0.1)
    train.add_argument("--dropout", type=float, default=0.1)
    train.add_argument("--attention-dropout", type=float, default=0.0)
    train.add_argument("--activation-dropout", type=float, default=0.0)
    train.add_argument("--aux-loss-weight", type=float, default=0.01,
                       help="load-balancing loss weight (mean over MoE layers)")
    train.add_argument("--capacity-factor", type=float, default=1.25,
                       help="token routing expert capacity in training; <= 0: no dropping")
    train.add_argument("--router-noise", type=float, default=0.0, help="std of logit noise in training")
    train.add_argument("--task-logits-init-std", type=float, default=1.0)
    train.add_argument("--seed", type=int, default=1)

    run = p.add_argument_group("running")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    run.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    run.add_argument("--log-every", type=int, default=100)
    run.add_argument("--eval-every", type=int, default=2000, help="dev loss every N steps (0: only at end)")
    run.add_argument("--save-every", type=int, default=2000, help="checkpoint every N steps")
    run.add_argument("--dev-per-task", type=int, default=200, help="dev sentences per task for loss")
    run.add_argument("--bleu-per-task", type=int, default=200,
                     help="dev sentences per task for the final greedy BLEU (0: skip)")
    run.add_argument("--export-dtype", choices=sorted(export.EXPORT_DTYPES), default="bf16")
    run.add_argument("--no-export", action="store_true")
    return p.parse_args(argv)


def parse_layers(spec: str, num_layers: int) -> List[int]:
    if spec == "odd":
        return list(range(1, num_layers, 2))
    if spec == "even":
        return list(range(0, num_layers, 2))
    if spec == "all":
        return list(range(num_layers))
    if spec in ("", "none"):
        return []
    layers = sorted({int(x) for x in spec.split(",")})
    if any(not 0 <= i < num_layers for i in layers):
        raise SystemExit(f"MoE layers {layers} out of range for {num_layers} layers")
    return layers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------

def build_moe_config(args, encoder_layers: int, decoder_layers: int) -> Optional[model_lib.MoEConfig]:
    if args.model_kind == "dense":
        return None
    default_routing = "token" if args.model_kind == "tokenmoe" else "task"
    routing = {"encoder": args.encoder_routing or default_routing,
               "decoder": args.decoder_routing or default_routing}
    if args.model_kind == "tokenmoe" and "task" in routing.values():
        raise SystemExit("tokenmoe routes by token; use --model-kind taskmoe for task routing")
    layers = {
        "encoder": parse_layers(args.encoder_moe_layers or args.moe_layers, encoder_layers),
        "decoder": parse_layers(args.decoder_moe_layers or args.moe_layers, decoder_layers),
    }
    for stack in model_lib.STACKS:
        if routing[stack] == "none":
            layers[stack] = []
    keys = {"encoder": args.encoder_task_key if routing["encoder"] == "task" else None,
            "decoder": args.decoder_task_key if routing["decoder"] == "task" else None}
    return model_lib.MoEConfig(
        num_experts=args.experts, top_k=args.top_k,
        encoder_layers=layers["encoder"], decoder_layers=layers["decoder"],
        encoder_routing=routing["encoder"], decoder_routing=routing["decoder"],
        encoder_task_key=keys["encoder"], decoder_task_key=keys["decoder"])


def build_model_config(args, info: data_lib.CorpusInfo, tokenizer: data_lib.Tokenizer) -> model_lib.ModelConfig:
    special = tokenizer.special_tokens()
    if min(special.values()) < 0:
        raise SystemExit(f"{args.spm}: needs pad, unk, bos and eos ids (got {special})")
    encoder_layers = args.encoder_layers or args.layers
    decoder_layers = args.decoder_layers or args.layers
    tasks = []
    for index, task_id in enumerate(info.task_ids):
        source, target = info.task_languages(index)
        tag = data_lib.language_tag(target)
        tasks.append(model_lib.TaskInfo(task_id, source, target, index, tag, tokenizer.piece_to_id(tag)))
    config = model_lib.ModelConfig(
        d_model=args.d_model, num_heads=args.heads, encoder_layers=encoder_layers,
        decoder_layers=decoder_layers, d_ff=args.d_ff, vocab_size=tokenizer.vocab_size,
        activation=args.activation, max_positions=args.max_positions,
        tie_embeddings=not args.untied, special_tokens=special, languages=list(info.languages),
        tasks=tasks, moe=build_moe_config(args, encoder_layers, decoder_layers))
    config.validate()
    return config


def training_options(args) -> model_lib.TrainingOptions:
    return model_lib.TrainingOptions(
        dropout=args.dropout, attention_dropout=args.attention_dropout,
        activation_dropout=args.activation_dropout, capacity_factor=args.capacity_factor,
        router_noise=args.router_noise, task_logits_init_std=args.task_logits_init_std)


def make_optimizer(model, args, betas, device) -> torch.optim.Optimizer:
    """Adam; on CUDA the multi-tensor implementation (one kernel for many parameters), since
    small models are bound by kernel launches rather than by arithmetic."""
    kwargs = dict(lr=args.lr, betas=betas, eps=args.adam_eps, weight_decay=args.weight_decay)
    if device.type == "cuda":
        kwargs["foreach"] = True
    return torch.optim.Adam(model.parameters(), **kwargs)


def inverse_sqrt_lr(step: int, peak: float, warmup: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then peak * sqrt(warmup / step)."""
    if warmup <= 0:
        return peak / math.sqrt(max(step, 1))
    return peak * min(step / warmup, math.sqrt(warmup / max(step, 1)))


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------

def compute_loss(model: model_lib.Transformer, batch: Dict[str, torch.Tensor], label_smoothing: float,
                 aux_weight: float, amp: bool):
    """Returns (total loss, smoothed token-mean CE, aux loss or None, number of label tokens)."""
    device_type = batch["src"].device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp):
        logits, aux = model(batch["src"], batch["tgt_in"], batch["task"])
    labels = batch["labels"]
    pad = model.config.pad_id
    num_tokens = labels.ne(pad).sum()
    ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=pad,
                         label_smoothing=label_smoothing, reduction="sum") / num_tokens
    total = ce
    if aux is not None:
        aux = aux / max(model.num_moe_layers(), 1)
        total = total + aux_weight * aux
    return total, ce, aux, num_tokens


@torch.no_grad()
def dev_loss(model, dev: data_lib.ParallelData, vocab: data_lib.Vocab, device, amp: bool,
             max_tokens: int, max_len: int) -> Dict[str, float]:
    """Token-mean NLL (no smoothing) over the dev subset, overall and per task."""
    was_training = model.training
    model.eval()
    nll_sum = np.zeros(len(vocab.task_tag))
    tok_sum = np.zeros(len(vocab.task_tag))
    for indices in data_lib.eval_batches(dev, max_tokens, max_len=max_len):
        batch = data_lib.to_device(data_lib.collate(dev, indices, vocab, max_len), device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits, _ = model(batch["src"], batch["tgt_in"], batch["task"])
        token_nll = F.cross_entropy(logits.float().transpose(1, 2), batch["labels"],
                                    ignore_index=vocab.pad, reduction="none")
        mask = batch["labels"].ne(vocab.pad)
        per_sentence = (token_nll * mask).sum(dim=1).cpu().numpy()
        counts = mask.sum(dim=1).cpu().numpy()
        tasks = batch["task"].cpu().numpy()
        np.add.at(nll_sum, tasks, per_sentence)
        np.add.at(tok_sum, tasks, counts)
    model.train(was_training)
    result = {"dev_nll": float(nll_sum.sum() / max(tok_sum.sum(), 1))}
    result["dev_ppl"] = math.exp(min(result["dev_nll"], 50))
    return result


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

class RunLog:
    """Progress lines on stdout and, as JSON, in OUT/train.log.jsonl."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, "train.log.jsonl")

    def write(self, record: dict, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(args) -> dict:
    os.makedirs(args.out, exist_ok=True)
    device = resolve_device(args.device)
    amp = bool(args.amp and device.type == "cuda")
    if args.amp and not amp:
        print("note: --amp only applies on CUDA; training in float32", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(args.seed)
    log = RunLog(args.out)

    tokenizer = data_lib.Tokenizer(args.spm)
    info = data_lib.discover_corpus(args.corpus)
    cache_dir = args.cache_dir or os.path.join(args.corpus, ".tokcache")
    vocab = data_lib.Vocab.build(info, tokenizer)
    started = time.time()
    train_data = data_lib.load_split(info, "train", tokenizer, cache_dir)
    dev_data = data_lib.load_split(info, "dev", tokenizer, cache_dir, max_per_task=args.dev_per_task)
    print(f"data: {len(info.task_ids)} tasks, {len(info.languages)} languages, "
          f"{len(train_data):,} train / {len(dev_data):,} dev pairs, "
          f"loaded in {time.time() - started:.1f}s", flush=True)

    config = build_model_config(args, info, tokenizer)
    model = model_lib.Transformer(config, training_options(args)).to(device)
    betas = tuple(float(b) for b in args.adam_betas.split(","))
    optimizer = make_optimizer(model, args, betas, device)
    sampler = data_lib.TaskMixingBatchSampler(train_data, len(info.task_ids), args.max_tokens,
                                              args.max_len, args.sampling_temperature, args.seed)
    step, trained_seconds = 0, 0.0
    checkpoint_path = os.path.join(args.out, ckpt.CHECKPOINT_FILE)
    if args.resume:
        resume_path = checkpoint_path if args.resume == "auto" else ckpt.resolve_checkpoint(args.resume)
        if os.path.exists(resume_path):
            step, trained_seconds = restore(resume_path, model, optimizer, sampler, config)
            print(f"resumed from {resume_path} at step {step}", flush=True)
        else:
            print(f"note: no checkpoint at {resume_path}; starting fresh", flush=True)
    print(f"model: {args.model_kind}, {model_lib.count_parameters(model):,} parameters, "
          f"{model.num_moe_layers()} MoE layers, device {device}{' bf16 autocast' if amp else ''}", flush=True)

    def save(current_step: int) -> None:
        ckpt.save_checkpoint(checkpoint_path, {
            "config": config.to_json_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "step": current_step, "sampler": sampler.state_dict(),
            "rng": ckpt.rng_state(), "args": vars(args), "spm_path": os.path.abspath(args.spm),
            "trained_seconds": trained_seconds + (time.time() - loop_start)})

    model.train()
    batches = iter(sampler)
    loop_start = time.time()
    window = {"loss": 0.0, "ce": 0.0, "aux": 0.0, "steps": 0, "tgt_tokens": 0, "src_tokens": 0,
              "start": time.time()}
    stop_reason = "max-steps"
    while step < args.max_steps:
        if args.max_minutes is not None and time.time() - loop_start >= 60 * args.max_minutes:
            stop_reason = "max-minutes"
            break
        step += 1
        cpu_batch = data_lib.collate(train_data, next(batches), vocab)
        batch = data_lib.to_device(cpu_batch, device)
        lr = inverse_sqrt_lr(step, args.lr, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, ce, aux, _ = compute_loss(model, batch, args.label_smoothing, args.aux_loss_weight, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        optimizer.step()
        # Accumulate on the device; one sync per log line rather than per step.
        window["loss"] += loss.detach()
        window["ce"] += ce.detach()
        window["aux"] += aux.detach() if aux is not None else 0.0
        window["steps"] += 1
        window["tgt_tokens"] += int(cpu_batch["labels"].ne(vocab.pad).sum())
        window["src_tokens"] += int(cpu_batch["src"].ne(vocab.pad).sum())
        if step % args.log_every == 0:
            log_progress(log, step, lr, window, loop_start)
        if args.eval_every and step % args.eval_every == 0:
            log_dev(log, step, dev_loss(model, dev_data, vocab, device, amp, args.max_tokens, args.max_positions))
        if args.save_every and step % args.save_every == 0:
            save(step)
    if window["steps"]:
        log_progress(log, step, inverse_sqrt_lr(max(step, 1), args.lr, args.warmup_steps), window, loop_start)
    loop_seconds = time.time() - loop_start
    save(step)
    print(f"stopped at step {step} ({stop_reason}) after {loop_seconds / 60:.1f} min; "
          f"checkpoint {checkpoint_path}", flush=True)
    return finish(args, model, config, tokenizer, info, vocab, dev_data, device, amp, log, step,
                  stop_reason, loop_seconds, trained_seconds + loop_seconds)


def restore(path, model, optimizer, sampler, config):
    state = ckpt.torch_load(path)
    if state["config"] != config.to_json_dict():
        raise SystemExit(f"{path}: its model config differs from this command's; refusing to resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    ckpt.set_rng_state(state["rng"])
    return state["step"], state.get("trained_seconds", 0.0)


def log_progress(log: RunLog, step: int, lr: float, window: dict, loop_start: float) -> None:
    seconds = max(time.time() - window["start"], 1e-9)
    steps = window["steps"]
    record = {"step": step, "loss": float(window["loss"]) / steps, "ce": float(window["ce"]) / steps,
              "aux": float(window["aux"]) / steps, "lr": lr,
              "tgt_tok_per_s": window["tgt_tokens"] / seconds,
              "tok_per_s": (window["tgt_tokens"] + window["src_tokens"]) / seconds,
              "elapsed_min": (time.time() - loop_start) / 60}
    log.write(record, f"step {step:6d} | loss {record['loss']:.4f} | ce {record['ce']:.4f} | "
                      f"aux {record['aux']:.3f} | lr {lr:.2e} | tgt tok/s {record['tgt_tok_per_s']:8.0f} | "
                      f"src+tgt tok/s {record['tok_per_s']:8.0f} | {record['elapsed_min']:.1f} min")
    window.update({"loss": 0.0, "ce": 0.0, "aux": 0.0, "steps": 0, "tgt_tokens": 0, "src_tokens": 0,
                   "start": time.time()})


def log_dev(log: RunLog, step: int, result: dict) -> None:
    log.write({"step": step, **result}, f"step {step:6d} | dev nll {result['dev_nll']:.4f} | "
                                        f"dev ppl {result['dev_ppl']:.2f}")


def finish(args, model, config, tokenizer, info, vocab, dev_data, device, amp, log, step, stop_reason,
           loop_seconds, trained_seconds) -> dict:
    """Final dev loss and greedy dev BLEU, export, summary.json."""
    summary = {"kind": args.model_kind, "steps": step, "stop_reason": stop_reason,
               "loop_minutes": loop_seconds / 60, "trained_minutes": trained_seconds / 60,
               "parameters": model_lib.count_parameters(model), "device": str(device), "amp": amp}
    result = dev_loss(model, dev_data, vocab, device, amp, args.max_tokens, args.max_positions)
    log_dev(log, step, result)
    summary.update(result)
    model.eval()
    if args.bleu_per_task > 0:
        import evaluate  # needs metrics.py; imported here so --bleu-per-task 0 runs without it
        started = time.time()
        bleu_data = data_lib.load_split(info, "dev", tokenizer, args.cache_dir or os.path.join(args.corpus, ".tokcache"),
                                        max_per_task=args.bleu_per_task, keep_text=True)
        scores = evaluate.evaluate_data(model, tokenizer, bleu_data, info, amp=amp)
        evaluate.print_table(scores, f"dev ({args.bleu_per_task}/task, greedy)")
        summary["dev_bleu"] = scores
        summary["dev_bleu_seconds"] = time.time() - started
    if not args.no_export:
        export_dir = os.path.join(args.out, "export")
        export.export_model(model, export_dir, args.spm, args.export_dtype, training_info={
            "kind": args.model_kind, "steps": step, "trained_minutes": round(trained_seconds / 60, 2),
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}})
        summary["export"] = export_dir
        summary["export_bytes"] = os.path.getsize(os.path.join(export_dir, export.WEIGHTS_FILE))
        print(f"exported {export_dir} ({summary['export_bytes'] / 2**20:.1f} MiB, {args.export_dtype})", flush=True)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
