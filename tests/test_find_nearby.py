"""FindNearby against the brute-force haversine ranking."""

from __future__ import annotations

import random

import pytest

from engine.codes import AdjustReason, LineStatus, NodeType
from engine.commands import Adjust, Adjustment, GroupSpec, NodeSpec
from engine.errors import EngineError
from engine.ledger import Ledger
from tests.sourcing_reference import Node, haversine_km, nearby


def _network(rng: random.Random, n_nodes: int, centre: tuple[float, float], spread: float):
    ledger = Ledger()
    nodes = []
    for i in range(n_nodes):
        lat = max(-90.0, min(90.0, centre[0] + rng.uniform(-spread, spread)))
        lon = (centre[1] + rng.uniform(-spread, spread) + 180.0) % 360.0 - 180.0
        nodes.append(
            Node(
                i,
                f"N{i}",
                lat,
                lon,
                type=rng.choice([1, 2, 3]),
                enabled=rng.random() > 0.1,
                pickup=rng.random() < 0.6,
            )
        )
    ledger.upsert_nodes(
        [
            NodeSpec(n.node_id, NodeType(n.type), n.lat, n.lon, pickup=n.pickup, enabled=n.enabled)
            for n in nodes
        ]
    )
    stock = {}
    for sku in ("A", "B"):
        for n in nodes:
            if rng.random() < 0.7:
                stock[(sku, n.index)] = rng.randint(1, 5)
    ledger.apply(
        0,
        [
            Adjust(
                "s",
                tuple(
                    Adjustment(s, f"N{n}", q, AdjustReason.RECEIPT) for (s, n), q in stock.items()
                ),
            )
        ],
    )
    return ledger, nodes, stock


@pytest.mark.parametrize("seed", range(120))
def test_matches_brute_force_ranking(seed: int) -> None:
    rng = random.Random(seed)
    centre = rng.choice([(48.85, 2.35), (89.5, 10.0), (-10.0, 179.9), (0.0, 0.0)])
    ledger, nodes, stock = _network(rng, rng.randint(1, 40), centre, rng.choice([0.5, 5.0]))
    group = ""
    reservable = dict(stock)
    if rng.random() < 0.3:
        group = "G"
        members = [n for n in nodes if rng.random() < 0.6]
        ledger.upsert_groups([GroupSpec("G", tuple(n.node_id for n in members), 1)])
        for n in members:
            n.groups.add("G")
        reservable = {k: q - 1 for k, q in stock.items()}
    lines = rng.choice([[("A", 1)], [("A", 2), ("B", 1)], [("A", 1), ("A", 2)], []])
    options = dict(
        pickup_only=rng.random() < 0.3,
        node_types=rng.choice([(), (NodeType.STORE,), (NodeType.DC, NodeType.DARK_STORE)]),
        full_cart_only=rng.random() < 0.2,
        full_cart_first=rng.random() < 0.4,
    )
    radius = rng.choice([5.0, 50.0, 300.0, 2000.0])
    limit = rng.choice([1, 3, 10])
    got = ledger.find_nearby(
        centre[0], centre[1], radius, lines, limit=limit, group_id=group, **options
    )
    want = nearby(
        nodes,
        reservable,
        lines,
        centre,
        radius,
        limit,
        group=group,
        node_types=tuple(int(t) for t in options["node_types"]),
        pickup_only=options["pickup_only"],
        full_cart_only=options["full_cart_only"],
        full_cart_first=options["full_cart_first"],
    )
    assert [n.node_id for n in got.nodes] == [f"N{w[0]}" for w in want]
    for g, w in zip(got.nodes, want, strict=True):
        assert g.distance_km == pytest.approx(w[1], rel=1e-12, abs=1e-9)
        assert g.available == w[2] and g.covers_all == w[3]
    known = {sku for sku, _ in stock}
    assert got.line_statuses == tuple(
        LineStatus.OK if sku in known else LineStatus.UNKNOWN_SKU for sku, _ in lines
    )


def test_antimeridian_and_pole() -> None:
    ledger = Ledger()
    ledger.upsert_nodes(
        [NodeSpec("E", lat=0.0, lon=179.99), NodeSpec("W", lat=0.0, lon=-179.99)]
        + [NodeSpec("P", lat=89.99, lon=-120.0)]
    )
    got = ledger.find_nearby(0.0, 179.999, 5.0)
    assert [n.node_id for n in got.nodes] == ["E", "W"]
    assert got.nodes[1].distance_km == pytest.approx(haversine_km(0, 179.999, 0, -179.99))
    assert [n.node_id for n in ledger.find_nearby(89.99, 60.0, 5.0).nodes] == ["P"]


def test_unknown_sku_and_group_and_validation() -> None:
    ledger = Ledger()
    ledger.upsert_nodes([NodeSpec("S", lat=1.0, lon=1.0)])
    got = ledger.find_nearby(1.0, 1.0, 1.0, [("GHOST", 1)])
    assert got.line_statuses == (LineStatus.UNKNOWN_SKU,)
    assert got.nodes[0].available == (0,) and not got.nodes[0].covers_all
    assert ledger.find_nearby(1.0, 1.0, 1.0, [("A", 1)], group_id="nope").line_statuses == (
        LineStatus.UNKNOWN_GROUP,
    )
    for kwargs, field in (
        (dict(lat=91.0, lon=0.0, radius_km=1.0), "lat"),
        (dict(lat=0.0, lon=181.0, radius_km=1.0), "lon"),
        (dict(lat=0.0, lon=0.0, radius_km=0.0), "radius_km"),
        (dict(lat=0.0, lon=0.0, radius_km=1.0, limit=-1), "limit"),
        (dict(lat=0.0, lon=0.0, radius_km=1.0, lines=[("A", 0)]), r"lines\[0\].qty"),
    ):
        with pytest.raises(EngineError, match=field):
            ledger.find_nearby(**kwargs)
