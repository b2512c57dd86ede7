"""Determinism: the same batches give byte-identical state, and snapshots continue exactly.

Also one run of the model comparison with numba's JIT off, so coverage sees the kernel lines
(see docs/ledger.md, "Testing without the JIT", for how the StructRef is stood in for).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codes import AdjustReason
from engine.commands import Adjust, Adjustment, GroupSpec, NodeSpec, UpsertGroups, UpsertNodes
from engine.ledger import Ledger
from tests.nojit import pytest_without_jit
from tests.test_ledger_model import NODES, SKUS, command, dt

T0 = 1_000_000


def setup_commands(units: int) -> list[Any]:
    """The model's nodes, two groups, and `units` of every SKU at every node."""
    return [
        UpsertNodes(tuple(NodeSpec(n) for n in NODES)),
        UpsertGroups((GroupSpec("g0", NODES[:2], 1), GroupSpec("g1", NODES[1:], 0, 50.0))),
        Adjust(
            "setup",
            tuple(Adjustment(s, n, units, AdjustReason.RECEIPT) for s in SKUS for n in NODES),
        ),
    ]


SETUP = setup_commands(4)
batches = st.lists(st.tuples(dt, st.lists(command, max_size=5)), min_size=1, max_size=30)


def run(ledger: Ledger, plan: list[tuple[int, list[Any]]], now: int = T0) -> int:
    for step_ms, cmds in plan:
        now += step_ms
        ledger.apply(now, cmds)
    return now


def frozen(ledger: Ledger) -> tuple[dict[str, tuple[str, tuple[int, ...], bytes]], bytes]:
    """The exported state as bytes (copied: export_state returns views of live arrays)."""
    arrays, meta = ledger.export_state()
    return {k: (str(a.dtype), a.shape, a.tobytes()) for k, a in arrays.items()}, meta


def restore(state: tuple[dict[str, np.ndarray], bytes], **kw: int) -> Ledger:
    arrays, meta = state
    return Ledger.from_state({k: a.copy() for k, a in arrays.items()}, meta, **kw)


@settings(max_examples=25)
@given(plan=batches, window=st.sampled_from((3_000, 86_400_000)))
def test_same_batches_same_bytes(plan: list[tuple[int, list[Any]]], window: int) -> None:
    plan = [(0, SETUP), *plan]
    one = Ledger(ids_window_ms=window)
    two = Ledger(ids_window_ms=window)
    run(one, plan)
    run(two, plan)
    assert frozen(one) == frozen(two)

    # Capacity hints only size the arrays; everything exported but the hash table (whose size
    # follows the initial position capacity) is the same bytes.
    small = Ledger(ids_window_ms=window, positions=16, reservations=4, nodes=2, skus=1)
    run(small, plan)
    arrays_one, meta_one = frozen(one)
    arrays_small, meta_small = frozen(small)
    assert meta_small == meta_one
    del arrays_one["table"], arrays_small["table"]
    assert arrays_small == arrays_one

    # export -> from_state -> export is the identity, byte for byte.
    again = restore(one.export_state(), ids_window_ms=window)
    assert frozen(again) == frozen(one)


@settings(max_examples=25)
@given(plan=batches, cut=st.integers(0, 30), window=st.sampled_from((3_000, 86_400_000)))
def test_snapshot_then_remaining_batches_equals_uninterrupted_run(
    plan: list[tuple[int, list[Any]]], cut: int, window: int
) -> None:
    plan = [(0, SETUP), *plan]
    cut = min(cut, len(plan))
    straight = Ledger(ids_window_ms=window)
    run(straight, plan)

    first = Ledger(ids_window_ms=window)
    now = run(first, plan[:cut])
    arrays, meta = first.export_state()
    snapshot = ({k: a.copy() for k, a in arrays.items()}, meta)
    resumed = restore(snapshot, ids_window_ms=window)
    run(resumed, plan[cut:], now)
    assert frozen(resumed) == frozen(straight)
    # The first ledger was not disturbed by being exported.
    run(first, plan[cut:], now)
    assert frozen(first) == frozen(straight)


def test_model_comparison_without_jit() -> None:
    """Kernels as plain Python (NUMBA_DISABLE_JIT=1) against the model, in a subprocess."""
    assert "1 passed" in pytest_without_jit("tests/test_ledger_model.py")
