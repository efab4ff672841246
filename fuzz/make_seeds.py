#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets: fuzz/corpus/<target>/seed-*.

    /usr/bin/python3 fuzz/make_seeds.py

Seeds are small valid (and a few nearly valid) inputs that give libFuzzer a head start: the
demo model's and the test fixtures' config.json, tiny safetensors files, tiny whole models
(config + NUL + safetensors), sentences, tiny SentencePiece models and serialised requests. The
output is deterministic; every file stays under 100 KB. Only files named seed-* are rewritten:
regression inputs (regression-*, docs/fuzzing.md) are left alone.

Needs Python 3 and, for the SentencePiece models, Debian's python3-sentencepiece (tools/setup.sh
test); no NumPy, no PyTorch.
"""

import io
import json
import os
import random
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
MAX_SEED_BYTES = 100_000


def write_seeds(target, seeds):
    """Replaces fuzz/corpus/<target>/seed-* with `seeds` ({name: bytes})."""
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("seed-"):
            os.remove(os.path.join(directory, name))
    for name, data in sorted(seeds.items()):
        assert len(data) < MAX_SEED_BYTES, (target, name, len(data))
        with open(os.path.join(directory, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


# --- safetensors --------------------------------------------------------------------------

def half_bits(value):
    return struct.unpack("<H", struct.pack("<e", value))[0]


def bf16_bits(value):
    return struct.unpack("<I", struct.pack("<f", value))[0] >> 16  # truncation is fine here


def safetensors(tensors, metadata=None, dtype="F32", pad=True):
    """tensors: [(name, shape, values)] -> bytes; values are floats stored as `dtype`."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, shape, values in tensors:
        if dtype == "F32":
            raw = struct.pack(f"<{len(values)}f", *values)
        elif dtype == "BF16":
            raw = struct.pack(f"<{len(values)}H", *[bf16_bits(v) for v in values])
        else:
            raw = struct.pack(f"<{len(values)}H", *[half_bits(v) for v in values])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    values = [0.5, -1.25, 3.0, 0.0, -0.0, 1e-3]
    seeds = {
        "f32.safetensors": safetensors([("a", [2, 3], values), ("b", [3], values[:3])]),
        "bf16.safetensors": safetensors([("w", [2, 2], values[:4])], dtype="BF16"),
        "f16.safetensors": safetensors([("h", [6], [1.0, -2.5, 6.0e-8, 65504.0, float("inf"), 0.0])],
                                       dtype="F16"),
        "metadata.safetensors": safetensors([("x", [1], [1.0])],
                                            metadata={"format": "pt", "note": "fuzz seed"}),
        "empty-tensor.safetensors": safetensors([("e", [0, 4], []), ("s", [], [2.0])]),
        "unaligned.safetensors": safetensors([("u", [2], [1.0, 2.0])], pad=False),
        "rank7.safetensors": safetensors([("r", [1, 1, 1, 1, 1, 1, 2], [1.0, 2.0])]),
        "no-tensors.safetensors": safetensors([]),
    }
    # Nearly valid: offsets one byte short, overlapping tensors, a header longer than the file.
    good = safetensors([("a", [2], [1.0, 2.0])])
    seeds["short-data.safetensors"] = good[:-1]
    overlap = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    text = json.dumps(overlap).encode()
    seeds["overlap.safetensors"] = struct.pack("<Q", len(text)) + text + bytes(8)
    seeds["header-past-end.safetensors"] = struct.pack("<Q", 1 << 20) + b"{}"
    return seeds


# --- tiny models ----------------------------------------------------------------------------

SPECIAL = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
LANGUAGES = ["en", "de"]
TASKS = [
    {"id": "en-de", "source": "en", "target": "de", "index": 0, "target_tag": "<2de>",
     "target_tag_id": 5},
    {"id": "de-en", "source": "de", "target": "en", "index": 1, "target_tag": "<2en>",
     "target_tag_id": 4},
]


def tiny_config(**overrides):
    config = {
        "format_version": 1, "architecture": "transformer-encoder-decoder", "d_model": 4,
        "num_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "d_ff": 4,
        "encoder_ffn_dims": None, "decoder_ffn_dims": None, "activation": "relu", "norm": "pre",
        "layer_norm_eps": 1e-6, "vocab_size": 8, "max_positions": 8,
        "position_encoding": "sinusoidal", "scale_embeddings": True, "tie_embeddings": True,
        "special_tokens": SPECIAL, "languages": LANGUAGES, "tasks": TASKS, "moe": None,
        "extracted": None, "training": None,
    }
    config.update(overrides)
    return config


def tiny_tensors(config, rng):
    """Every tensor the config calls for (docs/model-format.md "Tensor names")."""
    d, vocab = config["d_model"], config["vocab_size"]
    moe = config["moe"]
    tensors = []

    def add(name, shape, scale=0.5, offset=0.0):
        count = 1
        for dim in shape:
            count *= dim
        tensors.append((name, shape, [offset + rng.uniform(-scale, scale) for _ in range(count)]))

    if config["tie_embeddings"]:
        add("embedding.weight", [vocab, d])
    else:
        for name in ("encoder.embedding.weight", "decoder.embedding.weight",
                     "decoder.output_projection.weight"):
            add(name, [vocab, d])
    for stack in ("encoder", "decoder"):
        layers = config[f"{stack}_layers"]
        dims = config[f"{stack}_ffn_dims"]
        moe_layers = moe[f"{stack}_layers"] if moe else []
        routing = moe[f"{stack}_routing"] if moe else "none"
        for i in range(layers):
            p = f"{stack}.layers.{i}"
            norms = ["self_attn_norm", "ffn_norm"] + (["cross_attn_norm"] if stack == "decoder" else [])
            attentions = ["self_attn"] + (["cross_attn"] if stack == "decoder" else [])
            for norm in norms:
                add(f"{p}.{norm}.weight", [d], 0.1, 1.0)
                add(f"{p}.{norm}.bias", [d], 0.1)
            for attention in attentions:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    add(f"{p}.{attention}.{proj}.weight", [d, d])
                    add(f"{p}.{attention}.{proj}.bias", [d], 0.1)
            kept = ((config.get("extracted") or {}).get("experts_kept") or {}).get(p)
            if isinstance(kept, dict) and kept.get("form") == "unfolded":
                # The task's experts kept apart: stacked like a parent's, only top_k of them.
                k, ff = len(kept["experts"]), config["d_ff"]
                add(f"{p}.ffn.experts.fc1.weight", [k, ff, d])
                add(f"{p}.ffn.experts.fc1.bias", [k, ff], 0.1)
                add(f"{p}.ffn.experts.fc2.weight", [k, d, ff])
                add(f"{p}.ffn.experts.fc2.bias", [k, d], 0.1)
            elif i in moe_layers:
                experts, ff = moe["num_experts"], config["d_ff"]
                add(f"{p}.ffn.experts.fc1.weight", [experts, ff, d])
                add(f"{p}.ffn.experts.fc1.bias", [experts, ff], 0.1)
                add(f"{p}.ffn.experts.fc2.weight", [experts, d, ff])
                add(f"{p}.ffn.experts.fc2.bias", [experts, d], 0.1)
                if routing == "token":
                    add(f"{p}.ffn.router.weight", [experts, d])
                else:
                    key = moe[f"{stack}_task_key"]
                    keys = len(config["tasks"]) if key == "pair" else len(config["languages"])
                    add(f"{p}.ffn.router.task_logits", [keys, experts], 2.0)
            else:
                ff = dims[i] if dims else config["d_ff"]
                add(f"{p}.ffn.fc1.weight", [ff, d])
                add(f"{p}.ffn.fc1.bias", [ff], 0.1)
                add(f"{p}.ffn.fc2.weight", [d, ff])
                add(f"{p}.ffn.fc2.bias", [d], 0.1)
        add(f"{stack}.final_norm.weight", [d], 0.1, 1.0)
        add(f"{stack}.final_norm.bias", [d], 0.1)
    return tensors


