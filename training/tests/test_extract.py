"""Extracted subnetworks compute exactly what the full model computes for their task."""

import os
import tempfile
import unittest

import torch

import fixtures
import export
import extract_reference
import model as model_lib


def assert_close_on_tokens(test, actual, expected, tgt, pad_id):
    """Compares logits at real target positions (MoE layers skip padding, dense ones do not)."""
    mask = tgt.ne(pad_id)
    torch.testing.assert_close(actual[mask], expected[mask], rtol=1e-5, atol=1e-5)


class Extraction(unittest.TestCase):
    def full_model(self, config, seed=0):
        torch.manual_seed(seed)
        model = model_lib.Transformer(config).eval()
        with torch.no_grad():   # non-zero biases so the bias folding is exercised
            for name, p in model.named_parameters():
                if "experts" in name and name.endswith("bias"):
                    p.normal_(0, 0.5)
        return model

    def check_all_tasks(self, config):
        full = self.full_model(config)
        tensors = export.model_tensors(full)
        for task in config.tasks:
            with self.subTest(task=task.id):
                sub_config, sub_tensors = extract_reference.extract(config, tensors, task.id, "sha256:test")
                sub = model_lib.Transformer(sub_config).eval()
                sub.load_state_dict(sub_tensors, strict=True)
                self.assertEqual(export.expected_tensors(sub_config),
                                 {k: tuple(v.shape) for k, v in sub_tensors.items()})
                src, tgt, tasks = fixtures.random_batch(config, batch=4, task_ids=[task.index] * 4, seed=task.index)
                with torch.no_grad():
                    expected, _ = full(src, tgt, tasks)
                    actual, _ = sub(src, tgt, tasks)
                assert_close_on_tokens(self, actual, expected, tgt, config.pad_id)
                yield task, sub_config

    def test_task_routing_target_keys(self):
        for task, sub in self.check_all_tasks(fixtures.tiny_config("taskmoe")):
            self.assertIsNone(sub.moe, "no MoE layer is left")
            self.assertEqual(sub.encoder_ffn_dims, [24, 48])
            self.assertEqual(sub.decoder_ffn_dims, [24, 48, 24])
            self.assertEqual([t.id for t in sub.tasks], [task.id])
            self.assertEqual(sub.tasks[0].index, task.index)
            kept = sub.extracted["experts_kept"]
            self.assertEqual(sorted(kept), ["decoder.layers.1", "encoder.layers.1"])
            gates = kept["decoder.layers.1"]["gates"]
            self.assertGreaterEqual(gates[0], gates[1])      # gate order, largest first
            self.assertAlmostEqual(sum(gates), 1.0, places=6)

    def test_task_routing_source_and_pair_keys(self):
        list(self.check_all_tasks(fixtures.tiny_config("taskmoe", encoder_key="source", decoder_key="pair")))

    def test_top1_and_top3(self):
        list(self.check_all_tasks(fixtures.tiny_config("taskmoe", top_k=1)))
        list(self.check_all_tasks(fixtures.tiny_config("taskmoe", top_k=3, activation="gelu")))

    def test_token_encoder_task_decoder_hybrid(self):
        config = fixtures.tiny_config("taskmoe", encoder_routing="token", layers=(4, 4))
        for _, sub in self.check_all_tasks(config):
            self.assertEqual(sub.moe.encoder_routing, "token")
            self.assertEqual(sub.moe.encoder_layers, [1, 3])
            self.assertEqual(sub.moe.decoder_routing, "none")
            self.assertEqual(sub.moe.decoder_layers, [])
            self.assertIsNone(sub.encoder_ffn_dims)
            self.assertEqual(sub.decoder_ffn_dims, [24, 48, 24, 48])
            self.assertEqual(sub.extracted["experts_kept"]["encoder.layers.1"], "all")

    def test_directory_round_trip(self):
        config = fixtures.tiny_config("taskmoe", encoder_routing="token")
        full = self.full_model(config)
        with tempfile.TemporaryDirectory() as tmp:
            parent = export.export_model(full, os.path.join(tmp, "parent"), None, "f32")
            out = extract_reference.extract_dir(parent, "en-fr", os.path.join(tmp, "en-fr"))
            sub, _ = export.load_model_dir(out)
            self.assertEqual(sub.config.extracted["parent_digest"],
                             export.file_sha256(os.path.join(parent, "model.safetensors")))
            self.assertEqual(sub.config.extracted["parent_parameters"], model_lib.count_parameters(full))
            task = config.task_by_id("en-fr")
            src, tgt, tasks = fixtures.random_batch(config, task_ids=[task.index] * 5)
            with torch.no_grad():
                assert_close_on_tokens(self, sub(src, tgt, tasks)[0], full(src, tgt, tasks)[0], tgt,
                                       config.pad_id)

    def test_unfolded_subnetworks_are_refused_by_name(self):
        # `taskmoe-extract --keep_experts` writes them for the server; the trainer reads only
        # folded ones and says which field stops it.
        config = fixtures.tiny_config("taskmoe")
        sub, _ = extract_reference.extract(config, self.full_model(config).state_dict(), "en-fr")
        layer = next(iter(sub.extracted["experts_kept"]))
        sub.extracted["experts_kept"][layer]["form"] = "unfolded"
        with self.assertRaisesRegex(ValueError, f"experts_kept.{layer}.form is 'unfolded'"):
            sub.validate()
        sub.extracted["experts_kept"][layer]["form"] = "folded"
        sub.validate()


if __name__ == "__main__":
    unittest.main()
