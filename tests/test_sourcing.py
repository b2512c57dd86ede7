"""SourceOrder and source-and-reserve: optimal against the brute force, scenarios, no oversell."""

from __future__ import annotations

import random

import pytest

from engine.codes import AdjustReason, LineStatus, NodeType, ReservationState
from engine.commands import (
    Adjust,
    Adjustment,
    FulfilmentMode,
    GroupSpec,
    NodeSpec,
    SetSafetyStock,
    Setting,
    SkuQty,
    SourceReserve,
    SourcingPolicy,
)
from engine.errors import EngineError, Rejection
from engine.ledger import Ledger
from engine.sourcing import SOURCE_LINES_MAX
from tests.sourcing_reference import UNLIMITED, Node, Policy, route

DAY_MS = 86_400_000
NOW = 10 * DAY_MS + 1_000
PARIS = (48.8566, 2.3522)


def _receipts(ledger: Ledger, request_id: str, stock: dict[tuple[str, str], int]) -> None:
    adj = tuple(
        Adjustment(sku, node, qty, AdjustReason.RECEIPT) for (sku, node), qty in stock.items()
    )
    out = ledger.apply(NOW, [Adjust(request_id, adj)]).results[0]
    assert not isinstance(out, Rejection), out


def _random_network(rng: random.Random):
    """A ledger plus the plain model of it the brute force reads."""
    ledger = Ledger()
    n_nodes = rng.randint(1, 6)
    skus = ["A", "B", "C", "D"]
    nodes: list[Node] = []
    specs = []
    for i in range(n_nodes):
        node = Node(
            index=i,
            node_id=f"N{i}",
            lat=PARIS[0] + rng.uniform(-1, 1),
            lon=PARIS[1] + rng.uniform(-1, 1),
            type=rng.choice([1, 2, 3]),
            enabled=rng.random() > 0.15,
            ship=rng.random() > 0.1,
            priority=rng.randint(0, 3),
        )
        cap = rng.choice([0, 0, 3, 5, 8])
        specs.append(
            NodeSpec(
                node.node_id,
                NodeType(node.type),
                node.lat,
                node.lon,
                ship=node.ship,
                enabled=node.enabled,
                priority=node.priority,
                daily_capacity=cap,
            )
        )
        nodes.append(node)
        node.capacity_left = cap if cap else UNLIMITED
    ledger.upsert_nodes(specs, NOW)
    on_hand: dict[tuple[str, int], int] = {}
    for sku in skus:
        for n in nodes:
            if rng.random() < 0.6:
                on_hand[(sku, n.index)] = rng.randint(1, 6)
    if on_hand:
        _receipts(ledger, "stock", {(s, f"N{n}"): q for (s, n), q in on_hand.items()})
    safety = {k: rng.randint(0, 2) for k in on_hand if rng.random() < 0.3}
    if safety:
        settings = tuple(Setting(s, f"N{n}", v) for (s, n), v in safety.items())
        assert ledger.apply(NOW, [SetSafetyStock("ss", settings)]).results[0].statuses
    # Committed units use up daily capacity (SKU Z is never ordered).
    for n in nodes:
        if n.capacity_left != UNLIMITED and n.enabled and rng.random() < 0.5:
            used = rng.randint(1, n.capacity_left)
            _receipts(ledger, f"z{n.index}", {("Z", n.node_id): used})
            ledger.reserve(f"cap{n.index}", [("Z", n.node_id, used)], 60_000, NOW)
            ledger.commit(f"cap{n.index}", NOW)
            n.capacity_left -= used
    group = ""
    buffer_units = 0
    if rng.random() < 0.4:
        group = "G"
        members = [n for n in nodes if rng.random() < 0.7]
        buffer_units = rng.randint(0, 1)
        ledger.upsert_groups([GroupSpec("G", tuple(n.node_id for n in members), buffer_units)], NOW)
        for n in members:
            n.groups.add("G")
    reservable = {k: q - safety.get(k, 0) for k, q in on_hand.items()}
    return ledger, nodes, reservable, group, buffer_units


