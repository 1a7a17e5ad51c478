#!/usr/bin/env python3
"""Writes tests/core/testdata/minifloat.txt: the minifloat dtypes' conversions as
ml_dtypes (JAX's NumPy dtypes) computes them, the reference tests/core/
minifloat_test.cc holds core/minifloat.h to.

    pip install ml_dtypes==0.7.0 numpy
    python3 tools/gen_minifloat_fixtures.py   # then commit the file

Lines: `decode FORMAT CODE F32BITS` for every code, and `encode FORMAT F32BITS
CODE` for every representable value of each sign, every midpoint between
neighbours, one f32 step either side of each midpoint, and 400 log-uniform
random values. Encodings are kept only where ml_dtypes and Quanta mean the same
thing (Note [Minifloat conversion] in core/minifloat.h): inputs below the
format's largest value in magnitude (ml_dtypes does not saturate), no NaN (it
maps NaN to -0 in FP4/FP6), and for E8M0 positive values in [2^-127, 2^127]
(ml_dtypes makes 0 NaN; Quanta saturates it to 2^-127). Where PyTorch is
installed, its float8_e4m3fn / float8_e5m2 / float8_e8m0fnu casts are checked
against the same lines and any disagreement is printed.
"""
import argparse
import os

import ml_dtypes
import numpy as np

FORMATS = [  # Quanta's name, ml_dtypes type, bits, PyTorch's name
    ("f8_e4m3", ml_dtypes.float8_e4m3fn, 8, "float8_e4m3fn"),
    ("f8_e5m2", ml_dtypes.float8_e5m2, 8, "float8_e5m2"),
    ("f8_e8m0", ml_dtypes.float8_e8m0fnu, 8, "float8_e8m0fnu"),
    ("f6_e2m3", ml_dtypes.float6_e2m3fn, 6, None),
    ("f6_e3m2", ml_dtypes.float6_e3m2fn, 6, None),
    ("f4_e2m1", ml_dtypes.float4_e2m1fn, 4, None),
]


def f32_bits(x):
    return int(np.array(x, dtype=np.float32).view(np.uint32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "core", "testdata",
                                                  "minifloat.txt"))
    args = ap.parse_args()
    rng = np.random.default_rng(21)
    lines = [f"# Written by tools/gen_minifloat_fixtures.py from ml_dtypes {ml_dtypes.__version__}; do not edit."]
    try:
        import torch
    except ImportError:
        torch = None
    for name, t, bits, torch_name in FORMATS:
        codes = np.arange(1 << bits, dtype=np.uint8)
        values = codes.view(t).astype(np.float32)
        for c, v in zip(codes, values):
            lines.append(f"decode {name} {int(c)} {f32_bits(v):08x}")
        finite = np.unique(values[np.isfinite(values)])  # sorted, -0 and +0 merged
        top = float(finite.max())
        low = float(finite[finite > 0].min())
        mids = (finite[:-1].astype(np.float64) + finite[1:]) / 2
        inputs = [finite, mids.astype(np.float32),
                  np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                  np.nextafter(mids.astype(np.float32), np.float32(-np.inf)),
                  (rng.choice([-1, 1], 400) * np.exp(rng.uniform(np.log(low / 4), np.log(top), 400))).astype(np.float32)]
        x = np.unique(np.concatenate(inputs).astype(np.float32))
        if name == "f8_e8m0":
            x = x[(x >= np.float32(2.0**-127)) & (x <= np.float32(2.0**127))]
        else:
            x = x[np.abs(x) < top]
        x = np.concatenate([x, np.array([-0.0], dtype=np.float32)]) if name != "f8_e8m0" else x
        enc = x.astype(t).view(np.uint8)
        for xi, ci in zip(x, enc):
            lines.append(f"encode {name} {f32_bits(xi):08x} {int(ci)}")
        if torch is not None and torch_name and hasattr(torch, torch_name):
            tt = getattr(torch, torch_name)
            got = torch.from_numpy(x.copy()).to(tt).view(torch.uint8).numpy()
            bad = np.nonzero(got != enc)[0]
            print(f"{name}: PyTorch {torch.__version__} {torch_name} agrees on {len(x) - len(bad)} of {len(x)} encodings"
                  + (f"; first differences {[(float(x[i]), int(enc[i]), int(got[i])) for i in bad[:5]]}" if len(bad) else ""))
            dec = torch.from_numpy(codes.copy()).view(tt).float().numpy()
            same = np.sum((dec == values) | (np.isnan(dec) & np.isnan(values)))
            print(f"{name}: PyTorch decodes {same} of {len(codes)} codes the same")
        print(f"{name}: {len(codes)} codes, {len(x)} encodings")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(lines)} lines")


if __name__ == "__main__":
    main()
