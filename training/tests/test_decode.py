"""Decoding: the KV cache changes nothing, and beam search scores what it returns."""

import unittest

import torch

import fixtures
import model as model_lib
import translate


def trained_like_model(config, seed=0):
    """A random model with varied, peaked outputs.

    The configs are untied: with tied embeddings a random model just repeats its input token
    (the residual stream carries the input embedding into the output projection).
    """
    torch.manual_seed(seed)
    model = model_lib.Transformer(config).eval()
    with torch.no_grad():
        model.decoder.output_projection.weight.mul_(4)
        model.decoder.output_projection.weight[config.eos_id].mul_(1.5)
    return model


class Decoding(unittest.TestCase):
    def setUp(self):
        self.configs = [fixtures.tiny_config("dense", tie=False),
                        fixtures.tiny_config("taskmoe", encoder_routing="token", tie=False),
                        fixtures.tiny_config("tokenmoe", tie=False)]

    def test_incremental_logits_equal_full_recompute(self):
        for config in self.configs:
            model = trained_like_model(config)
            src, tgt, tasks = fixtures.random_batch(config, tgt_len=6)
            tgt[:, :] = torch.where(tgt.eq(config.pad_id), torch.full_like(tgt, 9), tgt)  # no padding
            with torch.no_grad():
                full, _ = model(src, tgt, tasks)
                memory, mask, _ = model.encode(src, tasks)
                cache = model.new_cache()
                steps = [model.project(model.decode(tgt[:, t:t + 1], memory, mask, tasks, cache, start_pos=t)[0])
                         for t in range(tgt.shape[1])]
            torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)

    def test_greedy_with_and_without_cache_agree(self):
        for config in self.configs:
            model = trained_like_model(config)
            src, _, tasks = fixtures.random_batch(config, batch=6)
            cached = translate.greedy_decode(model, src, tasks, max_len=12)
            recomputed = translate.greedy_decode(model, src, tasks, max_len=12, use_cache=False)
            self.assertEqual(cached, recomputed)

    def test_beam_returns_its_score(self):
        config = self.configs[1]
        model = trained_like_model(config)
        src, _, tasks = fixtures.random_batch(config, batch=4)
        for alpha in (0.0, 1.0):
            hyps, scores = translate.beam_search(model, src, tasks, beam_size=3, length_penalty=alpha, max_len=8)
            for row, (hyp, score) in enumerate(zip(hyps, scores)):
                tokens = torch.tensor([[config.bos_id] + hyp + [config.eos_id]])
                with torch.no_grad():
                    memory, mask, _ = model.encode(src[row:row + 1], tasks[row:row + 1])
                    hidden, _ = model.decode(tokens[:, :-1], memory, mask, tasks[row:row + 1])
                    log_probs = translate.next_token_log_probs(model, hidden[0])
                total = float(log_probs.gather(1, tokens[0, 1:, None]).sum())
                self.assertAlmostEqual(score, total / (len(hyp) + 1) ** alpha, places=4)

    def test_beam_size_one_is_greedy(self):
        config = self.configs[2]
        model = trained_like_model(config)
        src, _, tasks = fixtures.random_batch(config, batch=4)
        self.assertEqual(translate.beam_search(model, src, tasks, beam_size=1, max_len=8)[0],
                         translate.greedy_decode(model, src, tasks, max_len=8))

    def test_batch_composition_does_not_matter(self):
        for config in self.configs:
            model = trained_like_model(config)
            src, _, tasks = fixtures.random_batch(config, batch=5)
            batched, batched_scores = translate.beam_search(model, src, tasks, beam_size=3, max_len=10)
            greedy = translate.greedy_decode(model, src, tasks, max_len=10)
            for row in range(5):
                alone = src[row:row + 1, :int(src[row].ne(config.pad_id).sum())]
                hyp, score = translate.beam_search(model, alone, tasks[row:row + 1], beam_size=3, max_len=10)
                self.assertEqual(hyp[0], batched[row])
                self.assertAlmostEqual(score[0], batched_scores[row], places=4)
                self.assertEqual(translate.greedy_decode(model, alone, tasks[row:row + 1], max_len=10)[0],
                                 greedy[row])

    def test_greedy_length_limit_is_per_sentence(self):
        # Without a cap, each sentence stops after floor(1.5 * source length + 10) steps, as the
        # C++ engine's max_output_ratio rule does, whatever else is in the batch.
        for config in self.configs:
            model = trained_like_model(config)
            src, _, tasks = fixtures.random_batch(config, batch=4, src_len=12)
            src[0, 3:] = config.pad_id  # a short sentence next to long ones
            greedy = translate.greedy_decode(model, src, tasks, max_len_a=0.5, max_len_b=1)
            for row in range(4):
                length = int(src[row].ne(config.pad_id).sum())
                self.assertLessEqual(len(greedy[row]), int(0.5 * length + 1))
                alone = src[row:row + 1, :length]
                self.assertEqual(translate.greedy_decode(model, alone, tasks[row:row + 1], max_len_a=0.5,
                                                         max_len_b=1)[0], greedy[row])


if __name__ == "__main__":
    unittest.main()
