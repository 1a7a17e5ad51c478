"""docs/python.md shows python/example.py as it is, and the example runs
(QAT W4A4 on a Fashion-MNIST subset, convert, save, ONNX)."""
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"])


def test_the_docs_show_the_example_verbatim():
    example = open(os.path.join(ROOT, "python", "example.py")).read()
    doc = open(os.path.join(ROOT, "docs", "python.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert example in blocks, "docs/python.md's example differs from python/example.py"
    assert len(example.splitlines()) <= 40


def test_the_example_trains_converts_and_exports(tmp_path):
    out = str(tmp_path / "model")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "python", "example.py"), "--epochs=1",
                             "--train_images=4096", "--test_images=512", f"--out={out}"],
                            check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    print(result.stdout)
    top1 = float(re.search(r"top-1 ([0-9.]+)%", result.stdout).group(1))
    assert top1 > 25  # 32 steps of 4-bit QAT from scratch (40% here); chance is 10%
    assert os.path.getsize(out + ".safetensors") > 100000 and os.path.getsize(out + ".onnx") > 100000
