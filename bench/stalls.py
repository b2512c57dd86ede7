"""How often this machine stops a busy process: the floor under every p99 the bench reports.

One child process per CPU, pinned there, spins reading `time.perf_counter()` for a few seconds
and records every gap between two reads longer than `GAP_US_MIN`. A read follows the last within a
fraction of a µs, so a gap is time the process did not run: an interrupt (µs), another process
or kernel thread of the machine taking the CPU, or, on a virtual machine, the host not running
the vCPU (hundreds of µs to ms). On the project's 2-core Firecracker VMs, with no bench load,
the probe saw 0–7 gaps ≥ 1 ms per second per CPU, up to 40 ms. A request due during a gap, on
the server's CPU or the client's, is late by up to its length: at 1,000 requests/s, three 2 ms
gaps a second make ~6 in 1,000 requests late by more than 1 ms, most of the 1 % a p99 allows,
for reasons no server code can change (bench/README.md, sweep: "A control step after each,
and the machine's own stalls").

The probe runs while no load runs (it would compete for the CPU it measures) and is bounded in
time (`SECONDS_MAX`) and memory (`GAPS_MAX` gaps kept).

    python -m bench.stalls --seconds 3            # one JSON line per CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import Figure

__all__ = ["measure", "probe_cpu", "stall_figures"]

GAP_US_MIN = 50.0
SECONDS_MAX = 60.0
GAPS_MAX = 1_000_000
_THRESHOLDS_US = (250.0, 1_000.0)


def probe_cpu(seconds: float, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Spin for `seconds` on the calling thread's CPU; what the gaps between reads of `clock`
    (seconds) were."""
    seconds = min(max(seconds, 0.0), SECONDS_MAX)
    gap_min = GAP_US_MIN * 1e-6
    gaps: list[float] = []
    start = t = clock()
    end = start + seconds
    while t < end:
        now = clock()
        if now - t > gap_min and len(gaps) < GAPS_MAX:
            gaps.append(now - t)
        t = now
    wall = t - start
    out: dict[str, Any] = {
        "seconds": round(wall, 3),
        "gaps": len(gaps),
        "stalled_fraction": round(sum(gaps) / wall, 5) if wall > 0 else 0.0,
        "longest_us": round(max(gaps, default=0.0) * 1e6, 1),
    }
    for us in _THRESHOLDS_US:
        n = sum(g * 1e6 >= us for g in gaps)
        out[f"over_{us:.0f}us"] = n
        out[f"over_{us:.0f}us_per_s"] = round(n / wall, 2) if wall > 0 else 0.0
    return out


def measure(seconds: float, cpus: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
    """`probe_cpu` on every CPU in `cpus` (default: all this process may use) at once, one child
    process pinned to each; the results by CPU."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0))
    seconds = min(max(seconds, 0.0), SECONDS_MAX)
    procs = {
        cpu: subprocess.Popen(
            [sys.executable, "-m", "bench.stalls", "--seconds", str(seconds), "--cpu", str(cpu)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for cpu in cpus
    }
    out = {}
    for cpu, proc in procs.items():
        stdout, _ = proc.communicate(timeout=seconds + 30)
        if proc.returncode != 0:
            raise RuntimeError(f"stall probe on CPU {cpu} exited {proc.returncode}")
        out[cpu] = json.loads(stdout.strip().splitlines()[-1])
    return out


def stall_figures(seconds: float) -> tuple[list[Figure], dict[str, Any]]:
    """The probe as figures (stalls ≥ 1 ms per second over all CPUs, the longest, the share of
    time stalled) and the raw per-CPU results for the JSON."""
    by_cpu = measure(seconds)
    per_s = sum(r["over_1000us_per_s"] for r in by_cpu.values())
    longest = max((r["longest_us"] for r in by_cpu.values()), default=0.0)
    worst = max((r["stalled_fraction"] for r in by_cpu.values()), default=0.0)
    detail = "; ".join(
        f"CPU {cpu}: {r['over_1000us_per_s']:.1f}/s ≥ 1 ms, {r['over_250us_per_s']:.1f}/s "
        f"≥ 0.25 ms, longest {r['longest_us']:,.0f} µs"
        for cpu, r in by_cpu.items()
    )
    figures = [
        Figure("machine_stalls_over_1ms_per_s", per_s, "/s",
               note=f"a spinning process per CPU, idle machine, {seconds:g} s: {detail}"),
        Figure("machine_stall_longest_us", longest, "µs", note="the longest gap on any CPU"),
        Figure("machine_stalled_fraction", worst, "ratio",
               note="time in gaps ≥ 50 µs / wall time, the worst CPU"),
    ]  # fmt: skip
    return figures, {"machine_stalls": {str(cpu): r for cpu, r in by_cpu.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stalls", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--cpu", type=int, default=None, help="probe this CPU only (pinned)")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
        print(json.dumps({"cpu": args.cpu, **probe_cpu(args.seconds)}))
        return 0
    for cpu, result in measure(args.seconds).items():
        print(json.dumps({"cpu": cpu, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