@pytest.mark.parametrize("seed", range(250))
def test_plan_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    ledger, nodes, reservable, group, buffer_units = _random_network(rng)
    lines = [
        (sku, rng.randint(1, 4)) for sku in rng.sample(["A", "B", "C", "D"], rng.randint(1, 4))
    ]
    if rng.random() < 0.1:
        lines.append(("NOPE", 1))
    policy = SourcingPolicy(
        max_shipments=rng.choice([0, 1, 2, 3]),
        node_types=rng.choice([(), (NodeType.DC,), (NodeType.DC, NodeType.DARK_STORE)]),
        group_id=group if rng.random() < 0.7 else "",
        allow_ship_from_store=rng.random() < 0.7,
        distance_weight=rng.choice([1.0, 0.5, 0.0]),
        priority_weight=rng.choice([0.0, 10.0]),
        split_penalty=rng.choice([0.0, 5.0]),
        respect_capacity=rng.random() < 0.8,
    )
    if policy.group_id:
        reservable = {k: q - buffer_units for k, q in reservable.items()}
    dest = (PARIS[0] + rng.uniform(-1, 1), PARIS[1] + rng.uniform(-1, 1))
    plan = ledger.source_order(lines, lat=dest[0], lon=dest[1], policy=policy)
    ref_policy = Policy(
        policy.max_shipments,
        tuple(int(t) for t in policy.node_types),
        policy.group_id,
        policy.allow_ship_from_store,
        policy.distance_weight,
        policy.priority_weight,
        policy.respect_capacity,
    )
    key, _ = route(nodes, reservable, lines, dest, ref_policy)
    fulfilled = sum(len(s.lines) for s in plan.shipments)
    assert (-fulfilled, plan.shipment_count) == key[:2], plan.explanation
    node_cost = sum(s.cost for s in plan.shipments)
    assert node_cost == pytest.approx(key[2], rel=1e-9, abs=1e-9)
    penalty = policy.split_penalty * max(0, plan.shipment_count - 1)
    assert plan.total_cost == pytest.approx(node_cost + penalty, rel=1e-9, abs=1e-9)
    # feasible: every planned line is covered where it ships, nodes within capacity
    by_id = {n.node_id: n for n in nodes}
    for s in plan.shipments:
        n = by_id[s.node_id]
        assert sum(x.qty for x in s.lines) <= (
            n.capacity_left if policy.respect_capacity else UNLIMITED
        )
        for x in s.lines:
            assert reservable[(x.sku, n.index)] >= x.qty
    # every line is either shipped or listed, once
    listed = [x.sku for s in plan.shipments for x in s.lines] + [u.sku for u in plan.unfulfilled]
    assert sorted(listed) == sorted(s for s, _ in lines)
    assert plan.explanation
    # source-and-reserve holds exactly the plan
    res = ledger.source_reserve("R", lines, 60_000, NOW, lat=dest[0], lon=dest[1], policy=policy)
    assert res.plan == plan
    held = sorted((x.line.sku, x.line.node_id, x.held_qty) for x in res.reservation.lines)
    assert held == sorted((x.sku, x.node_id, x.qty) for s in plan.shipments for x in s.lines)
    again = ledger.source_reserve("R", lines, 60_000, NOW, lat=dest[0], lon=dest[1], policy=policy)
    assert again.replayed and again.plan == plan


def _network(stores: list[tuple[str, float, float, dict[str, int]]], **node_kw) -> Ledger:
    ledger = Ledger()
    specs = [
        NodeSpec(
            node_id,
            NodeType.DC if node_id.startswith("DC") else NodeType.STORE,
            lat,
            lon,
            pickup=not node_id.startswith("DC"),
            **node_kw.get(node_id, {}),
        )
        for node_id, lat, lon, _ in stores
    ]
    ledger.upsert_nodes(specs, NOW)
    stock = {(sku, node_id): q for node_id, _, _, items in stores for sku, q in items.items()}
    _receipts(ledger, "stock", stock)
    return ledger


CART = [("A", 1), ("B", 2), ("C", 1)]
FULL = {"A": 5, "B": 5, "C": 5}


def test_store_next_door_covers_everything() -> None:
    ledger = _network(
        [("DC-1", 50.0, 3.0, FULL), ("S-near", 48.857, 2.353, FULL), ("S-far", 48.0, 2.0, FULL)]
    )
    plan = ledger.source_order(CART, lat=PARIS[0], lon=PARIS[1])
    assert plan.shipment_count == 1 and plan.shipments[0].node_id == "S-near"
    assert plan.explanation.startswith("single node S-near covers all 3 lines")


def test_nothing_nearby_goes_to_dc() -> None:
    ledger = _network(
        [("DC-1", 50.0, 3.0, FULL), ("S-near", 48.857, 2.353, {"A": 1}), ("S-2", 48.86, 2.36, {})]
    )
    plan = ledger.source_order(CART, lat=PARIS[0], lon=PARIS[1])
    assert [s.node_id for s in plan.shipments] == ["DC-1"]
    assert "1 nearer node cover at most 1/3" in plan.explanation


