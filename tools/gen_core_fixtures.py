#!/usr/bin/env python3
"""Writes tests/core/testdata/unary.txt: each unary op of core/ops.def evaluated in
float64 by numpy/math on a fixed grid. CI reads the committed file; it never runs
this script. Regenerate with: python3 tools/gen_core_fixtures.py
"""
import math
import os

import numpy as np

xs = [-3.5, -2.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 3.5]
pos = [0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 123.456]

ops = {
    "neg": (xs, lambda x: -x),
    "exp": (xs, np.exp),
    "log": (pos, np.log),
    "sqrt": (pos, np.sqrt),
    "rsqrt": (pos, lambda x: 1.0 / np.sqrt(x)),
    "abs": (xs, np.abs),
    "relu": (xs, lambda x: max(x, 0.0)),
    "sigmoid": (xs, lambda x: 1.0 / (1.0 + np.exp(-x))),
    "tanh": (xs, np.tanh),
    "erf": (xs, math.erf),
    "round": ([-2.5, -1.5, -0.5, -0.4, 0.0, 0.5, 0.6, 1.5, 2.5, 3.49], np.round),  # half to even
    "gelu": (xs, lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))),
}

out = os.path.join(os.path.dirname(__file__), "..", "tests", "core", "testdata", "unary.txt")
with open(out, "w") as f:
    f.write("# op x y  (float64, numpy %s)\n" % np.__version__)
    for name, (grid, fn) in ops.items():
        for x in grid:
            f.write("%s %.17g %.17g\n" % (name, x, float(fn(np.float64(x)))))
print("wrote", os.path.normpath(out))
