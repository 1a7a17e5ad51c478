#!/usr/bin/env python3
"""Writes tests/nn/testdata/safetensors_seeds/: a valid file written the way the
reference implementation lays it out (json.dumps header, space padding to 8
bytes, little-endian data) that the C++ tests read back value by value, plus
malformed seeds for the fuzz driver. CI reads the committed files; it never runs
this script. Regenerate with: python3 tools/gen_safetensors_seeds.py
"""
import json
import os
import struct

out_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "nn", "testdata", "safetensors_seeds")
os.makedirs(out_dir, exist_ok=True)


def file_bytes(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


# valid.safetensors: w = [[1.5, -2], [0.25, 3]] (F32), ids = [7, -1, 42] (I64),
# half = [1, -0.5] (F16), and metadata.
w = struct.pack("<4f", 1.5, -2.0, 0.25, 3.0)
ids = struct.pack("<3q", 7, -1, 42)
half = struct.pack("<2e", 1.0, -0.5)
header = {
    "__metadata__": {"format": "pt", "note": "written by tools/gen_safetensors_seeds.py"},
    "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "ids": {"dtype": "I64", "shape": [3], "data_offsets": [16, 40]},
    "half": {"dtype": "F16", "shape": [2], "data_offsets": [40, 44]},
}
valid = file_bytes(header, w + ids + half)
seeds = {
    "valid.safetensors": valid,
    "empty_header.safetensors": file_bytes({}, b""),
    "truncated.safetensors": valid[: len(valid) - 5],
    "overlap.safetensors": file_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
    "bad_dtype.safetensors": file_bytes({"a": {"dtype": "F8", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)),
    "huge_len.safetensors": struct.pack("<Q", 2**63) + b"{}",
    "nested.safetensors": struct.pack("<Q", 64) + b"[" * 64,
}
for name, data in seeds.items():
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(data)
print("wrote", len(seeds), "seeds to", os.path.normpath(out_dir))
