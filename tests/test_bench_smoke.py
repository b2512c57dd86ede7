"""`python -m bench kernels --quick` runs and reports every figure as a positive number.

No timing assertions: performance targets live in the bench output, never in unit tests.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.kernels import REQUIRED_KEYS, TARGETS

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_quick_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "kernels.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "kernels", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        value = data.get(key)
        assert isinstance(value, int | float), f"{key}: {value!r}"
        assert math.isfinite(value) and value > 0, f"{key}: {value!r}"
    assert data["scenario"] == "kernels"
    assert "bench kernels --quick" in data["command"]
    assert data["machine"]["numba"] and data["machine"]["numpy"] and data["machine"]["cores"]
    assert data["date"]
    assert set(TARGETS) <= set(data["targets"])
    # Every figure is printed with its unit, and every target with its verdict.
    for key in REQUIRED_KEYS:
        assert key in proc.stdout
    assert proc.stdout.count("target ") == len(TARGETS)


def test_runner_lists_scenarios() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "kernels" in proc.stdout


def test_runner_rejects_unknown_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "no-such-scenario"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown scenario" in proc.stderr
