#!/usr/bin/python3
"""Fails on an include that crosses the layers the wrong way (DESIGN.md §2).

Each first-party C++ file belongs to the layer of its folder (the longest match below); it may
include its own layer and the layers listed for it, nothing else of the project. Tests, fuzz
targets and benchmarks may include anything, and nothing may include them.

Usage: tools/check-includes.py   (from anywhere; exit 1 and one line per bad include)
"""
import os
import re
import subprocess
import sys

# Layer -> the other layers it may include. "proto" is the generated API (taskmoe/v1/...).
ALLOWED = {
    "util": set(),
    "kernels": {"util"},
    "models/format": {"kernels", "util"},
    "models/text": {"models/format", "util"},
    "models": {"models/format", "models/text", "kernels", "util"},
    "models/testing": {"models", "models/format", "models/text", "kernels", "util"},
    # The server talks to models/ through its seam (models/task_model.h, models/compute.h and
    # the types they speak); never to the model format, the test models or the kernels.
    "server": {"models", "models/text", "util", "proto"},
    "loadtest": {"util", "proto"},
    "tools": {"models", "models/format", "models/text", "models/testing", "kernels", "util"},
}
UNCHECKED = ("tests", "fuzz", "bench")
PROTO_PREFIXES = ("taskmoe/v1/", "grpc/health/v1/")
LAYERS = sorted(ALLOWED, key=len, reverse=True) + list(UNCHECKED)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(path):
    if path.startswith(PROTO_PREFIXES):
        return "proto"
    for layer in LAYERS:
        if path.startswith(layer + "/"):
            return layer
    return None  # not ours (absl/, gtest/, nlohmann/, ...)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.cc", "*.h"],
        cwd=root, check=True, capture_output=True, text=True).stdout.split()
    bad = []
    checked = 0
    for path in files:
        layer = layer_of(path)
        if layer is None or layer in UNCHECKED:
            continue
        checked += 1
        with open(os.path.join(root, path), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                target = layer_of(match.group(1))
                if target is None or target == layer or target in ALLOWED[layer]:
                    continue
                bad.append(f"{path}:{number}: {layer}/ may not include {match.group(1)}")
    if bad:
        print("check-includes: includes against the layering (tools/check-includes.py):")
        print("\n".join("  " + b for b in bad))
        return 1
    print(f"check-includes: {checked} files keep to their layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
