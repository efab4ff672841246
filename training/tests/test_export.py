"""Export to the model directory format: names and shapes per the spec, exact round trip."""

import json
import os
import shutil
import tempfile
import unittest

import numpy as np
import torch

import fixtures
import export
import model as model_lib


def spec_names_for_layer(stack, i, kind):
    """The spec table, written out by hand for one layer (independent of export.expected_tensors)."""
    p = f"{stack}.layers.{i}"
    attns = ["self_attn"] + (["cross_attn"] if stack == "decoder" else [])
    names = {f"{p}.ffn_norm.weight", f"{p}.ffn_norm.bias"}
    for a in attns:
        names |= {f"{p}.{a}_norm.weight", f"{p}.{a}_norm.bias"}
        names |= {f"{p}.{a}.{x}_proj.{w}" for x in ("q", "k", "v", "out") for w in ("weight", "bias")}
    if kind == "dense":
        names |= {f"{p}.ffn.fc1.weight", f"{p}.ffn.fc1.bias", f"{p}.ffn.fc2.weight", f"{p}.ffn.fc2.bias"}
    else:
        names |= {f"{p}.ffn.experts.fc1.weight", f"{p}.ffn.experts.fc1.bias",
                  f"{p}.ffn.experts.fc2.weight", f"{p}.ffn.experts.fc2.bias"}
        names.add(f"{p}.ffn.router.weight" if kind == "token" else f"{p}.ffn.router.task_logits")
    return names


class ExportNamesAndShapes(unittest.TestCase):
    def check(self, config):
        torch.manual_seed(0)
        model = model_lib.Transformer(config)
        tensors = export.model_tensors(model)
        expected = set()
        if config.tie_embeddings:
            expected.add("embedding.weight")
        else:
            expected |= {"encoder.embedding.weight", "decoder.embedding.weight",
                         "decoder.output_projection.weight"}
        for stack in ("encoder", "decoder"):
            expected |= {f"{stack}.final_norm.weight", f"{stack}.final_norm.bias"}
            for i in range(config.num_layers(stack)):
                moe = i in config.moe_layers(stack)
                expected |= spec_names_for_layer(stack, i, config.routing(stack) if moe else "dense")
        self.assertEqual(set(tensors), expected)
        # the same through the code table used by the loader
        self.assertEqual({k: tuple(v.shape) for k, v in tensors.items()}, export.expected_tensors(config))
        return tensors

    def test_dense(self):
        config = fixtures.tiny_config("dense")
        tensors = self.check(config)
        self.assertEqual(tuple(tensors["encoder.layers.0.ffn.fc1.weight"].shape), (24, 16))
        self.assertEqual(tuple(tensors["decoder.layers.2.ffn.fc2.weight"].shape), (16, 24))
        self.assertEqual(tuple(tensors["embedding.weight"].shape), (64, 16))

    def test_tokenmoe(self):
        tensors = self.check(fixtures.tiny_config("tokenmoe"))
        self.assertEqual(tuple(tensors["encoder.layers.1.ffn.experts.fc1.weight"].shape), (4, 24, 16))
        self.assertEqual(tuple(tensors["encoder.layers.1.ffn.experts.fc1.bias"].shape), (4, 24))
        self.assertEqual(tuple(tensors["decoder.layers.1.ffn.experts.fc2.weight"].shape), (4, 16, 24))
        self.assertEqual(tuple(tensors["decoder.layers.1.ffn.experts.fc2.bias"].shape), (4, 16))
        self.assertEqual(tuple(tensors["decoder.layers.1.ffn.router.weight"].shape), (4, 16))

    def test_taskmoe_keys(self):
        config = fixtures.tiny_config("taskmoe", encoder_key="source", decoder_key="pair")
        tensors = self.check(config)
        self.assertEqual(tuple(tensors["encoder.layers.1.ffn.router.task_logits"].shape), (3, 4))  # languages
        self.assertEqual(tuple(tensors["decoder.layers.1.ffn.router.task_logits"].shape), (4, 4))  # tasks

    def test_hybrid_untied_gelu(self):
        self.check(fixtures.tiny_config("taskmoe", encoder_routing="token", tie=False, activation="gelu"))


