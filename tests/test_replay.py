"""engine/replay.py: a journal replayed in groups leaves the bytes `apply_batch` per entry does.

Compared after every journal: the exported state (arrays and meta: reservations, deadlines,
expiry heap, idempotency memory, freed indexes, event sequence number), the last-published
availabilities the events pass keeps per position and per tracked (sku, group), and the events
the next live batch publishes.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import limits
from engine.commands import (
    Adjust,
    Adjustment,
    Batch,
    Commit,
    Extend,
    Fulfil,
    Line,
    Release,
    Reserve,
    SetThresholds,
    Threshold,
)
from engine.ledger import Ledger
from engine.replay import replay
from tests.nojit import pytest_without_jit
from tests.test_determinism import SETUP, T0
from tests.test_ledger_model import MEMORIES, NODES, SKUS, command, commit, dt, release
from tests.test_ledger_model import reserve as reserve_st

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Batch)

THRESHOLDS = SetThresholds(
    (
        Threshold("s0", 3, node_id="n0"),
        Threshold("s1", 2, node_id="n1"),
        Threshold("", 4, group_id="g0"),
        Threshold("s2", 1, group_id="g1"),
    )
)


def journal(plan: list[tuple[int, list[Any]]], now: int = T0) -> list[bytes]:
    """The plan as the sequencer journals it: one msgpack `Batch` per entry."""
    out = []
    for step_ms, cmds in plan:
        now += step_ms
        out.append(_encoder.encode(Batch(now, tuple(cmds))))
    return out


def picture(ledger: Ledger) -> tuple[Any, ...]:
    arrays, meta = ledger.export_state()
    positions = ledger.stats()["positions"]
    tracker = ledger._events
    skus = len(ledger._skus)
    return (
        {k: (str(a.dtype), a.shape, a.tobytes()) for k, a in arrays.items()},
        meta,
        ledger._a["ev_last"][:positions].tobytes(),
        tracker._grp_last[:, :skus].tobytes(),
        ledger.events_seq,
        ledger._lines_live,
    )


def both(
    entries: list[bytes], memory: tuple[int, int], entries_max: int, base: Ledger | None = None
) -> tuple[Ledger, Ledger]:
    window, remembered = memory
    if base is None:
        one = Ledger(ids_window_ms=window, ids_remembered_max=remembered)
        two = Ledger(ids_window_ms=window, ids_remembered_max=remembered)
    else:
        arrays, meta = base.export_state()
        one, two = (
            Ledger.from_state(
                {k: a.copy() for k, a in arrays.items()},
                meta,
                ids_window_ms=window,
                ids_remembered_max=remembered,
            )
            for _ in range(2)
        )
    for payload in entries:
        one.apply_batch(_decoder.decode(payload))
    assert replay(two, (_decoder.decode(p) for p in entries), entries_max=entries_max) == len(
        entries
    )
    return one, two


def assert_same(one: Ledger, two: Ledger) -> None:
    assert picture(two) == picture(one)
    # The next live batch publishes the same events from both (ev_last and seq carry over).
    now = max(one.now_ms, two.now_ms) + 1
    probe = [
        Adjust(f"probe-{now}", tuple(Adjustment(s, n, 1) for s in SKUS for n in NODES)),
        Release("r0"),
    ]
    got = [ledger.apply(now, probe).events for ledger in (one, two)]
    rows = [None if e is None else (e.seq_first, e.rows.tobytes()) for e in got]
    assert rows[0] == rows[1]


# Mostly the commands the fast path takes, the rest through `apply_batch` between them.
fast_command = st.one_of(reserve_st, reserve_st, commit, release)
mixed = st.one_of(command, fast_command, fast_command, fast_command)
plans = st.lists(
    st.tuples(dt, st.one_of(st.lists(fast_command, min_size=1, max_size=1), st.lists(mixed))),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    plan=plans,
    memory=st.sampled_from(MEMORIES),
    entries_max=st.sampled_from((1, 2, 7, 64)),
    thresholds=st.booleans(),
)
def test_replay_equals_apply_batch(
    plan: list[tuple[int, list[Any]]],
    memory: tuple[int, int],
    entries_max: int,
    thresholds: bool,
) -> None:
    setup = [(0, SETUP)] + ([(0, [THRESHOLDS])] if thresholds else [])
    one, two = both(journal(setup + plan), memory, entries_max)
    assert_same(one, two)


def _random_plan(rng: random.Random, entries: int) -> list[tuple[int, list[Any]]]:
    """A long journal of the recovery benchmark's shape with everything else mixed in: replays
    and conflicts of ids, releases and commits of unknown or forgotten ids, extends, fulfils,
    adjusts that make holds fail, non-ASCII ids, invalid reserves, empty (tick) batches."""
    ids = [f"r{k}" for k in range(40)] + ["ré-1", "ré-2"]
    plan: list[tuple[int, list[Any]]] = []
    for _ in range(entries):
        step = rng.choice((0, 0, 1, 7, 300, 1_000, 2_500))
        roll = rng.random()
        rid = rng.choice(ids)
        cmds: list[Any]
        if roll < 0.40:
            lines = tuple(
                Line(rng.choice(SKUS + ("sX",)), rng.choice(NODES), rng.randint(1, 3))
                for _ in range(rng.choice((1, 1, 1, 2, 3)))
            )
            group = rng.choice(("", "", "", "g0", "g1", "gX"))
            cmds = [Reserve(rid, lines, rng.choice((1_000, 1_500, 4_000)), rng.random() < 0.3,
                            group)]  # fmt: skip
        elif roll < 0.60:
            cmds = [Release(rid)]
        elif roll < 0.70:
            cmds = [Commit(rid)]
        elif roll < 0.74:
            cmds = [Extend(rid, rng.choice((1_000, 3_000)))]
        elif roll < 0.77:
            cmds = [Fulfil(rid)]
        elif roll < 0.82:
            sku, node = rng.choice(SKUS), rng.choice(NODES)
            cmds = [Adjust(f"a{rng.randrange(10**9)}", (Adjustment(sku, node, rng.randint(-3, 4)
                                                                   or 1),))]  # fmt: skip
        elif roll < 0.85:
            cmds = []
        elif roll < 0.87:
            cmds = [Reserve(rid, (Line("s0", "n0", 0),), 1_000)]
        else:
            cmds = [
                rng.choice(
                    (
                        Reserve(rid, (Line(rng.choice(SKUS), rng.choice(NODES), 1),), 1_000),
                        Release(rng.choice(ids)),
                        Commit(rng.choice(ids)),
                    )
                )
                for _ in range(rng.randint(2, 4))
            ]
        plan.append((step, cmds))
    return plan


def test_long_random_journals() -> None:
    memories = (*MEMORIES, (4_000, 30), (10**12, 1))
    for seed in range(12):
        rng = random.Random(seed)
        memory = memories[seed % len(memories)]
        setup = [(0, SETUP), (0, [THRESHOLDS])] if seed % 2 else [(0, SETUP)]
        plan = setup + _random_plan(rng, 1_500)
        one, two = both(journal(plan), memory, rng.choice((3, 50, 8_192)))
        assert_same(one, two)


def test_from_a_snapshot_and_heap_compaction() -> None:
    """The benchmark's journal (reserve, release the previous hold) from a restored state, long
    enough that the expiry heap is compacted inside a group."""
    base = Ledger()
    base.apply(T0, SETUP)
    base.apply(T0, [THRESHOLDS])
    entries = []
    for k in range(2 * 65_536 + 2_000):
        if k % 2:
            cmd: Any = Release(f"b{k - 1}")
        else:
            cmd = Reserve(f"b{k}", (Line(SKUS[k % 3], NODES[(k // 3) % 3], 1),), 900_000)
        entries.append(_encoder.encode(Batch(T0 + 1 + k, (cmd,))))
    one, two = both(entries, (limits.IDS_WINDOW_MS, limits.IDS_REMEMBERED_MAX), 8_192, base)
    assert one.stats()["heap_len"] < 65_536  # it was compacted
    assert_same(one, two)


def test_group_stops_where_forgetting_starts() -> None:
    """A full idempotency memory forgets after every final outcome: freed indexes are reused by
    the next reserve, and a forgotten id is new again."""
    plan: list[tuple[int, list[Any]]] = [(0, SETUP)]
    for k in range(400):
        rid = f"f{k % 9}"
        plan.append((1, [Reserve(rid, (Line("s0", NODES[k % 3], 1),), 1_000)]))
        plan.append((1, [Release(rid)]))
    one, two = both(journal(plan), (10**12, 3), 8_192)
    assert len(one._final) == 3
    assert_same(one, two)
    assert np.array_equal(
        one._a["res"][: len(one._res_names)], two._a["res"][: len(two._res_names)]
    )


def test_replay_without_jit() -> None:
    """The replay kernel as plain Python (NUMBA_DISABLE_JIT=1), in a subprocess, so coverage sees
    its lines (see test_determinism.test_model_comparison_without_jit)."""
    out = pytest_without_jit("tests/test_replay.py", "-k", "forgetting or equals")
    assert "2 passed" in out
