"""The gRPC bench scenarios run end to end in `--quick` form and write sane JSON.

No timing assertions: each test only checks that the runner works, that the figures exist and
are finite and non-negative, and that the points/table/plot were written. h2load is never
required (its figures are checked only when present).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, name: str, *extra: str, timeout: float = 420) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    png = tmp_path / f"{name}.png"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--json", str(out), "--plot", str(png),
         *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["scenario"] == name
    assert f"bench {name} --quick" in data["command"]
    assert data["date"] and data["machine"]["cores"]
    assert png.exists() and png.stat().st_size > 0
    return data


def _figure(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    assert isinstance(value, int | float), f"{key}: {value!r}"
    assert math.isfinite(value) and value >= 0, f"{key}: {value!r}"
    return float(value)


def _points(data: dict[str, Any], systems: set[str], server_cpu: bool = False) -> None:
    """`server_cpu`: every step measured the server process's CPU per call (a Python server
    handles a call with at least some tens of µs of CPU, and no more than the step's wall time
    per call)."""
    points = data["points"]
    assert points and {p["system"] for p in points} >= systems
    for p in points:
        assert p["offered_per_s"] > 0 and p["ok"] > 0
        assert 0 < p["p50_us"] <= p["p99_us"] <= p["max_us"]
        if server_cpu:
            assert 10 < p["server_cpu_us_per_call"] < 1e6 / p["offered_per_s"] * 5, p
    assert data["table_md"].startswith("| system |")
    if server_cpu:
        assert "| server CPU µs/call |" in data["table_md"].splitlines()[0]


def test_grpc_floor_quick(tmp_path: Path) -> None:
    data = _run(tmp_path, "grpc-floor")
    assert _figure(data, "floor_saturation_per_s") > 0
    _figure(data, "floor_p99_under_1ms_per_s")
    _points(data, {"grpc-floor"}, server_cpu=True)


def test_sweep_quick(tmp_path: Path) -> None:
    data = _run(tmp_path, "sweep", "--no-h2load")
    for key in ("get_availability", "reserve", "mix"):
        _figure(data, f"{key}_p99_under_1ms_per_s")
        assert _figure(data, f"{key}_peak_ok_per_s") > 0
    _points(data, {"omnistock availability", "omnistock reserve", "omnistock mix"}, server_cpu=True)
    assert data["durability"] == "sync" and data["positions"] > 0
    # Three steps per series at half its saturation (without h2load: its most answers/s swept);
    # the figure is the median of their p99s.
    for key, series in (("get_availability", "availability"), ("reserve", "reserve"),
                        ("mix", "mix")):  # fmt: skip
        p99 = _figure(data, f"{key}_p99_at_half_saturation_us")
        halves = [p for p in data["points"] if p["system"] == f"omnistock {series} @ 50 %"]
        swept = max(p["ok_per_s"] for p in data["points"] if p["system"] == f"omnistock {series}")
        assert len(halves) == 3
        assert p99 == sorted(p["p99_us"] for p in halves)[1]
        for half in halves:
            assert half["saturation_per_s"] == swept
            assert half["offered_per_s"] == round(0.5 * swept)
        assert data["targets"][f"{key}_p99_at_half_saturation_us"]["op"] == "<="
        # Each half step is followed by one of the empty handler at the same rate.
        controls = [p for p in data["points"] if p["system"] == f"empty handler, {series} @ 50 %"]
        assert [p["offered_per_s"] for p in controls] == [p["offered_per_s"] for p in halves]
        control = _figure(data, f"{key}_empty_handler_p99_at_half_us")
        assert control == sorted(p["p99_us"] for p in controls)[1]
        assert f"{key}_empty_handler_p99_at_half_us" not in data["targets"]
    _stalls(data)


def _stalls(data: dict[str, Any]) -> None:
    """The machine's stall probe ran on every CPU before the load."""
    by_cpu = data["machine_stalls"]
    assert sorted(map(int, by_cpu)) == data["machine"]["cpus_allowed"]
    per_s = sum(r["over_1000us_per_s"] for r in by_cpu.values())
    assert _figure(data, "machine_stalls_over_1ms_per_s") == pytest.approx(per_s)
    for r in by_cpu.values():
        assert 0.4 <= r["seconds"] <= 5 and r["over_250us"] >= r["over_1000us"] >= 0