def test_two_half_stores_split_or_cannot_fulfil() -> None:
    ledger = _network([("S-1", 48.857, 2.353, {"A": 1, "B": 2}), ("S-2", 48.86, 2.36, {"C": 1})])
    plan = ledger.source_order(CART, lat=PARIS[0], lon=PARIS[1])
    assert plan.shipment_count == 2 and not plan.unfulfilled
    assert {s.node_id for s in plan.shipments} == {"S-1", "S-2"}
    one = ledger.source_order(
        CART, lat=PARIS[0], lon=PARIS[1], policy=SourcingPolicy(max_shipments=1)
    )
    assert one.shipment_count == 1
    assert [(u.sku, u.reason) for u in one.unfulfilled] == [("C", LineStatus.INSUFFICIENT)]
    assert "max_shipments=1 leaves 1 coverable line unfulfilled" in one.explanation
    no_store = ledger.source_order(
        CART, lat=PARIS[0], lon=PARIS[1], policy=SourcingPolicy(allow_ship_from_store=False)
    )
    assert no_store.shipment_count == 0 and len(no_store.unfulfilled) == 3


def test_disabled_and_full_capacity_nodes_are_skipped() -> None:
    ledger = _network(
        [
            ("S-off", 48.857, 2.353, FULL),
            ("S-full", 48.858, 2.354, FULL),
            ("DC-1", 50.0, 3.0, FULL),
        ],
        **{"S-off": {"enabled": False}, "S-full": {"daily_capacity": 2}},
    )
    _receipts(ledger, "z", {("Z", "S-full"): 2})
    ledger.reserve("cap", [("Z", "S-full", 2)], 60_000, NOW)
    ledger.commit("cap", NOW)
    plan = ledger.source_order(CART, lat=PARIS[0], lon=PARIS[1])
    assert [s.node_id for s in plan.shipments] == ["DC-1"]
    ignore = SourcingPolicy(respect_capacity=False)
    plan = ledger.source_order(CART, lat=PARIS[0], lon=PARIS[1], policy=ignore)
    assert [s.node_id for s in plan.shipments] == ["S-full"]


def test_group_buffer_respected() -> None:
    ledger = _network([("S-1", 48.857, 2.353, {"A": 3}), ("DC-1", 50.0, 3.0, {"A": 9})])
    ledger.upsert_groups([GroupSpec("web", ("S-1", "DC-1"), buffer_units=2)], NOW)
    web = SourcingPolicy(group_id="web")
    plan = ledger.source_order([("A", 2)], lat=PARIS[0], lon=PARIS[1], policy=web)
    assert [s.node_id for s in plan.shipments] == ["DC-1"]  # S-1 has 3 - 2 = 1 for web
    plan = ledger.source_order([("A", 1)], lat=PARIS[0], lon=PARIS[1], policy=web)
    assert [s.node_id for s in plan.shipments] == ["S-1"]
    missing = SourcingPolicy(group_id="nope")
    plan = ledger.source_order([("A", 1)], lat=PARIS[0], lon=PARIS[1], policy=missing)
    assert plan.unfulfilled[0].reason == LineStatus.UNKNOWN_GROUP


def test_pickup_local_then_transfer() -> None:
    ledger = _network(
        [("S-1", 48.857, 2.353, {"A": 1}), ("S-2", 48.86, 2.36, {"B": 5}), ("DC-1", 50, 3, FULL)]
    )
    plan = ledger.source_order(CART, mode=FulfilmentMode.PICKUP, pickup_node_id="S-1")
    local = [s for s in plan.shipments if not s.is_transfer]
    assert [(s.node_id, [x.sku for x in s.lines]) for s in local] == [("S-1", ["A"])]
    transfers = [s for s in plan.shipments if s.is_transfer]
    assert [s.node_id for s in transfers] == ["DC-1"]  # one transfer for B and C beats two
    whole = ledger.source_order([("A", 1)], mode=FulfilmentMode.PICKUP, pickup_node_id="S-1")
    assert whole.shipment_count == 1 and whole.explanation.startswith("pickup node S-1 covers")
    unknown = ledger.source_order([("A", 1)], mode=FulfilmentMode.PICKUP, pickup_node_id="X")
    assert unknown.unfulfilled[0].reason == LineStatus.UNKNOWN_NODE


