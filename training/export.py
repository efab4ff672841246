"""Export to, and import from, the model directory format of docs/model-format.md.

* `write_safetensors` / `read_safetensors`: our own implementation of the public safetensors
  layout (no dependency on the `safetensors` package): 8-byte little-endian header length N,
  N bytes of JSON (padded with spaces to a multiple of 8, so the data starts 8-byte aligned),
  then raw little-endian row-major data, tensors back to back in header order. The reader
  validates like the C++ loader must (bounds, sizes, overlap, dtypes) and names the offending
  tensor in its error.
* `expected_tensors(config)`: the spec's tensor-name table as code (name -> shape).
* `export_model`: writes config.json + model.safetensors + spm.model for a trained model.
* `load_model_dir`: reads such a directory back into a `model.Transformer` (round-trip tests,
  evaluation of exported and extracted models).

Usable as a tool: `python3 export.py check DIR` validates a model directory and prints a
summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import struct
import sys
from typing import Dict, Optional, Tuple

import numpy as np
import torch

import model as model_lib

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SPM_FILE = "spm.model"

# safetensors dtype name -> (bytes per element, numpy dtype used to carry the raw bits)
DTYPES = {"F32": (4, np.dtype("<f4")), "F16": (2, np.dtype("<f2")), "BF16": (2, np.dtype("<u2"))}
EXPORT_DTYPES = {"f32": "F32", "bf16": "BF16", "f16": "F16"}


class FormatError(ValueError):
    """A model file that breaks docs/model-format.md."""


# --------------------------------------------------------------------------------------------
# dtype conversion
# --------------------------------------------------------------------------------------------

def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype="<f4").view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = np.uint16(0x7FC0)
    return rounded


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def to_storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """A float array converted to the bit layout of safetensors dtype `dtype`."""
    array = np.asarray(array, dtype=np.float32)
    if dtype == "F32":
        return array.astype("<f4")
    if dtype == "F16":
        return array.astype("<f2")
    if dtype == "BF16":
        return float32_to_bf16_bits(array)
    raise FormatError(f"unsupported dtype {dtype!r}")


def from_storage(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored bits -> float32 array."""
    if dtype == "BF16":
        return bf16_bits_to_float32(raw)
    return raw.astype(np.float32)


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

def write_safetensors(path: str, tensors: Dict[str, np.ndarray], dtype: str = "F32",
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes float tensors (numpy or torch) converted to `dtype`, in sorted-name order.

    One dtype per file keeps every tensor naturally aligned for its element size once the
    data section starts 8-byte aligned. Written to a temporary name and renamed, so a reader
    never sees half a file.
    """
    if dtype not in DTYPES:
        raise FormatError(f"unsupported dtype {dtype!r}")
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu().numpy()
        stored = np.ascontiguousarray(to_storage(value, dtype))
        data = stored.tobytes(order="C")
        header[name] = {"dtype": dtype, "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def read_safetensors_header(path: str) -> Tuple[dict, int, int]:
    """Returns (header dict, data start offset, data length); validates the layout."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise FormatError(f"{path}: shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > file_size - 8:
            raise FormatError(f"{path}: header length {header_len} runs past the end of the file")
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FormatError(f"{path}: header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is not a JSON object")
    data_len = file_size - 8 - header_len
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise FormatError(f"{path}: __metadata__ must map strings to strings")
            continue
        _check_entry(path, name, info, data_len)
        spans.append((info["data_offsets"][0], info["data_offsets"][1], name))
    spans.sort()
    for (_, end_a, name_a), (begin_b, end_b, name_b) in zip(spans, spans[1:]):
        if begin_b < end_a and end_b > begin_b:
            raise FormatError(f"{path}: tensors {name_a} and {name_b} overlap")
    return header, 8 + header_len, data_len


def _check_entry(path: str, name: str, info: dict, data_len: int) -> None:
    if not isinstance(info, dict):
        raise FormatError(f"{path}: tensor {name}: entry is not an object")
    dtype = info.get("dtype")
    if dtype not in DTYPES:
        raise FormatError(f"{path}: tensor {name}: unknown dtype {dtype!r}")
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FormatError(f"{path}: tensor {name}: bad shape {shape!r}")
    offsets = info.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)):
        raise FormatError(f"{path}: tensor {name}: bad data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise FormatError(f"{path}: tensor {name}: offsets [{begin}, {end}) outside data of {data_len} bytes")
    expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][0]
    if end - begin != expected:
        raise FormatError(f"{path}: tensor {name}: {end - begin} bytes, shape {shape} x {dtype} "
                          f"needs {expected}")


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str], Dict[str, str]]:
    """Returns (name -> float32 array, name -> stored dtype, metadata)."""
    header, data_start, data_len = read_safetensors_header(path)
    with open(path, "rb") as f:
        f.seek(data_start)
        data = f.read(data_len)
    tensors, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]][1]).reshape(info["shape"])
        tensors[name] = from_storage(raw, info["dtype"])
        dtypes[name] = info["dtype"]
    return tensors, dtypes, header.get("__metadata__", {})


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------------------------
# The spec's tensor table
# --------------------------------------------------------------------------------------------

