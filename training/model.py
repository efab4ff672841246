"""Pre-norm Transformer encoder-decoder with dense, token-routed and task-routed MoE FFNs.

This is the PyTorch reference of the network described in docs/model-format.md. Two rules keep
it and the C++ engine in lock step:

* The parameter names of this module tree ARE the tensor names of `model.safetensors`
  (`encoder.layers.1.ffn.experts.fc1.weight`, ...), and parameters have the spec's shapes, so
  export is a plain walk over `state_dict()` (see export.py).
* `ModelConfig` is config.json: `to_json_dict()` / `from_json_dict()` convert one into the other
  field for field, and a model can be built from any valid config, including an extracted
  subnetwork whose FFN widths differ per layer.

Everything that exists only in training (dropout, router noise, expert capacity with token
dropping, the load-balancing loss) lives in `TrainingOptions` and is inactive in eval mode, so
`model.eval()` computes exactly what the spec says the engine computes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_VERSION = 1
ROUTINGS = ("none", "token", "task")
TASK_KEYS = ("target", "source", "pair")
STACKS = ("encoder", "decoder")
ACTIVATIONS = ("relu", "gelu")

# PyTorch 2.x has a fused attention kernel; 1.13 does not, so fall back to the explicit one.
_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


# --------------------------------------------------------------------------------------------
# Configuration (config.json)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TaskInfo:
    """One translation direction the model serves (an entry of config.json `tasks`)."""

    id: str
    source: str
    target: str
    index: int
    target_tag: str
    target_tag_id: int


@dataclasses.dataclass
class MoEConfig:
    """The `moe` section of config.json."""

    num_experts: int
    top_k: int
    encoder_layers: List[int]
    decoder_layers: List[int]
    encoder_routing: str
    decoder_routing: str
    encoder_task_key: Optional[str] = None
    decoder_task_key: Optional[str] = None

    def layers(self, stack: str) -> List[int]:
        return self.encoder_layers if stack == "encoder" else self.decoder_layers

    def routing(self, stack: str) -> str:
        return self.encoder_routing if stack == "encoder" else self.decoder_routing

    def task_key(self, stack: str) -> Optional[str]:
        return self.encoder_task_key if stack == "encoder" else self.decoder_task_key


@dataclasses.dataclass
class ModelConfig:
    """Architecture, field for field as config.json (docs/model-format.md)."""

    d_model: int
    num_heads: int
    encoder_layers: int
    decoder_layers: int
    d_ff: int
    vocab_size: int
    encoder_ffn_dims: Optional[List[int]] = None
    decoder_ffn_dims: Optional[List[int]] = None
    activation: str = "relu"
    norm: str = "pre"
    layer_norm_eps: float = 1e-6
    max_positions: int = 1024
    position_encoding: str = "sinusoidal"
    scale_embeddings: bool = True
    tie_embeddings: bool = True
    special_tokens: Dict[str, int] = dataclasses.field(
        default_factory=lambda: {"pad": 0, "unk": 1, "bos": 2, "eos": 3})
    languages: List[str] = dataclasses.field(default_factory=list)
    tasks: List[TaskInfo] = dataclasses.field(default_factory=list)
    moe: Optional[MoEConfig] = None
    extracted: Optional[dict] = None
    # SHA-256 ("sha256:<hex>") of the directory's weights and tokenizer, by file name: binds
    # them to this config (the engine refuses files whose digest differs). Set on export.
    files: Optional[Dict[str, str]] = None
    training: Optional[dict] = None

    # -- helpers -----------------------------------------------------------------------------

    @property
    def pad_id(self) -> int:
        return self.special_tokens["pad"]

    @property
    def bos_id(self) -> int:
        return self.special_tokens["bos"]

    @property
    def eos_id(self) -> int:
        return self.special_tokens["eos"]

    def num_layers(self, stack: str) -> int:
        return self.encoder_layers if stack == "encoder" else self.decoder_layers

    def ffn_dims(self, stack: str) -> Optional[List[int]]:
        return self.encoder_ffn_dims if stack == "encoder" else self.decoder_ffn_dims

    def routing(self, stack: str) -> str:
        return "none" if self.moe is None else self.moe.routing(stack)

    def moe_layers(self, stack: str) -> List[int]:
        if self.moe is None or self.moe.routing(stack) == "none":
            return []
        return list(self.moe.layers(stack))

    def dense_width(self, stack: str, layer: int) -> int:
        dims = self.ffn_dims(stack)
        return self.d_ff if dims is None else int(dims[layer])

    def num_task_keys(self, stack: str) -> int:
        key = self.moe.task_key(stack)
        return len(self.tasks) if key == "pair" else len(self.languages)

    def task_by_id(self, task_id: str) -> TaskInfo:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"unknown task {task_id!r}; known: {[t.id for t in self.tasks]}")

    # -- JSON ----------------------------------------------------------------------------------

    def to_json_dict(self) -> dict:
        """The config.json object, keys in the order docs/model-format.md shows them."""
        return {
            "format_version": FORMAT_VERSION,
            "architecture": "transformer-encoder-decoder",
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "d_ff": self.d_ff,
            "encoder_ffn_dims": self.encoder_ffn_dims,
            "decoder_ffn_dims": self.decoder_ffn_dims,
            "activation": self.activation,
            "norm": self.norm,
            "layer_norm_eps": self.layer_norm_eps,
            "vocab_size": self.vocab_size,
            "max_positions": self.max_positions,
            "position_encoding": self.position_encoding,
            "scale_embeddings": self.scale_embeddings,
            "tie_embeddings": self.tie_embeddings,
            "special_tokens": dict(self.special_tokens),
            "languages": list(self.languages),
            "tasks": [dataclasses.asdict(t) for t in self.tasks],
            "moe": None if self.moe is None else dataclasses.asdict(self.moe),
            "extracted": self.extracted,
            "files": self.files,
            "training": self.training,
        }

    @classmethod
    def from_json_dict(cls, obj: dict) -> "ModelConfig":
        if obj.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {obj.get('format_version')!r}")
        if obj.get("architecture") != "transformer-encoder-decoder":
            raise ValueError(f"unsupported architecture {obj.get('architecture')!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in obj.items() if k in fields}
        kwargs["tasks"] = [TaskInfo(**t) for t in obj.get("tasks", [])]
        if obj.get("moe") is not None:
            kwargs["moe"] = MoEConfig(**obj["moe"])
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Raises ValueError naming the first field that breaks the spec's rules."""
        def require(cond: bool, message: str) -> None:
            if not cond:
                raise ValueError(f"config.json: {message}")

        require(self.d_model % 2 == 0, "d_model must be even")
        require(self.d_model % self.num_heads == 0, "d_model % num_heads must be 0")
        require(self.encoder_layers >= 1 and self.decoder_layers >= 1, "need >= 1 layer per stack")
        require(self.activation in ACTIVATIONS, f"activation {self.activation!r}")
        require(self.norm == "pre", "norm must be 'pre'")
        require(self.position_encoding == "sinusoidal", "position_encoding must be 'sinusoidal'")
        for layer, kept in ((self.extracted or {}).get("experts_kept") or {}).items():
            # Subnetworks with their experts kept apart are for the C++ server (taskmoe-extract
            # --keep_experts); this model builds only folded ones.
            form = kept.get("form", "folded") if isinstance(kept, dict) else "folded"
            require(form == "folded", f"extracted.experts_kept.{layer}.form is {form!r}: the "
                    "trainer reads only folded subnetworks (extract without --keep_experts)")
        for stack in STACKS:
            dims = self.ffn_dims(stack)
            require(dims is None or len(dims) == self.num_layers(stack),
                    f"{stack}_ffn_dims needs one entry per layer")
        for lang_field in ("source", "target"):
            for task in self.tasks:
                require(getattr(task, lang_field) in self.languages,
                        f"task {task.id}: {lang_field} not in languages")
        for name, digest in (self.files or {}).items():
            require(name in ("model.safetensors", "spm.model"),
                    f"files.{name} is not a file of a model directory")
            require(isinstance(digest, str) and re.fullmatch(r"sha256:[0-9a-fA-F]{64}", digest),
                    f"files.{name} {digest!r} is not 'sha256:' + 64 hex digits")
        indices = [t.index for t in self.tasks]
        require(len(set(indices)) == len(indices), "task indices must be unique")
        if self.moe is None:
            return
        moe = self.moe
        require(moe.num_experts >= 2, "moe.num_experts must be >= 2")
        require(1 <= moe.top_k <= moe.num_experts, "moe.top_k must be in 1..num_experts")
        for stack in STACKS:
            routing, key, layers = moe.routing(stack), moe.task_key(stack), moe.layers(stack)
            require(routing in ROUTINGS, f"moe.{stack}_routing {routing!r}")
            require(all(0 <= i < self.num_layers(stack) for i in layers),
                    f"moe.{stack}_layers out of range")
            if routing == "task":
                require(key in TASK_KEYS, f"moe.{stack}_task_key {key!r}")
            else:
                require(key is None, f"moe.{stack}_task_key must be null without task routing")
            if routing == "none":
                require(not layers, f"moe.{stack}_layers must be empty with routing 'none'")


