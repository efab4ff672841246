"""The model computes what docs/model-format.md says: gating, MoE dispatch, the whole network.

The whole-network check is against a naive numpy implementation written from the spec text
(per-token loops, no batching tricks), with the model in eval mode.
"""

import math
import unittest

import numpy as np
import torch

import fixtures
import export
import model as model_lib


def naive_gates(logits, k):
    """softmax over all experts, top-k (ties: lower index first), renormalise."""
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = sorted(range(len(p)), key=lambda e: (-p[e], e))[:k]
    total = sum(p[e] for e in order)
    return [p[e] / total for e in order], order


class Gating(unittest.TestCase):
    def test_matches_naive(self):
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(50, 8, generator=gen) * 3
        for k in (1, 2, 3, 8):
            gates, experts, probs = model_lib.topk_gates(logits, k)
            for row in range(logits.shape[0]):
                ref_gates, ref_experts = naive_gates(logits[row].numpy(), k)
                self.assertEqual(experts[row].tolist(), ref_experts)
                np.testing.assert_allclose(gates[row].numpy(), ref_gates, rtol=1e-6)
            torch.testing.assert_close(gates.sum(-1), torch.ones(50))

    def test_ties_go_to_lower_index(self):
        logits = torch.tensor([[0.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
        _, experts, _ = model_lib.topk_gates(logits, 2)
        self.assertEqual(experts.tolist(), [[1, 2], [0, 1]])


def naive_ffn(x, w1, b1, w2, b2, act):
    h = w1 @ x + b1
    h = np.maximum(h, 0) if act == "relu" else 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    return w2 @ h + b2


class MoEDispatch(unittest.TestCase):
    def make_layer(self, routing, capacity_factor=1.25, seed=0):
        torch.manual_seed(seed)
        opts = model_lib.TrainingOptions(capacity_factor=capacity_factor)
        return model_lib.MoEFFN(16, 24, 6, 2, "gelu", routing, "pair" if routing == "task" else None,
                                4, opts)

    def context(self, batch=3, length=5):
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[0, 3:] = False
        tasks = torch.tensor([0, 2, 3])
        return model_lib.RoutingContext(mask, {"pair": tasks, "target": tasks, "source": tasks}), mask, tasks

    def test_token_routing_matches_naive(self):
        layer = self.make_layer("token").eval().requires_grad_(False)
        ctx, mask, _ = self.context()
        x = torch.randn(3, 5, 16)
        with torch.no_grad():
            y, aux = layer(x, ctx)
        self.assertIsNone(aux)
        e = layer.experts
        for b in range(3):
            for t in range(5):
                if not mask[b, t]:
                    self.assertEqual(float(y[b, t].abs().sum()), 0.0)
                    continue
                xt = x[b, t].double().numpy()
                gates, experts = naive_gates(layer.router.weight.double().numpy() @ xt, 2)
                ref = sum(g * naive_ffn(xt, e.fc1.weight[i].double().numpy(), e.fc1.bias[i].double().numpy(),
                                        e.fc2.weight[i].double().numpy(), e.fc2.bias[i].double().numpy(), "gelu")
                          for g, i in zip(gates, experts))
                np.testing.assert_allclose(y[b, t].numpy(), ref, rtol=1e-4, atol=1e-5)

    def test_task_routing_uses_one_row_per_example(self):
        layer = self.make_layer("task").eval().requires_grad_(False)
        ctx, mask, tasks = self.context()
        x = torch.randn(3, 5, 16)
        with torch.no_grad():
            y, _ = layer(x, ctx)
        e = layer.experts
        for b in range(3):
            gates, experts = naive_gates(layer.router.task_logits[tasks[b]].detach().double().numpy(), 2)
            for t in range(int(mask[b].sum())):
                xt = x[b, t].double().numpy()
                ref = sum(g * naive_ffn(xt, e.fc1.weight[i].double().numpy(), e.fc1.bias[i].double().numpy(),
                                        e.fc2.weight[i].double().numpy(), e.fc2.bias[i].double().numpy(), "gelu")
                          for g, i in zip(gates, experts))
                np.testing.assert_allclose(y[b, t].numpy(), ref, rtol=1e-4, atol=1e-5)

    def test_capacity_path_equals_per_expert_path_when_nothing_drops(self):
        layer = self.make_layer("token", capacity_factor=100.0)
        ctx, _, _ = self.context()
        x = torch.randn(3, 5, 16)
        layer.train()  # capacity dispatch (no dropout configured)
        y_train, aux = layer(x, ctx)
        self.assertGreater(float(aux), 0.0)
        layer.eval()
        y_eval, _ = layer(x, ctx)
        torch.testing.assert_close(y_train, y_eval, rtol=1e-5, atol=1e-6)

    def test_dense_and_gather_dispatch_agree(self):
        for routing in ("token", "task"):
            layer = self.make_layer(routing, capacity_factor=0)   # no dropping: dispatch by mode
            ctx, mask, _ = self.context()
            x = torch.randn(3, 5, 16)
            results = {}
            for mode in ("dense", "gather"):
                layer.dispatch_override = mode
                layer.train()
                torch.manual_seed(5)
                y, aux = layer(x, ctx)
                layer.zero_grad()
                (y.square().sum() + aux).backward()
                router = layer.router.weight if routing == "token" else layer.router.task_logits
                results[mode] = (y.detach(), float(aux), router.grad.clone(), layer.experts.fc2.weight.grad.clone())
            for a, b in zip(results["dense"], results["gather"]):
                torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-5, atol=1e-6)
            self.assertEqual(float(results["dense"][0][0, 3:].abs().sum()), 0.0, "padding outputs 0")

    def test_capacity_drops_overflow_tokens(self):
        layer = self.make_layer("token", capacity_factor=0.25)
        with torch.no_grad():   # route every token to experts 0 (first) and 1 (second)
            layer.router.weight.zero_()
        ctx, mask, _ = self.context()
        x = torch.randn(3, 5, 16)
        layer.train()
        y, _ = layer(x, ctx)
        n = int(mask.sum())
        capacity = math.ceil(0.25 * 2 * n / 6)
        kept_rows = (y.reshape(-1, 16)[ctx.token_index].abs().sum(-1) > 0).sum()
        self.assertEqual(int(kept_rows), capacity)   # only the first C tokens get any expert

    def test_backward_reaches_router_and_experts(self):
        for routing in ("token", "task"):
            layer = self.make_layer(routing)
            ctx, _, _ = self.context()
            layer.train()
            y, aux = layer(torch.randn(3, 5, 16), ctx)
            (y.sum() + aux).backward()
            router = layer.router.weight if routing == "token" else layer.router.task_logits
            self.assertGreater(float(router.grad.abs().sum()), 0.0)
            self.assertGreater(float(layer.experts.fc1.weight.grad.abs().sum()), 0.0)


# --------------------------------------------------------------------------------------------
# Whole network vs a naive numpy implementation of the spec
# --------------------------------------------------------------------------------------------

class NaiveSpecModel:
    """docs/model-format.md, transcribed literally, one sentence and one token at a time."""

    def __init__(self, config, tensors):
        self.c = config
        self.t = {k: v.detach().double().numpy() for k, v in tensors.items()}

    def layer_norm(self, x, name):
        mean, var = x.mean(), x.var()
        return (x - mean) / np.sqrt(var + self.c.layer_norm_eps) * self.t[name + ".weight"] + self.t[name + ".bias"]

    def linear(self, x, name):
        return self.t[name + ".weight"] @ x + self.t[name + ".bias"]

    def embed(self, stack, ids):
        table = self.t["embedding.weight"] if self.c.tie_embeddings else self.t[f"{stack}.embedding.weight"]
        d = self.c.d_model
        out = []
        for p, token in enumerate(ids):
            pe = np.zeros(d)
            for i in range(d // 2):
                pe[2 * i] = math.sin(p / 10000 ** (2 * i / d))
                pe[2 * i + 1] = math.cos(p / 10000 ** (2 * i / d))
            out.append(table[token] * (math.sqrt(d) if self.c.scale_embeddings else 1.0) + pe)
        return out

    def attention(self, queries, keys, name, visible):
        h = self.c.num_heads
        hd = self.c.d_model // h
        q = [self.linear(x, f"{name}.q_proj") for x in queries]
        k = [self.linear(x, f"{name}.k_proj") for x in keys]
        v = [self.linear(x, f"{name}.v_proj") for x in keys]
        out = []
        for qi, qv in enumerate(q):
            heads = []
            for head in range(h):
                s = slice(head * hd, (head + 1) * hd)
                scores = np.array([qv[s] @ kv[s] / math.sqrt(hd) if visible(qi, ki) else -np.inf
                                   for ki, kv in enumerate(k)])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                heads.append(sum(wi * vv[s] for wi, vv in zip(w, v)))
            out.append(self.linear(np.concatenate(heads), f"{name}.out_proj"))
        return out

    def ffn(self, x, stack, i, task):
        p = f"{stack}.layers.{i}.ffn"
        act = self.c.activation
        if i not in self.c.moe_layers(stack):
            return naive_ffn(x, self.t[p + ".fc1.weight"], self.t[p + ".fc1.bias"], self.t[p + ".fc2.weight"],
                             self.t[p + ".fc2.bias"], act)
        if self.c.routing(stack) == "token":
            logits = self.t[p + ".router.weight"] @ x
        else:
            key = {"target": self.c.languages.index(task.target), "source": self.c.languages.index(task.source),
                   "pair": task.index}[self.c.moe.task_key(stack)]
            logits = self.t[p + ".router.task_logits"][key]
        gates, experts = naive_gates(logits, self.c.moe.top_k)
        return sum(g * naive_ffn(x, self.t[p + ".experts.fc1.weight"][e], self.t[p + ".experts.fc1.bias"][e],
                                 self.t[p + ".experts.fc2.weight"][e], self.t[p + ".experts.fc2.bias"][e], act)
                   for g, e in zip(gates, experts))

    def logits(self, src, tgt, task):
        x = self.embed("encoder", src)
        for i in range(self.c.encoder_layers):
            p = f"encoder.layers.{i}"
            h = [self.layer_norm(v, p + ".self_attn_norm") for v in x]
            x = [a + b for a, b in zip(x, self.attention(h, h, p + ".self_attn", lambda q, k: True))]
            x = [v + self.ffn(self.layer_norm(v, p + ".ffn_norm"), "encoder", i, task) for v in x]
        memory = [self.layer_norm(v, "encoder.final_norm") for v in x]
        y = self.embed("decoder", tgt)
        for i in range(self.c.decoder_layers):
            p = f"decoder.layers.{i}"
            h = [self.layer_norm(v, p + ".self_attn_norm") for v in y]
            y = [a + b for a, b in zip(y, self.attention(h, h, p + ".self_attn", lambda q, k: k <= q))]
            h = [self.layer_norm(v, p + ".cross_attn_norm") for v in y]
            y = [a + b for a, b in zip(y, self.attention(h, memory, p + ".cross_attn", lambda q, k: True))]
            y = [v + self.ffn(self.layer_norm(v, p + ".ffn_norm"), "decoder", i, task) for v in y]
        out = self.t["embedding.weight"] if self.c.tie_embeddings else self.t["decoder.output_projection.weight"]
        return np.stack([out @ self.layer_norm(v, "decoder.final_norm") for v in y])


class WholeNetworkMatchesSpec(unittest.TestCase):
    def check(self, config):
        torch.manual_seed(3)
        model = model_lib.Transformer(config).eval()
        with torch.no_grad():   # non-trivial norms and biases, so their use is checked too
            for name, p in model.named_parameters():
                if name.endswith(".bias") or "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        src, tgt, tasks = fixtures.random_batch(config, batch=3, src_len=6, tgt_len=5)
        with torch.no_grad():
            logits, _ = model(src, tgt, tasks)
        naive = NaiveSpecModel(config, export.model_tensors(model))
        for b in range(src.shape[0]):
            s = [int(t) for t in src[b] if t != config.pad_id]
            t = [int(t) for t in tgt[b] if t != config.pad_id]
            ref = naive.logits(s, t, config.tasks[int(tasks[b])])
            np.testing.assert_allclose(logits[b, :len(t)].numpy(), ref, rtol=1e-4, atol=1e-4)

    def test_dense(self):
        self.check(fixtures.tiny_config("dense", layers=(2, 2)))

    def test_tokenmoe_gelu_untied(self):
        self.check(fixtures.tiny_config("tokenmoe", layers=(2, 2), activation="gelu", tie=False))

    def test_taskmoe_source_and_pair_keys(self):
        self.check(fixtures.tiny_config("taskmoe", layers=(2, 2), encoder_key="source", decoder_key="pair"))


if __name__ == "__main__":
    unittest.main()
