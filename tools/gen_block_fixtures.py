#!/usr/bin/env python3
"""Writes tests/core/testdata/block_quant.txt: block-scaled quantization (OCP MX
and NVFP4) as torchao's reference implementation computes it, the reference
tests/core/block_quant_test.cc holds BlockQuantize / BlockDequantize to.

    pip install torch torchao==0.14.0
    python3 tools/gen_block_fixtures.py   # then commit the file

For each format: one (4, 128) f32 input of normal values times a log-normal
spread (no all-zero block: torchao clamps NVFP4's block scales below at E4M3's
smallest normal, where Quanta keeps the subnormal or zero; both are tested by
hand in block_quant_test.cc), torchao's per-block scales as f32, its per-tensor
scale (NVFP4; 1 otherwise) and its dequantized output. Lines:
`format NAME`, `x HEX...`, `scales FLOAT...`, `tensor_scale FLOAT`, `y HEX...`
(HEX: f32 bit patterns, row-major).
"""
import argparse
import os

import numpy as np
import torch
import torchao
from torchao.prototype.mx_formats import mx_tensor, nvfp4_tensor
from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2

MX = [  # Quanta's element dtype name, torchao's element dtype
    ("f8_e4m3", torch.float8_e4m3fn),
    ("f8_e5m2", torch.float8_e5m2),
    ("f6_e2m3", DTYPE_FP6_E2M3),
    ("f6_e3m2", DTYPE_FP6_E3M2),
    ("f4_e2m1", torch.float4_e2m1fn_x2),
]


def hexes(t):
    return " ".join(f"{v:08x}" for v in t.contiguous().view(torch.int32).flatten().tolist()
                    for v in [v & 0xFFFFFFFF])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "core", "testdata",
                                                  "block_quant.txt"))
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(21)
    lines = [f"# Written by tools/gen_block_fixtures.py from torchao {torchao.__version__} "
             f"(PyTorch {torch.__version__}); do not edit."]

    def sample():
        return torch.randn(4, 128, generator=gen) * torch.exp(1.5 * torch.randn(4, 128, generator=gen))

    for name, elem in MX:
        x = sample()
        scale, data = mx_tensor.to_mx(x, elem, 32)
        y = mx_tensor.to_dtype(data, scale, elem, 32, torch.float32)
        lines += [f"format mx {name}", "x " + hexes(x),
                  "scales " + " ".join(repr(float(v)) for v in scale.float().flatten().tolist()),
                  "tensor_scale 1.0", "y " + hexes(y)]
    x = sample()
    g = nvfp4_tensor.per_tensor_amax_to_scale(x.abs().max())
    scales, data = nvfp4_tensor.nvfp4_quantize(x, 16, g)
    # Dequantize by hand: unpack the FP4 codes (torchao's pack_uint4 puts the
    # first of each pair in the high nibble) and multiply.
    codes = data.view(torch.uint8).flatten()
    nibbles = torch.stack([codes >> 4, codes & 0xF], dim=-1).flatten()
    fp4 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=torch.float32)
    values = fp4[(nibbles & 7).long()] * torch.where(nibbles >= 8, -1.0, 1.0)
    y = values.view(4, 128 // 16, 16) * (scales.float().view(4, 8, 1) * g)
    lines += ["format nvfp4 f4_e2m1", "x " + hexes(x),
              "scales " + " ".join(repr(float(v)) for v in scales.float().flatten().tolist()),
              f"tensor_scale {float(g)!r}", "y " + hexes(y.view(4, 128))]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(lines)} lines")


if __name__ == "__main__":
    main()
