"""Reference (PyTorch/numpy) subnetwork extraction, per docs/model-format.md "Extraction".

For every task-routed MoE layer the task's gates are constants, so its top-k experts fold into
one dense FFN of width top_k * d_ff (experts in gate order, largest gate first):

    fc1.weight = concat_rows(E_a.fc1.weight, E_b.fc1.weight)   fc1.bias = concat(E_a.fc1.bias, E_b.fc1.bias)
    fc2.weight = concat_cols(g_a * E_a.fc2.weight, g_b * E_b.fc2.weight)
    fc2.bias   = g_a * E_a.fc2.bias + g_b * E_b.fc2.bias

Token-routed stacks keep all experts and the router. The subnetwork's config lists only its
own task (parent index kept), marks folded stacks as routing "none" with no MoE layers (and
sets `moe` to null when no MoE layer is left), records the folded widths in `*_ffn_dims`, and
carries provenance in `extracted`. This is the oracle the C++ extraction tool is checked
against; the tests check that its logits equal the full model's for the task.

    /usr/bin/python3 training/extract_reference.py --model RUN/export --task en-de --out DIR
    /usr/bin/python3 training/extract_reference.py --model RUN/export --all --out REPO
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Dict, Optional, Tuple

import numpy as np
import torch

import export
import model as model_lib


def task_key_index(config: model_lib.ModelConfig, stack: str, task: model_lib.TaskInfo) -> int:
    key = config.moe.task_key(stack)
    if key == "pair":
        # Pair keys index `tasks` by their `index` field.
        return task.index
    return config.languages.index(task.target if key == "target" else task.source)


def fold_experts(tensors: Dict[str, torch.Tensor], prefix: str, experts, gates) -> Dict[str, torch.Tensor]:
    """The dense FFN tensors equal to sum_i g_i * Expert_i (float32)."""
    w1 = tensors[f"{prefix}.ffn.experts.fc1.weight"].float()
    b1 = tensors[f"{prefix}.ffn.experts.fc1.bias"].float()
    w2 = tensors[f"{prefix}.ffn.experts.fc2.weight"].float()
    b2 = tensors[f"{prefix}.ffn.experts.fc2.bias"].float()
    return {
        f"{prefix}.ffn.fc1.weight": torch.cat([w1[e] for e in experts], dim=0),
        f"{prefix}.ffn.fc1.bias": torch.cat([b1[e] for e in experts], dim=0),
        f"{prefix}.ffn.fc2.weight": torch.cat([g * w2[e] for e, g in zip(experts, gates)], dim=1),
        f"{prefix}.ffn.fc2.bias": sum(g * b2[e] for e, g in zip(experts, gates)),
    }


def extract(config: model_lib.ModelConfig, tensors: Dict[str, torch.Tensor], task_id: str,
            parent_digest: Optional[str] = None) -> Tuple[model_lib.ModelConfig, Dict[str, torch.Tensor]]:
    """Returns (subnetwork config, subnetwork tensors) for `task_id`."""
    if config.extracted is not None:
        raise ValueError("already an extracted subnetwork")
    task = config.task_by_id(task_id)
    sub = copy.deepcopy(config)
    out = {name: t for name, t in tensors.items()}
    kept = {}
    for stack in model_lib.STACKS:
        routing = config.routing(stack)
        moe_layers = config.moe_layers(stack)
        if routing == "token":
            kept.update({f"{stack}.layers.{i}": "all" for i in moe_layers})
            continue
        if routing != "task" or not moe_layers:
            continue
        key = task_key_index(config, stack, task)
        dims = [config.dense_width(stack, i) for i in range(config.num_layers(stack))]
        for i in moe_layers:
            prefix = f"{stack}.layers.{i}"
            logits = tensors[f"{prefix}.ffn.router.task_logits"][key].float()
            gates, experts, _ = model_lib.topk_gates(logits, config.moe.top_k)
            experts, gates = experts.tolist(), gates.tolist()
            for name in [n for n in out if n.startswith(f"{prefix}.ffn.")]:
                del out[name]
            out.update(fold_experts(tensors, prefix, experts, gates))
            dims[i] = config.moe.top_k * config.d_ff
            kept[prefix] = {"experts": experts, "gates": gates}
        if stack == "encoder":
            sub.encoder_ffn_dims, sub.moe.encoder_layers = dims, []
            sub.moe.encoder_routing, sub.moe.encoder_task_key = "none", None
        else:
            sub.decoder_ffn_dims, sub.moe.decoder_layers = dims, []
            sub.moe.decoder_routing, sub.moe.decoder_task_key = "none", None
    if sub.moe is not None and not sub.moe.encoder_layers and not sub.moe.decoder_layers:
        sub.moe = None
    sub.tasks = [copy.deepcopy(task)]
    sub.files = None  # the parent's files; write_model_dir records the subnetwork's
    sub.extracted = {
        "task": task_id,
        "parent_digest": parent_digest,
        "parent_parameters": int(sum(t.numel() for t in tensors.values())),
        "experts_kept": dict(sorted(kept.items())),
    }
    sub.validate()
    return sub, out


def load_dir_tensors(model_dir: str) -> Tuple[model_lib.ModelConfig, Dict[str, torch.Tensor], Dict[str, str]]:
    config = export.read_config(os.path.join(model_dir, export.CONFIG_FILE))
    arrays, dtypes, _ = export.read_safetensors(os.path.join(model_dir, export.WEIGHTS_FILE))
    export.check_tensors_against_config(config, {k: v.shape for k, v in arrays.items()})
    return config, {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, dtypes


def extract_dir(model_dir: str, task_id: str, out_dir: str, dtype: Optional[str] = None) -> str:
    """Extracts one task of an exported model directory into `out_dir` (same dtype by default)."""
    config, tensors, dtypes = load_dir_tensors(model_dir)
    digest = export.file_sha256(os.path.join(model_dir, export.WEIGHTS_FILE))
    sub_config, sub_tensors = extract(config, tensors, task_id, digest)
    stored = export.EXPORT_DTYPES[dtype] if dtype else sorted(set(dtypes.values()))[0]
    spm = os.path.join(model_dir, export.SPM_FILE)
    export.write_model_dir(out_dir, sub_config, sub_tensors, spm if os.path.exists(spm) else None, stored)
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model directory")
    parser.add_argument("--task", help="task id to extract")
    parser.add_argument("--all", action="store_true", help="extract every task into OUT/<task id>/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", choices=sorted(export.EXPORT_DTYPES), default=None,
                        help="storage dtype (default: the parent's)")
    args = parser.parse_args(argv)
    if args.all == bool(args.task):
        parser.error("give exactly one of --task and --all")
    if args.all:
        config = export.read_config(os.path.join(args.model, export.CONFIG_FILE))
        for task in config.tasks:
            print(extract_dir(args.model, task.id, os.path.join(args.out, task.id), args.dtype))
    else:
        print(extract_dir(args.model, args.task, args.out, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
