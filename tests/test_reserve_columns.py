"""ReserveColumns: the columnar reserve is exactly its Reserve commands, through the engine, the
journal and the ReserveBatch RPC.

The model comparison (tests/test_ledger_model.py) checks outcomes and reads step by step; here the
two shapes run side by side on two ledgers and must leave byte-identical state and the same stock
events, the live-hold limit refuses the same items, and a journal of columnar batches replays
from a snapshot to the same bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import msgspec
import numpy as np
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import limits
from engine.codes import ReservationState
from engine.commands import (
    Batch,
    Commit,
    Line,
    Release,
    Reserve,
    ReserveColumns,
)
from engine.errors import Code, Rejection
from engine.ledger import Ledger
from engine.replay import replay
from omnistock.v1 import reservation_pb2, types_pb2
from tests.test_determinism import frozen, restore, setup_commands
from tests.test_ledger_model import (
    RES_IDS,
    _columns,
    dt,
    engine_columns,
    model_columns,
    reserve,
    reserve_columns,
)
from tests.test_rpc import Stubs, quantities, serving_stubs, state, stock, uid

T0 = 1_000_000
SETUP = setup_commands(3)


def as_reserves(commands: list[Any]) -> list[Any]:
    """The same batch with every ReserveColumns spelled out as its Reserve commands."""
    out: list[Any] = []
    for cmd in commands:
        out.extend(cmd.to_reserves() if type(cmd) is ReserveColumns else [cmd])
    return out


def per_item(commands: list[Any], results: list[Any]) -> list[Any]:
    """Outcomes with a ReserveColumns' answer split into one answer per reservation."""
    out: list[Any] = []
    for cmd, result in zip(commands, results, strict=True):
        if type(cmd) is ReserveColumns:
            out.extend(engine_columns(cmd, result))
        else:
            out.extend(model_columns([result]))
    return out


def rows(outcome: Any) -> list[list[int]]:
    return [] if outcome.events is None else outcome.events.rows.tolist()


# Batches of columnar reserves among unary reserves (same ids: replays and conflicts both ways),
# commits and releases.
mixed = st.lists(
    st.one_of(
        reserve_columns, reserve_columns, reserve, st.builds(Commit, st.sampled_from(RES_IDS))
    ),
    max_size=4,
)


@settings(max_examples=150)
@given(plan=st.lists(st.tuples(dt, mixed), min_size=1, max_size=12))
def test_columns_leave_the_same_bytes_and_events_as_their_reserves(
    plan: list[tuple[int, list[Any]]],
) -> None:
    columns = Ledger(ids_window_ms=3_000)
    reserves = Ledger(ids_window_ms=3_000)
    columns.apply(T0, SETUP)
    reserves.apply(T0, SETUP)
    now = T0
    for step_ms, cmds in plan:
        now += step_ms
        got = columns.apply(now, cmds)
        want = reserves.apply(now, as_reserves(cmds))
        assert per_item(cmds, got.results) == model_columns(want.results)
        assert got.expired == want.expired
        assert rows(got) == rows(want)
        assert columns.stats() == reserves.stats()
        for rid in RES_IDS:  # read back while columnar contents are still references
            if rid in reserves._res_ids:
                assert columns.get_reservation(rid) == reserves.get_reservation(rid)
    assert frozen(columns) == frozen(reserves)


def test_retried_columns_are_replays_in_either_shape() -> None:
    ledger = Ledger()
    ledger.apply(T0, SETUP)
    cols = _columns(
        [("a", (Line("s0", "n0", 1),)), ("b", (Line("s1", "n0", 2), Line("s1", "n1", 1)))],
        60_000,
        False,
        "",
    )
    first = ledger.apply(T0 + 1, [cols]).results[0]
    assert first.states == [ReservationState.HELD] * 2 and first.replayed == [False, False]
    before = frozen(ledger)
    again = ledger.apply(T0 + 2, [cols]).results[0]
    assert again.replayed == [True, True] and again.states == first.states
    assert again.held_qtys == first.held_qtys == [1, 2, 1]
    unary = ledger.apply(T0 + 3, cols.to_reserves()).results
    assert [r.replayed for r in unary] == [True, True]
    after = frozen(ledger)[0]
    for name in ("qty", "res", "ln", "heap"):  # nothing held twice (only the clock moved)
        assert after[name] == before[0][name], name
    # Other content under a columnar id is a conflict, whichever shape it comes in.
    other = Reserve("a", (Line("s0", "n0", 2),), 60_000)
    conflict = ledger.apply(T0 + 4, [other]).results[0]
    assert isinstance(conflict, Rejection) and conflict.reason == "ID_CONFLICT"
    ledger.apply(T0 + 5, [Reserve("c", (Line("s2", "n2", 1),), 60_000)])
    cross = _columns(
        [("c", (Line("s2", "n2", 1),)), ("b", (Line("s1", "n0", 2),))], 60_000, False, ""
    )
    result = ledger.apply(T0 + 6, [cross]).results[0]
    assert result.replayed == [True, False]
    assert result.rejections[1].reason == "ID_CONFLICT"
    assert result.states[1] == ReservationState.REJECTED


