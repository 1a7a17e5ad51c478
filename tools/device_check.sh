#!/usr/bin/env bash
# GPU checks in two halves, because the GPU machine has CUDA 13, cuDNN and
# PyTorch but no Bazel, oneDNN or Abseil:
#   tools/device_check.sh pack   here: builds the CUDA tests (cuda_test and the
#                                conformance table) and //apps:bench_gpu
#                                (--config=cuda, sm_80/sm_90), bundles them with
#                                the shared libraries the GPU machine lacks into
#                                .gpu/bundle.tar.xz (git-ignored, < 64 MiB).
#   tools/device_check.sh run    there (the device tool: carry .gpu): unpacks,
#                                runs every CUDA test, bench_gpu, and the same
#                                ResNet-18 training step in PyTorch for a ratio;
#                                logs go to $OUT (or .gpu/out).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

if [[ "$mode" == pack ]]; then
  targets=(//tests/backends:cuda_test //tests/backends:conformance_test //apps:bench_gpu)
  # No libmvec (backends/cpu/vector_math.h): the GPU machine's glibc may predate 2.35.
  bazel build --config=cuda --dynamic_mode=off --copt=-DQUANTA_NO_LIBMVEC "${targets[@]}"
  bin="$(bazel info --config=cuda bazel-bin)"
  rm -rf .gpu/stage && mkdir -p .gpu/stage/lib
  cp "$bin/tests/backends/cuda_test" "$bin/tests/backends/conformance_test" "$bin/apps/bench_gpu" .gpu/stage/
  cp tools/torch_resnet18_step.py .gpu/stage/
  # Every shared library they load, except the CUDA toolkit's (the GPU machine
  # has its own, matching its driver) and the C library's core.
  for b in .gpu/stage/cuda_test .gpu/stage/conformance_test .gpu/stage/bench_gpu; do
    ldd "$b" | awk '/=> \// {print $3}'
  done | sort -u | grep -v -E '/usr/local/cuda|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux' |
    while read -r lib; do cp -L "$lib" .gpu/stage/lib/; done
  tar -C .gpu/stage -cJf .gpu/bundle.tar.xz .
  rm -rf .gpu/stage
  ls -la .gpu/bundle.tar.xz
  exit 0
fi

if [[ "$mode" == run ]]; then
  out="${OUT:-.gpu/out}"
  mkdir -p "$out" /tmp/quanta-gpu
  tar -C /tmp/quanta-gpu -xJf .gpu/bundle.tar.xz
  # cuBLAS/cuDNN: the machine's CUDA toolkit, or PyTorch's wheels.
  extra="$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = set()
for base in site.getsitepackages() + ["/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/lib/x86_64-linux-gnu"]:
    for pattern in ("libcudnn.so.9*", "libcublasLt.so.1*", "libcudart.so.1*", "nvidia/*/lib/libcudnn.so.9*",
                    "nvidia/*/lib/libcublasLt.so.1*", "nvidia/*/lib/libcudart.so.1*"):
        for f in glob.glob(os.path.join(base, pattern)):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)"
  export LD_LIBRARY_PATH="/tmp/quanta-gpu/lib:${extra}:${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt" || true
  ldd /tmp/quanta-gpu/cuda_test | grep -E "not found|cudnn|cublas" | tee "$out/ldd.txt" || true
  status=0
  /tmp/quanta-gpu/cuda_test 2>&1 | tee "$out/cuda_test.log" || status=1
  /tmp/quanta-gpu/conformance_test 2>&1 | tee "$out/conformance_test.log" || status=1
  timeout 300 /tmp/quanta-gpu/bench_gpu 2>&1 | tee "$out/bench_gpu.log" || status=1
  PYTHONUNBUFFERED=1 timeout 120 python3 /tmp/quanta-gpu/torch_resnet18_step.py 2>&1 | tee "$out/torch.log" || status=1
  exit $status
fi

echo "usage: tools/device_check.sh pack|run" >&2
exit 2
