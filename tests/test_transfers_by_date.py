"""Availability by date: in-transit transfers with a known arrival are promisable at their target
from that date (docs/ledger.md, "Availability by date"); pickup ready times (docs/sourcing.md)."""

from __future__ import annotations

from engine.codes import LineStatus, NodeType
from engine.commands import (
    Adjust,
    Adjustment,
    AdjustReason,
    FulfilmentMode,
    GroupSpec,
    NodeSpec,
    SetSafetyStock,
    Setting,
    TransferCancel,
    TransferReceive,
    TransferShip,
)
from engine.ledger import DatedQuantities, Ledger

T0 = 1_700_000_000_000
DAY = 86_400_000


def network() -> Ledger:
    ledger = Ledger()
    ledger.upsert_nodes(
        [
            NodeSpec("DC", NodeType.DC, 48.85, 2.35),
            NodeSpec("S1", NodeType.STORE, 48.86, 2.36, pickup=True),
            NodeSpec("S2", NodeType.STORE, 48.87, 2.37, pickup=True),
        ],
        T0,
    )
    ledger.upsert_groups([GroupSpec("stores", ("S1", "S2"), buffer_units=1)], T0)
    ledger.apply(
        T0,
        [
            Adjust(
                "stock",
                (
                    Adjustment("A", "DC", 100, AdjustReason.RECEIPT),
                    Adjustment("A", "S1", 2, AdjustReason.RECEIPT),
                    Adjustment("B", "DC", 5, AdjustReason.RECEIPT),
                ),
            )
        ],
    )
    return ledger


def by_date(ledger: Ledger, sku: str, node: str | None, group: str | None, at_ms: int) -> int:
    status, q = ledger.availability([(sku, node, group)], at_ms=at_ms)[0]
    assert status == LineStatus.OK
    assert isinstance(q, DatedQuantities)
    return q.available_by_date


def test_dated_transfer_is_promisable_at_the_target_only_from_its_date() -> None:
    ledger = network()
    out = ledger.apply(T0, [TransferShip("t1", "A", "DC", "S1", 10, T0 + DAY)])
    assert out.results[0].state == "IN_TRANSIT"
    status, q = ledger.availability([("A", "S1", None)])[0]
    assert (q.inbound, q.available, hasattr(q, "available_by_date")) == (10, 2, False)
    assert by_date(ledger, "A", "S1", None, T0) == 2  # before the date: not promised
    assert by_date(ledger, "A", "S1", None, T0 + DAY - 1) == 2
    assert by_date(ledger, "A", "S1", None, T0 + DAY) == 12
    assert by_date(ledger, "A", "DC", None, T0 + DAY) == 90  # the sender is not credited
    # Group (buffer 1 per position) and network.
    assert by_date(ledger, "A", None, "stores", T0) == 1
    assert by_date(ledger, "A", None, "stores", T0 + DAY) == 11
    assert by_date(ledger, "A", None, None, T0 + DAY) == 102
    # A transfer without a known arrival is inbound but never promised.
    ledger.apply(T0, [TransferShip("t2", "A", "DC", "S2", 7)])
    assert by_date(ledger, "A", "S2", None, 2**62) == 0
    assert ledger.availability([("A", "S2", None)])[0][1].inbound == 7
    # Partial receipt: what arrived is on hand, the rest stays promisable by date.
    ledger.apply(T0, [TransferReceive("t1", 4)])
    assert by_date(ledger, "A", "S1", None, T0) == 6
    assert by_date(ledger, "A", "S1", None, T0 + DAY) == 12
    # Received in full: nothing dated any more (the units are on hand).
    ledger.apply(T0, [TransferReceive("t1")])
    assert by_date(ledger, "A", "S1", None, T0) == 12
    assert by_date(ledger, "A", "S1", None, T0 + DAY) == 12
    assert ledger._in_transit == {"A": {"S2": {"t2": ledger._transfers["t2"]}}}


def test_cancel_removes_the_dated_inbound() -> None:
    ledger = network()
    ledger.apply(T0, [TransferShip("t1", "A", "DC", "S1", 10, T0 + DAY)])
    ledger.apply(T0, [TransferCancel("t1")])
    assert by_date(ledger, "A", "S1", None, T0 + DAY) == 2
    assert by_date(ledger, "A", "DC", None, T0 + DAY) == 100
    assert ledger._in_transit == {}