@dataclasses.dataclass
class TrainingOptions:
    """Training-only behaviour; none of it is active in eval mode."""

    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # Expert capacity for token routing: ceil(factor * top_k * tokens / experts) slots per
    # expert; tokens beyond it are dropped (their MoE output is 0, the residual carries them).
    # <= 0 disables dropping.
    capacity_factor: float = 1.25
    # Std of Gaussian noise added to router logits in training (exploration), both routings.
    router_noise: float = 0.0
    # Std of the initial task_logits table: random so that tasks start on different experts
    # (an all-zero table would send every task to experts 0 and 1 through tie-breaking).
    task_logits_init_std: float = 1.0
    # On CUDA, MoE layers with at most this many experts run every expert on every token
    # (see MoEFFN.dispatch_mode); 0 always gathers tokens per expert.
    dense_dispatch_max_experts: int = 16


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def sinusoidal_positions(num_positions: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...): interleaved, as the spec."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = position / torch.pow(10000.0, two_i / d_model)
    table = torch.zeros(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.float()


def activation_fn(name: str):
    # F.gelu's default is the exact erf form, which is what the spec asks for.
    return F.relu if name == "relu" else F.gelu


def topk_gates(logits: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The spec's gating: softmax over all experts, top-k, renormalise.

    Returns (gates [..., k] largest first, experts [..., k], probs [..., E]). Ties go to the
    lower expert index: a stable descending sort keeps equal values in index order.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    top_probs = sorted_probs[..., :top_k]
    gates = top_probs / top_probs.sum(dim=-1, keepdim=True)
    return gates, order[..., :top_k], probs


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int,
                        token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """GShard/Switch auxiliary loss: E * sum_e f_e * P_e (1.0 when perfectly balanced).

    f_e is the fraction of routing assignments (all top-k choices) that went to expert e, P_e
    the mean router probability of e, both over the tokens where `token_mask` [N] is true (all
    by default). Only P_e carries gradient.
    """
    weight = torch.ones(probs.shape[0], device=probs.device) if token_mask is None else token_mask.float()
    counts = torch.zeros(num_experts, device=probs.device, dtype=torch.float32)
    counts.scatter_add_(0, experts.reshape(-1), weight.repeat_interleave(experts.shape[1]))
    total = weight.sum().clamp(min=1.0)
    fraction = counts / (total * experts.shape[1])
    mean_probs = (probs.float() * weight[:, None]).sum(dim=0) / total
    return num_experts * torch.sum(fraction * mean_probs)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with optional key/value cache."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, memory: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None, causal: bool = False,
                cache: Optional[dict] = None, static_memory: bool = False) -> torch.Tensor:
        """query [B, Tq, d]; memory [B, Tk, d] (= query for self-attention).

        key_padding_mask [B, Tk] is True at padding. `cache` (a dict) makes decoding
        incremental: self-attention appends this step's keys/values, cross-attention
        (`static_memory`) computes them once.
        """
        q = self._split_heads(self.q_proj(query))
        if cache is not None and static_memory and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k = self._split_heads(self.k_proj(memory))
            v = self._split_heads(self.v_proj(memory))
            if cache is not None:
                if not static_memory and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        # A causal mask is only needed when queries and keys cover the same positions; with a
        # cache, the single new query may see every cached key.
        causal = causal and q.shape[2] == k.shape[2] and q.shape[2] > 1
        out = self._attend(q, k, v, key_padding_mask, causal)
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.out_proj(out)

    def _attend(self, q, k, v, key_padding_mask, causal) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        if _HAS_SDPA:
            allowed = None
            if key_padding_mask is not None:
                allowed = ~key_padding_mask[:, None, None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout,
                                                  is_causal=causal and allowed is None)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if causal:
            tq, tk = scores.shape[-2:]
            future = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        weights = F.dropout(weights, dropout, self.training)
        return torch.matmul(weights, v)


class RoutingContext:
    """What an FFN may need besides its input: which tokens are real, and the task keys.

    token_index holds the flat indices (into B*T) of non-padding tokens, computed once per
    forward so MoE layers do not each pay a device sync for it.
    """

    def __init__(self, token_mask: torch.Tensor, task_keys: Dict[str, torch.Tensor]):
        self.token_mask = token_mask                        # [B, T] bool, True = real token
        self.task_keys = task_keys                          # {"target"|"source"|"pair": [B]}
        self._token_index = None

    @property
    def token_index(self) -> torch.Tensor:
        if self._token_index is None:  # computed lazily: dense models never need it
            self._token_index = self.token_mask.reshape(-1).nonzero().squeeze(1)
        return self._token_index


class DenseFFN(nn.Module):
    """fc2(act(fc1(x))) with biases."""

    def __init__(self, d_model: int, d_ff: int, activation: str, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.act = activation_fn(activation)
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor, ctx: RoutingContext):
        hidden = F.dropout(self.act(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(hidden), None


class StackedLinear(nn.Module):
    """E independent linear maps stored as one tensor: weight [E, out, in], bias [E, out]."""

    def __init__(self, num_experts: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_features))
        bound = math.sqrt(6.0 / (in_features + out_features))  # Xavier, per expert
        nn.init.uniform_(self.weight, -bound, bound)


class ExpertBank(nn.Module):
    """E experts of width d_ff; parameter names give `ffn.experts.fc1.weight` etc."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int, activation: str,
                 activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = StackedLinear(num_experts, d_model, d_ff)
        self.fc2 = StackedLinear(num_experts, d_ff, d_model)
        self.act = activation_fn(activation)
        self.activation_dropout = activation_dropout

    def forward_one(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(F.linear(x, self.fc1.weight[expert], self.fc1.bias[expert]))
        hidden = F.dropout(hidden, self.activation_dropout, self.training)
        return F.linear(hidden, self.fc2.weight[expert], self.fc2.bias[expert])

    def forward_batched(self, buffers: torch.Tensor) -> torch.Tensor:
        """buffers [E, C, d_model] -> [E, C, d_model]: one bmm per matrix for all experts."""
        hidden = torch.baddbmm(self.fc1.bias[:, None, :], buffers, self.fc1.weight.transpose(1, 2))
        hidden = F.dropout(self.act(hidden), self.activation_dropout, self.training)
        return torch.baddbmm(self.fc2.bias[:, None, :], hidden, self.fc2.weight.transpose(1, 2))


class TokenRouter(nn.Module):
    """Per-token router logits x @ W_r^T (no bias); weight [E, d_model]."""

    def __init__(self, num_experts: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, d_model))
        nn.init.normal_(self.weight, std=d_model ** -0.5)


class TaskRouter(nn.Module):
    """A learned logits table: one row per task key; task_logits [num_task_keys, E]."""

    def __init__(self, num_task_keys: int, num_experts: int, init_std: float):
        super().__init__()
        self.task_logits = nn.Parameter(torch.randn(num_task_keys, num_experts) * init_std)


class MoEFFN(nn.Module):
    """Mixture-of-experts FFN with token or task routing (docs/model-format.md)."""

    def __init__(self, d_model: int, d_ff: int, num_experts: int, top_k: int, activation: str,
                 routing: str, task_key: Optional[str], num_task_keys: int,
                 opts: TrainingOptions):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.routing = routing
        self.task_key = task_key
        self.capacity_factor = opts.capacity_factor
        self.router_noise = opts.router_noise
        self.dense_dispatch_max_experts = opts.dense_dispatch_max_experts
        self.dispatch_override: Optional[str] = None
        self.experts = ExpertBank(num_experts, d_model, d_ff, activation, opts.activation_dropout)
        if routing == "token":
            self.router = TokenRouter(num_experts, d_model)
        else:
            self.router = TaskRouter(num_task_keys, num_experts, opts.task_logits_init_std)

    # -- routing ---------------------------------------------------------------------------------

    def router_logits(self, x_flat: torch.Tensor, ctx: RoutingContext) -> torch.Tensor:
        """Logits [B*T, E] for every position (float32: routing is precision-sensitive)."""
        if self.routing == "token":
            with _autocast_disabled(x_flat.device.type):
                logits = F.linear(x_flat.float(), self.router.weight.float())
        else:
            per_example = self.router.task_logits[ctx.task_keys[self.task_key]].float()   # [B, E]
            logits = per_example.repeat_interleave(ctx.token_mask.shape[1], dim=0)
        if self.training and self.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise
        return logits

    def dispatch_mode(self, device: torch.device) -> str:
        """How to run the experts; every mode computes the same function (tests check it).

        * `capacity`: training with token routing: fixed expert capacity, token dropping.
        * `dense`: on GPUs with few experts, run every expert on every token and weight by the
          (mostly zero) gates: static shapes, no device sync, a handful of kernels. Small
          models are bound by kernel launches, so the wasted E/k arithmetic is cheaper.
        * `gather`: per expert, gather its tokens and run them (no wasted arithmetic).
        """
        if self.training and self.routing == "token" and self.capacity_factor > 0:
            return "capacity"
        if self.dispatch_override is not None:   # tests compare the modes on CPU
            return self.dispatch_override
        if device.type == "cuda" and self.num_experts <= self.dense_dispatch_max_experts:
            return "dense"
        return "gather"

    def forward(self, x: torch.Tensor, ctx: RoutingContext):
        batch, seq_len, d_model = x.shape
        flat = x.reshape(batch * seq_len, d_model)
        mode = self.dispatch_mode(x.device)
        logits = self.router_logits(flat, ctx)
        real = ctx.token_mask.reshape(-1)
        if mode == "dense":
            gates, experts, probs = topk_gates(logits, self.top_k)
            out = self._dispatch_dense(flat, experts, gates) * real[:, None]
            aux = load_balancing_loss(probs, experts, self.num_experts, real) if self.training else None
            return out.view(batch, seq_len, d_model), aux
        # Padding must neither take expert capacity nor count in the balancing loss.
        index = ctx.token_index
        tokens = flat.index_select(0, index)
        gates, experts, probs = topk_gates(logits.index_select(0, index), self.top_k)
        aux = load_balancing_loss(probs, experts, self.num_experts) if self.training else None
        if mode == "capacity":
            mixed = self._dispatch_with_capacity(tokens, experts, gates)
        else:
            mixed = self._dispatch_per_expert(tokens, experts, gates)
        out = torch.zeros_like(flat, dtype=mixed.dtype)
        out.index_copy_(0, index, mixed)
        return out.view(batch, seq_len, d_model), aux

    # -- dispatch ---------------------------------------------------------------------------------

    def _dispatch_dense(self, tokens, experts, gates) -> torch.Tensor:
        """All experts on all tokens, combined with a sparse [N, E] gate matrix."""
        weights = torch.zeros(tokens.shape[0], self.num_experts, device=tokens.device, dtype=torch.float32)
        weights.scatter_(1, experts, gates.float())
        expert_out = self.experts.forward_batched(tokens.unsqueeze(0).expand(self.num_experts, -1, -1))
        return torch.einsum("ne,end->nd", weights, expert_out.float())

    def _dispatch_per_expert(self, tokens, experts, gates) -> torch.Tensor:
        """No dropping: gather each expert's tokens, one matmul pair per expert, scatter-add."""
        num_tokens = tokens.shape[0]
        flat_expert = experts.reshape(-1)
        flat_gate = gates.reshape(-1)
        flat_token = torch.arange(num_tokens, device=tokens.device).repeat_interleave(self.top_k)
        order = torch.argsort(flat_expert)
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
        out = torch.zeros(num_tokens, tokens.shape[1], device=tokens.device,
                          dtype=torch.promote_types(tokens.dtype, torch.float32))
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            picked = order[start:start + count]
            start += count
            token_ids = flat_token[picked]
            y = self.experts.forward_one(expert, tokens.index_select(0, token_ids))
            out.index_add_(0, token_ids, (y * flat_gate[picked, None]).to(out.dtype))
        return out

    def _dispatch_with_capacity(self, tokens, experts, gates) -> torch.Tensor:
        """GShard-style dispatch with fixed capacity C per expert, all experts in one bmm.

        Priority is by choice rank: every token's first choice is placed before any second
        choice, in token order. Assignments beyond C are dropped (sent to a scratch slot with
        gate 0), which keeps every shape static and avoids device syncs.
        """
        num_tokens, d_model = tokens.shape
        num_experts, top_k = self.num_experts, self.top_k
        capacity = min(num_tokens, math.ceil(self.capacity_factor * top_k * num_tokens / num_experts))
        expert_ck = experts.t().reshape(-1)                       # choice-major [k*N]
        gate_ck = gates.t().reshape(-1)
        token_ck = torch.arange(num_tokens, device=tokens.device).repeat(top_k)
        one_hot = F.one_hot(expert_ck, num_experts)
        position = (torch.cumsum(one_hot, dim=0) * one_hot).sum(dim=1) - 1
        kept = position < capacity
        scratch = num_experts * capacity
        slot = torch.where(kept, expert_ck * capacity + position, torch.full_like(position, scratch))
        buffers = tokens.new_zeros(scratch + 1, d_model)
        buffers.index_copy_(0, slot, tokens.index_select(0, token_ck))
        expert_out = self.experts.forward_batched(buffers[:scratch].view(num_experts, capacity, d_model))
        expert_out = torch.cat([expert_out.reshape(scratch, d_model),
                                expert_out.new_zeros(1, d_model)], dim=0)
        weight = torch.where(kept, gate_ck, torch.zeros_like(gate_ck))
        contribution = expert_out.index_select(0, slot).float() * weight[:, None]
        out = torch.zeros(num_tokens, d_model, device=tokens.device, dtype=torch.float32)
        out.index_add_(0, token_ck, contribution)
        return out.to(torch.promote_types(tokens.dtype, torch.float32))


class _autocast_disabled:
    """Context manager turning autocast off for one device type (works on torch 1.13 and 2.x)."""

    def __init__(self, device_type: str):
        self._ctx = torch.autocast(device_type=device_type, enabled=False) \
            if device_type in ("cuda", "cpu") else None

    def __enter__(self):
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False


def build_ffn(config: ModelConfig, stack: str, layer: int, opts: TrainingOptions) -> nn.Module:
    if layer in config.moe_layers(stack):
        moe = config.moe
        routing = moe.routing(stack)
        task_key = moe.task_key(stack) if routing == "task" else None
        num_keys = config.num_task_keys(stack) if routing == "task" else 0
        return MoEFFN(config.d_model, config.d_ff, moe.num_experts, moe.top_k, config.activation,
                      routing, task_key, num_keys, opts)
    return DenseFFN(config.d_model, config.dense_width(stack, layer), config.activation,
                    opts.activation_dropout)


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, opts: TrainingOptions):
        super().__init__()
        eps = config.layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=eps)
        self.self_attn = MultiHeadAttention(config.d_model, config.num_heads, opts.attention_dropout)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=eps)
        self.ffn = build_ffn(config, "encoder", layer, opts)
        self.dropout = opts.dropout

    def forward(self, x, src_pad_mask, ctx):
        h = self.self_attn_norm(x)
        x = x + F.dropout(self.self_attn(h, h, key_padding_mask=src_pad_mask), self.dropout, self.training)
        y, aux = self.ffn(self.ffn_norm(x), ctx)
        return x + F.dropout(y, self.dropout, self.training), aux


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, opts: TrainingOptions):
        super().__init__()
        eps = config.layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=eps)
        self.self_attn = MultiHeadAttention(config.d_model, config.num_heads, opts.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(config.d_model, eps=eps)
        self.cross_attn = MultiHeadAttention(config.d_model, config.num_heads, opts.attention_dropout)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=eps)
        self.ffn = build_ffn(config, "decoder", layer, opts)
        self.dropout = opts.dropout

    def forward(self, x, memory, src_pad_mask, ctx, cache: Optional[dict] = None):
        self_cache = cross_cache = None
        if cache is not None:
            self_cache = cache.setdefault("self", {})
            cross_cache = cache.setdefault("cross", {})
        h = self.self_attn_norm(x)
        x = x + F.dropout(self.self_attn(h, h, causal=True, cache=self_cache), self.dropout, self.training)
        h = self.cross_attn_norm(x)
        x = x + F.dropout(self.cross_attn(h, memory, key_padding_mask=src_pad_mask, cache=cross_cache,
                                          static_memory=True), self.dropout, self.training)
        y, aux = self.ffn(self.ffn_norm(x), ctx)
        return x + F.dropout(y, self.dropout, self.training), aux