def test_live_hold_limit_refuses_the_same_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "RESERVATIONS_ACTIVE_MAX", 3)
    items = [
        ("h0", (Line("s0", "n0", 1),)),
        ("h1", (Line("sX", "n0", 1),)),  # unknown SKU: REJECTED, still counted by the run
        ("h1", (Line("sX", "n0", 1),)),  # a replay of the one before: not a new hold
        ("h2", (Line("s0", "n1", 1),)),
        ("h3", (Line("s0", "n2", 1),)),  # the fourth new id of a run with room for three
        ("h4", (Line("s1", "n2", 1),)),
    ]
    cols = _columns(items, 60_000, False, "")
    one = Ledger()
    two = Ledger()
    for ledger in (one, two):
        ledger.apply(T0, SETUP)

    def both(now: int, cmd: ReserveColumns) -> Any:
        got = one.apply(now, [cmd]).results[0]
        want = two.apply(now, cmd.to_reserves()).results
        assert engine_columns(cmd, got) == model_columns(want)
        assert frozen(one) == frozen(two)
        return got

    got = both(T0 + 1, cols)
    assert sorted(got.rejections) == [4, 5]
    assert got.rejections[4].code == Code.RESOURCE_EXHAUSTED
    # Room again once a hold ends: one live hold (h2) plus two new ones fill the limit.
    for ledger in (one, two):
        ledger.apply(T0 + 2, [Release("h0")])
    more = [*items[4:], ("h5", (Line("s2", "n2", 1),))]
    later = both(T0 + 3, _columns(more, 60_000, False, ""))
    assert later.states == [ReservationState.HELD] * 2 + [ReservationState.REJECTED]
    assert list(later.rejections) == [2]
    assert later.rejections[2].code == Code.RESOURCE_EXHAUSTED


def test_invalid_items_get_the_reserve_path_rejections() -> None:
    ledger = Ledger()
    ledger.apply(T0, SETUP)
    cols = _columns(
        [
            ("ok", (Line("s0", "n0", 1),)),
            ("", (Line("s0", "n0", 1),)),
            ("é" * 65, (Line("s0", "n0", 1),)),  # 130 bytes in 65 characters
            ("é" * 3, (Line("s0", "n1", 1),)),  # valid, not ASCII
            ("q", (Line("s0", "n0", 1), Line("s0", "n0", 0))),
            ("z", ()),
        ],
        60_000,
        False,
        "",
    )
    result = ledger.apply(T0 + 1, [cols]).results[0]
    for k, cmd in enumerate(cols.to_reserves()):
        want = ledger._validate_reserve(cmd)
        assert result.rejections.get(k) == want, k
    assert sorted(result.rejections) == [1, 2, 4, 5]
    assert result.states[0] == result.states[3] == ReservationState.HELD
    whole = ledger.apply(T0 + 2, [msgspec.structs.replace(cols, ttl_ms=10)]).results[0]
    assert set(whole.rejections) == set(range(6))
    assert whole.rejections[0].message.startswith("ttl_ms: ")
    assert whole.rejections[1].message.startswith("reservation_id: ")  # its first fault


