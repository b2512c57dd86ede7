"""Stock events from the engine (engine/events.py): crossings, coalescing, and a brute-force check.

The brute force reads every position's and every tracked group's availability before and after
each batch through the ordinary read API and derives the events the batch must report; the
engine finds them from the touched positions only.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.codes import AdjustReason
from engine.commands import (
    Adjust,
    Adjustment,
    Commit,
    Fulfil,
    GroupSpec,
    Line,
    NodeSpec,
    Release,
    Reserve,
    SetSafetyStock,
    SetThresholds,
    Setting,
    Threshold,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
)
from engine.errors import Rejection
from engine.events import (
    KIND_BACK_IN_STOCK,
    KIND_CHANGED,
    KIND_LOW_STOCK,
    KIND_OUT_OF_STOCK,
    StockEvent,
)
from engine.ledger import Ledger

SALE = AdjustReason.SALE
RECEIPT = AdjustReason.RECEIPT


def _adjust(rid: str, sku: str, node: str, delta: int, reason: AdjustReason) -> Adjust:
    return Adjust(rid, (Adjustment(sku, node, delta, reason),))


def _events(ledger: Ledger, now: int, *commands: object) -> list[StockEvent]:
    outcome = ledger.apply(now, commands)  # type: ignore[arg-type]
    return [] if outcome.events is None else outcome.events.to_list()


def _store() -> Ledger:
    ledger = Ledger()
    ledger.upsert_nodes([NodeSpec("store1"), NodeSpec("store2"), NodeSpec("dc")])
    ledger.upsert_groups([GroupSpec("web", ("store1", "dc"))])
    return ledger


def test_pos_sale_to_zero_is_one_out_of_stock_and_restock_one_back_in_stock() -> None:
    ledger = _store()
    first = _events(ledger, 1, _adjust("r1", "A", "store1", 3, RECEIPT))
    assert [(e.sku, e.node_id, e.kind) for e in first] == [("A", "store1", KIND_BACK_IN_STOCK)]
    # Two sales in one batch, the second taking the last unit: one event, coalesced.
    sold = _events(
        ledger,
        2,
        _adjust("s1", "A", "store1", 1, SALE),
        _adjust("s2", "A", "store1", 2, SALE),
    )
    assert [(e.sku, e.node_id, e.kind) for e in sold] == [("A", "store1", KIND_OUT_OF_STOCK)]
    assert sold[0].quantities == (0, 0, 0, 0, 0, 0, 0)
    assert sold[0].at_ms == 2
    # Nothing changes: no event (a replayed request id, a sale elsewhere that fails).
    assert _events(ledger, 3, _adjust("s2", "A", "store1", 2, SALE)) == []
    back = _events(ledger, 4, _adjust("r2", "A", "store1", 5, RECEIPT))
    assert [(e.kind, e.quantities[6]) for e in back] == [(KIND_BACK_IN_STOCK, 5)]
    seqs = [e.seq for e in first + sold + back]
    assert seqs == list(range(1, len(seqs) + 1))


def test_low_stock_at_the_threshold_once() -> None:
    ledger = _store()
    _events(ledger, 1, _adjust("r1", "A", "store1", 10, RECEIPT))
    assert ledger.apply(2, [SetThresholds((Threshold("A", 3, node_id="store1"),))]).results == [1]
    above = _events(ledger, 3, _adjust("s1", "A", "store1", 6, SALE))  # 10 -> 4
    assert [e.kind for e in above] == [KIND_CHANGED]
    at = _events(ledger, 4, Reserve("h1", (Line("A", "store1", 1),), 60_000))  # 4 -> 3
    assert [(e.kind, e.quantities[1], e.quantities[6]) for e in at] == [(KIND_LOW_STOCK, 1, 3)]
    below = _events(ledger, 5, _adjust("s2", "A", "store1", 1, SALE))  # 3 -> 2: already low
    assert [e.kind for e in below] == [KIND_CHANGED]
    # A commit moves units from reserved to allocated: available does not change, no event.
    assert _events(ledger, 6, Commit("h1")) == []
    up = _events(ledger, 7, Release("h1"))  # 2 -> 3
    assert [e.kind for e in up] == [KIND_CHANGED]


def test_expiry_releases_units_with_an_event() -> None:
    ledger = _store()
    _events(ledger, 0, _adjust("r1", "A", "store1", 2, RECEIPT))
    held = _events(ledger, 1, Reserve("h1", (Line("A", "store1", 2),), 1_000))
    assert [e.kind for e in held] == [KIND_OUT_OF_STOCK]
    outcome = ledger.apply(5_000, ())
    assert outcome.expired == ["h1"]
    assert outcome.events is not None
    assert [e.kind for e in outcome.events.to_list()] == [KIND_BACK_IN_STOCK]


def test_group_thresholds_and_default() -> None:
    ledger = _store()
    _events(
        ledger,
        1,
        Adjust(
            "r1",
            (
                Adjustment("A", "store1", 4, RECEIPT),
                Adjustment("A", "dc", 4, RECEIPT),
                Adjustment("B", "dc", 9, RECEIPT),
            ),
        ),
    )
    result = ledger.apply(
        2,
        [SetThresholds((Threshold("", 2, group_id="web"), Threshold("B", 5, group_id="web")))],
    ).results
    assert result == [2]
    events = _events(ledger, 3, _adjust("s1", "A", "store1", 4, SALE))  # web A: 8 -> 4
    assert [(e.node_id, e.group_id, e.kind) for e in events] == [
        ("store1", "", KIND_OUT_OF_STOCK),
        ("", "web", KIND_CHANGED),
    ]
    events = _events(ledger, 4, _adjust("s2", "A", "dc", 2, SALE))  # web A: 4 -> 2 (default 2)
    assert [(e.group_id, e.kind) for e in events if e.group_id] == [("web", KIND_LOW_STOCK)]
    events = _events(ledger, 5, _adjust("s3", "B", "dc", 4, SALE))  # web B: 9 -> 5 (own 5)
    assert [(e.group_id, e.kind) for e in events if e.group_id] == [("web", KIND_LOW_STOCK)]
    # A store outside the group changes nothing in it.
    events = _events(ledger, 6, _adjust("r2", "A", "store2", 1, RECEIPT))
    assert [e.group_id for e in events] == [""]


@pytest.mark.parametrize("new_skus_from", ["the thresholds", "an adjust in the same batch"])
def test_group_thresholds_for_more_new_skus_than_the_arrays_held(new_skus_from: str) -> None:
    """A tracked group's thresholds naming new SKUs past the SKU arrays' size (they grow, the
    group's per-SKU row must too): an IndexError here escaped `apply`, and the server stops all
    writes on any exception from the engine."""
    ledger = _store()
    ledger.apply(1, [SetThresholds((Threshold("", 3, group_id="web"),))])  # "web" is tracked
    width = ledger._events._grp_low.shape[1]
    skus = [f"S{i}" for i in range(width + 1)]
    last = skus[-1]
    thresholds = tuple(Threshold(s, 2, group_id="web") for s in skus)
    if new_skus_from == "the thresholds":
        commands: list[object] = [SetThresholds(thresholds)]
    else:
        receipts = tuple(Adjustment(s, "store2", 1, RECEIPT) for s in skus)  # outside "web"
        commands = [Adjust("bulk", receipts), SetThresholds(thresholds[-1:])]
    set_count = len(commands[-1].thresholds)  # type: ignore[attr-defined]
    assert ledger.apply(2, commands).results[-1] == set_count
    # The last SKU's own threshold (2, not the group's default 3) decides: 3 -> 2 is low stock.
    ledger.apply(3, [_adjust("r", last, "dc", 4, RECEIPT)])
    events = _events(ledger, 4, _adjust("s1", last, "dc", 1, SALE))  # web: 4 -> 3
    assert [e.kind for e in events if e.group_id] == [KIND_CHANGED]
    events = _events(ledger, 5, _adjust("s2", last, "dc", 1, SALE))  # web: 3 -> 2
    assert [(e.group_id, e.kind) for e in events if e.group_id] == [("web", KIND_LOW_STOCK)]


def test_set_thresholds_rejections() -> None:
    ledger = _store()
    bad = [
        Threshold("A", 1),  # neither scope
        Threshold("A", 1, node_id="store1", group_id="web"),  # both
        Threshold("A", -1, node_id="store1"),
        Threshold("", 1, node_id="store1"),
        Threshold("A", 1, node_id="nowhere"),
        Threshold("A", 1, group_id="nothing"),
    ]
    for t in bad:
        (result,) = ledger.apply(1, [SetThresholds((t,))]).results
        assert isinstance(result, Rejection), t
    (result,) = ledger.apply(1, [SetThresholds(())]).results
    assert isinstance(result, Rejection)


# --- brute force ---------------------------------------------------------------------------------

SKUS = ("s0", "s1", "s2")
NODES = ("n0", "n1", "n2")
GROUPS = ("g0", "g1")


def _snapshot(ledger: Ledger, tracked: set[str]) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """Every position's and every tracked (sku, group)'s quantities, through the read API."""
    queries: list[tuple[str, str | None, str | None]] = []
    keys = []
    for s in SKUS:
        for n in NODES:
            queries.append((s, n, None))
            keys.append((s, n, ""))
        for g in sorted(tracked):
            queries.append((s, None, g))
            keys.append((s, "", g))
    out = {}
    for key, (_, q) in zip(keys, ledger.availability(queries), strict=True):
        out[key] = (q.on_hand, q.reserved, q.allocated, q.safety_stock, q.unavailable, q.inbound,
                    q.available)  # fmt: skip
    return out


def _expected_kind(before: int, after: int, low: int) -> int:
    if after == 0:
        return KIND_OUT_OF_STOCK
    if before == 0:
        return KIND_BACK_IN_STOCK
    if after <= low < before:
        return KIND_LOW_STOCK
    return KIND_CHANGED


def _random_command(rng: random.Random, i: int, held: list[str]) -> object:
    s, n, g = rng.choice(SKUS), rng.choice(NODES), rng.choice(GROUPS)
    roll = rng.random()
    if roll < 0.25:
        reason = rng.choice((RECEIPT, SALE, RECEIPT))
        return _adjust(f"a{i}", s, n, rng.randint(1, 4), reason)
    if roll < 0.45:
        held.append(f"h{i}")
        lines = tuple(Line(rng.choice(SKUS), rng.choice(NODES), rng.randint(1, 3)) for _ in "ab")
        return Reserve(f"h{i}", lines, rng.choice((1_000, 5_000)), rng.random() < 0.5)
    if roll < 0.55 and held:
        return rng.choice((Commit, Release))(rng.choice(held))
    if roll < 0.6 and held:
        return Fulfil(rng.choice(held))
    if roll < 0.66:
        return SetSafetyStock(f"ss{i}", (Setting(s, n, rng.randint(0, 2)),))
    if roll < 0.72:
        scope = {"node_id": n} if rng.random() < 0.5 else {"group_id": g}
        sku = s if scope.get("node_id") or rng.random() < 0.5 else ""
        return SetThresholds((Threshold(sku, rng.randint(0, 4), **scope),))
    if roll < 0.77:
        return UpsertNodes((NodeSpec(n, enabled=rng.random() < 0.7),))
    if roll < 0.82:
        nodes = tuple(sorted(set(rng.sample(NODES, rng.randint(1, 3)))))
        return UpsertGroups((GroupSpec(g, nodes, buffer_units=rng.randint(0, 1),
                                       buffer_pct=rng.choice((0.0, 10.0))),))  # fmt: skip
    if roll < 0.87:
        other = rng.choice([x for x in NODES if x != n])
        return TransferShip(f"t{i}", s, n, other, rng.randint(1, 2))
    return _adjust(f"c{i}", s, n, rng.randint(1, 5), RECEIPT)


def _thresholds(ledger: Ledger, cmd: object, pos_low: dict, grp_low: dict, tracked: set) -> None:
    if not isinstance(cmd, SetThresholds):
        return
    for t in cmd.thresholds:
        if t.node_id:
            pos_low[(t.sku, t.node_id)] = t.low_stock
        else:
            tracked.add(t.group_id)
            grp_low[(t.sku, t.group_id)] = t.low_stock


@pytest.mark.parametrize("seed", range(6))
def test_events_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    ledger = Ledger()
    ledger.upsert_nodes([NodeSpec(n) for n in NODES])
    ledger.upsert_groups([GroupSpec(g, NODES[: k + 1]) for k, g in enumerate(GROUPS)])
    pos_low: dict[tuple[str, str], int] = {}
    grp_low: dict[tuple[str, str], int] = {}
    tracked: set[str] = set()
    held: list[str] = []
    seq = ledger.events_seq
    now = 10
    before = _snapshot(ledger, tracked)
    restored_at = 60
    for step in range(120):
        now += rng.choice((0, 1, 700, 3_000))
        commands = [_random_command(rng, step * 10 + k, held) for k in range(rng.randint(1, 4))]
        # Thresholds go alone: naming a group starts tracking it from its availability then.
        setting = [c for c in commands if isinstance(c, SetThresholds)]
        commands = setting[:1] or commands
        outcome = ledger.apply(now, commands)
        for cmd in commands:
            _thresholds(ledger, cmd, pos_low, grp_low, tracked)
        after = _snapshot(ledger, tracked)
        want = set()
        for key, q in after.items():
            b = before.get(key, q)[6]
            if q[6] == b:
                continue
            s, n, g = key
            low = pos_low.get((s, n), 0) if n else grp_low.get((s, g), grp_low.get(("", g), 0))
            want.add((s, n, g, _expected_kind(b, q[6], low), q))
        got_list = [] if outcome.events is None else outcome.events.to_list()
        got = {(e.sku, e.node_id, e.group_id, e.kind, e.quantities) for e in got_list}
        assert len(got) == len(got_list), "one event per position and batch"
        assert got == want, (seed, step, commands)
        assert [e.seq for e in got_list] == list(range(seq + 1, seq + 1 + len(got_list)))
        assert all(e.at_ms == now for e in got_list)
        seq += len(got_list)
        before = after
        if step == restored_at:
            # A restore from a snapshot continues with identical events and numbering.
            arrays, meta = ledger.export_state()
            ledger = Ledger.from_state(arrays, meta)
            assert ledger.events_seq == seq


def test_snapshot_keeps_thresholds() -> None:
    ledger = _store()
    _events(ledger, 1, _adjust("r1", "A", "store1", 10, RECEIPT))
    ledger.apply(2, [SetThresholds((Threshold("A", 5, node_id="store1"),))])
    arrays, meta = ledger.export_state()
    assert arrays["ev_low"].dtype == np.int32
    restored = Ledger.from_state(arrays, meta)
    events = _events(restored, 3, _adjust("s1", "A", "store1", 5, SALE))
    assert [e.kind for e in events] == [KIND_LOW_STOCK]
    assert events[0].seq == ledger.events_seq + 1
