"""Runs the Python tests beside this file with pytest (Bazel's py_test entry)."""
import os
import sys

import pytest

sys.exit(pytest.main([os.path.dirname(os.path.abspath(__file__)), "-v", "-p", "no:cacheprovider",
                      "--basetemp", os.path.join(os.environ.get("TEST_TMPDIR", "/tmp"), "pytest")]))
