"""Training checkpoints (PyTorch state) and loading a model from any saved form.

A training checkpoint is one `torch.save` file holding the model config (as config.json
would), the model and optimizer state, the step, the batch sampler state and every RNG state,
which is what makes `--resume` continue exactly where an uninterrupted run would be.

`load_model(path)` accepts an exported model directory (config.json + model.safetensors), a
training output directory (uses its checkpoint.pt) or a checkpoint file.
"""

from __future__ import annotations

import os
import random
from typing import Optional, Tuple

import numpy as np
import torch

import export
import model as model_lib

CHECKPOINT_FILE = "checkpoint.pt"


def torch_load(path: str, device="cpu"):
    # PyTorch >= 2.6 defaults to weights_only=True, which refuses the numpy arrays and dicts a
    # checkpoint carries; our own files are trusted.
    return torch.load(path, map_location=device, weights_only=False)


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic save: a crash mid-write never leaves a truncated checkpoint behind."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_checkpoint(path: str) -> str:
    if os.path.isdir(path):
        return os.path.join(path, CHECKPOINT_FILE)
    return path


def load_model(path: str, device: str = "cpu") -> Tuple[model_lib.Transformer, Optional[str]]:
    """Returns (model in eval mode, path of its spm.model if known)."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, export.CONFIG_FILE)):
        model, _ = export.load_model_dir(path, device)
        spm = os.path.join(path, export.SPM_FILE)
        return model, spm if os.path.exists(spm) else None
    state = torch_load(resolve_checkpoint(path))
    config = model_lib.ModelConfig.from_json_dict(state["config"])
    model = model_lib.Transformer(config)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state.get("spm_path")