def test_columns_that_do_not_fit_are_refused_whole() -> None:
    ledger = Ledger()
    ledger.apply(T0, SETUP)
    before = frozen(ledger)
    bad = ReserveColumns.build(["a", "b"], [1, 1], ["s0"], ["n0"], [1], 60_000)
    outcome = ledger.apply(T0 + 1, [bad]).results[0]
    assert isinstance(outcome, Rejection) and outcome.code == Code.INVALID_ARGUMENT
    with pytest.raises(ValueError):
        bad.to_reserves()
    # Counts whose int64 sum wraps around to the number of lines (2 + 2**63-1 + 2**63-1 + 3 =
    # 2 mod 2**64): refused too, not a crash in the offsets they would give.
    wrapped = msgspec.structs.replace(
        ReserveColumns.build(["a", "b", "c", "d"], [1, 1, 0, 0], ["s0", "s0"], ["n0", "n0"],
                             [1, 1], 60_000),
        line_counts=np.array([1, 2**63 - 1, 2**63 - 1, 3], np.int64).tobytes(),
    )  # fmt: skip
    outcome = ledger.apply(T0 + 2, [wrapped]).results[0]
    assert isinstance(outcome, Rejection) and outcome.code == Code.INVALID_ARGUMENT
    after = frozen(ledger)[0]
    del after["ctr"], before[0]["ctr"]  # the clock moved, nothing else
    assert after == before[0]


_QTY_EDGES = (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 10**9, -1, -32, -33)
_QTY_EDGES += (-128, -129, -32768, -32769, -(2**31), -(2**31) - 1)
edge_id = st.sampled_from((0, 1, 5, 31, 32, 33, 128, 255, 256, 300)).map(lambda n: "k" * n)


