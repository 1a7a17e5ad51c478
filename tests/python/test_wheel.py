"""tools/build_wheel.py packs the built package as a wheel whose RECORD checks
out; unpacked as pip unpacks it, the package imports and runs."""
import base64
import hashlib
import os
import subprocess
import sys
import zipfile

import quanta

ROOT = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"])


def test_wheel_installs_and_imports(tmp_path):
    package = os.path.dirname(quanta.__file__)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_wheel.py"), f"--package={package}",
                          f"--out={tmp_path}"], check=True, capture_output=True, text=True).stdout.strip()
    assert os.path.basename(out).startswith(f"quanta-0.1.0-cp{sys.version_info.major}{sys.version_info.minor}-")
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert "quanta/_C.so" in names and "quanta/__init__.py" in names
        record = z.read("quanta-0.1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.split(",")
            if digest:
                data = z.read(path)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert int(size) == len(data)
        z.extractall(tmp_path / "site")
    result = subprocess.run([sys.executable, "-c", "import quanta; print(quanta.__file__, quanta.ones(2).sum().item())"],
                            check=True, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path / "site")})
    assert str(tmp_path / "site") in result.stdout and result.stdout.strip().endswith("2.0")
