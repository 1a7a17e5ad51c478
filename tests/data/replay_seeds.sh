#!/usr/bin/env bash
# Each reader's fuzz target (the normal build's replay main) over its committed
# seeds (tests/data/testdata/fuzz_seeds/<target>/, the corpus .ci/run fuzzes
# from): every seed runs without a crash. Arguments: fuzzer binary, seed files...
set -euo pipefail
bin=$1; shift
[ "$#" -gt 0 ] || { echo "no seeds given"; exit 1; }
"$bin" "$@"
