"""SourcingService.SourceOrder and AvailabilityService.FindNearby end to end over gRPC.

One real server on 127.0.0.1 (auth off, no durability) serves the module. Every test builds its
own small network far from the others (and from the (0, 0) default of nodes other tests
register), with SKU and node ids of its own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from engine.kernels.geo import haversine_km
from omnistock.v1 import (
    availability_pb2,
    availability_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
    sourcing_pb2,
    sourcing_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
    types_pb2,
)
from server.app import start_server
from server.config import ServerConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = types_pb2
S = sourcing_pb2
OK = T.LINE_STATUS_OK
HELD = T.RESERVATION_STATE_HELD
REJECTED = T.RESERVATION_STATE_REJECTED
TTL_MS = 60_000
_ids = itertools.count()


def uid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


class Stubs:
    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.sourcing = sourcing_pb2_grpc.SourcingServiceStub(self.channel)
        self.availability = availability_pb2_grpc.AvailabilityServiceStub(self.channel)
        self.reservation = reservation_pb2_grpc.ReservationServiceStub(self.channel)
        self.supply = supply_pb2_grpc.SupplyServiceStub(self.channel)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stubs]:
    data_dir: Path = tmp_path_factory.mktemp("sourcing-rpc")
    config = ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), durability="none")
    assert not config.tokens_file  # auth off
    server, app, port = await start_server(config)
    s = Stubs(port)
    yield s
    await s.channel.close()
    await app.stop(server, 1.0)


async def network(
    stubs: Stubs, nodes: list[tuple[str, int, float, float, dict[str, int]]], **node_kw: Any
) -> None:
    """Register nodes (id, type, lat, lon, {sku: on_hand}) and set their on-hand."""
    await stubs.supply.UpsertNodes(
        supply_pb2.UpsertNodesRequest(
            nodes=[
                T.Node(
                    node_id=n,
                    type=t,
                    lat=lat,
                    lon=lon,
                    enabled=True,
                    ship=True,
                    pickup=True,
                    **node_kw,
                )
                for n, t, lat, lon, _ in nodes
            ]
        )
    )
    counts = [
        supply_pb2.StockCount(sku=sku, node_id=n, on_hand=q, source_seq=1)
        for n, _, _, _, stock in nodes
        for sku, q in stock.items()
    ]
    response = await stubs.supply.SetOnHand(
        supply_pb2.SetOnHandRequest(request_id=uid("soh"), counts=counts)
    )
    assert all(r.status == OK for r in response.results), response


async def quantities(stubs: Stubs, sku: str, node_id: str) -> T.Quantities:
    query = availability_pb2.AvailabilityQuery(sku=sku, node_id=node_id)
    response = await stubs.availability.GetAvailability(
        availability_pb2.GetAvailabilityRequest(queries=[query])
    )
    return response.results[0].quantities


def lines(*pairs: tuple[str, int]) -> list[T.Line]:
    return [T.Line(sku=sku, qty=qty) for sku, qty in pairs]


def planned(plan: S.Plan) -> list[tuple[str, str, int]]:
    return sorted((x.sku, x.node_id, x.qty) for s in plan.shipments for x in s.lines)


def held(reservation: Any) -> list[tuple[str, str, int]]:
    return sorted((x.line.sku, x.line.node_id, x.reserved_qty) for x in reservation.lines)


async def expect_invalid(call: Any, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    exc = raised.value
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details().startswith(f"{field}: "), exc.details()
    status = rpc_status.from_call(exc)
    assert status is not None
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert infos and infos[0].reason == "FIELD_INVALID", status
    assert infos[0].metadata["field"] == field, dict(infos[0].metadata)


# --- SourceOrder -----------------------------------------------------------------------------


async def test_plain_plan_is_a_read(stubs: Stubs) -> None:
    a, b = uid("A"), uid("B")
    store, far_store, dc = uid("S"), uid("S"), uid("DC")
    home = (45.76, 4.84)  # Lyon
    await network(
        stubs,
        [
            (store, T.NODE_TYPE_STORE, 45.765, 4.845, {a: 5, b: 5}),
            (far_store, T.NODE_TYPE_STORE, 45.9, 4.9, {a: 5}),
            (dc, T.NODE_TYPE_DC, 48.85, 2.35, {a: 100, b: 100}),
        ],
    )
    request = S.SourceOrderRequest(
        lines=lines((a, 2), (b, 1)), ship_to=T.GeoPoint(lat=home[0], lon=home[1])
    )
    response = await stubs.sourcing.SourceOrder(request)
    plan = response.plan
    assert plan.shipment_count == 1 and len(plan.shipments) == 1
    ship = plan.shipments[0]
    assert ship.node_id == store and not ship.is_transfer
    assert planned(plan) == sorted([(a, store, 2), (b, store, 1)])
    assert ship.distance_km == pytest.approx(haversine_km(*home, 45.765, 4.845), rel=1e-9)
    assert plan.total_cost == pytest.approx(ship.distance_km)
    assert not plan.unfulfilled
    assert plan.explanation.startswith(f"single node {store} covers all 2 lines")
    assert not response.HasField("reservation") and not response.replayed
    # A plain plan holds nothing.
    assert (await quantities(stubs, a, store)).reserved == 0

    # Ship-from-store off: the DC ships it; one shipment at most with B nowhere else.
    request.policy.CopyFrom(S.SourcingPolicy(allow_ship_from_store=False))
    plan = (await stubs.sourcing.SourceOrder(request)).plan
    assert planned(plan) == sorted([(a, dc, 2), (b, dc, 1)])

    # A line nobody can fulfil is listed, never dropped.
    ghost = uid("GHOST")
    request = S.SourceOrderRequest(
        lines=lines((a, 1), (ghost, 1)), ship_to=T.GeoPoint(lat=home[0], lon=home[1])
    )
    plan = (await stubs.sourcing.SourceOrder(request)).plan
    assert planned(plan) == [(a, store, 1)]
    assert [(u.sku, u.qty, u.reason) for u in plan.unfulfilled] == [
        (ghost, 1, T.LINE_STATUS_UNKNOWN_SKU)
    ]


async def test_source_and_reserve_holds_exactly_the_plan_and_replays(stubs: Stubs) -> None:
    a, b = uid("A"), uid("B")
    s1, s2 = uid("S"), uid("S")
    await network(
        stubs,
        [
            (s1, T.NODE_TYPE_STORE, 43.30, 5.37, {a: 4}),  # Marseille
            (s2, T.NODE_TYPE_STORE, 43.60, 3.88, {b: 2}),  # Montpellier
        ],
    )
    rid = uid("so")
    request = S.SourceOrderRequest(
        lines=lines((a, 3), (b, 2)),
        ship_to=T.GeoPoint(lat=43.30, lon=5.38),
        reservation_id=rid,
        ttl_ms=TTL_MS,
    )
    first = await stubs.sourcing.SourceOrder(request)
    assert not first.replayed
    assert first.plan.shipment_count == 2
    assert planned(first.plan) == sorted([(a, s1, 3), (b, s2, 2)])
    assert first.reservation.reservation_id == rid and first.reservation.state == HELD
    assert held(first.reservation) == planned(first.plan)

    got = await stubs.reservation.GetReservation(
        reservation_pb2.GetReservationRequest(reservation_id=rid)
    )
    assert got.reservation.state == HELD
    assert held(got.reservation) == planned(first.plan)
    assert got.reservation.expires_at_ms == first.reservation.expires_at_ms
    q_a, q_b = await quantities(stubs, a, s1), await quantities(stubs, b, s2)
    assert (q_a.reserved, q_a.available, q_b.reserved, q_b.available) == (3, 1, 2, 0)

    replay = await stubs.sourcing.SourceOrder(request)
    assert replay.replayed
    assert replay.plan == first.plan
    assert replay.reservation.state == HELD and held(replay.reservation) == held(first.reservation)
    # The replay held nothing more.
    assert (await quantities(stubs, a, s1)).reserved == 3
    assert (await quantities(stubs, b, s2)).reserved == 2

    # The same id with other content is a conflict, not a second hold.
    other = S.SourceOrderRequest()
    other.CopyFrom(request)
    other.lines[0].qty = 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.sourcing.SourceOrder(other)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await quantities(stubs, a, s1)).reserved == 3

    # BOPIS: a PICKUP hold at the store that has it.
    pickup = await stubs.sourcing.SourceOrder(
        S.SourceOrderRequest(
            lines=lines((a, 1)),
            pickup_node_id=s1,
            mode=S.FULFILMENT_MODE_PICKUP,
            reservation_id=uid("bopis"),
            ttl_ms=TTL_MS,
        )
    )
    assert planned(pickup.plan) == [(a, s1, 1)] and pickup.reservation.state == HELD
    assert (await quantities(stubs, a, s1)).available == 0


def _so(**kw: Any) -> S.SourceOrderRequest:
    base: dict[str, Any] = dict(lines=lines(("X", 1)), ship_to=T.GeoPoint(lat=1.0, lon=1.0))
    base.update(kw)
    return S.SourceOrderRequest(**base)


def _fn(**kw: Any) -> availability_pb2.FindNearbyRequest:
    base: dict[str, Any] = dict(lat=1.0, lon=1.0, radius_km=10.0)
    base.update(kw)
    return availability_pb2.FindNearbyRequest(**base)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_so(ship_to=T.GeoPoint(lat=91.0, lon=1.0)), "ship_to.lat"),
        (_so(ship_to=T.GeoPoint(lat=1.0, lon=-180.5)), "ship_to.lon"),
        (_so(lines=[]), "lines"),
        (_so(lines=lines(("X", 1), ("Y", 0))), "lines[1].qty"),
        (_so(lines=[T.Line(sku="", qty=1)]), "lines[0].sku"),
        (_so(policy=S.SourcingPolicy(distance_weight=-1.0)), "policy.distance_weight"),
        (_so(reservation_id="r", ttl_ms=0), "ttl_ms"),
    ],
)
async def test_source_order_invalid_argument_names_the_field(
    stubs: Stubs, request_: S.SourceOrderRequest, field: str
) -> None:
    await expect_invalid(stubs.sourcing.SourceOrder(request_), field)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_fn(lat=-90.5), "lat"),
        (_fn(lon=200.0), "lon"),
        (_fn(radius_km=0.0), "radius_km"),
        (_fn(radius_km=30_000.0), "radius_km"),
        (_fn(limit=-1), "limit"),
        (_fn(limit=1_001), "limit"),
        (_fn(lines=lines(("X", 0))), "lines[0].qty"),
        (_fn(lines=[T.Line(sku="", qty=1)]), "lines[0].sku"),
    ],
)
async def test_find_nearby_invalid_argument_names_the_field(
    stubs: Stubs, request_: availability_pb2.FindNearbyRequest, field: str
) -> None:
    await expect_invalid(stubs.availability.FindNearby(request_), field)


# --- FindNearby ------------------------------------------------------------------------------


async def test_find_nearby_ranking(stubs: Stubs) -> None:
    a, b = uid("A"), uid("B")
    centre = (40.4168, -3.7038)  # Madrid
    spots = [
        (uid("N"), T.NODE_TYPE_STORE, 40.45, -3.70, {a: 1, b: 1}),
        (uid("N"), T.NODE_TYPE_STORE, 40.42, -3.71, {a: 5}),
        (uid("N"), T.NODE_TYPE_DC, 40.60, -3.50, {a: 9, b: 9}),
        (uid("N"), T.NODE_TYPE_STORE, 40.40, -3.60, {a: 3, b: 2}),
        (uid("N"), T.NODE_TYPE_STORE, 41.40, -2.00, {a: 9, b: 9}),  # outside 50 km
    ]
    await network(stubs, spots)
    dist = {n: haversine_km(*centre, lat, lon) for n, _, lat, lon, _ in spots}
    stock = {n: s for n, _, _, _, s in spots}
    inside = sorted((n for n in dist if dist[n] <= 50.0), key=lambda n: (dist[n], n))
    assert len(inside) == 4

    def request(**kw: Any) -> availability_pb2.FindNearbyRequest:
        return availability_pb2.FindNearbyRequest(
            lat=centre[0], lon=centre[1], radius_km=50.0, lines=lines((a, 2), (b, 1)), **kw
        )

    got = await stubs.availability.FindNearby(request())
    assert [n.node_id for n in got.nodes] == inside
    assert list(got.line_statuses) == [OK, OK]
    for n in got.nodes:
        assert n.distance_km == pytest.approx(dist[n.node_id], rel=1e-12)
        want = [stock[n.node_id].get(a, 0), stock[n.node_id].get(b, 0)]
        assert list(n.available) == want
        assert n.covers_all == (want[0] >= 2 and want[1] >= 1)
    covering = [n for n in inside if stock[n].get(a, 0) >= 2 and stock[n].get(b, 0) >= 1]
    assert covering and len(covering) < len(inside)

    top2 = await stubs.availability.FindNearby(request(limit=2))
    assert [n.node_id for n in top2.nodes] == inside[:2]
    first = await stubs.availability.FindNearby(request(full_cart_first=True))
    assert [n.node_id for n in first.nodes] == covering + [n for n in inside if n not in covering]
    only = await stubs.availability.FindNearby(request(full_cart_only=True))
    assert [n.node_id for n in only.nodes] == covering
    dcs = await stubs.availability.FindNearby(request(node_types=[T.NODE_TYPE_DC]))
    assert [n.node_id for n in dcs.nodes] == [spots[2][0]]
    ghost = await stubs.availability.FindNearby(
        availability_pb2.FindNearbyRequest(
            lat=centre[0], lon=centre[1], radius_km=50.0, lines=lines((uid("GHOST"), 1))
        )
    )
    assert list(ghost.line_statuses) == [T.LINE_STATUS_UNKNOWN_SKU]
    assert all(list(n.available) == [0] and not n.covers_all for n in ghost.nodes)


# --- no oversell ------------------------------------------------------------------------------


async def test_64_concurrent_source_and_reserve_never_oversell(stubs: Stubs) -> None:
    a = uid("A")
    s1, s2, dc = uid("S"), uid("S"), uid("DC")
    units = {s1: 3, s2: 2, dc: 4}
    total = sum(units.values())
    await network(
        stubs,
        [
            (s1, T.NODE_TYPE_STORE, 52.52, 13.40, {a: units[s1]}),  # Berlin
            (s2, T.NODE_TYPE_STORE, 52.50, 13.45, {a: units[s2]}),
            (dc, T.NODE_TYPE_DC, 52.30, 13.00, {a: units[dc]}),
        ],
    )
    ids = [uid("last") for _ in range(64)]
    seen_negative: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            for node in units:
                q = await quantities(stubs, a, node)
                if q.available < 0 or q.reserved > q.on_hand:
                    seen_negative.append(q.available)

    async def order(rid: str) -> S.SourceOrderResponse:
        return await stubs.sourcing.SourceOrder(
            S.SourceOrderRequest(
                lines=lines((a, 1)),
                ship_to=T.GeoPoint(lat=52.52, lon=13.40),
                reservation_id=rid,
                ttl_ms=TTL_MS,
            )
        )

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(order(rid) for rid in ids))
    done.set()
    await watcher
    assert not seen_negative

    holds = [r for r in results if r.reservation.state == HELD]
    assert len(holds) == total
    assert sum(x.reserved_qty for r in holds for x in r.reservation.lines) == total
    for r in results:
        # Every answer agrees with its hold; the losers say why and hold nothing.
        if r.reservation.state == HELD:
            assert held(r.reservation) == planned(r.plan)
        else:
            assert r.reservation.state == REJECTED and not r.plan.shipments
            assert [(u.sku, u.reason) for u in r.plan.unfulfilled] == [
                (a, T.LINE_STATUS_INSUFFICIENT)
            ]
    per_node = {node: 0 for node in units}
    for r in holds:
        for x in r.reservation.lines:
            per_node[x.line.node_id] += x.reserved_qty
    assert per_node == units
    for node, on_hand in units.items():
        q = await quantities(stubs, a, node)
        assert (q.on_hand, q.reserved, q.available) == (on_hand, on_hand, 0)
    # Each hold is what GetReservation says.
    for r in holds[:8]:
        got = await stubs.reservation.GetReservation(
            reservation_pb2.GetReservationRequest(reservation_id=r.reservation.reservation_id)
        )
        assert held(got.reservation) == held(r.reservation)
