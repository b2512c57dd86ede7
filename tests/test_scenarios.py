"""Scenarios other inventory systems pin down, ported to the ledger (issue 2), plus regressions.

Each test tells one story through the public API (`apply` and the friendly calls) and checks
the quantities a storefront or an OMS would see.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine import limits
from engine.codes import AdjustReason, LineStatus, MoveKind, ReservationState
from engine.commands import (
    Adjust,
    Adjustment,
    Commit,
    Extend,
    Fulfil,
    GroupSpec,
    Line,
    Move,
    MoveLine,
    NodeSpec,
    Release,
    Reserve,
    SetBackorderLimit,
    SetOnHand,
    SetSafetyStock,
    Setting,
    StockCount,
    TransferCancel,
    TransferReceive,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
)
from engine.errors import Code, EngineError, Rejection
from engine.ledger import Ledger, Quantities

S = ReservationState
T0 = 1_000_000


def receipt(request_id: str, sku: str, node: str, qty: int) -> Adjust:
    return Adjust(request_id, (Adjustment(sku, node, qty, AdjustReason.RECEIPT),))


def ledger_with(stock: dict[tuple[str, str], int], nodes: tuple[str, ...] = ("A", "B")) -> Ledger:
    ledger = Ledger()
    ledger.upsert_nodes([NodeSpec(n) for n in nodes], T0)
    adjustments = tuple(
        Adjustment(sku, node, qty, AdjustReason.RECEIPT) for (sku, node), qty in stock.items()
    )
    if adjustments:
        ledger.apply(T0, [Adjust("stock", adjustments)])
    return ledger


def at(ledger: Ledger, sku: str, node: str) -> Quantities:
    status, q = ledger.availability([(sku, node, None)])[0]
    assert status == LineStatus.OK
    return q


def in_group(ledger: Ledger, sku: str, group: str | None) -> int:
    status, q = ledger.availability([(sku, None, group)])[0]
    assert status == LineStatus.OK
    return q.available


def snapshot(ledger: Ledger) -> tuple[dict[str, bytes], bytes]:
    arrays, meta = ledger.export_state()
    return {name: a.tobytes() for name, a in arrays.items()}, meta


# --- quantities ----------------------------------------------------------------------------------


def test_concurrent_receipts_and_sales_in_one_batch_all_count() -> None:
    ledger = ledger_with({})
    out = ledger.apply(T0, [receipt("p1", "sku", "A", 5), receipt("p2", "sku", "A", 5)])
    assert [r.statuses for r in out.results] == [(LineStatus.OK,), (LineStatus.OK,)]
    assert at(ledger, "sku", "A").on_hand == 10
    sales = [
        Adjust("s1", (Adjustment("sku", "A", 4, AdjustReason.SALE),)),
        Adjust("s2", (Adjustment("sku", "A", -6, AdjustReason.SALE),)),  # sign ignored
    ]
    out = ledger.apply(T0, sales)
    assert [r.statuses for r in out.results] == [(LineStatus.OK,), (LineStatus.OK,)]
    assert at(ledger, "sku", "A").on_hand == 0
    # One more sale would go negative: refused, nothing changes.
    out = ledger.apply(T0, [Adjust("s3", (Adjustment("sku", "A", 1, AdjustReason.SALE),))])
    assert out.results[0].statuses == (LineStatus.NEGATIVE_STOCK,)
    assert at(ledger, "sku", "A").on_hand == 0


def test_reservation_beyond_availability_fails_and_changes_nothing() -> None:
    ledger = ledger_with({("sku", "A"): 3})
    before = at(ledger, "sku", "A")
    r = ledger.reserve("r1", [("sku", "A", 4)], 60_000, T0).reservation
    assert r.state == S.REJECTED
    assert r.lines[0].status == LineStatus.INSUFFICIENT
    assert (r.lines[0].reserved_qty, r.lines[0].held_qty) == (0, 0)
    assert at(ledger, "sku", "A") == before
    # A rejected id stays rejected, even when stock arrives later.
    ledger.apply(T0, [receipt("more", "sku", "A", 10)])
    again = ledger.reserve("r1", [("sku", "A", 4)], 60_000, T0 + 1)
    assert again.replayed and again.reservation.state == S.REJECTED


def test_allocations_and_holds_both_reduce_availability() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    ledger.reserve("hold", [("sku", "A", 3)], 60_000, T0)
    ledger.reserve("order", [("sku", "A", 4)], 60_000, T0)
    ledger.commit("order", T0)
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.reserved, q.allocated, q.available) == (10, 3, 4, 3)
    ledger.apply(T0, [SetSafetyStock("ss", (Setting("sku", "A", 2),))])
    assert at(ledger, "sku", "A").available == 1
    assert ledger.reserve("big", [("sku", "A", 2)], 60_000, T0).reservation.state == S.REJECTED
    assert ledger.reserve("fits", [("sku", "A", 1)], 60_000, T0).reservation.state == S.HELD


def test_fulfil_13_of_15_then_release_frees_2() -> None:
    ledger = ledger_with({("sku", "A"): 20})
    ledger.reserve("r", [("sku", "A", 15)], 60_000, T0)
    assert at(ledger, "sku", "A").available == 5
    # Commit moves the whole hold; fulfilling part of it from HELD commits it on the way.
    view = ledger.fulfil("r", T0 + 1, [("sku", "A", 13)]).reservation
    assert view.state == S.COMMITTED
    assert (view.lines[0].fulfilled_qty, view.lines[0].held_qty) == (13, 2)
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.reserved, q.allocated, q.available) == (7, 0, 2, 5)
    view = ledger.release("r", T0 + 2).reservation
    assert view.state == S.FULFILLED  # something was handed over; the rest is given back
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.allocated, q.available) == (7, 0, 7)


def test_hold_cannot_be_committed_after_it_expires() -> None:
    ledger = ledger_with({("sku", "A"): 5})
    ledger.reserve("r", [("sku", "A", 2)], 1_000, T0)
    out = ledger.apply(T0 + 1_000, [Commit("r")])
    assert out.expired == ["r"]
    assert isinstance(out.results[0], Rejection)
    assert (out.results[0].code, out.results[0].reason) == (Code.FAILED_PRECONDITION, "WRONG_STATE")
    assert ledger.get_reservation("r").state == S.EXPIRED
    assert at(ledger, "sku", "A").available == 5
    with pytest.raises(EngineError) as e:
        ledger.extend("r", 5_000, T0 + 1_001)
    assert e.value.reason == "WRONG_STATE"


def test_extend_with_a_request_id_applies_once() -> None:
    ledger = ledger_with({("sku", "A"): 5})
    ledger.reserve("r", [("sku", "A", 2)], 1_000, T0)
    first = ledger.extend("r", 5_000, T0 + 500, request_id="e1")
    assert (first.replayed, first.reservation.expires_at_ms) == (False, T0 + 5_500)
    # The retry, later: the deadline stays where the first call put it.
    again = ledger.extend("r", 5_000, T0 + 4_000, request_id="e1")
    assert (again.replayed, again.reservation.expires_at_ms) == (True, T0 + 5_500)
    with pytest.raises(EngineError) as e:
        ledger.extend("r", 6_000, T0 + 4_000, request_id="e1")
    assert (e.value.code, e.value.reason) == (Code.ALREADY_EXISTS, "ID_CONFLICT")
    # Without one, each call moves the deadline.
    moved = ledger.extend("r", 5_000, T0 + 4_000)
    assert (moved.replayed, moved.reservation.expires_at_ms) == (False, T0 + 9_000)
    # A refusal is remembered too: the retry of an extend refused WRONG_STATE is refused again
    # even though it came with the same id.
    ledger.commit("r", T0 + 4_500)
    for _ in range(2):
        with pytest.raises(EngineError) as e:
            ledger.extend("r", 5_000, T0 + 4_600, request_id="e2")
        assert e.value.reason == "WRONG_STATE"


def test_expired_holds_release_exactly_at_their_tick_in_expiry_order() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    ledger.reserve("late", [("sku", "A", 1)], 3_000, T0)
    ledger.reserve("early", [("sku", "A", 1)], 1_000, T0)
    ledger.reserve("mid", [("sku", "A", 1)], 2_000, T0)
    ledger.reserve("extended", [("sku", "A", 1)], 1_000, T0)
    ledger.extend("extended", 2_500, T0)  # now due at T0 + 2_500
    ledger.reserve("committed", [("sku", "A", 1)], 1_000, T0)
    ledger.commit("committed", T0)
    assert ledger.tick(T0 + 999) == []
    assert at(ledger, "sku", "A").reserved == 4
    assert ledger.tick(T0 + 1_000) == ["early"]
    assert ledger.tick(T0 + 1_999) == []
    # A batch that jumps past several deadlines expires them in deadline order.
    assert ledger.tick(T0 + 10_000) == ["mid", "extended", "late"]
    q = at(ledger, "sku", "A")
    assert (q.reserved, q.allocated, q.available) == (0, 1, 9)
    assert ledger.get_reservation("committed").state == S.COMMITTED


def test_holds_due_at_the_same_instant_expire_in_the_order_their_deadlines_were_set() -> None:
    # "first" has the lower internal record; extending it sets its deadline after "second"'s.
    ledger = ledger_with({("sku", "A"): 10})
    ledger.reserve("first", [("sku", "A", 1)], 1_000, T0)
    ledger.reserve("second", [("sku", "A", 1)], 3_000, T0)
    ledger.extend("first", 2_500, T0 + 500)  # also due at T0 + 3_000
    assert ledger.tick(T0 + 3_000) == ["second", "first"]


def test_clock_never_runs_backwards() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    ledger.reserve("r", [("sku", "A", 1)], 1_000, T0 + 5_000)
    # An older batch time is taken as the latest seen: the hold does not move.
    assert ledger.reserve("q", [("sku", "A", 1)], 1_000, T0).reservation.created_at_ms == T0 + 5_000
    assert ledger.tick(T0 + 6_000) == ["r", "q"]


def test_stale_count_is_ignored() -> None:
    ledger = ledger_with({})
    out = ledger.apply(T0, [SetOnHand("c1", (StockCount("sku", "A", 10, 5),))])
    assert out.results[0].statuses == (LineStatus.OK,)
    out = ledger.apply(
        T0,
        [
            SetOnHand("c0", (StockCount("sku", "A", 3, 4),)),  # older
            SetOnHand("c2", (StockCount("sku", "A", 4, 5),)),  # same sequence
        ],
    )
    assert [r.statuses for r in out.results] == [(LineStatus.STALE,), (LineStatus.STALE,)]
    assert at(ledger, "sku", "A").on_hand == 10
    out = ledger.apply(T0, [SetOnHand("c3", (StockCount("sku", "A", 7, 6),))])
    assert out.results[0].statuses == (LineStatus.OK,)
    assert at(ledger, "sku", "A").on_hand == 7
    # Sequence 0 never creates a position (every position starts at sequence 0).
    out = ledger.apply(T0, [SetOnHand("c4", (StockCount("sku", "B", 7, 0),))])
    assert out.results[0].statuses == (LineStatus.STALE,)


def test_group_buffer_hides_units_from_that_group_only() -> None:
    ledger = ledger_with({("sku", "A"): 10, ("sku", "B"): 4}, nodes=("A", "B", "C"))
    ledger.upsert_groups(
        [
            GroupSpec("marketplace", ("A", "B"), buffer_units=2, buffer_pct=10.0),
            GroupSpec("web", ("A", "B")),
        ],
        T0,
    )
    # A: 10 - 2 - ceil(1.0) = 7; B: 4 - 2 - ceil(0.4) = 1.
    assert in_group(ledger, "sku", "marketplace") == 8
    assert in_group(ledger, "sku", "web") == 14
    assert in_group(ledger, "sku", None) == 14
    # The marketplace cannot take the last units at B; the web shop can.
    r = ledger.reserve("m", [("sku", "B", 2)], 60_000, T0, group_id="marketplace").reservation
    assert r.state == S.REJECTED and r.lines[0].status == LineStatus.INSUFFICIENT
    r = ledger.reserve("w", [("sku", "B", 4)], 60_000, T0, group_id="web").reservation
    assert r.state == S.HELD
    # A node outside the group is not the group's to promise.
    ledger.apply(T0, [receipt("c", "sku", "C", 5)])
    r = ledger.reserve("x", [("sku", "C", 1)], 60_000, T0, group_id="web").reservation
    assert r.lines[0].status == LineStatus.INSUFFICIENT
    r = ledger.reserve("y", [("sku", "C", 1)], 60_000, T0, group_id="nope").reservation
    assert r.lines[0].status == LineStatus.UNKNOWN_GROUP
    assert ledger.availability([("sku", None, "nope")])[0][0] == LineStatus.UNKNOWN_GROUP


def test_lines_for_one_position_are_summed_and_rejected_whole() -> None:
    ledger = ledger_with({("sku", "A"): 5, ("other", "A"): 5})
    r = ledger.reserve(
        "r", [("sku", "A", 5), ("other", "A", 1), ("sku", "A", 5)], 60_000, T0
    ).reservation
    assert r.state == S.REJECTED
    assert [x.status for x in r.lines] == [
        LineStatus.INSUFFICIENT,
        LineStatus.OK,
        LineStatus.INSUFFICIENT,
    ]
    assert at(ledger, "sku", "A").available == 5 and at(ledger, "other", "A").available == 5


def test_partial_reserve_takes_what_there_is() -> None:
    ledger = ledger_with({("sku", "A"): 5, ("sku", "B"): 1})
    r = ledger.reserve(
        "r",
        [("sku", "A", 3), ("sku", "A", 3), ("sku", "B", 0 + 2), ("nope", "A", 1), ("sku", "X", 1)],
        60_000,
        T0,
        allow_partial=True,
    ).reservation
    assert r.state == S.HELD
    assert [(x.status, x.reserved_qty) for x in r.lines] == [
        (LineStatus.OK, 3),
        (LineStatus.PARTIAL, 2),
        (LineStatus.PARTIAL, 1),
        (LineStatus.UNKNOWN_SKU, 0),
        (LineStatus.UNKNOWN_NODE, 0),
    ]
    assert r.lines[1].held_qty == 2
    r = ledger.reserve("none", [("sku", "A", 1)], 60_000, T0, allow_partial=True).reservation
    assert r.state == S.REJECTED and r.lines[0].status == LineStatus.INSUFFICIENT


def test_disabled_node_promises_nothing() -> None:
    ledger = ledger_with({("sku", "A"): 5, ("sku", "B"): 5})
    ledger.reserve("before", [("sku", "A", 2)], 60_000, T0)
    ledger.upsert_nodes([NodeSpec("A", enabled=False)], T0)
    status, q = ledger.availability([("sku", "A", None)])[0]
    assert status == LineStatus.NODE_DISABLED
    assert (q.on_hand, q.reserved, q.available) == (5, 2, 0)
    assert in_group(ledger, "sku", None) == 5
    r = ledger.reserve("r", [("sku", "A", 1)], 60_000, T0).reservation
    assert r.lines[0].status == LineStatus.NODE_DISABLED
    # Supply still lands there, and holds made before can still be handed over.
    ledger.apply(T0, [receipt("in", "sku", "A", 1)])
    assert ledger.fulfil("before", T0).reservation.state == S.FULFILLED
    ledger.upsert_nodes([NodeSpec("A")], T0)
    assert at(ledger, "sku", "A").available == 4


def test_transfer_ship_receive_and_cancel() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    t = ledger.apply(T0, [TransferShip("t1", "sku", "A", "B", 6, T0 + 86_400_000)]).results[0]
    assert (t.state, t.status, t.qty_shipped) == ("IN_TRANSIT", LineStatus.OK, 6)
    a, b = at(ledger, "sku", "A"), at(ledger, "sku", "B")
    assert (a.on_hand, a.available, b.on_hand, b.inbound, b.available) == (4, 4, 0, 6, 0)
    t = ledger.apply(T0, [TransferReceive("t1", 2, "rcv1")]).results[0]
    assert (t.state, t.qty_received) == ("IN_TRANSIT", 2)
    again = ledger.apply(T0, [TransferReceive("t1", 2, "rcv1")]).results[0]
    assert again.replayed and again.qty_received == 2
    b = at(ledger, "sku", "B")
    assert (b.on_hand, b.inbound, b.available) == (2, 4, 2)
    over = ledger.apply(T0, [TransferReceive("t1", 5)]).results[0]
    assert (over.code, over.reason) == (Code.FAILED_PRECONDITION, "OVER_RECEIVE")
    t = ledger.apply(T0, [TransferReceive("t1")]).results[0]  # the rest
    assert (t.state, t.qty_received) == ("RECEIVED", 6)
    b = at(ledger, "sku", "B")
    assert (b.on_hand, b.inbound) == (6, 0)
    # A second transfer is cancelled on the way: units go back to the sender.
    ledger.apply(T0, [TransferShip("t2", "sku", "B", "A", 3)])
    t = ledger.apply(T0, [TransferCancel("t2")]).results[0]
    assert t.state == "CANCELLED"
    assert (at(ledger, "sku", "B").on_hand, at(ledger, "sku", "A").inbound) == (6, 0)
    # Shipping more than there is fails whole, and the failed id stays failed.
    t = ledger.apply(T0, [TransferShip("t3", "sku", "A", "B", 99)]).results[0]
    assert (t.state, t.status) == ("FAILED", LineStatus.NEGATIVE_STOCK)
    t = ledger.apply(T0, [TransferShip("t3", "sku", "A", "B", 99)]).results[0]
    assert t.replayed and t.state == "FAILED"


def test_damage_then_inspection_back_to_sellable() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    ledger.apply(T0, [Adjust("d", (Adjustment("sku", "A", 3, AdjustReason.DAMAGE),))])
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.unavailable, q.available) == (10, 3, 7)
    ledger.apply(
        T0, [Adjust("ret", (Adjustment("sku", "A", 2, AdjustReason.RETURN_TO_INSPECTION),))]
    )
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.unavailable, q.available) == (12, 5, 7)
    out = ledger.apply(
        T0,
        [
            Move(
                "insp",
                (
                    MoveLine("sku", "A", 4, MoveKind.TO_SELLABLE),
                    MoveLine("sku", "A", 1, MoveKind.WRITE_OFF),
                    MoveLine("sku", "A", 1, MoveKind.TO_SELLABLE),  # nothing left to pass
                ),
            )
        ],
    )
    assert out.results[0].statuses == (LineStatus.OK, LineStatus.OK, LineStatus.NEGATIVE_STOCK)
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.unavailable, q.available) == (11, 0, 11)
    # Damage may not take units that are already promised.
    ledger.reserve("r", [("sku", "A", 11)], 60_000, T0)
    out = ledger.apply(T0, [Adjust("d2", (Adjustment("sku", "A", 1, AdjustReason.DAMAGE),))])
    assert out.results[0].statuses == (LineStatus.NEGATIVE_STOCK,)


def test_backorder_limit_lets_holds_exceed_stock_until_received() -> None:
    ledger = ledger_with({("sku", "A"): 2})
    ledger.apply(T0, [SetBackorderLimit("b", (Setting("sku", "A", 3),))])
    assert ledger.reserve("r", [("sku", "A", 5)], 60_000, T0).reservation.state == S.HELD
    assert at(ledger, "sku", "A").available == 0
    out = ledger.apply(T0, [SetBackorderLimit("b2", (Setting("sku", "A", 2),))])
    assert out.results[0].statuses == (LineStatus.NEGATIVE_STOCK,)
    with pytest.raises(EngineError) as e:
        ledger.fulfil("r", T0)
    assert e.value.reason == "NOT_ON_HAND"
    ledger.apply(T0, [receipt("in", "sku", "A", 3)])
    assert ledger.fulfil("r", T0).reservation.state == S.FULFILLED
    assert at(ledger, "sku", "A").on_hand == 0


# --- regressions found by the model-based test ---------------------------------------------------


def test_fulfil_of_two_lines_for_one_backordered_position_is_judged_on_the_sum() -> None:
    ledger = ledger_with({("sku", "A"): 6})
    ledger.apply(T0, [SetBackorderLimit("b", (Setting("sku", "A", 4),))])
    ledger.reserve("r", [("sku", "A", 5), ("sku", "A", 5)], 60_000, T0)
    before = snapshot(ledger)
    with pytest.raises(EngineError) as e:
        ledger.fulfil("r", T0)
    assert e.value.reason == "NOT_ON_HAND"
    assert snapshot(ledger) == before
    assert ledger.fulfil("r", T0, [("sku", "A", 6)]).reservation.state == S.COMMITTED
    assert at(ledger, "sku", "A").on_hand == 0


def test_fulfil_never_hands_over_unavailable_units() -> None:
    ledger = ledger_with({("sku", "A"): 5})
    ledger.apply(
        T0,
        [
            SetBackorderLimit("b", (Setting("sku", "A", 5),)),
            Adjust("d", (Adjustment("sku", "A", 5, AdjustReason.DAMAGE),)),
        ],
    )
    ledger.reserve("r", [("sku", "A", 5)], 60_000, T0)
    with pytest.raises(EngineError) as e:
        ledger.fulfil("r", T0)
    assert e.value.reason == "NOT_ON_HAND"
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.unavailable, q.reserved) == (5, 5, 5)


def test_transfer_status_follows_precedence() -> None:
    ledger = ledger_with({})
    t = ledger.apply(T0, [TransferShip("t", "sku", "A", "nowhere", 1)]).results[0]
    assert (t.state, t.status) == ("FAILED", LineStatus.UNKNOWN_NODE)


def test_fulfil_lines_match_by_name_not_by_interning_history() -> None:
    ledger = ledger_with({("sku", "A"): 5})
    ledger.reserve("r", [("sku", "A", 2), ("later", "A", 1)], 60_000, T0, allow_partial=True)
    ledger.apply(T0, [receipt("new", "later", "A", 1)])  # interns "later" after the reserve
    with pytest.raises(EngineError) as e:
        ledger.fulfil("r", T0, [("later", "A", 1)])
    assert e.value.reason == "OVER_FULFIL"
    with pytest.raises(EngineError) as e:
        ledger.fulfil("r", T0, [("sku", "B", 1)])
    assert e.value.reason == "LINE_NOT_IN_RESERVATION"


# --- idempotency ---------------------------------------------------------------------------------


def test_idempotency_replays_conflicts_and_forgets_after_the_window() -> None:
    ledger = Ledger(ids_window_ms=10_000)
    ledger.upsert_nodes([NodeSpec("A")], T0)
    ledger.apply(T0, [receipt("p", "sku", "A", 5)])
    again = ledger.apply(T0, [receipt("p", "sku", "A", 5)]).results[0]
    assert again.replayed and at(ledger, "sku", "A").on_hand == 5
    other = ledger.apply(T0, [receipt("p", "sku", "A", 6)]).results[0]
    assert (other.code, other.reason) == (Code.ALREADY_EXISTS, "ID_CONFLICT")
    ledger.reserve("r", [("sku", "A", 1)], 60_000, T0)
    ledger.release("r", T0 + 1)
    with pytest.raises(EngineError) as e:
        ledger.reserve("r", [("sku", "A", 2)], 60_000, T0 + 2)
    assert e.value.code == Code.ALREADY_EXISTS
    assert ledger.reserve("r", [("sku", "A", 1)], 60_000, T0 + 2).reservation.state == S.RELEASED
    ledger.tick(T0 + 10_000)  # the request is exactly one window old: forgotten
    assert not ledger.apply(T0 + 10_000, [receipt("p", "sku", "A", 5)]).results[0].replayed
    assert ledger.get_reservation("r").state == S.RELEASED  # released at T0 + 1: still known
    ledger.tick(T0 + 10_001)
    with pytest.raises(EngineError) as e:
        ledger.get_reservation("r")
    assert e.value.code == Code.NOT_FOUND
    assert ledger.reserve("r", [("sku", "A", 2)], 60_000, T0 + 10_001).reservation.state == S.HELD


def test_refused_reserves_do_not_push_request_ids_out_of_memory() -> None:
    """A sold-out sale refuses reserves by the million, each remembered under its id; the bound
    on remembered ids (4 here, 5,000,000 by default) must not let them evict a POS sale's or a
    partial fulfil's request id, whose retries would then apply a second time. Request ids have
    a bound of their own; past it, the oldest request id goes first."""
    ledger = Ledger(ids_remembered_max=4)
    ledger.upsert_nodes([NodeSpec("A")], T0)
    ledger.apply(T0, [receipt("stock", "sku", "A", 100)])
    ledger.reserve("order", [("sku", "A", 10)], 600_000, T0)
    sale = Adjust("pos-77", (Adjustment("sku", "A", 1, AdjustReason.SALE),))
    ledger.apply(T0 + 1, [sale])
    ledger.fulfil("order", T0 + 1, [("sku", "A", 3)], request_id="ship-1")
    for k in range(10):  # refused: no such SKU
        refused = ledger.reserve(f"bot-{k}", [("gone", "A", 1)], 600_000, T0 + 2)
        assert refused.reservation.state == S.REJECTED
    assert ledger.apply(T0 + 3, [sale]).results[0].replayed
    assert ledger.fulfil("order", T0 + 3, [("sku", "A", 3)], request_id="ship-1").replayed
    assert at(ledger, "sku", "A").on_hand == 96  # 100 - 1 sold - 3 handed over, once each
    # The reservation ids' own bound still holds: the oldest refused ones are forgotten.
    assert ledger.stats()["reservations_remembered"] <= 4 + 1  # + the live hold
    for k in range(3):  # three more request ids: "stock" and "pos-77" are the oldest, forgotten
        ledger.apply(T0 + 4, [receipt(f"more-{k}", "sku", "A", 1)])
    assert ledger.stats()["requests_remembered"] == 4
    assert not ledger.apply(T0 + 5, [sale]).results[0].replayed


def test_a_snapshot_with_the_finals_interleaved_loads_them_split() -> None:
    """Snapshots from before request ids had their own queue list every final id in one
    time order; loading one splits them by kind, and the ledger continues as the one that
    wrote it (same answers, same bytes)."""
    import engine.ledger as ledger_module

    ledger = Ledger(ids_remembered_max=3)
    ledger.upsert_nodes([NodeSpec("A")], T0)
    for k in range(3):
        ledger.apply(T0 + k, [receipt(f"rcpt-{k}", "sku", "A", 1)])
        ledger.reserve(f"gone-{k}", [("none", "A", 1)], 60_000, T0 + k)
    arrays, meta = ledger.export_state()
    decoded = msgspec.msgpack.decode(meta, type=ledger_module._Meta)
    assert [f[1] for f in decoded.final] == ["r"] * 3 + ["q"] * 3
    interleaved = sorted(decoded.final, key=lambda f: f[0])
    assert [f[1] for f in interleaved] == ["r", "q"] * 3
    old = msgspec.msgpack.encode(msgspec.structs.replace(decoded, final=interleaved))
    loaded = Ledger.from_state({k: v.copy() for k, v in arrays.items()}, old, ids_remembered_max=3)
    assert loaded.export_state()[1] == meta
    for one in (ledger, loaded):
        assert one.apply(T0 + 5, [receipt("rcpt-0", "sku", "A", 1)]).results[0].replayed
        one.apply(T0 + 5, [receipt("rcpt-3", "sku", "A", 1)])  # rcpt-0 is now the 4th: forgotten
        assert not one.apply(T0 + 6, [receipt("rcpt-0", "sku", "A", 1)]).results[0].replayed
    assert loaded.export_state()[1] == ledger.export_state()[1]


def test_fulfil_request_id_makes_partial_fulfilment_safe_to_retry() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    ledger.reserve("r", [("sku", "A", 6)], 60_000, T0)
    first = ledger.fulfil("r", T0, [("sku", "A", 2)], request_id="f1")
    retry = ledger.fulfil("r", T0, [("sku", "A", 2)], request_id="f1")
    assert not first.replayed and retry.replayed
    assert retry.reservation.lines[0].fulfilled_qty == 2
    with pytest.raises(EngineError) as e:
        ledger.fulfil("r", T0, [("sku", "A", 3)], request_id="f1")
    assert e.value.reason == "ID_CONFLICT"
    assert at(ledger, "sku", "A").on_hand == 8


# --- every refusal leaves the state unchanged ----------------------------------------------------

LONG = "x" * (limits.ID_BYTES_MAX + 1)
LINE = Line("sku", "A", 1)
REFUSALS: list[tuple[str, Any, Code, str]] = [
    ("empty reservation id", Reserve("", (LINE,), 60_000), Code.INVALID_ARGUMENT, ""),
    ("long reservation id", Reserve(LONG, (LINE,), 60_000), Code.INVALID_ARGUMENT, ""),
    ("long sku", Reserve("n", (Line(LONG, "A", 1),), 60_000), Code.INVALID_ARGUMENT, ""),
    ("empty node", Reserve("n", (Line("sku", "", 1),), 60_000), Code.INVALID_ARGUMENT, ""),
    ("long group", Reserve("n", (LINE,), 60_000, group_id=LONG), Code.INVALID_ARGUMENT, ""),
    ("qty 0", Reserve("n", (Line("sku", "A", 0),), 60_000), Code.INVALID_ARGUMENT, ""),
    ("qty 10^9+1", Reserve("n", (Line("sku", "A", 10**9 + 1),), 60_000), Code.INVALID_ARGUMENT, ""),
    ("ttl too short", Reserve("n", (LINE,), limits.TTL_MS_MIN - 1), Code.INVALID_ARGUMENT, ""),
    ("ttl too long", Reserve("n", (LINE,), limits.TTL_MS_MAX + 1), Code.INVALID_ARGUMENT, ""),
    ("no lines", Reserve("n", (), 60_000), Code.INVALID_ARGUMENT, ""),
    (
        "too many lines",
        Reserve("n", (LINE,) * (limits.REQUEST_LINES_MAX + 1), 60_000),
        Code.INVALID_ARGUMENT,
        "",
    ),
    ("reserve conflict", Reserve("held", (LINE, LINE), 60_000), Code.ALREADY_EXISTS, "ID_CONFLICT"),
    ("commit unknown", Commit("nope"), Code.NOT_FOUND, "RESERVATION_NOT_FOUND"),
    ("commit empty id", Commit(""), Code.INVALID_ARGUMENT, ""),
    ("release unknown", Release("nope"), Code.NOT_FOUND, "RESERVATION_NOT_FOUND"),
    ("extend unknown", Extend("nope", 5_000), Code.NOT_FOUND, "RESERVATION_NOT_FOUND"),
    ("extend bad ttl", Extend("held", 10), Code.INVALID_ARGUMENT, ""),
    ("commit released", Commit("released"), Code.FAILED_PRECONDITION, "WRONG_STATE"),
    ("extend released", Extend("released", 5_000), Code.FAILED_PRECONDITION, "WRONG_STATE"),
    ("fulfil unknown", Fulfil("nope"), Code.NOT_FOUND, "RESERVATION_NOT_FOUND"),
    ("fulfil released", Fulfil("released"), Code.FAILED_PRECONDITION, "WRONG_STATE"),
    ("fulfil qty 0", Fulfil("held", (Line("sku", "A", 0),)), Code.INVALID_ARGUMENT, ""),
    ("fulfil too much", Fulfil("held", (Line("sku", "A", 9),)), Code.FAILED_PRECONDITION, ""),
    ("fulfil other line", Fulfil("held", (Line("sku", "B", 1),)), Code.FAILED_PRECONDITION, ""),
    ("fulfil long request", Fulfil("held", (), LONG), Code.INVALID_ARGUMENT, ""),
    (
        "adjust empty request id",
        Adjust("", (Adjustment("sku", "A", 1),)),
        Code.INVALID_ARGUMENT,
        "",
    ),
    ("adjust delta 0", Adjust("a", (Adjustment("sku", "A", 0),)), Code.INVALID_ARGUMENT, ""),
    (
        "adjust delta 10^9+1",
        Adjust("a", (Adjustment("sku", "A", 10**9 + 1),)),
        Code.INVALID_ARGUMENT,
        "",
    ),
    (
        "adjust no reason",
        Adjust("a", (Adjustment("sku", "A", 1, AdjustReason.UNSPECIFIED),)),
        Code.INVALID_ARGUMENT,
        "",
    ),
    ("adjust no lines", Adjust("a", ()), Code.INVALID_ARGUMENT, ""),
    ("adjust conflict", receipt("stock", "sku", "A", 1), Code.ALREADY_EXISTS, "ID_CONFLICT"),
    (
        "count negative",
        SetOnHand("c", (StockCount("sku", "A", -1, 9),)),
        Code.INVALID_ARGUMENT,
        "",
    ),
    (
        "move no kind",
        Move("m", (MoveLine("sku", "A", 1, MoveKind.UNSPECIFIED),)),
        Code.INVALID_ARGUMENT,
        "",
    ),
    ("safety negative", SetSafetyStock("s", (Setting("sku", "A", -1),)), Code.INVALID_ARGUMENT, ""),
    ("ship to itself", TransferShip("t", "sku", "A", "A", 1), Code.INVALID_ARGUMENT, ""),
    ("ship qty 0", TransferShip("t", "sku", "A", "B", 0), Code.INVALID_ARGUMENT, ""),
    ("ship empty id", TransferShip("", "sku", "A", "B", 1), Code.INVALID_ARGUMENT, ""),
    (
        "ship conflict",
        TransferShip("moving", "sku", "A", "B", 2),
        Code.ALREADY_EXISTS,
        "ID_CONFLICT",
    ),
    ("receive unknown", TransferReceive("nope"), Code.NOT_FOUND, "TRANSFER_NOT_FOUND"),
    ("receive too much", TransferReceive("moving", 5), Code.FAILED_PRECONDITION, "OVER_RECEIVE"),
    ("cancel unknown", TransferCancel("nope"), Code.NOT_FOUND, "TRANSFER_NOT_FOUND"),
    ("nodes empty", UpsertNodes(()), Code.INVALID_ARGUMENT, ""),
    ("node bad lat", UpsertNodes((NodeSpec("Z", lat=91.0),)), Code.INVALID_ARGUMENT, ""),
    ("group empty node id", UpsertGroups((GroupSpec("g", ("A", "")),)), Code.INVALID_ARGUMENT, ""),
    (
        "group pct over 100",
        UpsertGroups((GroupSpec("g", ("A",), buffer_pct=100.5),)),
        Code.INVALID_ARGUMENT,
        "",
    ),
]


@pytest.mark.parametrize(
    ("command", "code", "reason"),
    [pytest.param(c, code, reason, id=name) for name, c, code, reason in REFUSALS],
)
def test_every_refusal_leaves_state_unchanged(command: Any, code: Code, reason: str) -> None:
    ledger = ledger_with({("sku", "A"): 10})
    ledger.reserve("held", [("sku", "A", 2)], 60_000, T0)
    ledger.reserve("released", [("sku", "A", 1)], 60_000, T0)
    ledger.release("released", T0)
    ledger.apply(T0, [TransferShip("moving", "sku", "A", "B", 3)])
    before = snapshot(ledger)
    result = ledger.apply(T0, [command]).results[0]
    assert isinstance(result, Rejection), result
    assert result.code == code
    if reason:
        assert result.reason == reason
    elif code == Code.INVALID_ARGUMENT:
        assert result.reason == "FIELD_INVALID"
    assert result.message
    assert snapshot(ledger) == before
    with pytest.raises(EngineError):  # the friendly API raises the same refusal
        ledger._one(T0, command)
    assert snapshot(ledger) == before


def test_replays_change_nothing() -> None:
    ledger = ledger_with({("sku", "A"): 10})
    cmds = [
        Reserve("r", (Line("sku", "A", 2),), 60_000),
        receipt("p", "sku", "A", 1),
        TransferShip("t", "sku", "A", "B", 1),
        Commit("r"),
        Fulfil("r", (Line("sku", "A", 1),), "f"),
    ]
    ledger.apply(T0, cmds)
    before = snapshot(ledger)
    out = ledger.apply(T0, cmds)
    assert all(r.replayed for r in out.results)
    assert snapshot(ledger) == before
    assert msgspec.structs.astuple(at(ledger, "sku", "A"))[:3] == (9, 0, 1)


def test_line_and_heap_compaction_keep_every_reservation_intact() -> None:
    """Forgotten reservations' lines are compacted away; stale heap entries too."""
    ledger = Ledger(ids_window_ms=1_000)
    ledger.upsert_nodes([NodeSpec("A"), NodeSpec("B")], T0)
    ledger.apply(T0, [receipt("in", "sku", "A", 10**6), receipt("in2", "sku", "B", 100)])
    ledger.reserve("first", [("sku", "A", 1), ("sku", "B", 2)], 10**6, T0)
    lines = tuple(Line("sku", "A", 1) for _ in range(limits.REQUEST_LINES_MAX))
    ledger.apply(T0, [Reserve(f"big{i}", lines, 60_000) for i in range(7)])
    ledger.reserve("last", [("sku", "B", 3), ("sku", "A", 4)], 10**6, T0)
    ledger.commit("last", T0)
    ledger.apply(T0, [Release(f"big{i}") for i in range(7)])
    views = {rid: ledger.get_reservation(rid) for rid in ("first", "last")}
    assert ledger.stats()["lines_used"] == 70_004
    ledger.tick(T0 + 1_000)  # the big ones are forgotten and their lines compacted away
    assert ledger.stats()["lines_used"] == 4
    assert {rid: ledger.get_reservation(rid) for rid in ("first", "last")} == views
    done = ledger.fulfil("last", T0 + 1_000, [("sku", "A", 4)]).reservation
    assert [x.held_qty for x in done.lines] == [3, 0]
    q = at(ledger, "sku", "A")
    assert (q.on_hand, q.reserved, q.allocated) == (10**6 - 4, 1, 0)

    ledger.reserve("h", [("sku", "B", 1)], 2_000, T0 + 2_000)
    ledger.apply(T0 + 2_000, [Extend("h", 2_000 + i % 5) for i in range(66_000)])
    assert ledger.stats()["heap_len"] < 66_000  # compacted along the way
    assert ledger.tick(T0 + 4_003) == []
    assert ledger.tick(T0 + 4_004) == ["h"]  # the last extension (2_000 + 65_999 % 5) wins
    assert ledger.tick(T0 + 10**7) == ["first"]


