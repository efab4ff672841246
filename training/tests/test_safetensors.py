"""Our safetensors writer/reader: round trips (F32, F16, BF16) and the loader's refusals."""

import json
import os
import struct
import tempfile
import unittest

import numpy as np
import torch

import fixtures  # noqa: F401  (sets the import path)
import export


class SafetensorsRoundTrip(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "t.safetensors")
        rng = np.random.default_rng(0)
        self.tensors = {"a.weight": rng.standard_normal((3, 5)).astype(np.float32),
                        "b": rng.standard_normal((7,)).astype(np.float32),
                        "c.stacked": rng.standard_normal((2, 3, 4)).astype(np.float32)}

    def tearDown(self):
        self.dir.cleanup()

    def test_f32_exact(self):
        export.write_safetensors(self.path, self.tensors, "F32", metadata={"k": "v"})
        tensors, dtypes, metadata = export.read_safetensors(self.path)
        self.assertEqual(metadata, {"k": "v"})
        for name, value in self.tensors.items():
            np.testing.assert_array_equal(tensors[name], value)
            self.assertEqual(dtypes[name], "F32")

    def test_bf16_matches_torch_rounding(self):
        export.write_safetensors(self.path, self.tensors, "BF16")
        tensors, dtypes, _ = export.read_safetensors(self.path)
        for name, value in self.tensors.items():
            expected = torch.from_numpy(value).to(torch.bfloat16).float().numpy()
            np.testing.assert_array_equal(tensors[name], expected)
            self.assertEqual(dtypes[name], "BF16")

    def test_bf16_bits_and_specials(self):
        values = np.array([1.0, -2.5, 0.0, np.inf, -np.inf, 1.00390625, 3.14159], dtype=np.float32)
        bits = export.float32_to_bf16_bits(values)
        torch_bits = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(bits, torch_bits)
        self.assertTrue(np.isnan(export.bf16_bits_to_float32(export.float32_to_bf16_bits(
            np.array([np.nan], np.float32))))[0])

    def test_f16(self):
        export.write_safetensors(self.path, self.tensors, "F16")
        tensors, _, _ = export.read_safetensors(self.path)
        for name, value in self.tensors.items():
            np.testing.assert_array_equal(tensors[name], value.astype(np.float16).astype(np.float32))

    def test_layout(self):
        export.write_safetensors(self.path, self.tensors, "BF16")
        with open(self.path, "rb") as f:
            raw = f.read()
        (header_len,) = struct.unpack("<Q", raw[:8])
        self.assertEqual(header_len % 8, 0, "header padded to 8 bytes")
        header = json.loads(raw[8:8 + header_len])
        end = 0
        for name in sorted(self.tensors):
            begin, stop = header[name]["data_offsets"]
            self.assertEqual(begin, end, "tensors back to back")
            self.assertEqual(header[name]["shape"], list(self.tensors[name].shape))
            end = stop
        self.assertEqual(8 + header_len + end, len(raw))
        # raw little-endian row-major data
        begin, stop = header["a.weight"]["data_offsets"]
        data = np.frombuffer(raw[8 + header_len + begin:8 + header_len + stop], dtype="<u2")
        np.testing.assert_array_equal(data, export.float32_to_bf16_bits(self.tensors["a.weight"]).reshape(-1))


class SafetensorsValidation(unittest.TestCase):
    """The reader refuses broken files and names the tensor at fault."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "bad.safetensors")

    def tearDown(self):
        self.dir.cleanup()

    def write_raw(self, header, data_len, header_len=None):
        body = json.dumps(header).encode()
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(body) if header_len is None else header_len))
            f.write(body)
            f.write(b"\0" * data_len)

    def assert_refused(self, pattern):
        with self.assertRaisesRegex(export.FormatError, pattern):
            export.read_safetensors(self.path)

    def test_header_past_end(self):
        self.write_raw({}, 0, header_len=10_000)
        self.assert_refused("past the end")

    def test_bad_json(self):
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", 4) + b"{not")
        self.assert_refused("JSON")

    def test_unknown_dtype(self):
        self.write_raw({"w": {"dtype": "I8", "shape": [2], "data_offsets": [0, 2]}}, 2)
        self.assert_refused("tensor w: unknown dtype")

    def test_out_of_bounds(self):
        self.write_raw({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8)
        self.assert_refused("tensor w: offsets")

    def test_size_mismatch(self):
        self.write_raw({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8)
        self.assert_refused("tensor w: 8 bytes")

    def test_overlap(self):
        self.write_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12)
        self.assert_refused("overlap")


if __name__ == "__main__":
    unittest.main()