class Stack(nn.Module):
    """Layers + final norm; holds its own embedding only when embeddings are untied."""

    def __init__(self, config: ModelConfig, stack: str, opts: TrainingOptions):
        super().__init__()
        layer_cls = EncoderLayer if stack == "encoder" else DecoderLayer
        if not config.tie_embeddings:
            self.embedding = nn.Embedding(config.vocab_size, config.d_model)
            if stack == "decoder":
                self.output_projection = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.layers = nn.ModuleList(layer_cls(config, i, opts) for i in range(config.num_layers(stack)))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class Transformer(nn.Module):
    """Encoder-decoder; `forward` for training, `encode`/`decode`/`project` for decoding."""

    def __init__(self, config: ModelConfig, opts: Optional[TrainingOptions] = None):
        super().__init__()
        config.validate()
        self.config = config
        self.opts = opts or TrainingOptions()
        if config.tie_embeddings:
            self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = Stack(config, "encoder", self.opts)
        self.decoder = Stack(config, "decoder", self.opts)
        self._init_parameters()
        # Lookup tables task index -> language index; not parameters, not exported.
        size = max([t.index for t in config.tasks] + [-1]) + 1
        source = torch.full((size,), -1, dtype=torch.long)
        target = torch.full((size,), -1, dtype=torch.long)
        for task in config.tasks:
            source[task.index] = config.languages.index(task.source)
            target[task.index] = config.languages.index(task.target)
        self.register_buffer("task_source_lang", source, persistent=False)
        self.register_buffer("task_target_lang", target, persistent=False)
        self.register_buffer("positions", sinusoidal_positions(config.max_positions, config.d_model),
                             persistent=False)

    def _init_parameters(self) -> None:
        output = None if self.config.tie_embeddings else self.decoder.output_projection
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not output:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embedding in self._embeddings():
            nn.init.normal_(embedding.weight, mean=0.0, std=self.config.d_model ** -0.5)
            with torch.no_grad():
                embedding.weight[self.config.pad_id].zero_()
        if not self.config.tie_embeddings:
            nn.init.normal_(self.decoder.output_projection.weight, std=self.config.d_model ** -0.5)

    def _embeddings(self) -> List[nn.Embedding]:
        if self.config.tie_embeddings:
            return [self.embedding]
        return [self.encoder.embedding, self.decoder.embedding]

    def _embedding(self, stack: str) -> nn.Embedding:
        if self.config.tie_embeddings:
            return self.embedding
        return self.encoder.embedding if stack == "encoder" else self.decoder.embedding

    def task_keys(self, task_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"target": self.task_target_lang[task_ids],
                "source": self.task_source_lang[task_ids],
                "pair": task_ids}

    def _embed(self, stack: str, ids: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        length = ids.shape[1]
        if start_pos + length > self.config.max_positions:
            raise ValueError(f"sequence of {start_pos + length} exceeds max_positions "
                             f"{self.config.max_positions}")
        x = self._embedding(stack)(ids)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        x = x + self.positions[start_pos:start_pos + length]
        return F.dropout(x, self.opts.dropout, self.training)

    def encode(self, src: torch.Tensor, task_ids: torch.Tensor):
        """src [B, S] -> (memory [B, S, d], src_pad_mask [B, S] True at padding, aux loss)."""
        src_pad_mask = src.eq(self.config.pad_id)
        ctx = RoutingContext(~src_pad_mask, self.task_keys(task_ids))
        x = self._embed("encoder", src)
        aux_total = None
        for layer in self.encoder.layers:
            x, aux = layer(x, src_pad_mask, ctx)
            aux_total = _add_aux(aux_total, aux)
        return self.encoder.final_norm(x), src_pad_mask, aux_total

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_pad_mask: torch.Tensor,
               task_ids: torch.Tensor, cache: Optional[List[dict]] = None, start_pos: int = 0):
        """tgt_in [B, T] (positions start_pos..) -> (hidden [B, T, d] after final norm, aux).

        With `cache` (a list with one dict per layer) decoding is incremental: pass only the
        new tokens and their start position.
        """
        token_mask = tgt_in.ne(self.config.pad_id) if cache is None else torch.ones_like(tgt_in, dtype=torch.bool)
        ctx = RoutingContext(token_mask, self.task_keys(task_ids))
        x = self._embed("decoder", tgt_in, start_pos)
        aux_total = None
        for i, layer in enumerate(self.decoder.layers):
            x, aux = layer(x, memory, src_pad_mask, ctx, None if cache is None else cache[i])
            aux_total = _add_aux(aux_total, aux)
        return self.decoder.final_norm(x), aux_total

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embedding.weight if self.config.tie_embeddings else self.decoder.output_projection.weight
        return F.linear(hidden, weight)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, task_ids: torch.Tensor):
        """Returns (logits [B, T, vocab], summed load-balancing loss or None)."""
        memory, src_pad_mask, enc_aux = self.encode(src, task_ids)
        hidden, dec_aux = self.decode(tgt_in, memory, src_pad_mask, task_ids)
        return self.project(hidden), _add_aux(enc_aux, dec_aux)

    def new_cache(self) -> List[dict]:
        return [{} for _ in self.decoder.layers]

    def num_moe_layers(self) -> int:
        if not hasattr(self, "_num_moe_layers"):
            self._num_moe_layers = sum(isinstance(m, MoEFFN) for m in self.modules())
        return self._num_moe_layers


def _add_aux(total, aux):
    if aux is None:
        return total
    return aux if total is None else total + aux


def reorder_cache(cache: List[dict], order: torch.Tensor) -> None:
    """Selects batch rows `order` of every cached key/value (beam search)."""
    for layer_cache in cache:
        for part in layer_cache.values():
            for name in ("k", "v"):
                if name in part:
                    part[name] = part[name].index_select(0, order)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.state_dict().values() if p.is_floating_point())
