"""The open-loop load generator: loopback only, bounded, counts every request and every error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.loadgen import (
    EMPTY_METHOD,
    check_loopback,
    read_payloads,
    run_open_loop,
    start_empty_server,
    stop,
    write_payloads,
)


@pytest.mark.parametrize(
    "target", ["127.0.0.1:50051", "localhost:1", "[::1]:80", "ipv4:127.0.0.2:9", "unix:/tmp/s"]
)
def test_loopback_targets_are_accepted(target: str) -> None:
    check_loopback(target)


@pytest.mark.parametrize("target", ["10.0.0.1:50051", "example.com:443", "[2001:db8::1]:1"])
def test_other_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        check_loopback(target)
    with pytest.raises(ValueError, match="loopback"):
        run_open_loop(target, EMPTY_METHOD, [b""], 10, 1)


def test_limits_are_enforced() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        run_open_loop("127.0.0.1:1", EMPTY_METHOD, [b""], 10_000_000, 1)
    with pytest.raises(ValueError, match="duration_s"):
        run_open_loop("127.0.0.1:1", EMPTY_METHOD, [b""], 10, 10_000)
    with pytest.raises(ValueError, match="payloads"):
        run_open_loop("127.0.0.1:1", EMPTY_METHOD, [], 10, 1)
    with pytest.raises(ValueError, match="transport"):
        run_open_loop("127.0.0.1:1", EMPTY_METHOD, [b""], 10, 1, transport="carrier-pigeon")


def test_payload_file_round_trip(tmp_path: Path) -> None:
    payloads = [b"", b"\x08\x01", bytes(range(256)) * 3]
    write_payloads(tmp_path / "p.bin", payloads)
    assert read_payloads(tmp_path / "p.bin") == payloads
    (tmp_path / "bad.bin").write_bytes(b"\x00\x00\x00\x00\x09abc")
    with pytest.raises(ValueError, match="frame"):
        read_payloads(tmp_path / "bad.bin")


@pytest.fixture(scope="module")
def empty_server() -> Iterator[str]:
    proc, target = start_empty_server(60)
    try:
        yield target
    finally:
        stop(proc)


@pytest.mark.parametrize("transport", ["h2", "grpcio"])
def test_open_loop_sends_the_schedule(empty_server: str, transport: str) -> None:
    result = run_open_loop(
        empty_server, EMPTY_METHOD, [b"a", b"b"], 400, 1.0, processes=2, transport=transport
    )
    assert result.requests_scheduled == result.sent == 400
    assert result.ok == 400 and result.errors == {}
    assert 0 < result.latency_us["p50"] <= result.latency_us["p99"] <= result.latency_us["max"]
    assert len(result.client_cpu_s) == 2 and all(c > 0 for c in result.client_cpu_s)
    assert result.achieved_rate_per_s > 200


@pytest.mark.parametrize("transport", ["h2", "grpcio"])
def test_errors_are_counted_by_code(empty_server: str, transport: str) -> None:
    result = run_open_loop(empty_server, "/no.Such/Method", [b""], 100, 0.5, transport=transport)
    assert result.ok == 0
    assert result.errors == {"UNIMPLEMENTED": 50}


def test_h2load_driver(empty_server: str) -> None:
    from bench.loadgen import find_h2load, run_h2load

    if find_h2load() is None:
        pytest.skip("h2load is not installed (Debian: nghttp2-client)")
    result = run_h2load(empty_server, EMPTY_METHOD, b"", 200, 0.5)
    assert result.ok == 100 and result.errors == {}
    assert result.client_cpu_s[0] > 0


def test_a_mix_of_methods_in_one_schedule(empty_server: str) -> None:
    result = run_open_loop(
        empty_server, "mix", [b"", b""], 200, 0.5, methods=[EMPTY_METHOD, "/no.Such/Method"]
    )
    assert result.ok == 50 and result.errors == {"UNIMPLEMENTED": 50}
    assert set(result.latency_us_by_method) == {EMPTY_METHOD, "/no.Such/Method"}
    with pytest.raises(ValueError, match="one method per payload"):
        run_open_loop(empty_server, "mix", [b""], 10, 1, methods=[])


def test_sweep_stops_at_the_first_failing_step(empty_server: str) -> None:
    from bench.loadgen import sweep_open_loop

    steps = sweep_open_loop(empty_server, EMPTY_METHOD, [b""], [100, 200, 400], 0.3, p99_us_max=1)
    assert len(steps) == 1  # no empty call answers within 1 µs
    assert steps[0].rate_per_s == 100


def _fake_result(rate: float, p99_us: float) -> Any:
    from bench.loadgen import Result

    lat = {"p50": p99_us / 2, "p90": p99_us, "p99": p99_us, "p99.9": p99_us, "max": p99_us}
    n = int(rate)
    return Result("127.0.0.1:1", "m", rate, 1.0, 1, n, n, n, {}, 1.0, rate, lat, 0.0, [0.1], [0.1])


def test_step_rates_runs_an_uncounted_warm_up_first() -> None:
    from bench.harness import step_rates

    calls: list[float] = []

    def one(rate: float) -> Any:
        calls.append(rate)
        return _fake_result(rate, 5_000.0 if len(calls) == 1 else 500.0)  # a slow first step

    points = step_rates(one, "x", [100.0, 200.0], log=lambda _: None)
    assert calls == [100.0, 100.0, 200.0]
    assert [p["offered_per_s"] for p in points] == [100.0, 200.0]
    assert all(p["p99_us"] == 500.0 for p in points)  # the slow warm-up is not a point
    calls.clear()
    cold = step_rates(one, "x", [100.0, 200.0], log=lambda _: None, warm_up=False)
    assert calls == [100.0, 200.0] and cold[0]["p99_us"] == 5_000.0
