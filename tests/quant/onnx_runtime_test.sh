#!/usr/bin/env bash
# ONNX Runtime runs Quanta's exported QDQ models and gives the integer model's
# top-1 (tests/quant/ort_check.py). ONNX Runtime comes from the pinned virtual
# environment tools/setup.sh makes (tools/requirements-ci.txt).
set -euo pipefail
python="${QUANTA_PYTHON:-/opt/quanta/venv/bin/python}"
if ! "$python" -c "import onnxruntime, numpy" 2>/dev/null; then
  echo "onnx_runtime_test: $python cannot import onnxruntime; run tools/setup.sh (it installs tools/requirements-ci.txt)"
  exit 1
fi
"$1" --out="$TEST_TMPDIR"
"$python" "$2" "$TEST_TMPDIR"