def test_one_query_read_answers_as_the_columnar_read() -> None:
    """`Ledger.availability_one` (the one-query kernel on the state's arrays; `availability_at` by
    name) gives each query the status and quantities `availability_ids` gives it: known
    positions, SKUs known elsewhere, unknown and out-of-range ids, a disabled node, and buckets
    other than on-hand."""
    import numpy as np

    ledger = ledger_with({("s1", "A"): 10, ("s2", "B"): 4, ("s3", "C"): 7}, nodes=("A", "B", "C"))
    ledger.apply(T0, [Reserve("r1", (Line("s1", "A", 3),), 60_000)])
    ledger.apply(T0, [SetSafetyStock("ss", (Setting("s2", "B", 1),))])
    ledger.apply(T0, [Move("mv", (MoveLine("s1", "A", 2, MoveKind.TO_UNAVAILABLE),))])
    ledger.upsert_nodes([NodeSpec("C", enabled=False)], T0)
    skus = [ledger.sku_id(s) for s in ("s1", "s2", "s3", "nope")] + [-1, 1 << 40]
    nodes = [ledger.node_id(n) for n in ("A", "B", "C", "nope")] + [-1, 1 << 40]
    pairs = [(s, n) for s in skus for n in nodes]
    statuses, qty = ledger.availability_ids(
        np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)
    )
    out = np.full((1, 7), -9, np.int64)
    seen = set()
    for k, (s, n) in enumerate(pairs):
        status = ledger.availability_one(s, n, out)
        assert (status, out[0].tolist()) == (int(statuses[k]), qty[k].tolist()), (s, n)
        seen.add(status)
    assert qty[0].tolist() == [10, 3, 0, 0, 2, 0, 5]  # s1 at A: every bucket read
    # `availability_at`, by name, answers as `availability_one` of the names' ids.
    for sku in ("s1", "s2", "s3", "nope", ""):
        for node in ("A", "B", "C", "nope", ""):
            want = ledger.availability_one(ledger.sku_id(sku), ledger.node_id(node), out)
            want_row = out[0].tolist()
            out[:] = -9
            assert ledger.availability_at(sku, node, out) == want, (sku, node)
            assert out[0].tolist() == want_row, (sku, node)
    assert seen == {
        LineStatus.OK,
        LineStatus.UNKNOWN_SKU,
        LineStatus.UNKNOWN_NODE,
        LineStatus.NODE_DISABLED,
    }