def test_inbound_first_covers_an_overcommitted_position() -> None:
    ledger = network()
    ledger.apply(T0, [TransferShip("t1", "A", "DC", "S1", 10, T0 + DAY)])
    # S1 holds 2; a safety stock of 5 leaves it 3 short of promising anything.
    ledger.apply(T0, [SetSafetyStock("ss", (Setting("A", "S1", 5),))])
    assert ledger.availability([("A", "S1", None)])[0][1].available == 0
    assert by_date(ledger, "A", "S1", None, T0 + DAY) == 7  # 2 - 5 + 10


def test_unknown_or_disabled_scopes_promise_nothing_by_date() -> None:
    ledger = network()
    ledger.apply(T0, [TransferShip("t1", "A", "DC", "S1", 10, T0 + DAY)])
    statuses = ledger.availability(
        [("A", "NOPE", None), ("nope", "S1", None), ("A", None, "nogroup")], at_ms=T0 + DAY
    )
    assert [(s, q.available_by_date) for s, q in statuses] == [
        (LineStatus.UNKNOWN_NODE, 0),
        (LineStatus.UNKNOWN_SKU, 0),
        (LineStatus.UNKNOWN_GROUP, 0),
    ]
    ledger.upsert_nodes([NodeSpec("S1", NodeType.STORE, 48.86, 2.36, enabled=False)], T0)
    status, q = ledger.availability([("A", "S1", None)], at_ms=T0 + DAY)[0]
    assert (status, q.available_by_date) == (LineStatus.NODE_DISABLED, 0)
    assert by_date(ledger, "A", None, None, T0 + DAY) == 90  # disabled S1 drops out


def test_snapshot_restore_keeps_the_dated_inbound() -> None:
    ledger = network()
    ledger.apply(
        T0,
        [
            TransferShip("t1", "A", "DC", "S1", 10, T0 + DAY),
            TransferShip("t2", "A", "DC", "S1", 3, T0 + 2 * DAY),
            TransferShip("t3", "A", "DC", "S2", 1, T0 + DAY),
        ],
    )
    ledger.apply(T0, [TransferCancel("t3")])
    arrays, meta = ledger.export_state()
    restored = Ledger.from_state({k: v.copy() for k, v in arrays.items()}, meta)
    assert restored._in_transit.keys() == ledger._in_transit.keys()
    for at_ms in (T0, T0 + DAY, T0 + 2 * DAY):
        for node in ("S1", "S2", None):
            assert by_date(restored, "A", node, None, at_ms) == by_date(
                ledger, "A", node, None, at_ms
            )
    assert by_date(restored, "A", "S1", None, T0 + 2 * DAY) == 15
    restored.apply(T0, [TransferReceive("t2")])
    assert by_date(restored, "A", "S1", None, T0 + DAY) == 15
    assert restored.dated_inbound("A", "S1", 2**62) == [(T0 + DAY, 10)]


def test_pickup_transfer_leg_is_ready_when_dated_inbound_covers_it() -> None:
    ledger = network()
    # S1 has 2 of A; 3 more are on their way, due in a day and in two days.
    ledger.apply(
        T0,
        [
            TransferShip("t1", "A", "DC", "S1", 1, T0 + DAY),
            TransferShip("t2", "A", "DC", "S1", 2, T0 + 2 * DAY),
        ],
    )
    plan = ledger.source_order([("A", 3)], mode=FulfilmentMode.PICKUP, pickup_node_id="S1")
    (leg,) = plan.shipments
    assert (leg.node_id, leg.is_transfer) == ("DC", True)  # the plan itself is unchanged
    assert leg.ready_at_ms == T0 + DAY  # 2 on hand + 1 due in a day cover 3
    plan = ledger.source_order([("A", 5)], mode=FulfilmentMode.PICKUP, pickup_node_id="S1")
    assert plan.shipments[0].ready_at_ms == T0 + 2 * DAY
    assert "by" in plan.explanation
    # Not covered even with everything inbound: unknown (0).
    plan = ledger.source_order([("A", 6)], mode=FulfilmentMode.PICKUP, pickup_node_id="S1")
    assert plan.shipments[0].ready_at_ms == 0
    # A leg with several lines is ready when its last line is.
    plan = ledger.source_order(
        [("A", 3), ("B", 1)], mode=FulfilmentMode.PICKUP, pickup_node_id="S1"
    )
    (leg,) = plan.shipments
    assert leg.ready_at_ms == 0  # B has no inbound at S1
