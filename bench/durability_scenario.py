"""durability: the unary Reserve sweep of `sweep` with the server in `sync`, `async` and `none`.

- `sync`: every batch is fsynced before its callers are answered (group commit);
- `async`: written at once, fsynced every `async_fsync_interval_ms` (5 ms) in the background;
- `none`: written, never fsynced (the OS flushes when it likes).

Same workload, same request bytes, same steps (×1.4 from `--rate-start`), each mode on a fresh
data directory and a fresh server (`taskset -c 0`), Python open-loop workers on CPU 1. Reported
per mode: the highest offered rate holding p99 < 1 ms, the most successful reserves/s in a step
(the mode's saturation), and the median p99 of `--half-steps` (3) steps at exactly half that
rate on a fresh server on the same data (after an uncounted warm-up step at it), each followed by
a control step of the empty handler at that rate, as `sweep` does for its series; and first, the
machine's own stalls (`bench/stalls.py`).

    python -m bench durability --json durability.json --plot durability.png
    python -m bench durability --quick --json /tmp/d.json      # seconds (tests)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import Figure, finish
from bench.harness import ServerRun, best_rate, peak_achieved, seed_data_dir, workdir, write_outputs
from bench.sweep import (
    P99_US_MAX,
    add_sweep_arguments,
    control_server,
    half_figures,
    half_saturation_steps,
    machine_stalls,
    quick,
    spec_of,
    sweep_server,
)

MODES = ("sync", "async", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_sweep_arguments(p)
    p.add_argument("--modes", default=",".join(MODES))


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    quick(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    figures: list[Figure] = []
    all_points: list[dict[str, Any]] = []
    stall_figs, stall_extra = machine_stalls(args)
    for mode in modes:
        with workdir(f"durability-{mode}") as tmp:
            data = Path(tmp) / "data"
            net = seed_data_dir(data, spec_of(args))
            with ServerRun.omnistock(data, mode) as server:
                points = sweep_server(server, net, args, mode, ["reserve"])["reserve"]
            # A fresh server (recovering the sweep's journal), as in `sweep`: not one still
            # digesting the overload of the last steps.
            saturation = {"reserve": (peak_achieved(points), "most answers/s in the sweep")}
            with (
                ServerRun.omnistock(data, mode) as server,
                control_server(Path(tmp), args) as control,
            ):
                half = half_saturation_steps(server, net, args, saturation, mode, control)
        all_points += points
        if "reserve" in half:
            steps, controls = half["reserve"]
            all_points += steps + controls
            figures += half_figures("reserve", steps, controls, f"_{mode}")
        figures += [
            Figure(f"reserve_p99_under_1ms_per_s_{mode}", best_rate(points, P99_US_MAX), "req/s",
                   note="highest offered rate holding p99 < 1 ms"),
            Figure(f"reserve_peak_ok_per_s_{mode}", peak_achieved(points), "req/s",
                   note="most successful reserves/s in a step"),
        ]  # fmt: skip
    figures += stall_figs
    payload = finish("durability", figures, args.json, None, extra={"modes": modes, **stall_extra},
                     argv=argv)  # fmt: skip
    write_outputs(payload, all_points, args, "durability: unary Reserve sweep per mode")
    return payload