def tiny_models():
    """{name: (config dict, safetensors bytes)} of small models of every kind."""
    hybrid_moe = {"num_experts": 2, "top_k": 1, "encoder_layers": [0], "decoder_layers": [1],
                  "encoder_routing": "token", "decoder_routing": "task",
                  "encoder_task_key": None, "decoder_task_key": "target"}

    def extracted_config(decoder_kept):
        # en-de's subnetwork of the hybrid: the encoder's token-routed layer kept whole, the
        # decoder's task-routed layer 1 as `decoder_kept` says.
        return tiny_config(
            decoder_layers=2, tasks=[TASKS[0]], decoder_ffn_dims=[4, 4],
            moe=dict(hybrid_moe, decoder_layers=[]),
            extracted={"task": "en-de", "parent_digest": "sha256:" + "ab" * 32,
                       "parent_parameters": 1234,
                       "experts_kept": {"encoder.layers.0": "all", "decoder.layers.1": decoder_kept}},
            training={"kind": "taskmoe", "notes": "fuzz seed"})
    models = {
        "dense": tiny_config(),
        "dense-untied-gelu": tiny_config(tie_embeddings=False, activation="gelu",
                                         scale_embeddings=False),
        "hybrid": tiny_config(decoder_layers=2, moe=hybrid_moe),
        "taskmoe-pair": tiny_config(moe={
            "num_experts": 3, "top_k": 2, "encoder_layers": [0], "decoder_layers": [0],
            "encoder_routing": "task", "decoder_routing": "task",
            "encoder_task_key": "pair", "decoder_task_key": "source"}),
        "tokenmoe": tiny_config(moe={
            "num_experts": 2, "top_k": 2, "encoder_layers": [0], "decoder_layers": [0],
            "encoder_routing": "token", "decoder_routing": "token",
            "encoder_task_key": None, "decoder_task_key": None}),
        # A subnetwork as extraction writes it: the task-routed decoder layer folded (top_k
        # experts of d_ff into one dense layer), the token-routed encoder layer kept whole.
        "extracted": extracted_config({"experts": [1], "gates": [1.0]}),
        # The same with the decoder's experts kept apart (taskmoe-extract --keep_experts). Last,
        # so that the seeds before it keep their bytes.
        "extracted-unfolded": extracted_config(
            {"experts": [1], "gates": [1.0], "form": "unfolded"}),
    }
    rng = random.Random(9)
    return {name: (config, safetensors(tiny_tensors(config, rng), metadata={"format": "pt"}))
            for name, config in models.items()}


def config_text(config):
    return (json.dumps(config, indent=2) + "\n").encode()


def model_config_seeds(models):
    seeds = {}
    with open(os.path.join(ROOT, "demo/taskmoe/config.json"), "rb") as f:
        seeds["demo.json"] = f.read()
    fixtures = os.path.join(ROOT, "tests/fixtures/engine")
    for kind in sorted(os.listdir(fixtures)):
        with open(os.path.join(fixtures, kind, "config.json"), "rb") as f:
            seeds[f"fixture-{kind}.json"] = f.read()
    for name, (config, _) in models.items():
        seeds[f"tiny-{name}.json"] = config_text(config)
    return seeds


# --- SentencePiece ------------------------------------------------------------------------

SENTENCES = [
    "Open the file.", "Save the document as PDF.", "Insert a new table.", "Close the window.",
    "Öffnen Sie die Datei.", "Speichern Sie das Dokument als PDF.", "Fügen Sie eine neue Tabelle ein.",
    "Ouvrez le fichier.", "Enregistrez le document au format PDF.", "Insérez un nouveau tableau.",
    "Fermez la fenêtre.", "Schließen Sie das Fenster.", "The quick brown fox jumps over the lazy dog.",
    "Größe ändern…", "ﬁle ﬂow", "Ｆｕｌｌ ｗｉｄｔｈ １２３", "naïve café", "Zażółć gęślą jaźń",
    "Привет, мир!", "日本語のテキスト",
]
EDGE_TEXTS = [
    b"", b" ", b"   \t\n", b"  Hello   world  ", b"<2de> inline tag", b"x<2fr>y", b"\xe2\x96\x81literal",
    b"bad \xff byte", b"\xc3\x28", b"trunc \xe2\x82", b"\xed\xa0\x80 surrogate",
    b"\xf4\x90\x80\x80 too big", b"\xc0\xaf overlong", b"zero\xe2\x80\x8bwidth", b"NUL\x00byte",
    "emoji 😀 and 🚀🚀".encode(), "①②③ x²+y² ½ ™".encode(), "ｶﾀｶﾅ ㍿".encode(),
]


