"""How `bench peers` reads its measurements: unary saturation and the front's ceiling.

The scenario itself runs end to end in tests/test_bench_scenarios.py; these pin its rules on
made-up measurements, without servers.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import grpc_floor, harness, loadgen
from bench.peers_scenario import _front_ceiling, saturation


def _closed(rate: float, ran_out: bool = False, errors: int = 0) -> dict[str, Any]:
    return {"calls_per_s": rate, "ran_out": ran_out, "errors": errors}


def test_saturation_is_the_better_of_both_measurements_that_count() -> None:
    stepped = {"omnistock": 1_759.0, "redis-lua": 1_124.0, "postgres": 441.0, "x": 10.0}
    closed = {
        "omnistock": _closed(2_051.0),  # above its step peak: counted
        "redis-lua": _closed(1_000.0),  # below: the step peak stands
        "postgres": _closed(900.0, ran_out=True),  # ran out of requests: not counted
        "x": _closed(50.0, errors=3),  # errors: not counted
    }
    rates, counted = saturation(stepped, closed)
    assert rates == {"omnistock": 2_051.0, "redis-lua": 1_124.0, "postgres": 441.0, "x": 10.0}
    assert counted == {"omnistock", "redis-lua"}
    # Without closed loops (--no-closed) the step peaks are the rates.
    assert saturation(stepped, {}) == (stepped, set())


class _Server:
    target = "127.0.0.1:1"


@pytest.fixture
def args() -> argparse.Namespace:
    return argparse.Namespace(h2load_requests=1_000)


def _h2load(result: dict[str, Any] | None) -> Any:
    def fake(target: str, method: str, payload: bytes, requests: int, **_: Any) -> Any:
        assert method == grpc_floor.EMPTY_METHOD and requests == 1_000
        return result

    return fake


@contextlib.contextmanager
def _floor(tmp: Path, cpu: int | None = None) -> Iterator[_Server]:
    yield _Server()


def test_front_ceiling_without_h2load_starts_nothing(
    tmp_path: Path, args: argparse.Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_server(*_: Any, **__: Any) -> Any:
        raise AssertionError("the empty server must not start without h2load")

    monkeypatch.setattr(loadgen, "find_h2load", lambda: None)
    monkeypatch.setattr(grpc_floor, "start_floor_server", no_server)
    assert _front_ceiling(tmp_path, args) is None


@pytest.mark.parametrize(
    ("result", "counted"),
    [
        ({"rate_per_s": 6_311.0, "succeeded": 1_000, "failed": 0, "streams": 32}, True),
        ({"rate_per_s": 9_000.0, "succeeded": 990, "failed": 10, "streams": 32}, False),
        ({"rate_per_s": 0.0, "succeeded": 0, "failed": 0, "streams": 32}, False),
        (None, False),
    ],
)
def test_front_ceiling_counts_only_a_clean_h2load_run(
    tmp_path: Path,
    args: argparse.Namespace,
    monkeypatch: pytest.MonkeyPatch,
    result: dict[str, Any] | None,
    counted: bool,
) -> None:
    monkeypatch.setattr(loadgen, "find_h2load", lambda: "/usr/bin/h2load")
    monkeypatch.setattr(grpc_floor, "start_floor_server", _floor)
    monkeypatch.setattr(harness, "h2load_closed", _h2load(result))
    assert _front_ceiling(tmp_path, args) == (result if counted else None)


def test_front_ceiling_failure_keeps_the_run(
    tmp_path: Path, args: argparse.Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("h2load output not understood")

    monkeypatch.setattr(loadgen, "find_h2load", lambda: "/usr/bin/h2load")
    monkeypatch.setattr(grpc_floor, "start_floor_server", _floor)
    monkeypatch.setattr(harness, "h2load_closed", broken)
    assert _front_ceiling(tmp_path, args) is None