@settings(max_examples=200)
@given(
    items=st.lists(
        st.tuples(
            st.one_of(edge_id, st.just("é")),
            st.lists(st.tuples(edge_id, edge_id, st.sampled_from(_QTY_EDGES)), max_size=17).map(
                tuple
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    ttl_ms=st.sampled_from((5, 1_000, 10**12)),
    partial=st.booleans(),
    group=st.sampled_from(("", "g", "x" * 40)),
    data=st.data(),
)
def test_bulk_contents_are_the_reserves_msgpack(
    items: list[tuple[str, tuple[tuple[str, str, int], ...]]],
    ttl_ms: int,
    partial: bool,
    group: str,
    data: st.DataObject,
) -> None:
    cols = _columns(
        [(rid, tuple(Line(*x) for x in item_lines)) for rid, item_lines in items],
        ttl_ms,
        partial,
        group,
    )
    ks = data.draw(st.lists(st.sampled_from(range(len(items))), unique=True).map(sorted))
    want = [msgspec.msgpack.encode(cols.to_reserves()[k]) for k in ks]
    assert cols.contents(np.array(ks, np.int64)) == want


_decode_batch = msgspec.msgpack.Decoder(Batch).decode
_encode = msgspec.msgpack.encode


@settings(max_examples=40)
@given(
    plan=st.lists(st.tuples(dt, mixed), min_size=1, max_size=15),
    cut=st.integers(0, 15),
    window=st.sampled_from((3_000, 86_400_000)),
)
def test_journal_of_columns_snapshot_then_replay_equals_uninterrupted_run(
    plan: list[tuple[int, list[Any]]], cut: int, window: int
) -> None:
    # Each batch goes through the journal's encoding, as a replay or a replica reads it.
    journal = [_encode(Batch(T0, tuple(SETUP)))]
    now = T0
    for step_ms, cmds in plan:
        now += step_ms
        journal.append(_encode(Batch(now, tuple(cmds))))
    cut = min(cut, len(journal))
    straight = Ledger(ids_window_ms=window)
    for entry in journal:
        straight.apply_batch(_decode_batch(entry))
    first = Ledger(ids_window_ms=window)
    for entry in journal[:cut]:
        first.apply_batch(_decode_batch(entry))
    arrays, meta = first.export_state()
    resumed = restore(({k: a.copy() for k, a in arrays.items()}, meta), ids_window_ms=window)
    for entry in journal[cut:]:
        resumed.apply_batch(_decode_batch(entry))
    assert frozen(resumed) == frozen(straight)
    # Recovery's grouped replay (engine/replay.py) of the same journal lands on the same bytes.
    recovered = restore(({k: a.copy() for k, a in arrays.items()}, meta), ids_window_ms=window)
    replay(recovered, [_decode_batch(entry) for entry in journal[cut:]], decoded=True)
    assert frozen(recovered) == frozen(straight)
    # export -> from_state -> export is the identity, with columnar contents made into bytes.
    again = restore(straight.export_state(), ids_window_ms=window)
    assert frozen(again) == frozen(straight)


# --- through gRPC --------------------------------------------------------------------------------

pytestmark_rpc = pytest.mark.asyncio(loop_scope="module")
OK = types_pb2.LINE_STATUS_OK
HELD = types_pb2.RESERVATION_STATE_HELD
REJECTED = types_pb2.RESERVATION_STATE_REJECTED
INSUFFICIENT = types_pb2.LINE_STATUS_INSUFFICIENT


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stubs]:
    async with serving_stubs(tmp_path_factory.mktemp("columns")) as s:
        yield s


@pytestmark_rpc
async def test_retried_reserve_batch_is_all_replayed_and_changes_nothing(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 10)
    ids = [uid("rb") for _ in range(5)]
    request = reservation_pb2.ReserveBatchRequest(
        reservation_ids=ids,
        line_counts=[1, 2, 1, 1, 1],
        skus=[sku] * 6,
        node_ids=[node] * 6,
        qtys=[1, 2, 1, 3, 9, 2],  # ids[3] asks 9 of the 3 left: INSUFFICIENT, REJECTED
        ttl_ms=60_000,
        batch_id=3,
    )
    first = await stubs.reservation.ReserveBatch(request)
    assert list(first.states) == [HELD, HELD, HELD, REJECTED, HELD]
    assert list(first.reserved_qtys) == [1, 2, 1, 3, 0, 2]
    assert list(first.line_statuses) == [OK, OK, OK, OK, INSUFFICIENT, OK]
    assert not first.errors
    before = await state(stubs, [(sku, node)])
    again = await stubs.reservation.ReserveBatch(request)
    assert list(again.replayed) == [True] * 5
    assert list(again.states) == list(first.states)
    assert list(again.expires_at_ms) == list(first.expires_at_ms)
    assert list(again.reserved_qtys) == list(first.reserved_qtys)
    assert list(again.line_statuses) == list(first.line_statuses)
    assert again.batch_id == 3 and not again.errors
    assert await state(stubs, [(sku, node)]) == before
    # A unary retry of a batched reservation is a replay too.
    unary = await stubs.reservation.Reserve(
        reservation_pb2.ReserveRequest(
            reservation_id=ids[1],
            lines=[types_pb2.Line(sku=sku, node_id=node, qty=q) for q in (2, 1)],
            ttl_ms=60_000,
        )
    )
    assert unary.replayed and unary.reservation.state == HELD
    assert (await quantities(stubs, sku, node)).available == 10 - 9


@pytestmark_rpc
async def test_reserve_batch_mixes_valid_and_invalid_items(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 10)
    taken = uid("taken")
    await stubs.reservation.ReserveBatch(
        reservation_pb2.ReserveBatchRequest(
            reservation_ids=[taken], line_counts=[1], skus=[sku], node_ids=[node], qtys=[1],
            ttl_ms=60_000,
        )
    )  # fmt: skip
    ids = [uid("a"), "", uid("é"), uid("c"), uid("d"), uid("e"), taken, uid("f")]
    request = reservation_pb2.ReserveBatchRequest(
        reservation_ids=ids,
        line_counts=[1, 1, 1, 2, 1, 0, 1, 1],
        skus=[sku, sku, sku, sku, "x" * 129, sku, sku, sku],
        node_ids=[node] * 8,
        qtys=[1, 1, 2, 1, 1, 1, 5, 0],
        ttl_ms=60_000,
    )
    response = await stubs.reservation.ReserveBatch(request)
    errors = {e.index: e for e in response.errors}
    assert sorted(errors) == [1, 3, 5, 6, 7]
    assert errors[1].message.startswith("reservation_ids[1]: ")
    assert errors[3].message.startswith("skus[4]: ")
    assert errors[5].message.startswith("line_counts[5]: ")
    assert errors[6].reason == "ID_CONFLICT"
    assert errors[6].code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert errors[7].message.startswith("qtys[7]: ")
    assert list(response.states) == [HELD, REJECTED, HELD, REJECTED, HELD, REJECTED, REJECTED,
                                     REJECTED]  # fmt: skip
    assert list(response.replayed) == [False] * 8
    assert list(response.reserved_qtys) == [1, 0, 2, 0, 0, 1, 0, 0]
    assert list(response.line_statuses) == [OK, 0, OK, 0, 0, OK, 0, 0]
    assert [e > 0 for e in response.expires_at_ms] == [True, False, True, False, True] + [False] * 3
    # Only the valid items hold stock: 1 (taken) + 1 + 2 + 1.
    assert (await quantities(stubs, sku, node)).available == 5
