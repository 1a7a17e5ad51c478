"""ONNX Runtime against Quanta's integer model on the files ort_fixture wrote.

For each exported model (W8A8, W4A4) runs the ONNX file in ONNX Runtime (CPU,
default graph optimizations, which fold the QDQ pairs into integer kernels)
over the 10,000 Fashion-MNIST test images and compares its logits with the
integer model's: top-1 agreement must be at least 99.9%.

    python3 ort_check.py DIR
"""
import os
import sys

import numpy as np
import onnxruntime as ort


def main(folder):
    images = np.fromfile(f"{folder}/images.f32", dtype=np.float32).reshape(-1, 1, 28, 28)
    labels = np.fromfile(f"{folder}/labels.u8", dtype=np.uint8).astype(np.int64)
    ok = True
    for name in ("w8a8", "w4a4"):
        quanta = np.fromfile(f"{folder}/{name}.logits.f32", dtype=np.float32).reshape(len(images), -1)
        options = ort.SessionOptions()
        # The test's thread count (Bazel's test_env gives 1): its spinning pool
        # would otherwise take both cores from the tests beside it.
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
        session = ort.InferenceSession(f"{folder}/{name}.onnx", options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        batch = session.get_inputs()[0].shape[0]
        batch = batch if isinstance(batch, int) else 500
        runtime = np.concatenate([session.run(None, {feed: images[i:i + batch]})[0]
                                  for i in range(0, len(images), batch)])
        same = np.mean(runtime.argmax(1) == quanta.argmax(1))
        print(f"{name}: ONNX Runtime {ort.__version__} top-1 {np.mean(runtime.argmax(1) == labels):.4f}, "
              f"Quanta integer top-1 {np.mean(quanta.argmax(1) == labels):.4f}, same top-1 on {same:.4f} "
              f"of {len(images)} images, largest logit difference {np.abs(runtime - quanta).max():.4g}")
        ok &= same >= 0.999
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
