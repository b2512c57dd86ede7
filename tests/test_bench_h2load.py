"""The h2load open-loop client: its log is set against the --rps schedule (latency from the
intended send time), its counts and its plan; and, when h2load is installed, a real run against
the grpc-floor empty server. No timing assertions."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadgen import (
    check_grpc_ok,
    find_h2load,
    h2load_plan,
    parse_h2load_log,
    parse_h2load_stdout,
    run_h2load,
)

T0 = 1_700_000_000_000_000  # µs since the epoch


def _log(rows: list[tuple[int, int, int]]) -> str:
    return "".join(f"{T0 + s}\t{status}\t{d}\n" for s, status, d in rows)


def test_log_on_schedule_keeps_h2loads_latency() -> None:
    # 1,000/s: due every 1,000 µs; every request sent on time.
    log = parse_h2load_log(_log([(0, 200, 300), (1_000, 200, 400), (2_000, 200, 500)]), 1_000)
    assert log.ok == 3 and log.errors == {} and log.rows == 3
    assert log.from_send_us == [300, 400, 500]
    assert log.from_due_us == [300, 400, 500]
    assert log.lag_us == [0, 0, 0]
    assert log.first_start_us == T0 and log.last_end_us == T0 + 2_500


def test_a_late_send_is_charged_from_its_intended_time() -> None:
    # The client stalled: requests due at 1,000 and 2,000 µs went out together at 4,000 µs
    # (rows arrive ordered by end of response, not by send).
    rows = [(0, 200, 100), (4_000, 200, 200), (4_000, 200, 300), (3_000, 200, 50)]
    log = parse_h2load_log(_log(rows), 1_000)
    # In order of send: 0 (due 0), 3,000 (due 1,000), 4,000 (due 2,000), 4,000 (due 3,000).
    assert log.from_send_us == [100, 50, 200, 300]
    assert log.lag_us == [0, 2_000, 2_000, 1_000]
    assert log.from_due_us == [100, 2_050, 2_200, 1_300]
    assert all(d >= s for d, s in zip(log.from_due_us, log.from_send_us, strict=True))


def test_an_early_send_is_not_credited() -> None:
    log = parse_h2load_log(_log([(0, 200, 100), (600, 200, 100)]), 1_000)  # due at 1,000
    assert log.lag_us == [0, -400]
    assert log.from_due_us == [100, 100]  # never below h2load's own figure


def test_failed_streams_and_http_errors_are_counted() -> None:
    log = parse_h2load_log(_log([(0, 200, 10), (1_000, -1, 20), (2_000, 503, 30)]), 1_000)
    assert log.ok == 1
    assert log.errors == {"H2LOAD_STREAM_FAILED": 1, "HTTP_503": 1}
    assert log.rows == 3


def test_log_parsing_rejects_garbage() -> None:
    assert parse_h2load_log("", 100).rows == 0
    with pytest.raises(ValueError, match="line 2"):
        parse_h2load_log(f"{T0}\t200\t5\nnot a row\n", 100)
    with pytest.raises(ValueError, match="rps"):
        parse_h2load_log("", 0)


def test_stdout_summary_is_parsed() -> None:
    text = (
        "finished in 2.00s, 1000.08 req/s, 63.06KB/s\n"
        "requests: 2000 total, 2000 started, 1999 done, 1998 succeeded, 2 failed, 1 errored, "
        "0 timeout\nstatus codes: 1998 2xx, 0 3xx, 0 4xx, 0 5xx\n"
    )
    counts = parse_h2load_stdout(text)
    assert counts["total"] == 2000 and counts["done"] == 1999 and counts["failed"] == 2
    assert counts["2xx"] == 1998
    assert "data_bytes" not in counts
    traffic = (
        "traffic: 6.00KB (6145) total, 375B (375) headers (space savings 95.37%), 500B (500) data"
    )
    assert parse_h2load_stdout(text + traffic)["data_bytes"] == 500
    assert parse_h2load_stdout("h2load: connection refused") == {}


def test_plan_keeps_each_client_at_one_request_per_tick() -> None:
    plan = h2load_plan(250, 2.0)
    assert len(plan) == 3  # ceil(250 / 100)
    assert sum(n for _, n in plan) == 500
    assert all(abs(rps - 250 / 3) < 1e-9 for rps, _ in plan)
    assert h2load_plan(50, 0.1) == [(50.0, 5)]
    assert sum(n for _, n in h2load_plan(10_000, 1.0)) == 10_000
    assert len(h2load_plan(10_000, 1.0)) == 100
    assert len(h2load_plan(1_000, 1.0, processes=4)) == 4


def test_h2load_failures_fail_the_step() -> None:
    from bench.harness import failures, holds

    point = {"errors": {"H2LOAD_UNANSWERED": 5, "HTTP_503": 1, "NOT_FOUND": 3}, "ok": 100,
             "p99_us": 10.0, "achieved_per_s": 100.0, "offered_per_s": 100.0}  # fmt: skip
    assert failures(point) == 6
    assert not holds(point, 1_000)


def test_client_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench.harness import latency_client

    monkeypatch.delenv("OMNISTOCK_H2LOAD", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no h2load here
    assert latency_client(argparse.Namespace(client=None)) == "python"
    assert latency_client(argparse.Namespace(client="python")) == "python"
    with pytest.raises(SystemExit, match="h2load not found"):
        latency_client(argparse.Namespace(client="h2load"))
    fake = tmp_path / "h2load"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert latency_client(argparse.Namespace(client="h2load")) == "h2load"
    assert latency_client(argparse.Namespace(client=None)) == "python"  # found, not the default


@pytest.fixture(scope="module")
def floor_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from bench.grpc_floor import start_floor_server

    server = start_floor_server(tmp_path_factory.mktemp("floor"), cpu=None)
    try:
        yield server.target
    finally:
        server.stop()


def test_a_request_that_grpc_refuses_is_not_replayed(floor_target: str) -> None:
    from bench.grpc_floor import EMPTY_METHOD, PAYLOAD

    check_grpc_ok(floor_target, EMPTY_METHOD, PAYLOAD)  # the empty handler answers OK
    with pytest.raises(RuntimeError, match="UNIMPLEMENTED"):
        check_grpc_ok(floor_target, "/no.Such/Method", PAYLOAD)


@pytest.mark.skipif(
    find_h2load() is None, reason="h2load not installed (bench/tools/get_h2load.sh)"
)
def test_h2load_open_loop_against_the_floor_server(floor_target: str) -> None:
    from bench.grpc_floor import EMPTY_METHOD, PAYLOAD

    result = run_h2load(floor_target, EMPTY_METHOD, [PAYLOAD], 150, 1.0)
    assert result.client == "h2load"
    assert result.processes == 2 and result.requests_scheduled == 150
    assert result.ok == result.sent == 150 and result.errors == {}
    assert result.client_cpu_s[0] > 0
    lat, sent = result.latency_us, result.latency_us_from_send
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    # Latency from the intended send is never below h2load's own, request by request.
    for p in ("p50", "p90", "p99", "max"):
        assert lat[p] >= sent[p]
    assert result.send_lag_us["min"] <= 0 <= result.send_lag_max_us  # the first is due at once
    with pytest.raises(RuntimeError, match="UNIMPLEMENTED"):
        run_h2load(floor_target, "/no.Such/Method", PAYLOAD, 100, 0.2)
    # Unchecked, the gRPC errors (HTTP 200, trailers only) are found by the missing DATA.
    refused = run_h2load(floor_target, "/no.Such/Method", PAYLOAD, 100, 0.2, validate=False)
    assert refused.ok == 0 and refused.errors == {"H2LOAD_GRPC_ERROR": 20}


def test_h2load_is_found_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISTOCK_H2LOAD", os.devnull)
    assert find_h2load() == os.devnull
