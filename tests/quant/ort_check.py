"""ONNX Runtime against Quanta's integer model on the files ort_fixture wrote.

For each exported model (W8A8, W4A4, and the block formats MXFP8, MXFP6 / MXFP8,
NVFP4, MXFP4 / MXFP8 on every layer) runs the ONNX file in ONNX Runtime (CPU, default graph optimizations,
which fold the QDQ pairs into integer kernels) over the test images the
fixture scored and compares its logits with the integer model's: top-1
agreement must be at least 99.9%. For each block format's quantization model
(input -> block quantization -> identity), ONNX Runtime's output must equal
Quanta's exactly, element for element.

    python3 ort_check.py DIR
"""
import os
import sys

import numpy as np
import onnxruntime as ort

MODELS = ("w8a8", "w4a4", "mxfp8", "mxfp6_mxfp8", "nvfp4", "mxfp4_all")
BLOCK_FORMATS = ("mxfp8", "mxfp8_e5m2", "mxfp6", "mxfp6_e3m2", "mxfp4", "nvfp4")


def session(path):
    options = ort.SessionOptions()
    # The test's thread count (Bazel's test_env gives 1): its spinning pool
    # would otherwise take both cores from the tests beside it.
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main(folder):
    images = np.fromfile(f"{folder}/images.f32", dtype=np.float32).reshape(-1, 1, 28, 28)
    labels = np.fromfile(f"{folder}/labels.u8", dtype=np.uint8).astype(np.int64)
    ok = True
    for name in MODELS:
        quanta = np.fromfile(f"{folder}/{name}.logits.f32", dtype=np.float32).reshape(-1, 10)
        count = len(quanta)
        s = session(f"{folder}/{name}.onnx")
        feed = s.get_inputs()[0].name
        batch = s.get_inputs()[0].shape[0]
        batch = batch if isinstance(batch, int) else 500
        runtime = np.concatenate([s.run(None, {feed: images[i:i + batch]})[0] for i in range(0, count, batch)])
        same = np.mean(runtime.argmax(1) == quanta.argmax(1))
        print(f"{name}: ONNX Runtime {ort.__version__} top-1 {np.mean(runtime.argmax(1) == labels[:count]):.4f}, "
              f"Quanta integer top-1 {np.mean(quanta.argmax(1) == labels[:count]):.4f}, same top-1 on {same:.4f} "
              f"of {count} images, largest logit difference {np.abs(runtime - quanta).max():.4g}")
        ok &= same >= 0.999
    x = np.fromfile(f"{folder}/blocks.f32", dtype=np.float32).reshape(4, 40, 3, 5)
    for fmt in BLOCK_FORMATS:
        quanta = np.fromfile(f"{folder}/blocks_{fmt}.out.f32", dtype=np.float32).reshape(x.shape)
        s = session(f"{folder}/blocks_{fmt}.onnx")
        runtime = s.run(None, {s.get_inputs()[0].name: x})[0]
        differ = int(np.sum(runtime != quanta))
        rounded = int(np.sum(quanta != x))
        print(f"blocks {fmt}: {differ} of {x.size} elements differ between ONNX Runtime and Quanta "
              f"({rounded} moved by the quantization)")
        ok &= differ == 0 and rounded > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