def test_unknown_sku_is_listed_not_dropped() -> None:
    ledger = _network([("DC-1", 50.0, 3.0, FULL)])
    plan = ledger.source_order([("A", 1), ("GHOST", 2)], lat=PARIS[0], lon=PARIS[1])
    assert [(u.sku, u.qty, u.reason) for u in plan.unfulfilled] == [
        ("GHOST", 2, LineStatus.UNKNOWN_SKU)
    ]


def test_duplicate_skus_merge_and_validation() -> None:
    ledger = _network([("DC-1", 50.0, 3.0, {"A": 3})])
    plan = ledger.source_order([("A", 2), ("A", 1)], lat=PARIS[0], lon=PARIS[1])
    assert [(x.sku, x.qty) for x in plan.shipments[0].lines] == [("A", 3)]
    with pytest.raises(EngineError, match=r"lines\[0\].qty"):
        ledger.source_order([("A", 0)], lat=PARIS[0], lon=PARIS[1])
    with pytest.raises(EngineError, match="ship_to.lat"):
        ledger.source_order([("A", 1)], lat=91, lon=0)
    with pytest.raises(EngineError, match="distinct SKUs"):
        ledger.source_order(
            [(f"S{i}", 1) for i in range(SOURCE_LINES_MAX + 1)], lat=PARIS[0], lon=PARIS[1]
        )


def test_source_reserve_idempotency_and_snapshot() -> None:
    ledger = _network([("DC-1", 50.0, 3.0, {"A": 1})])
    first = ledger.source_reserve("r", [("A", 1)], 60_000, NOW, lat=PARIS[0], lon=PARIS[1])
    assert first.reservation.state == ReservationState.HELD and not first.replayed
    with pytest.raises(EngineError, match="ID_CONFLICT"):
        ledger.source_reserve("r", [("A", 1)], 90_000, NOW, lat=PARIS[0], lon=PARIS[1])
    empty = ledger.source_reserve("r2", [("A", 1)], 60_000, NOW, lat=PARIS[0], lon=PARIS[1])
    assert empty.reservation.state == ReservationState.REJECTED and empty.plan.unfulfilled
    arrays, meta = ledger.export_state()
    copy = Ledger.from_state(arrays, meta)
    for led in (ledger, copy):
        again = led.source_reserve("r", [("A", 1)], 60_000, NOW, lat=PARIS[0], lon=PARIS[1])
        assert again.replayed and again.plan == first.plan
        assert again.reservation.state == ReservationState.HELD
        rej = led.source_reserve("r2", [("A", 1)], 60_000, NOW, lat=PARIS[0], lon=PARIS[1])
        assert rej.replayed and rej.reservation.state == ReservationState.REJECTED


def _sixty_four(ledger: Ledger, prefix: str) -> list[SourceReserve]:
    return [
        SourceReserve(
            f"{prefix}{i}", 60_000, (SkuQty("A", 1), SkuQty("B", 1)), lat=PARIS[0], lon=PARIS[1]
        )
        for i in range(64)
    ]


@pytest.mark.parametrize("per_batch", [64, 1, 7])
def test_64_concurrent_orders_for_the_last_units_never_oversell(per_batch: int) -> None:
    ledger = _network(
        [
            ("S-1", 48.857, 2.353, {"A": 3, "B": 2}),
            ("S-2", 48.86, 2.36, {"A": 2, "B": 4}),
            ("DC-1", 50.0, 3.0, {"A": 5, "B": 3}),
        ]
    )
    cmds = _sixty_four(ledger, "o")
    results = []
    for k in range(0, len(cmds), per_batch):
        results += ledger.apply(NOW, cmds[k : k + per_batch]).results
    held = [r for r in results if r.reservation.state == ReservationState.HELD]
    units = {"A": 0, "B": 0}
    for r in held:
        for x in r.reservation.lines:
            units[x.line.sku] += x.held_qty
    # Each order takes at most one A and one B; there are 10 A and 9 B in the network.
    assert units["A"] <= 10 and units["B"] <= 9
    for sku in ("A", "B"):
        for node in ("S-1", "S-2", "DC-1"):
            _, q = ledger.availability([(sku, node, None)])[0]
            assert q.reserved <= q.on_hand
    # Every hold matches its plan; once stock runs out, plans say so and hold nothing.
    for r in results:
        planned = sorted((x.sku, x.node_id, x.qty) for s in r.plan.shipments for x in s.lines)
        got = sorted((x.line.sku, x.line.node_id, x.held_qty) for x in r.reservation.lines)
        assert planned == got
    assert results[-1].reservation.state in (ReservationState.HELD, ReservationState.REJECTED)
    assert sum(r.plan.shipment_count > 0 for r in results) == len(held)
