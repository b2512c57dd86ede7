"""Run pytest on some tests with the kernels as plain Python (NUMBA_DISABLE_JIT=1), in a
subprocess: the JIT is decided at import time, and coverage only sees kernel lines this way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_without_jit(*args: str, timeout_s: float = 300) -> str:
    """`pytest -q ARGS` without the JIT (hypothesis profile `nojit`); asserts it passed and
    returns its stdout."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", HYPOTHESIS_PROFILE="nojit", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # The index hash multiplies uint64 with wrap-around on purpose; numpy scalars warn.
            "-W",
            "ignore:overflow encountered:RuntimeWarning",
            *args,
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout
