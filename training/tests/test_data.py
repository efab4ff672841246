"""Corpus discovery, sequence layout, batching and the resumable sampler."""

import os
import tempfile
import unittest

import numpy as np

import fixtures
import data as data_lib


class CorpusData(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.corpus = fixtures.synthetic_corpus()
        cls.tokenizer = data_lib.Tokenizer(fixtures.tiny_spm(cls.corpus))
        cls.info = data_lib.discover_corpus(cls.corpus)
        cls.vocab = data_lib.Vocab.build(cls.info, cls.tokenizer)

    def test_discovery(self):
        self.assertEqual(self.info.task_ids, ["de-en", "en-de", "en-fr", "fr-en"])
        self.assertEqual(self.info.languages, ["de", "en", "fr"])

    def test_sequences_follow_the_spec(self):
        dev = data_lib.load_split(self.info, "dev", self.tokenizer, keep_text=True)
        index = int(dev.task_indices(2)[0])   # en-fr
        batch = data_lib.collate(dev, [index], self.vocab)
        pieces_src = self.tokenizer.encode([dev.sources[index]])[0]
        pieces_tgt = self.tokenizer.encode([dev.references[index]])[0]
        tag = self.tokenizer.piece_to_id("<2fr>")
        self.assertEqual(batch["src"][0].tolist(), [tag] + pieces_src + [self.tokenizer.eos_id])
        self.assertEqual(batch["tgt_in"][0].tolist(), [self.tokenizer.bos_id] + pieces_tgt)
        self.assertEqual(batch["labels"][0].tolist(), pieces_tgt + [self.tokenizer.eos_id])
        self.assertEqual(batch["task"].tolist(), [2])
        self.assertEqual(batch["src_lang"].tolist(), [1])   # en
        self.assertEqual(batch["tgt_lang"].tolist(), [2])   # fr

    def test_cache_gives_identical_tokens(self):
        with tempfile.TemporaryDirectory() as cache:
            first = data_lib.load_split(self.info, "train", self.tokenizer, cache)
            self.assertTrue(any(name.endswith(".npz") for name in os.listdir(cache)))
            second = data_lib.load_split(self.info, "train", self.tokenizer, cache)
        np.testing.assert_array_equal(first.src.ids, second.src.ids)
        np.testing.assert_array_equal(first.tgt.offsets, second.tgt.offsets)
        np.testing.assert_array_equal(first.task, second.task)

    def test_sampler_bounds_mixes_and_resumes(self):
        train = data_lib.load_split(self.info, "train", self.tokenizer)
        sampler = data_lib.TaskMixingBatchSampler(train, 4, max_tokens=300, max_len=64, seed=3, pool_batches=8)
        stream = iter(sampler)
        lengths = np.maximum(train.src_lengths(), train.tgt_lengths())
        mixed = 0
        for _ in range(20):
            batch = next(stream)
            self.assertLessEqual(len(batch) * lengths[batch].max(), 300)
            mixed += len(set(train.task[batch].tolist())) > 1
        self.assertGreater(mixed, 10, "batches mix tasks")
        state = sampler.state_dict()
        expected = [next(stream).tolist() for _ in range(25)]
        resumed = data_lib.TaskMixingBatchSampler(train, 4, max_tokens=300, max_len=64, seed=3, pool_batches=8)
        resumed.load_state_dict(state)
        self.assertEqual([b.tolist() for b, _ in zip(iter(resumed), range(25))], expected)

    def test_temperature(self):
        np.testing.assert_allclose(data_lib.task_sampling_probs([100, 1], 1.0), [100 / 101, 1 / 101])
        np.testing.assert_allclose(data_lib.task_sampling_probs([100, 1], 0), [0.5, 0.5])
        np.testing.assert_allclose(data_lib.task_sampling_probs([100, 1], 2.0), [10 / 11, 1 / 11])


if __name__ == "__main__":
    unittest.main()
