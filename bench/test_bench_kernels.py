"""pytest-benchmark versions of the kernel loops, on a small ledger.

Run with `pytest bench/ --benchmark-enable` (the main test run has `--benchmark-disable` and
`testpaths = ["tests"]`, so it never collects these). Figures per call; a call is one batch of
`BATCH` lines. For the 10M-position figures and their targets use `python -m bench kernels`.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.kernels import NOW0_MS, TTL_MS, Workload, build_ledger, node_name, sku_name
from engine.codes import LineStatus

SKUS = 20_000
NODES = 50
BATCH = 10_000
ROUNDS = 20


@pytest.fixture(scope="module")
def workload() -> Workload:
    ledger = build_ledger(SKUS, NODES)
    w = Workload(ledger, SKUS, NODES, BATCH, ROUNDS)
    w.availability(0)
    w.reserve_round(0)
    return w


def _cycler(fn):
    state = {"i": 0}

    def call() -> None:
        fn(state["i"])
        state["i"] += 1

    return call


def test_availability_uniform(benchmark, workload: Workload) -> None:
    benchmark.extra_info["lines_per_call"] = BATCH
    benchmark(_cycler(workload.availability))
    assert (workload.out_status == LineStatus.OK).all()


def test_availability_hot(benchmark, workload: Workload) -> None:
    benchmark.extra_info["lines_per_call"] = BATCH
    benchmark(_cycler(workload.availability_hot))


def test_availability_ledger_ids(benchmark, workload: Workload) -> None:
    benchmark.extra_info["lines_per_call"] = BATCH
    benchmark(_cycler(workload.availability_ledger_ids))


def test_reserve_then_release(benchmark, workload: Workload) -> None:
    """One batch of one-line holds and their release (stock and counters end where they began)."""
    benchmark.extra_info["lines_per_call"] = BATCH
    before = workload.ledger._a["qty"].copy()
    benchmark(_cycler(workload.reserve_round))
    assert np.array_equal(workload.ledger._a["qty"], before)


def test_ledger_reserve_one_line(benchmark, workload: Workload) -> None:
    """One one-line Ledger.reserve and its Ledger.release, end to end (both in the timing)."""
    ledger = workload.ledger
    rng = np.random.default_rng(3)
    state = {"i": 0}
    s = rng.integers(0, SKUS, 1 << 16).tolist()
    n = rng.integers(0, NODES, 1 << 16).tolist()

    def call() -> None:
        i = state["i"]
        state["i"] += 1
        k = i & 0xFFFF
        rid = f"pb-{i}"
        ledger.reserve(rid, [(sku_name(s[k]), node_name(n[k]), 1)], TTL_MS, NOW0_MS)
        ledger.release(rid, NOW0_MS)

    benchmark(call)