def test_sweep_ratio_rounds_alternate(tmp_path: Path) -> None:
    """With h2load, GetAvailability and the empty handler are measured in alternating rounds and
    the ratio is the median of the rounds' ratios, its rates the medians of the rounds'."""
    from bench.loadgen import find_h2load

    if find_h2load() is None:
        pytest.skip("h2load is not installed (bench/README.md, 'Getting h2load')")
    data = _run(tmp_path, "sweep", "--series", "availability", "--ratio-rounds", "3")
    rounds = data["h2load"]["rounds"]
    assert [r["first"] for r in rounds] == ["get_availability", "floor", "get_availability"]
    for r in rounds:
        avail, floor = r["get_availability"], r["floor"]
        assert avail["succeeded"] > 0 and floor["succeeded"] > 0
        assert r["ratio"] == pytest.approx(avail["rate_per_s"] / floor["rate_per_s"])
        # Each server's CPU per call: some CPU for its calls, and no more than one core's worth
        # of its run (it is pinned to CPU 0); the CPU ratio is the floor's over GetAvailability's.
        for run in (avail, floor):
            assert 0 < run["server_cpu_s"] <= 1.2 * run["seconds"] + 0.05
            assert run["server_cpu_us_per_call"] == pytest.approx(
                1e6 * run["server_cpu_s"] / run["succeeded"]
            )
        assert r["cpu_ratio"] == pytest.approx(
            floor["server_cpu_us_per_call"] / avail["server_cpu_us_per_call"]
        )
    assert _figure(data, "get_availability_vs_floor") == pytest.approx(
        statistics.median(r["ratio"] for r in rounds)
    )
    assert _figure(data, "floor_saturation_per_s") == pytest.approx(
        statistics.median(r["floor"]["rate_per_s"] for r in rounds)
    )
    assert data["targets"]["get_availability_vs_floor"]["op"] == ">="
    assert _figure(data, "get_availability_vs_floor_cpu") == pytest.approx(
        statistics.median(r["cpu_ratio"] for r in rounds)
    )
    assert _figure(data, "floor_server_cpu_us_per_call") == pytest.approx(
        statistics.median(r["floor"]["server_cpu_us_per_call"] for r in rounds)
    )


def test_batch_quick(tmp_path: Path) -> None:
    data = _run(tmp_path, "batch")
    assert _figure(data, "availability_lines_per_s") > 0
    assert _figure(data, "reserve_lines_per_s") > 0
    for size in (10, 100):
        for via in ("unary", "stream"):
            _figure(data, f"availability_lines_per_s_{size}_{via}")
            _figure(data, f"reserve_lines_per_s_{size}_{via}")
    assert data["durability"] == "sync" and data["table_md"].startswith("| kind |")
    for row in data["rows"]:
        assert sum(row["error_codes"].values()) == row["errors"]
    clean = [r["lines_per_s"] for r in data["rows"] if r["kind"] == "reserve" and not r["errors"]]
    assert _figure(data, "reserve_lines_per_s") == max(clean)


