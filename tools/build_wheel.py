#!/usr/bin/env python3
"""Packs the built `quanta` package (bazel build //python:quanta) as a wheel,
so that `pip install` puts it into an environment of the same Python:

  bazel build //python:quanta
  python3 tools/build_wheel.py --out=dist        # dist/quanta-0.1.0-cp311-cp311-linux_x86_64.whl
  pip install dist/quanta-*.whl

The wheel is the package folder plus the three files the wheel format asks for
(METADATA, WHEEL, RECORD with each file's SHA-256); it needs nothing beyond
Python's standard library. The extension only runs on the Python version and
platform it was built for, which the file name states.
"""
import argparse
import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile

VERSION = "0.1.0"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default=None, help="the built package folder (default: bazel-bin/python/pkg/quanta)")
    parser.add_argument("--out", default="dist")
    args = parser.parse_args()
    package = args.package
    if package is None:
        bin_dir = subprocess.run(["bazel", "info", "bazel-bin"], check=True, capture_output=True, text=True).stdout.strip()
        package = os.path.join(bin_dir, "python", "pkg", "quanta")
    if not os.path.exists(os.path.join(package, "_C.so")):
        sys.exit(f"build_wheel: no {package}/_C.so; run `bazel build //python:quanta` first")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    name = f"quanta-{VERSION}-{tag}-{tag}-{platform}.whl"
    info = f"quanta-{VERSION}.dist-info"
    files = {}
    for root, _, names in os.walk(package):
        for n in sorted(names):
            if n.endswith(".pyc"):
                continue
            path = os.path.join(root, n)
            files["quanta/" + os.path.relpath(path, package)] = open(path, "rb").read()
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: quanta\nVersion: {VERSION}\n"
                                 "Summary: Quanta: quantization as part of the tensor, the module and training\n"
                                 "Requires-Dist: numpy\n").encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: quanta tools/build_wheel.py\nRoot-Is-Purelib: false\n"
                              f"Tag: {tag}-{tag}-{platform}\n").encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, name)
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    os.replace(tmp, out)
    print(out)


if __name__ == "__main__":
    main()