def expected_tensors(config: model_lib.ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor a model with this config must have, name -> shape (docs/model-format.md)."""
    d, vocab = config.d_model, config.vocab_size
    shapes: Dict[str, Tuple[int, ...]] = {}
    if config.tie_embeddings:
        shapes["embedding.weight"] = (vocab, d)
    else:
        for name in ("encoder.embedding.weight", "decoder.embedding.weight",
                     "decoder.output_projection.weight"):
            shapes[name] = (vocab, d)
    for stack in model_lib.STACKS:
        attentions = ["self_attn"] + (["cross_attn"] if stack == "decoder" else [])
        moe_layers = config.moe_layers(stack)
        for i in range(config.num_layers(stack)):
            prefix = f"{stack}.layers.{i}"
            for attn in attentions:
                shapes[f"{prefix}.{attn}_norm.weight"] = (d,)
                shapes[f"{prefix}.{attn}_norm.bias"] = (d,)
                for proj in ("q", "k", "v", "out"):
                    shapes[f"{prefix}.{attn}.{proj}_proj.weight"] = (d, d)
                    shapes[f"{prefix}.{attn}.{proj}_proj.bias"] = (d,)
            shapes[f"{prefix}.ffn_norm.weight"] = (d,)
            shapes[f"{prefix}.ffn_norm.bias"] = (d,)
            if i in moe_layers:
                shapes.update(_moe_tensors(config, stack, prefix))
            else:
                ff = config.dense_width(stack, i)
                shapes[f"{prefix}.ffn.fc1.weight"] = (ff, d)
                shapes[f"{prefix}.ffn.fc1.bias"] = (ff,)
                shapes[f"{prefix}.ffn.fc2.weight"] = (d, ff)
                shapes[f"{prefix}.ffn.fc2.bias"] = (d,)
        shapes[f"{stack}.final_norm.weight"] = (d,)
        shapes[f"{stack}.final_norm.bias"] = (d,)
    return shapes


def _moe_tensors(config, stack, prefix) -> Dict[str, Tuple[int, ...]]:
    d, ff, experts = config.d_model, config.d_ff, config.moe.num_experts
    shapes = {
        f"{prefix}.ffn.experts.fc1.weight": (experts, ff, d),
        f"{prefix}.ffn.experts.fc1.bias": (experts, ff),
        f"{prefix}.ffn.experts.fc2.weight": (experts, d, ff),
        f"{prefix}.ffn.experts.fc2.bias": (experts, d),
    }
    if config.moe.routing(stack) == "token":
        shapes[f"{prefix}.ffn.router.weight"] = (experts, d)
    else:
        shapes[f"{prefix}.ffn.router.task_logits"] = (config.num_task_keys(stack), experts)
    return shapes


def check_tensors_against_config(config: model_lib.ModelConfig, shapes: Dict[str, Tuple[int, ...]],
                                 where: str = WEIGHTS_FILE) -> None:
    """Refuses a missing tensor, an unexpected tensor, or a shape that disagrees with config."""
    expected = expected_tensors(config)
    for name in sorted(expected):
        if name not in shapes:
            raise FormatError(f"{where}: missing tensor {name}")
        if tuple(shapes[name]) != tuple(expected[name]):
            raise FormatError(f"{where}: tensor {name} has shape {list(shapes[name])}, "
                              f"config.json implies {list(expected[name])}")
    for name in sorted(shapes):
        if name not in expected:
            raise FormatError(f"{where}: unexpected tensor {name}")


# --------------------------------------------------------------------------------------------
# Model directories
# --------------------------------------------------------------------------------------------

def write_config(path: str, config: model_lib.ModelConfig) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config.to_json_dict(), f, indent=2)
        f.write("\n")


def read_config(path: str) -> model_lib.ModelConfig:
    with open(path, encoding="utf-8") as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as err:
            raise FormatError(f"{path}: not valid JSON: {err}") from None
    try:
        return model_lib.ModelConfig.from_json_dict(obj)
    except (TypeError, ValueError) as err:
        raise FormatError(f"{path}: {err}") from None


def check_file_digests(model_dir: str, config: model_lib.ModelConfig) -> None:
    """Refuses files whose SHA-256 differs from the one config.json records (`files`)."""
    for name, recorded in (config.files or {}).items():
        actual = file_sha256(os.path.join(model_dir, name))
        if actual != recorded:
            raise FormatError(f"{name} has digest {actual} but {CONFIG_FILE} records {recorded}: "
                              "the files come from different models")


def model_tensors(model: model_lib.Transformer) -> Dict[str, torch.Tensor]:
    """The model's exported tensors: its state_dict, whose names are the spec's names."""
    return {name: t for name, t in model.state_dict().items() if t.is_floating_point()}


def write_model_dir(out_dir: str, config: model_lib.ModelConfig, tensors: Dict[str, torch.Tensor],
                    spm_path: Optional[str], dtype: str = "F32") -> None:
    """Writes a complete model directory after checking tensors against the spec table."""
    check_tensors_against_config(config, {k: tuple(v.shape) for k, v in tensors.items()})
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, WEIGHTS_FILE), tensors, dtype,
                      metadata={"format": "taskmoe", "format_version": str(model_lib.FORMAT_VERSION)})
    if spm_path is not None:
        _check_spm(spm_path, config)
        shutil.copyfile(spm_path, os.path.join(out_dir, SPM_FILE))
    # config.json last, recording the digests of the files beside it (docs/model-format.md).
    files = [WEIGHTS_FILE] + ([SPM_FILE] if spm_path is not None else [])
    config = dataclasses.replace(
        config, files={name: file_sha256(os.path.join(out_dir, name)) for name in files})
    write_config(os.path.join(out_dir, CONFIG_FILE), config)


def _check_spm(spm_path: str, config: model_lib.ModelConfig) -> None:
    try:
        import sentencepiece as spm
    except ImportError:  # the check is a courtesy; the copy itself needs nothing
        return
    processor = spm.SentencePieceProcessor(model_file=spm_path)
    if processor.get_piece_size() != config.vocab_size:
        raise FormatError(f"{spm_path}: {processor.get_piece_size()} pieces, vocab_size is "
                          f"{config.vocab_size}")
    for name, token_id in config.special_tokens.items():
        actual = {"pad": processor.pad_id(), "unk": processor.unk_id(), "bos": processor.bos_id(),
                  "eos": processor.eos_id()}[name]
        if actual != token_id:
            raise FormatError(f"{spm_path}: {name} id is {actual}, config says {token_id}")
    for task in config.tasks:
        if processor.piece_to_id(task.target_tag) != task.target_tag_id:
            raise FormatError(f"{spm_path}: {task.target_tag} is not id {task.target_tag_id}")


def export_model(model: model_lib.Transformer, out_dir: str, spm_path: Optional[str],
                 dtype: str = "f32", training_info: Optional[dict] = None) -> str:
    """Exports a trained model; `dtype` is f32, bf16 or f16 (storage only). Returns out_dir."""
    config = model_lib.ModelConfig.from_json_dict(model.config.to_json_dict())
    if training_info is not None:
        config.training = training_info
    write_model_dir(out_dir, config, model_tensors(model), spm_path, EXPORT_DTYPES[dtype])
    return out_dir


def load_model_dir(model_dir: str, device: str = "cpu") -> Tuple[model_lib.Transformer, Dict[str, str]]:
    """Loads and validates a model directory; returns (model in eval mode, stored dtypes)."""
    config = read_config(os.path.join(model_dir, CONFIG_FILE))
    weights = os.path.join(model_dir, WEIGHTS_FILE)
    tensors, dtypes, _ = read_safetensors(weights)
    check_tensors_against_config(config, {k: v.shape for k, v in tensors.items()}, weights)
    # After the structural checks, as the C++ loader does: they name the broken tensor.
    check_file_digests(model_dir, config)
    model = model_lib.Transformer(config)
    state = {name: torch.from_numpy(np.array(array)) for name, array in tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), dtypes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a model directory and print a summary")
    check.add_argument("model_dir")
    args = parser.parse_args(argv)
    try:
        model, dtypes = load_model_dir(args.model_dir)
    except FormatError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 1
    config = model.config
    print(f"ok: {args.model_dir}")
    print(f"  parameters {model_lib.count_parameters(model):,}  dtypes {sorted(set(dtypes.values()))}")
    print(f"  d_model {config.d_model} heads {config.num_heads} layers {config.encoder_layers}+"
          f"{config.decoder_layers} d_ff {config.d_ff} vocab {config.vocab_size}")
    print(f"  moe {None if config.moe is None else config.moe.__dict__}")
    print(f"  tasks {[t.id for t in config.tasks]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