class ExportRoundTrip(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def roundtrip(self, config, dtype):
        torch.manual_seed(1)
        model = model_lib.Transformer(config).eval()
        out = os.path.join(self.dir.name, f"m-{dtype}")
        export.export_model(model, out, None, dtype, training_info={"kind": "test"})
        loaded, dtypes = export.load_model_dir(out)
        self.assertEqual(set(dtypes.values()), {export.EXPORT_DTYPES[dtype]})
        src, tgt, tasks = fixtures.random_batch(config)
        with torch.no_grad():
            if dtype == "bf16":  # the reference is the model with bf16-rounded weights
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
            expected, _ = model(src, tgt, tasks)
            actual, _ = loaded(src, tgt, tasks)
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
        return out

    def test_identical_logits_all_kinds(self):
        for kind in ("dense", "tokenmoe", "taskmoe"):
            with self.subTest(kind=kind):
                self.roundtrip(fixtures.tiny_config(kind), "f32")

    def test_identical_logits_bf16(self):
        self.roundtrip(fixtures.tiny_config("taskmoe", encoder_routing="token"), "bf16")

    def test_config_json(self):
        out = self.roundtrip(fixtures.tiny_config("taskmoe", encoder_routing="token"), "f32")
        with open(os.path.join(out, "config.json")) as f:
            obj = json.load(f)
        self.assertEqual(obj["format_version"], 1)
        self.assertEqual(obj["architecture"], "transformer-encoder-decoder")
        self.assertEqual(obj["norm"], "pre")
        self.assertEqual(obj["special_tokens"], {"pad": 0, "unk": 1, "bos": 2, "eos": 3})
        self.assertEqual(obj["moe"], {"num_experts": 4, "top_k": 2, "encoder_layers": [1],
                                      "decoder_layers": [1], "encoder_routing": "token",
                                      "decoder_routing": "task", "encoder_task_key": None,
                                      "decoder_task_key": "target"})
        self.assertEqual(obj["tasks"][1], {"id": "en-de", "source": "en", "target": "de", "index": 1,
                                           "target_tag": "<2de>", "target_tag_id": 4})
        self.assertIsNone(obj["extracted"])
        # The weights' digest, bound to the config (no tokenizer was exported here).
        self.assertEqual(obj["files"],
                         {"model.safetensors": export.file_sha256(os.path.join(out, "model.safetensors"))})
        self.assertEqual(obj["training"], {"kind": "test"})
        spec_keys = ["format_version", "architecture", "d_model", "num_heads", "encoder_layers",
                     "decoder_layers", "d_ff", "encoder_ffn_dims", "decoder_ffn_dims", "activation",
                     "norm", "layer_norm_eps", "vocab_size", "max_positions", "position_encoding",
                     "scale_embeddings", "tie_embeddings", "special_tokens", "languages", "tasks",
                     "moe", "extracted", "files", "training"]
        self.assertEqual(list(obj), spec_keys)

    def test_loader_refuses_weights_of_another_model(self):
        # The same architecture stored in bf16: every tensor fits, only the bytes differ.
        out = self.roundtrip(fixtures.tiny_config("dense"), "f32")
        other = self.roundtrip(fixtures.tiny_config("dense"), "bf16")
        shutil.copyfile(os.path.join(other, "model.safetensors"), os.path.join(out, "model.safetensors"))
        with self.assertRaisesRegex(export.FormatError,
                                    r"model.safetensors has digest sha256:[0-9a-f]{64} but config.json "
                                    r"records sha256:[0-9a-f]{64}"):
            export.load_model_dir(out)

    def test_loader_refuses_shape_mismatch_and_extra_tensor(self):
        config = fixtures.tiny_config("dense")
        model = model_lib.Transformer(config)
        tensors = {k: v.numpy() for k, v in export.model_tensors(model).items()}
        out = os.path.join(self.dir.name, "bad")
        export.export_model(model, out, None, "f32")
        weights = os.path.join(out, "model.safetensors")
        bad = dict(tensors)
        bad["encoder.layers.0.ffn.fc1.weight"] = np.zeros((25, 16), np.float32)
        export.write_safetensors(weights, bad)
        with self.assertRaisesRegex(export.FormatError, "encoder.layers.0.ffn.fc1.weight has shape"):
            export.load_model_dir(out)
        bad = dict(tensors, extra=np.zeros(2, np.float32))
        export.write_safetensors(weights, bad)
        with self.assertRaisesRegex(export.FormatError, "unexpected tensor extra"):
            export.load_model_dir(out)
        bad = dict(tensors)
        del bad["decoder.final_norm.bias"]
        export.write_safetensors(weights, bad)
        with self.assertRaisesRegex(export.FormatError, "missing tensor decoder.final_norm.bias"):
            export.load_model_dir(out)

    def test_positions_are_interleaved_sinusoids(self):
        table = model_lib.sinusoidal_positions(5, 8)
        p, i = 3, 2
        self.assertAlmostEqual(float(table[p, 2 * i]), np.sin(p / 10000 ** (2 * i / 8)), places=6)
        self.assertAlmostEqual(float(table[p, 2 * i + 1]), np.cos(p / 10000 ** (2 * i / 8)), places=6)


if __name__ == "__main__":
    unittest.main()