def test_peers_quick(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from bench.peers.private_pg import pg_bindir

    if pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries for the private cluster")
    data = _run(tmp_path, "peers")
    assert data["postgres"] == "private"
    for system in ("omnistock", "redis_lua", "postgres"):
        assert _figure(data, f"{system}_mix_ok_per_s") > 0
        # Saturation is the better of the open-loop steps and the closed loop, both reported.
        closed = _figure(data, f"{system}_reserves_per_s_closed")
        assert closed > 0
        stepped = _figure(data, f"{system}_reserves_per_s_stepped")
        assert _figure(data, f"{system}_reserves_per_s") == max(stepped, closed)
    for system in ("omnistock", "redis-lua", "postgres"):
        run = data["reserve_closed"][system]
        assert run["errors"] == 0 and run["calls"] > 0
    for peer in ("redis_lua", "postgres"):
        assert _figure(data, f"omnistock_vs_{peer}_reserves") == pytest.approx(
            _figure(data, "omnistock_reserves_per_s") / _figure(data, f"{peer}_reserves_per_s")
        )
    from bench.loadgen import find_h2load

    if find_h2load() is not None:  # the front's ceiling: the empty handler under h2load
        ceiling = _figure(data, "front_ceiling_per_s")
        assert ceiling == data["front_ceiling"]["rate_per_s"] > 0
        for peer in ("redis_lua", "postgres"):
            assert _figure(data, f"front_ceiling_vs_{peer}_reserves") == pytest.approx(
                ceiling / _figure(data, f"{peer}_reserves_per_s")
            )
    else:
        assert data["front_ceiling"] is None
    for system in ("omnistock", "redis_lua", "postgres"):
        assert _figure(data, f"{system}_batched_reserves_per_s") > 0
    for peer in ("redis_lua", "postgres"):
        _figure(data, f"omnistock_vs_{peer}_batched_reserves")
        assert data["targets"][f"omnistock_vs_{peer}_batched_reserves"]["op"] == ">="
    assert data["durability"] == "sync"
    assert {r["errors"] for r in data["batched"].values()} == {0}
    assert data["batched_table_md"].startswith("| system | ReserveBatch x10")
    assert _figure(data, "redis_direct_depth_16_reserves_per_s") > 0
    per_core = "omnistock_batched_per_core_vs_redis_direct_piped_per_core"
    assert _figure(data, per_core) == pytest.approx(
        _figure(data, "omnistock_batched_reserves_per_s")
        / _figure(data, "redis_direct_depth_16_reserves_per_redis_cpu_s")
    )
    assert data["targets"][per_core]["op"] == ">="
    if "omnistock_mix_p99_us_at_common_rate" in data:  # every system answered a mix rate
        median = _figure(data, "omnistock_p99_vs_best_peer_median")
        top = _figure(data, "omnistock_p99_vs_best_peer_at_common_rate")
        assert "rates every system answered" in data["notes"]["omnistock_p99_vs_best_peer_median"]
        if data["notes"]["omnistock_p99_vs_best_peer_median"].startswith("median over the 1 "):
            assert median == pytest.approx(top)
        assert data["targets"]["omnistock_p99_vs_best_peer_median"]["op"] == "<="
        assert "omnistock_p99_vs_best_peer_at_common_rate" not in data["targets"]
    _points(data, {"omnistock mix", "redis-lua mix", "postgres reserve"})


def test_recovery_quick(tmp_path: Path) -> None:
    out = tmp_path / "recovery.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "recovery", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["positions"] == 40_000 and data["journal_entries"] == 2_000
    for key in ("recovery_s", "recovery_snapshot_only_s", "warm_up_s", "replay_entries_per_s"):
        assert _figure(data, key) > 0
    assert data["targets"]["recovery_s"]["op"] == "<="
    # Each restart is its own process and recovers the whole state; the figure is their median.
    restarts = data["restarts"]
    assert len(restarts) == 2
    assert all(r["replayed"] == 2_000 and r["positions"] == 40_000 for r in restarts)
    assert _figure(data, "recovery_s") == pytest.approx(
        statistics.median(r["recovery_s"] for r in restarts)
    )
    assert [r["replayed"] for r in data["snapshot_only_restarts"]] == [0, 0]


def test_durability_quick(tmp_path: Path) -> None:
    data = _run(tmp_path, "durability")
    for mode in ("sync", "async", "none"):
        _figure(data, f"reserve_p99_under_1ms_per_s_{mode}")
        peak = _figure(data, f"reserve_peak_ok_per_s_{mode}")
        assert peak > 0
        halves = [p for p in data["points"] if p["system"] == f"{mode} reserve @ 50 %"]
        assert len(halves) == 3 and {p["offered_per_s"] for p in halves} == {round(0.5 * peak)}
        p99 = _figure(data, f"reserve_p99_at_half_saturation_us_{mode}")
        assert p99 == sorted(p["p99_us"] for p in halves)[1]
        controls = [p for p in data["points"] if p["system"] == "empty handler, reserve @ 50 %"
                    and p["offered_per_s"] == round(0.5 * peak)]  # fmt: skip
        assert len(controls) >= 3
        _figure(data, f"reserve_empty_handler_p99_at_half_us_{mode}")
    _points(data, {"sync reserve", "async reserve", "none reserve"}, server_cpu=True)
    _stalls(data)


def test_replicas_small(tmp_path: Path) -> None:
    """Primary + replica + private redis-server as processes: visibility, watcher delivery and
    read throughput figures exist (a small run; no timing assertions)."""
    out = tmp_path / "replicas.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "replicas", "--json", str(out), "--writes", "20",
         "--seconds", "0.5", "--clients", "1", "--queries", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["scenario"] == "replicas"
    for key in ("visibility_ms_p50", "visibility_ms_p99", "watcher_delivery_ms_p50",
                "watcher_delivery_ms_p99"):  # fmt: skip
        _figure(data, key)
    assert _figure(data, "visibility_ms_p50") <= _figure(data, "visibility_ms_p99")
    assert _figure(data, "reads_per_s_primary_alone") > 0
    assert _figure(data, "reads_per_s_primary_plus_replica") > 0


def test_reserve_streams_stay_under_the_write_queue_bound() -> None:
    from bench.batch import RESERVE_WINDOW_LINES, reserve_window
    from server.config import QUEUE_COMMANDS_MAX

    assert [reserve_window(n) for n in (1, 10, 100, 1_000, 5_000)] == [16, 16, 16, 2, 1]
    streams = 16  # the default: 8 in flight x 2 processes
    assert streams * RESERVE_WINDOW_LINES <= QUEUE_COMMANDS_MAX
