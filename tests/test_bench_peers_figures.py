"""How `bench peers` reads its measurements: unary saturation, the front's ceiling and p99 at
equal offered load.

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
from bench.peers_scenario import _equal_load_figures, _front_ceiling, equal_loads, saturation


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


def _mix(*steps: tuple[float, float, float]) -> dict[str, list[dict[str, Any]]]:
    """A system's mix steps from (offered, achieved, p99_us)."""
    return {"mix": [{"offered_per_s": o, "achieved_per_s": a, "p99_us": p} for o, a, p in steps]}


def test_equal_loads_are_the_rates_every_system_answered() -> None:
    rates = [250.0, 375.0, 562.0, 844.0]
    points = {
        "omnistock": _mix(
            (250, 250, 3_000), (375, 375, 2_900), (562, 562, 2_500), (844, 844, 3_100)
        ),
        # redis-lua missed 375/s (< 95 % answered), answered exactly 95 % of 562/s (enough)
        # and has no 844/s step at all
        "redis-lua": _mix((250, 250, 4_300), (375, 356, 3_000), (562, 0.95 * 562, 3_200)),
    }
    assert equal_loads(points, ["omnistock", "redis-lua"], rates) == [
        (250.0, {"omnistock": 3_000, "redis-lua": 4_300}),
        (562.0, {"omnistock": 2_500, "redis-lua": 3_200}),
    ]


def test_p99_target_is_the_median_ratio_to_the_best_peer_over_equal_loads() -> None:
    rates = [250.0, 375.0, 562.0, 844.0]
    points = {
        "omnistock": _mix((250, 250, 700), (375, 375, 900), (562, 562, 800), (844, 844, 3_000)),
        "redis-lua": _mix((250, 250, 1_000), (375, 375, 1_000), (562, 562, 400), (844, 844, 2_000)),
        "postgres": _mix((250, 250, 900), (375, 375, 3_000), (562, 562, 1_000), (844, 844, 9_000)),
    }
    figures = {f.key: f for f in _equal_load_figures(points, list(points), rates)}
    # Best peer per rate: postgres 900, redis-lua 1,000, redis-lua 400, redis-lua 2,000.
    ratios = [700 / 900, 900 / 1_000, 800 / 400, 3_000 / 2_000]
    median = figures["omnistock_p99_vs_best_peer_median"]
    assert median.value == pytest.approx((ratios[1] + ratios[3]) / 2)  # 0.9 and 1.5
    assert median.target == 1.0 and not median.at_least and median.met is False
    assert "lowest at 2 of 4" in median.note
    # The highest common rate alone is still reported, without a target.
    top = figures["omnistock_p99_vs_best_peer_at_common_rate"]
    assert top.value == pytest.approx(1.5) and top.target is None
    assert figures["postgres_mix_p99_us_at_common_rate"].value == 9_000
    # One stall at one step does not decide the verdict: omnistock lower at 3 of 4 rates.
    points["omnistock"]["mix"][2]["p99_us"] = 300
    again = {f.key: f for f in _equal_load_figures(points, list(points), rates)}
    assert again["omnistock_p99_vs_best_peer_median"].met is True


def test_no_ratio_without_a_common_rate_or_a_peer() -> None:
    rates = [250.0, 375.0]
    points = {
        "omnistock": _mix((250, 250, 700), (375, 375, 900)),
        "postgres": _mix((250, 200, 900)),  # never answered 95 % of any rate
    }
    assert _equal_load_figures(points, list(points), rates) == []
    alone = _equal_load_figures({"omnistock": points["omnistock"]}, ["omnistock"], rates)
    assert [f.key for f in alone] == ["omnistock_mix_p99_us_at_common_rate"]
    assert alone[0].value == 900
