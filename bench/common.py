"""Helpers every bench scenario shares: figures with units and targets, the machine, JSON, plots.

A scenario measures, builds a list of `Figure`s and hands them to `finish()`, which prints each
one with its unit and target, writes the JSON (figures flat at the top level so a reader can
`jq .reserve_lines_per_s`, plus the machine, the date and the exact command) and, if asked, a
PNG. Benchmarks never assert on time: a missed target is printed and recorded, never raised.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Figure",
    "command_line",
    "finish",
    "machine",
    "median_s",
    "time_rounds",
]


@dataclass(frozen=True)
class Figure:
    """One measured number. `target` is met when value >= target (`at_least`) or <= target."""

    key: str
    value: float
    unit: str
    target: float | None = None
    at_least: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    def line(self) -> str:
        text = f"{self.key:<42} {_fmt(self.value):>16} {self.unit:<12}"
        if self.target is not None:
            op = ">=" if self.at_least else "<="
            verdict = "MET" if self.met else "MISSED"
            text += f" target {op} {_fmt(self.target)} {verdict}"
        if self.note:
            text += f"  ({self.note})"
        return text


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.3f}"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced the figures, as a reader would type it (with the pinning)."""
    args = list(sys.argv[1:] if argv is None else argv)
    prefix = ""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < (os.cpu_count() or 1):
            prefix = f"taskset -c {','.join(map(str, cpus))} "
    except AttributeError:  # not Linux
        pass
    return prefix + shlex.join(["python", "-m", "bench", *args])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import numba
    import numpy

    try:
        cpus_allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus_allowed = []
    try:
        load_1m = os.getloadavg()[0]
    except OSError:
        load_1m = -1.0
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cpus_allowed": cpus_allowed,
        "load_avg_1m": round(load_1m, 2),  # at the end of the run: others share the machine
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
    }


def time_rounds(fn: Callable[[int], object], rounds: int) -> list[float]:
    """Seconds taken by fn(i) for i in range(rounds), each timed on its own."""
    times = []
    clock = time.perf_counter_ns
    for i in range(rounds):
        t0 = clock()
        fn(i)
        times.append((clock() - t0) * 1e-9)
    return times


def median_s(times: Sequence[float]) -> float:
    return statistics.median(times)


def finish(
    scenario: str,
    figures: Sequence[Figure],
    json_path: str | None,
    plot_path: str | None = None,
    extra: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Print every figure with unit and target, then write the JSON (and the plot)."""
    cmd = command_line(argv)
    print(f"\n{scenario}: {cmd}")
    for fig in figures:
        print("  " + fig.line())
    payload: dict[str, Any] = {fig.key: fig.value for fig in figures}
    payload.update(
        scenario=scenario,
        command=cmd,
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        machine=machine(),
        units={fig.key: fig.unit for fig in figures},
        targets={
            fig.key: {
                "target": fig.target,
                "op": ">=" if fig.at_least else "<=",
                "met": fig.met,
            }
            for fig in figures
            if fig.target is not None
        },
        notes={fig.key: fig.note for fig in figures if fig.note},
    )
    if extra:
        payload.update(extra)
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        print(f"  wrote {path}")
    if plot_path:
        plot_targets(plot_path, f"{scenario} — {cmd}", figures)
        print(f"  wrote {plot_path}")
    return payload


def plot_targets(path: str, title: str, figures: Sequence[Figure]) -> None:
    """A bar per targeted figure: how far it is from its target (1.0 = exactly on target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targeted = [f for f in figures if f.target]
    # Higher is better on the plot: value/target for at-least figures, target/value otherwise.
    ratios = [
        (f.value / f.target if f.at_least else f.target / f.value) if f.value else 0.0
        for f in targeted
        if f.target
    ]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(targeted) + 1.5))
    colors = ["tab:green" if r >= 1 else "tab:red" for r in ratios]
    ax.barh([f.key for f in targeted], ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("figure / target (≥ 1 meets the target)")
    ax.set_title(title, fontsize=8)
    for y, (f, r) in enumerate(zip(targeted, ratios, strict=True)):
        ax.text(r, y, f"  {_fmt(f.value)} {f.unit}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