def tokenizer_seeds():
    seeds = {f"sentence-{i:02d}.txt": s.encode() for i, s in enumerate(SENTENCES)}
    seeds.update({f"edge-{i:02d}.txt": t for i, t in enumerate(EDGE_TEXTS)})
    seeds["ids-int32.bin"] = struct.pack("<8i", 2, 5, 100, 200, 1, 3, 15999, 0)
    return seeds


def spm_model_seeds():
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    seeds = {}
    text = SENTENCES * 3
    rules = "\n".join(f"{' '.join(f'{ord(c):X}' for c in src)}\t{' '.join(f'{ord(c):X}' for c in dst)}"
                      for src, dst in [("ﬁ", "fi"), ("ﬂ", "fl"), ("…", "..."), ("Ｆ", "F"),
                                       ("１", "1"), ("\u00e4", "a\u0308"), ("\u3000", " ")]) + "\n"
    rules_path = os.path.join(CORPUS, ".rules.tsv")
    with open(rules_path, "w", encoding="utf-8") as f:
        f.write(rules)
    variants = {
        "identity": dict(normalization_rule_name="identity"),
        "rules": dict(normalization_rule_tsv=rules_path),
        "no-dummy-prefix": dict(normalization_rule_name="identity", add_dummy_prefix=False,
                                remove_extra_whitespaces=False),
        # Characters the vocabulary lacks encode as <0xHH> byte pieces, never the unknown one.
        # (256 byte pieces need a bigger vocabulary.)
        "byte-fallback": dict(normalization_rule_name="identity", byte_fallback=True,
                              character_coverage=0.98, vocab_size=420),
    }
    try:
        for name, options in variants.items():
            out = io.BytesIO()
            options = {"vocab_size": 150, **options}
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(text), model_writer=out, model_type="unigram",
                hard_vocab_limit=False, user_defined_symbols=["<2de>", "<2en>"], pad_id=0,
                unk_id=1, bos_id=2, eos_id=3, minloglevel=2, num_threads=1, **options)
            seeds[f"{name}.model"] = out.getvalue()
    finally:
        os.remove(rules_path)
    # The unigram trainer insists on escaped whitespace; a model file may still turn it off.
    no_escape = pb.ModelProto()
    no_escape.ParseFromString(seeds["rules.model"])
    no_escape.normalizer_spec.escape_whitespaces = False
    seeds["no-escape.model"] = no_escape.SerializeToString()

    # The demo model cut down to its first 300 pieces, identity-normalised (its NFKC map alone
    # is 237 KB): real scores, control, unknown and user-defined pieces.
    demo = pb.ModelProto()
    with open(os.path.join(ROOT, "demo/taskmoe/spm.model"), "rb") as f:
        demo.ParseFromString(f.read())
    del demo.pieces[300:]
    demo.normalizer_spec.precompiled_charsmap = b""
    demo.normalizer_spec.name = "identity"
    demo.trainer_spec.vocab_size = 300
    seeds["demo-300.model"] = demo.SerializeToString()
    return seeds


# --- requests -----------------------------------------------------------------------------

def varint(value):
    out = b""
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, value):
    """One protobuf field: int -> varint, bytes/str -> length-delimited, ("f32", x) -> fixed32."""
    if isinstance(value, tuple):
        return varint(number << 3 | 5) + struct.pack("<f", value[1])
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def options(beam=None, max_tokens=None, penalty=None, scores=None, tokens=None):
    out = b""
    for number, value in ((1, beam), (2, max_tokens), (3, penalty), (4, scores), (5, tokens)):
        if value is not None:
            out += field(number, ("f32", value) if number == 3 else value)
    return out


def request(task="en-de", texts=(), opts=None, request_id=None):
    """A serialised TranslateRequest (TranslateStreamRequest: one text, same field numbers)."""
    out = field(1, task)
    for text in texts:
        out += field(2, text)
    if opts is not None:
        out += field(3, opts)
    if request_id is not None:
        out += field(4, request_id)
    return out


def request_seeds():
    return {
        "simple.pb": request(texts=["Open the file."], request_id="req-1"),
        "batch-beam.pb": request(task="de-en", texts=["Öffnen Sie die Datei.", "Ouvrez le fichier.",
                                                       "日本語"],
                                 opts=options(4, 64, 0.6, 1, 1), request_id="batch-7"),
        "stream.pb": request(task="en-fr", texts=["Insert a new table."], opts=options(1, 0)),
        "bad-utf8.pb": request(texts=[b"ok", b"bad \xff byte", b"\xed\xa0\x80"]),
        "empty-text.pb": request(texts=[b""]),
        "no-texts.pb": request(opts=options(2)),
        "many-texts.pb": request(texts=["t"] * 70),
        "long-text.pb": request(texts=["é" * 2001]),
        "limits.pb": request(texts=["x"], opts=options(9, 300, -1.0)),
        "nan-penalty.pb": request(texts=["x"], opts=options(0, 0, float("nan"))),
        "big-values.pb": request(texts=["x"], opts=options((1 << 32) - 1, (1 << 32) - 1, 1e30)),
        "request-id.pb": request(texts=["x"], request_id="tab\there"),
        "long-request-id.pb": request(texts=["x"], request_id="r" * 200),
        "empty.pb": b"",
    }


def http_json_seeds():
    """Bodies of the HTTP gateway's translate endpoints (server/http_json.h)."""
    return {
        "translate.json": b'{"task": "en-de", "texts": ["Open the file.", "Close it."], '
                          b'"request_id": "req-1"}',
        "options.json": b'{"task": "de-en", "texts": ["\\u00d6ffnen"], "options": {"beam_size": 4, '
                        b'"max_output_tokens": 64, "length_penalty": 0.6, "return_scores": true, '
                        b'"return_tokens": true, "no_sentence_splitting": false, '
                        b'"unknown_pieces": "DROP"}}',
        "stream.json": b'{"task": "en-fr", "text": "Insert a new table.", "options": {}}',
        "wrong-types.json": b'{"task": 1, "texts": [null, 2.5, {}], "options": []}',
        "unknown-field.json": b'{"task": "en-de", "textz": ["x"]}',
        "big-numbers.json": b'{"task": "en-de", "texts": ["x"], "options": {"beam_size": '
                            b'18446744073709551616, "max_output_tokens": -3}}',
        "bad-utf8.json": b'{"task": "en-de", "texts": ["\xff\xfe"]}',
        "escapes.json": b'{"task": "en\\u0000de", "texts": ["\\ud800", "\\ud83d\\ude00"]}',
        "nested.json": b"[" * 64 + b"]" * 64,
        "not-object.json": b'"just a string"',
        "truncated.json": b'{"task": "en-de", "texts": ["Open',
        "empty.json": b"",
    }


def main():
    models = tiny_models()
    write_seeds("model_config", model_config_seeds(models))
    safetensor_seeds = safetensors_seeds()
    safetensor_seeds.update({f"tiny-{name}.safetensors": weights
                             for name, (_, weights) in models.items()})
    write_seeds("safetensors", safetensor_seeds)
    write_seeds("model_load", {f"{name}.bin": config_text(config) + b"\0" + weights
                               for name, (config, weights) in models.items()})
    write_seeds("tokenizer", tokenizer_seeds())
    write_seeds("spm_model", spm_model_seeds())
    write_seeds("request_validation", request_seeds())
    write_seeds("http_json", http_json_seeds())


if __name__ == "__main__":
    main()
