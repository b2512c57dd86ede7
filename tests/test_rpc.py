"""Every RPC end to end against a real server on 127.0.0.1 (grpc.aio client stubs).

Each error code is checked with its ErrorInfo reason and field, and after every rejection the
state is compared with the state before it: nothing changed. One server serves the module; tests
use ids of their own so they do not see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from engine import limits
from omnistock.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
    types_pb2,
)
from server.app import start_server
from server.config import ServerConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

OK = types_pb2.LINE_STATUS_OK
HELD = types_pb2.RESERVATION_STATE_HELD
COMMITTED = types_pb2.RESERVATION_STATE_COMMITTED
FULFILLED = types_pb2.RESERVATION_STATE_FULFILLED
RELEASED = types_pb2.RESERVATION_STATE_RELEASED
REJECTED = types_pb2.RESERVATION_STATE_REJECTED
TTL_MS = 60_000
_ids = itertools.count()

# --- helpers (also used by test_races.py and test_auth.py) ------------------------------------


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    availability: availability_pb2_grpc.AvailabilityServiceStub
    reservation: reservation_pb2_grpc.ReservationServiceStub
    supply: supply_pb2_grpc.SupplyServiceStub
    admin: admin_pb2_grpc.AdminServiceStub


def make_stubs(port: int, token: str | None = None) -> Stubs:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    if token is not None:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=[_BearerInterceptor(token)]
        )
    return Stubs(
        channel,
        availability_pb2_grpc.AvailabilityServiceStub(channel),
        reservation_pb2_grpc.ReservationServiceStub(channel),
        supply_pb2_grpc.SupplyServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
    )


@contextlib.asynccontextmanager
async def serving_stubs(data_dir: Path, durability: str = "none") -> AsyncIterator[Stubs]:
    """A server on a free loopback port (auth off) with `data_dir`, and stubs to call it."""
    config = ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), durability=durability)
    server, app, port = await start_server(config)
    s = make_stubs(port)
    try:
        yield s
    finally:
        await s.channel.close()
        await app.stop(server, 1.0)


class _BearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details = details._replace(metadata=[*(details.metadata or ()), *self.metadata])
        return await continuation(details, request)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, int]]:
    data_dir: Path = tmp_path_factory.mktemp("rpc")
    config = ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), durability="none")
    server, app, port = await start_server(config)
    yield app, port
    await app.stop(server, 1.0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(served: tuple[Any, int]) -> AsyncIterator[Stubs]:
    s = make_stubs(served[1])
    yield s
    await s.channel.close()


def uid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def line(sku: str, node_id: str, qty: int) -> types_pb2.Line:
    return types_pb2.Line(sku=sku, node_id=node_id, qty=qty)


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None, f"no google.rpc.Status on {exc.code()}: {exc.details()}"
    assert status.code == exc.code().value[0]
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "omnistock.v1"
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


async def expect_error(
    call: Any, code: grpc.StatusCode, reason: str, field: str | None = None
) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    exc = raised.value
    assert exc.code() == code, f"{exc.code()} {exc.details()}"
    info = error_info(exc)
    assert info.reason == reason, (info.reason, exc.details())
    if field is not None:
        assert info.metadata["field"] == field, (dict(info.metadata), exc.details())
        assert exc.details().startswith(f"{field}: "), exc.details()
    return info


async def add_node(stubs: Stubs, node_id: str, **kwargs: Any) -> None:
    node = types_pb2.Node(node_id=node_id, enabled=True, ship=True, **kwargs)
    await stubs.supply.UpsertNodes(supply_pb2.UpsertNodesRequest(nodes=[node]))


async def stock(stubs: Stubs, sku: str, node_id: str, on_hand: int, seq: int = 1) -> None:
    """Register the node and set the position's on-hand."""
    await add_node(stubs, node_id)
    count = supply_pb2.StockCount(sku=sku, node_id=node_id, on_hand=on_hand, source_seq=seq)
    response = await stubs.supply.SetOnHand(
        supply_pb2.SetOnHandRequest(request_id=uid("soh"), counts=[count])
    )
    assert response.results[0].status == OK


async def quantities(stubs: Stubs, sku: str, node_id: str) -> types_pb2.Quantities:
    query = availability_pb2.AvailabilityQuery(sku=sku, node_id=node_id)
    response = await stubs.availability.GetAvailability(
        availability_pb2.GetAvailabilityRequest(queries=[query])
    )
    return response.results[0].quantities


async def state(stubs: Stubs, positions: list[tuple[str, str]]) -> tuple[Any, ...]:
    """What a rejection must not change: the positions and the server's counters."""
    queries = [availability_pb2.AvailabilityQuery(sku=s, node_id=n) for s, n in positions]
    availability = availability_pb2.GetAvailabilityResponse()
    if queries:
        availability = await stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(queries=queries)
        )
    stats = await stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    counters = (stats.positions, stats.skus, stats.nodes, stats.groups, stats.reservations_active)
    return (availability.SerializeToString(deterministic=True), counters)


async def reserve(
    stubs: Stubs, reservation_id: str, lines: list[types_pb2.Line], **kwargs: Any
) -> reservation_pb2.ReserveResponse:
    request = reservation_pb2.ReserveRequest(
        reservation_id=reservation_id, lines=lines, ttl_ms=kwargs.pop("ttl_ms", TTL_MS), **kwargs
    )
    return await stubs.reservation.Reserve(request)


# --- availability ------------------------------------------------------------------------------


async def test_get_availability_by_node_group_and_network(stubs: Stubs) -> None:
    sku, n1, n2, group = uid("sku"), uid("node"), uid("node"), uid("group")
    await stock(stubs, sku, n1, 10)
    await stock(stubs, sku, n2, 5)
    await stubs.supply.UpsertGroups(
        supply_pb2.UpsertGroupsRequest(
            groups=[types_pb2.Group(group_id=group, node_ids=[n1], buffer_units=2)]
        )
    )
    Q = availability_pb2.AvailabilityQuery
    queries = [
        Q(sku=sku, node_id=n1),
        Q(sku=sku, group_id=group),
        Q(sku=sku),
        Q(sku=uid("nosku"), node_id=n1),
        Q(sku=sku, node_id=uid("nonode")),
        Q(sku=sku, group_id=uid("nogroup")),
    ]
    response = await stubs.availability.GetAvailability(
        availability_pb2.GetAvailabilityRequest(queries=queries)
    )
    results = response.results
    assert [r.query for r in results] == queries
    assert [r.status for r in results] == [
        OK,
        OK,
        OK,
        types_pb2.LINE_STATUS_UNKNOWN_SKU,
        types_pb2.LINE_STATUS_UNKNOWN_NODE,
        types_pb2.LINE_STATUS_UNKNOWN_GROUP,
    ]
    assert results[0].quantities.on_hand == 10 and results[0].quantities.available == 10
    assert results[1].quantities.available == 8  # the group withholds 2 units
    assert results[2].quantities.on_hand == 15 and results[2].quantities.available == 15
    for r in results[3:]:
        assert r.quantities == types_pb2.Quantities()
    # Asked alone, each query takes the one-query path, whose answer is written as wire bytes
    # (server/wire.py), or built as a message when it asks for available_by_date: the same
    # answers, byte for byte.
    for query, result in [*zip(queries, results, strict=True), _by_date(queries[0], results[0])]:
        alone = await stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(queries=[query])
        )
        expected = availability_pb2.GetAvailabilityResponse(results=[result])
        assert alone.SerializeToString() == expected.SerializeToString()


def _by_date(
    query: availability_pb2.AvailabilityQuery, result: availability_pb2.AvailabilityResult
) -> tuple[availability_pb2.AvailabilityQuery, availability_pb2.AvailabilityResult]:
    """The query also asking for available_by_date, and its answer (nothing in transit: the
    read's `available`)."""
    dated = availability_pb2.AvailabilityQuery()
    dated.CopyFrom(query)
    dated.promise_by_ms = 2**40
    answer = availability_pb2.AvailabilityResult()
    answer.CopyFrom(result)
    answer.query.CopyFrom(dated)
    answer.available_by_date = result.quantities.available
    return dated, answer


@pytest.mark.parametrize(
    ("queries", "reason", "field"),
    [
        ([], "FIELD_INVALID", "queries"),
        ([availability_pb2.AvailabilityQuery(sku="")], "FIELD_INVALID", "queries[0].sku"),
        (
            [
                availability_pb2.AvailabilityQuery(sku="a"),
                availability_pb2.AvailabilityQuery(sku="b", node_id="x" * 129),
            ],
            "FIELD_INVALID",
            "queries[1].node_id",
        ),
        (
            [availability_pb2.AvailabilityQuery(sku="a")] * (limits.REQUEST_LINES_MAX + 1),
            "TOO_MANY_LINES",
            "queries",
        ),
    ],
)
async def test_get_availability_invalid(stubs: Stubs, queries: list, reason: str, field: str):
    request = availability_pb2.GetAvailabilityRequest(queries=queries)
    await expect_error(
        stubs.availability.GetAvailability(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
        field,
    )


async def test_get_availability_columnar_and_stream(stubs: Stubs) -> None:
    sku, n1, group = uid("sku"), uid("node"), uid("group")
    await stock(stubs, sku, n1, 7)
    await stubs.supply.UpsertGroups(
        supply_pb2.UpsertGroupsRequest(groups=[types_pb2.Group(group_id=group, node_ids=[n1])])
    )
    await reserve(stubs, uid("r"), [line(sku, n1, 2)])
    request = availability_pb2.GetAvailabilityColumnarRequest(
        skus=[sku, sku, sku, "missing"],
        node_ids=[n1, "", "", n1],
        group_ids=["", group, "", ""],
        include_buckets=True,
        batch_id=42,
    )
    response = await stubs.availability.GetAvailabilityColumnar(request)
    assert list(response.status) == [OK, OK, OK, types_pb2.LINE_STATUS_UNKNOWN_SKU]
    assert list(response.available) == [5, 5, 5, 0]
    assert list(response.on_hand) == [7, 7, 7, 0]
    assert list(response.reserved) == [2, 2, 2, 0]
    assert response.batch_id == 42 and response.journal_seq > 0
    lean = await stubs.availability.GetAvailabilityColumnar(
        availability_pb2.GetAvailabilityColumnarRequest(skus=[sku])
    )
    assert list(lean.available) == [5] and not lean.on_hand
    # Every query at a node (the server's shortest path): unknown names still read as 0.
    at_nodes = await stubs.availability.GetAvailabilityColumnar(
        availability_pb2.GetAvailabilityColumnarRequest(
            skus=[sku, "missing", sku], node_ids=[n1, n1, "nowhere"], include_buckets=True
        )
    )
    unknown = [types_pb2.LINE_STATUS_UNKNOWN_SKU, types_pb2.LINE_STATUS_UNKNOWN_NODE]
    assert list(at_nodes.status) == [OK, *unknown]
    assert list(at_nodes.available) == [5, 0, 0] and list(at_nodes.on_hand) == [7, 0, 0]

    async def requests() -> AsyncIterator[Any]:
        for batch_id in range(1, 6):
            yield availability_pb2.GetAvailabilityColumnarRequest(
                skus=[sku] * batch_id, node_ids=[n1] * batch_id, batch_id=batch_id
            )

    answers = [r async for r in stubs.availability.StreamAvailability(requests())]
    assert [a.batch_id for a in answers] == [1, 2, 3, 4, 5]
    assert [list(a.available) for a in answers] == [[5] * k for k in range(1, 6)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"skus": []}, "skus"),
        ({"skus": ["a", ""]}, "skus[1]"),
        ({"skus": ["a", "b"], "node_ids": ["n"]}, "node_ids"),
        ({"skus": ["a"], "group_ids": ["g", "h"]}, "group_ids"),
        ({"skus": ["a"], "node_ids": ["n"], "group_ids": ["g"]}, "group_ids[0]"),
        ({"skus": ["a", "é" * 65]}, "skus[1]"),
    ],
)
async def test_get_availability_columnar_invalid(stubs: Stubs, kwargs: dict, field: str):
    request = availability_pb2.GetAvailabilityColumnarRequest(**kwargs)
    await expect_error(
        stubs.availability.GetAvailabilityColumnar(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        field,
    )


# --- reservations ------------------------------------------------------------------------------


async def test_reserve_replay_conflict_and_rejected(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 5)
    rid = uid("r")
    first = await reserve(stubs, rid, [line(sku, node, 3)])
    assert not first.replayed
    held = first.reservation
    assert held.reservation_id == rid and held.state == HELD
    assert held.lines[0].reserved_qty == 3 and held.lines[0].status == OK
    assert held.expires_at_ms >= held.created_at_ms + TTL_MS
    assert (await quantities(stubs, sku, node)).available == 2

    again = await reserve(stubs, rid, [line(sku, node, 3)])
    assert again.replayed and again.reservation == held
    assert (await quantities(stubs, sku, node)).available == 2

    sku2 = uid("sku")
    await stock(stubs, sku2, node, 1)
    before = await state(stubs, [(sku, node), (sku2, node)])
    info = await expect_error(
        reserve(stubs, rid, [line(sku, node, 1)]),
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_CONFLICT",
    )
    assert info.metadata["reservation_id"] == rid
    assert await state(stubs, [(sku, node), (sku2, node)]) == before

    # Unsatisfiable: OK with state REJECTED and per-line statuses; nothing held.
    rejected = await reserve(stubs, uid("r"), [line(sku, node, 1), line(sku2, node, 5)])
    assert rejected.reservation.state == REJECTED
    assert [ln.status for ln in rejected.reservation.lines] == [
        OK,
        types_pb2.LINE_STATUS_INSUFFICIENT,
    ]
    assert all(ln.reserved_qty == 0 for ln in rejected.reservation.lines)
    unknown = await reserve(stubs, uid("r"), [line(uid("nosku"), node, 1)])
    assert unknown.reservation.state == REJECTED
    assert unknown.reservation.lines[0].status == types_pb2.LINE_STATUS_UNKNOWN_SKU
    assert await state(stubs, [(sku, node), (sku2, node)]) == before

    partial = await reserve(stubs, uid("r"), [line(sku, node, 5)], allow_partial=True)
    assert partial.reservation.state == HELD
    assert partial.reservation.lines[0].status == types_pb2.LINE_STATUS_PARTIAL
    assert partial.reservation.lines[0].reserved_qty == 2
    assert (await quantities(stubs, sku, node)).available == 0


def _reserve_request(**kwargs: Any) -> reservation_pb2.ReserveRequest:
    base: dict[str, Any] = {
        "reservation_id": "ok",
        "lines": [line("s", "n", 1)],
        "ttl_ms": TTL_MS,
    }
    base.update(kwargs)
    return reservation_pb2.ReserveRequest(**base)


@pytest.mark.parametrize(
    ("request_", "reason", "field"),
    [
        (_reserve_request(reservation_id=""), "FIELD_INVALID", "reservation_id"),
        (_reserve_request(reservation_id="x" * 129), "FIELD_INVALID", "reservation_id"),
        (_reserve_request(lines=[]), "FIELD_INVALID", "lines"),
        (
            _reserve_request(lines=[line("s", "n", 1), line("s", "n", 0)]),
            "FIELD_INVALID",
            "lines[1].qty",
        ),
        (_reserve_request(lines=[line("s", "n", -5)]), "FIELD_INVALID", "lines[0].qty"),
        (_reserve_request(lines=[line("s", "n", 10**9 + 1)]), "FIELD_INVALID", "lines[0].qty"),
        (_reserve_request(lines=[line("", "n", 1)]), "FIELD_INVALID", "lines[0].sku"),
        (_reserve_request(lines=[line("s", "", 1)]), "FIELD_INVALID", "lines[0].node_id"),
        (
            _reserve_request(lines=[line("s", "n", 1)] * (limits.REQUEST_LINES_MAX + 1)),
            "TOO_MANY_LINES",
            "lines",
        ),
        (_reserve_request(ttl_ms=0), "FIELD_INVALID", "ttl_ms"),
        (_reserve_request(ttl_ms=limits.TTL_MS_MAX + 1), "FIELD_INVALID", "ttl_ms"),
        (_reserve_request(group_id="g" * 200), "FIELD_INVALID", "group_id"),
    ],
)  # fmt: skip
async def test_reserve_invalid_changes_nothing(
    stubs: Stubs, request_: reservation_pb2.ReserveRequest, reason: str, field: str
) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 3)
    before = await state(stubs, [(sku, node)])
    request = reservation_pb2.ReserveRequest()
    request.CopyFrom(request_)
    for ln in request.lines:  # aim the request at this test's position
        ln.sku = sku if ln.sku else ""
        ln.node_id = node if ln.node_id else ""
    info = await expect_error(
        stubs.reservation.Reserve(request), grpc.StatusCode.INVALID_ARGUMENT, reason, field
    )
    if reason == "TOO_MANY_LINES":
        assert info.metadata["limit"] == str(limits.REQUEST_LINES_MAX)
    assert await state(stubs, [(sku, node)]) == before


async def test_reservation_lifecycle(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 10)
    rid = uid("r")
    held = (await reserve(stubs, rid, [line(sku, node, 4)], ttl_ms=5_000)).reservation
    R = stubs.reservation

    extend = reservation_pb2.ExtendRequest(reservation_id=rid, ttl_ms=120_000, request_id=uid("e"))
    extended = await R.Extend(extend)
    assert extended.reservation.expires_at_ms > held.expires_at_ms and not extended.replayed
    await asyncio.sleep(0.01)  # a retry later must not move the deadline again
    retried = await R.Extend(extend)
    assert retried.replayed and retried.reservation == extended.reservation
    extend.ttl_ms += 1
    await expect_error(R.Extend(extend), grpc.StatusCode.ALREADY_EXISTS, "ID_CONFLICT")
    got = await R.GetReservation(reservation_pb2.GetReservationRequest(reservation_id=rid))
    assert got.reservation == extended.reservation

    committed = await R.Commit(reservation_pb2.CommitRequest(reservation_id=rid))
    assert committed.reservation.state == COMMITTED and not committed.replayed
    assert committed.reservation.expires_at_ms == 0
    again = await R.Commit(reservation_pb2.CommitRequest(reservation_id=rid))
    assert again.replayed and again.reservation.state == COMMITTED
    q = await quantities(stubs, sku, node)
    assert (q.reserved, q.allocated, q.available) == (0, 4, 6)

    # Extend is only for HELD holds.
    before = await state(stubs, [(sku, node)])
    info = await expect_error(
        R.Extend(reservation_pb2.ExtendRequest(reservation_id=rid, ttl_ms=10_000)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "WRONG_STATE",
    )
    assert info.metadata["reservation_id"] == rid and info.metadata["state"] == "COMMITTED"

    # Partial fulfilment, idempotent by request_id.
    fulfil = reservation_pb2.FulfillRequest(
        reservation_id=rid, lines=[line(sku, node, 1)], request_id=uid("f")
    )
    first = await R.Fulfill(fulfil)
    assert first.reservation.state == COMMITTED and not first.replayed
    assert first.reservation.lines[0].fulfilled_qty == 1
    assert first.reservation.lines[0].reserved_qty == 3
    replay = await R.Fulfill(fulfil)
    assert replay.replayed and replay.reservation == first.reservation
    q = await quantities(stubs, sku, node)
    assert (q.on_hand, q.allocated) == (9, 3)

    before = await state(stubs, [(sku, node)])
    info = await expect_error(
        R.Fulfill(
            reservation_pb2.FulfillRequest(
                reservation_id=rid, lines=[line(sku, node, 4)], request_id=uid("f")
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "OVER_FULFIL",
        "lines[0].qty",
    )
    assert info.metadata["reservation_id"] == rid
    assert await state(stubs, [(sku, node)]) == before
    await expect_error(
        R.Fulfill(reservation_pb2.FulfillRequest(reservation_id=rid, lines=[line(sku, node, 1)])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "request_id",
    )

    done = await R.Fulfill(reservation_pb2.FulfillRequest(reservation_id=rid))
    assert done.reservation.state == FULFILLED
    assert done.reservation.lines[0].fulfilled_qty == 4
    q = await quantities(stubs, sku, node)
    assert (q.on_hand, q.allocated, q.available) == (6, 0, 6)

    # Releasing a finished reservation is a replay (the engine's rule: nothing left to free).
    late = await R.Release(reservation_pb2.ReleaseRequest(reservation_id=rid))
    assert late.replayed and late.reservation.state == FULFILLED

    # Release of a HELD hold gives the units back; a second release is a replay.
    other = uid("r")
    await reserve(stubs, other, [line(sku, node, 6)])
    assert (await quantities(stubs, sku, node)).available == 0
    released = await R.Release(reservation_pb2.ReleaseRequest(reservation_id=other))
    assert released.reservation.state == RELEASED and not released.replayed
    assert (await R.Release(reservation_pb2.ReleaseRequest(reservation_id=other))).replayed
    assert (await quantities(stubs, sku, node)).available == 6

    before = await state(stubs, [(sku, node)])
    info = await expect_error(
        R.Commit(reservation_pb2.CommitRequest(reservation_id=other)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "WRONG_STATE",
    )
    assert info.metadata["state"] == "RELEASED"
    assert await state(stubs, [(sku, node)]) == before


async def test_unknown_reservation_is_not_found(stubs: Stubs) -> None:
    R = stubs.reservation
    rid = uid("missing")
    calls = [
        R.Commit(reservation_pb2.CommitRequest(reservation_id=rid)),
        R.Release(reservation_pb2.ReleaseRequest(reservation_id=rid)),
        R.Extend(reservation_pb2.ExtendRequest(reservation_id=rid, ttl_ms=TTL_MS)),
        R.GetReservation(reservation_pb2.GetReservationRequest(reservation_id=rid)),
        R.Fulfill(reservation_pb2.FulfillRequest(reservation_id=rid)),
    ]
    stats_before = await stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    for call in calls:
        info = await expect_error(call, grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND")
        assert info.metadata["reservation_id"] == rid
    stats_after = await stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    assert stats_after.reservations_active == stats_before.reservations_active
    await expect_error(
        R.Commit(reservation_pb2.CommitRequest(reservation_id="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "reservation_id",
    )
    await expect_error(
        R.Extend(reservation_pb2.ExtendRequest(reservation_id=rid, ttl_ms=1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "ttl_ms",
    )


async def test_reserve_batch_commit_batch_release_batch(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 5)
    ids = [uid("b"), uid("b"), uid("b"), uid("b")]
    request = reservation_pb2.ReserveBatchRequest(
        reservation_ids=ids,
        line_counts=[1, 2, 1, 1],
        skus=[sku, sku, sku, sku, sku],
        node_ids=[node] * 5,
        qtys=[2, 1, 1, 0, 100],  # ids[2] has qty 0 (item error); ids[3] cannot be satisfied
        ttl_ms=TTL_MS,
        batch_id=7,
    )
    response = await stubs.reservation.ReserveBatch(request)
    assert response.batch_id == 7
    assert list(response.states) == [HELD, HELD, REJECTED, REJECTED]
    assert list(response.replayed) == [False] * 4
    assert list(response.reserved_qtys) == [2, 1, 1, 0, 0]
    assert list(response.line_statuses) == [OK, OK, OK, 0, types_pb2.LINE_STATUS_INSUFFICIENT]
    assert [e.index for e in response.errors] == [2]
    error = response.errors[0]
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert error.reason == "FIELD_INVALID" and error.message.startswith("qtys[3]: ")
    assert response.expires_at_ms[0] > 0 and response.expires_at_ms[2] == 0
    assert (await quantities(stubs, sku, node)).available == 1

    replay = await stubs.reservation.ReserveBatch(request)
    assert list(replay.replayed) == [True, True, False, True]
    assert list(replay.states) == list(response.states)
    assert (await quantities(stubs, sku, node)).available == 1

    missing = uid("missing")
    committed = await stubs.reservation.CommitBatch(
        reservation_pb2.ReservationIdsBatch(reservation_ids=[ids[0], missing, ids[3]], batch_id=9)
    )
    assert committed.batch_id == 9
    assert list(committed.states) == [COMMITTED, 0, REJECTED]
    assert [(e.index, e.reason) for e in committed.errors] == [
        (1, "RESERVATION_NOT_FOUND"),
        (2, "WRONG_STATE"),
    ]
    assert committed.errors[0].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert committed.errors[1].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    released = await stubs.reservation.ReleaseBatch(
        reservation_pb2.ReservationIdsBatch(reservation_ids=[ids[0], ids[1], ""])
    )
    assert list(released.states) == [RELEASED, RELEASED, 0]
    assert [e.index for e in released.errors] == [2]
    assert (await quantities(stubs, sku, node)).available == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reservation_ids": []}, "reservation_ids"),
        ({"line_counts": [1]}, "line_counts"),
        ({"qtys": [1]}, "qtys"),
        ({"skus": ["a", "b", "c"]}, "skus"),
        ({"ttl_ms": 5}, "ttl_ms"),
    ],
)
async def test_reserve_batch_malformed(stubs: Stubs, kwargs: dict, field: str) -> None:
    base: dict[str, Any] = {
        "reservation_ids": ["x1", "x2"],
        "line_counts": [1, 1],
        "skus": ["a", "b"],
        "node_ids": ["n", "n"],
        "qtys": [1, 1],
        "ttl_ms": TTL_MS,
    }
    base.update(kwargs)
    await expect_error(
        stubs.reservation.ReserveBatch(reservation_pb2.ReserveBatchRequest(**base)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        field,
    )


async def test_stream_reserve_answers_in_order(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 30)
    prefix = uid("sr")

    async def requests() -> AsyncIterator[Any]:
        for batch_id in range(10):
            yield reservation_pb2.ReserveBatchRequest(
                reservation_ids=[f"{prefix}-{batch_id}-{k}" for k in range(4)],
                line_counts=[1] * 4,
                skus=[sku] * 4,
                node_ids=[node] * 4,
                qtys=[1] * 4,
                ttl_ms=TTL_MS,
                batch_id=batch_id,
            )

    answers = [a async for a in stubs.reservation.StreamReserve(requests())]
    assert [a.batch_id for a in answers] == list(range(10))
    states = [s for a in answers for s in a.states]
    assert states.count(HELD) == 30 and states.count(REJECTED) == 10
    assert (await quantities(stubs, sku, node)).available == 0


async def test_pipelined_keeps_the_weight_in_flight_within_its_budget() -> None:
    """StreamReserve's read-ahead counts reservations: 16 messages of 10,000 would fill the
    sequencer's queue (65,536) by themselves, and the stream would overload itself."""
    from server.servicers.reservation import pipelined

    active = peak = 0

    async def handle(w: int) -> int:
        nonlocal active, peak
        active += w
        peak = max(peak, active)
        await asyncio.sleep(0.002)
        active -= w
        return w

    async def requests() -> AsyncIterator[int]:
        for w in (6, 6, 6, 3, 3, 12, 1, 1, 1):
            yield w

    answers = [a async for a in pipelined(requests(), handle, 16, lambda w: w, 10)]
    assert answers == [6, 6, 6, 3, 3, 12, 1, 1, 1]  # in request order
    assert peak == 12  # at most the budget, or one request alone that is larger


async def test_pipelined_cancels_a_started_request_it_will_not_answer() -> None:
    """A failed request ends the stream; one the reader had started but not yet queued (the
    window full) is cancelled rather than left to run unanswered."""
    from server.servicers.reservation import pipelined

    finished: list[int] = []

    async def handle(k: int) -> int:
        await asyncio.sleep(0.01 if k == 0 else 0.05)
        if k == 0:
            raise ValueError("bad message")
        finished.append(k)
        return k

    async def requests() -> AsyncIterator[int]:
        for k in range(4):
            yield k

    with pytest.raises(ValueError):
        _ = [a async for a in pipelined(requests(), handle, 1)]
    await asyncio.sleep(0.1)
    assert finished == []


# --- supply ------------------------------------------------------------------------------------


def _adjust(request_id: str, *items: tuple[str, str, int, int]) -> supply_pb2.AdjustRequest:
    return supply_pb2.AdjustRequest(
        request_id=request_id,
        adjustments=[
            supply_pb2.Adjustment(sku=s, node_id=n, delta=d, reason=r) for s, n, d, r in items
        ],
    )


async def test_adjust_reasons_statuses_and_replay(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    A = types_pb2
    request = _adjust(
        uid("adj"),
        (sku, node, 10, A.ADJUST_REASON_RECEIPT),
        (sku, node, 3, A.ADJUST_REASON_SALE),
        (sku, node, 2, A.ADJUST_REASON_DAMAGE),
        (sku, uid("nonode"), 5, A.ADJUST_REASON_RECEIPT),
        (sku, node, -100, A.ADJUST_REASON_CORRECTION),
    )
    response = await stubs.supply.Adjust(request)
    assert not response.replayed
    assert [r.status for r in response.results] == [
        OK,
        OK,
        OK,
        A.LINE_STATUS_UNKNOWN_NODE,
        A.LINE_STATUS_NEGATIVE_STOCK,
    ]
    last = response.results[2].quantities
    assert (last.on_hand, last.unavailable, last.available) == (7, 2, 5)
    assert response.results[0].sku == sku and response.results[0].node_id == node
    replay = await stubs.supply.Adjust(request)
    assert replay.replayed
    assert [r.status for r in replay.results] == [r.status for r in response.results]
    assert (await quantities(stubs, sku, node)).on_hand == 7

    before = await state(stubs, [(sku, node)])
    changed = _adjust(request.request_id, (sku, node, 1, A.ADJUST_REASON_RECEIPT))
    info = await expect_error(
        stubs.supply.Adjust(changed), grpc.StatusCode.ALREADY_EXISTS, "ID_CONFLICT"
    )
    assert info.metadata["request_id"] == request.request_id
    assert await state(stubs, [(sku, node)]) == before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_adjust("", ("s", "n", 1, 1)), "request_id"),
        (_adjust("a"), "adjustments"),
        (_adjust("a", ("s", "n", 0, 1)), "adjustments[0].delta"),
        (_adjust("a", ("s", "n", 1, 1), ("s", "n", 10**9 + 1, 1)), "adjustments[1].delta"),
        (_adjust("a", ("s", "n", 1, 0)), "adjustments[0].reason"),
        (_adjust("a", ("", "n", 1, 1)), "adjustments[0].sku"),
        (_adjust("a", ("s", "n" * 129, 1, 1)), "adjustments[0].node_id"),
    ],
)
async def test_adjust_invalid_changes_nothing(
    stubs: Stubs, request_: supply_pb2.AdjustRequest, field: str
) -> None:
    before = await state(stubs, [("s", "n")])
    await expect_error(
        stubs.supply.Adjust(request_), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID", field
    )
    assert await state(stubs, [("s", "n")]) == before


async def test_set_on_hand_stale_safety_stock_and_moves(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 20, seq=5)
    S = supply_pb2
    stale = await stubs.supply.SetOnHand(
        S.SetOnHandRequest(
            request_id=uid("soh"),
            counts=[S.StockCount(sku=sku, node_id=node, on_hand=1, source_seq=4)],
        )
    )
    assert stale.results[0].status == types_pb2.LINE_STATUS_STALE
    assert stale.results[0].quantities.on_hand == 20
    await expect_error(
        stubs.supply.SetOnHand(
            S.SetOnHandRequest(
                request_id=uid("soh"),
                counts=[S.StockCount(sku=sku, node_id=node, on_hand=1, source_seq=0)],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "counts[0].source_seq",
    )
    safety = await stubs.supply.SetSafetyStock(
        S.SetSafetyStockRequest(
            request_id=uid("ss"),
            safety_stocks=[S.SafetyStock(sku=sku, node_id=node, safety_stock=3)],
        )
    )
    assert safety.results[0].status == OK
    assert safety.results[0].quantities.safety_stock == 3
    assert safety.results[0].quantities.available == 17
    move = await stubs.supply.MoveStock(
        S.MoveStockRequest(
            request_id=uid("mv"),
            moves=[
                S.StockMove(
                    sku=sku,
                    node_id=node,
                    qty=4,
                    from_bucket=S.STOCK_BUCKET_SELLABLE,
                    to_bucket=S.STOCK_BUCKET_UNAVAILABLE,
                )
            ],
        )
    )
    assert move.results[0].quantities.unavailable == 4
    assert move.results[0].quantities.available == 13
    await expect_error(
        stubs.supply.MoveStock(
            S.MoveStockRequest(
                request_id=uid("mv"),
                moves=[S.StockMove(sku=sku, node_id=node, qty=1)],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "moves[0].to_bucket",
    )


async def test_transfer_ship_receive_cancel(stubs: Stubs) -> None:
    sku, a, b = uid("sku"), uid("node"), uid("node")
    await stock(stubs, sku, a, 10)
    await add_node(stubs, b)
    S = supply_pb2
    tid = uid("t")
    ship = S.TransferRequest(
        transfer_id=tid,
        action=S.TRANSFER_ACTION_SHIP,
        sku=sku,
        from_node_id=a,
        to_node_id=b,
        qty=6,
    )
    shipped = await stubs.supply.Transfer(ship)
    assert [r.node_id for r in shipped.results] == [a, b]
    assert shipped.results[0].quantities.on_hand == 4
    assert shipped.results[1].quantities.inbound == 6
    assert (await stubs.supply.Transfer(ship)).replayed
    # Receiving part needs a request_id: without one a retry would receive the units again.
    in_transit = await state(stubs, [(sku, a), (sku, b)])
    await expect_error(
        stubs.supply.Transfer(
            S.TransferRequest(transfer_id=tid, action=S.TRANSFER_ACTION_RECEIVE, qty=2)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "request_id",
    )
    assert await state(stubs, [(sku, a), (sku, b)]) == in_transit
    receive = S.TransferRequest(
        transfer_id=tid, action=S.TRANSFER_ACTION_RECEIVE, qty=2, request_id=uid("rcv")
    )
    received = await stubs.supply.Transfer(receive)
    assert received.results[1].quantities.on_hand == 2
    assert received.results[1].quantities.inbound == 4
    retried = await stubs.supply.Transfer(receive)  # the same message again: received once
    assert retried.replayed and not received.replayed
    assert retried.results[1].quantities.on_hand == 2
    assert retried.results[1].quantities.inbound == 4
    cancelled = await stubs.supply.Transfer(
        S.TransferRequest(transfer_id=tid, action=S.TRANSFER_ACTION_CANCEL)
    )
    assert cancelled.results[0].quantities.on_hand == 8
    assert cancelled.results[1].quantities.inbound == 0
    before = await state(stubs, [(sku, a), (sku, b)])
    await expect_error(
        stubs.supply.Transfer(
            S.TransferRequest(
                transfer_id=tid, action=S.TRANSFER_ACTION_RECEIVE, qty=1, request_id=uid("rcv")
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "WRONG_STATE",
    )
    await expect_error(
        stubs.supply.Transfer(
            S.TransferRequest(transfer_id=uid("t"), action=S.TRANSFER_ACTION_CANCEL)
        ),
        grpc.StatusCode.NOT_FOUND,
        "TRANSFER_NOT_FOUND",
    )
    await expect_error(
        stubs.supply.Transfer(S.TransferRequest(transfer_id=uid("t"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "action",
    )
    assert await state(stubs, [(sku, a), (sku, b)]) == before
    short = await stubs.supply.Transfer(
        S.TransferRequest(
            transfer_id=uid("t"),
            action=S.TRANSFER_ACTION_SHIP,
            sku=sku,
            from_node_id=a,
            to_node_id=b,
            qty=100,
        )
    )
    assert short.results[0].status == types_pb2.LINE_STATUS_NEGATIVE_STOCK
    assert await state(stubs, [(sku, a), (sku, b)]) == before


async def test_columnar_supply(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    S = supply_pb2
    adjusted = await stubs.supply.AdjustColumnar(
        S.AdjustColumnarRequest(
            request_id=uid("ac"),
            skus=[sku, sku, sku],
            node_ids=[node, node, uid("nonode")],
            deltas=[10, 5, 1],
            reason=types_pb2.ADJUST_REASON_RECEIPT,
        )
    )
    assert list(adjusted.statuses) == [OK, OK, types_pb2.LINE_STATUS_UNKNOWN_NODE]
    assert list(adjusted.on_hand) == [15, 15, 0] and list(adjusted.available) == [15, 15, 0]
    mixed = await stubs.supply.AdjustColumnar(
        S.AdjustColumnarRequest(
            request_id=uid("ac"),
            skus=[sku, sku],
            node_ids=[node, node],
            deltas=[3, -2],
            reasons=[types_pb2.ADJUST_REASON_SALE, types_pb2.ADJUST_REASON_CORRECTION],
        )
    )
    assert list(mixed.on_hand) == [10, 10]
    counted = await stubs.supply.SetOnHandColumnar(
        S.SetOnHandColumnarRequest(
            request_id=uid("sc"), skus=[sku], node_ids=[node], on_hand=[40], source_seqs=[9]
        )
    )
    assert list(counted.statuses) == [OK] and list(counted.on_hand) == [40]
    assert not counted.replayed
    before = await state(stubs, [(sku, node)])
    for request, field in [
        (S.AdjustColumnarRequest(request_id="x", skus=[sku], node_ids=[], deltas=[1]), "node_ids"),
        (
            S.AdjustColumnarRequest(request_id="x", skus=[sku], node_ids=[node], deltas=[1]),
            "reason",
        ),
        (
            S.AdjustColumnarRequest(
                request_id="x", skus=[sku, sku], node_ids=[node, node], deltas=[1, 0], reason=1
            ),
            "deltas[1]",
        ),
        (
            S.AdjustColumnarRequest(
                request_id="x", skus=[sku], node_ids=[node], deltas=[1], reasons=[1, 1]
            ),
            "reasons",
        ),
    ]:
        await expect_error(
            stubs.supply.AdjustColumnar(request),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
            field,
        )
    await expect_error(
        stubs.supply.SetOnHandColumnar(
            S.SetOnHandColumnarRequest(
                request_id="x", skus=[sku], node_ids=[node], on_hand=[-1], source_seqs=[10]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "on_hand[0]",
    )
    assert await state(stubs, [(sku, node)]) == before


async def test_upsert_nodes_and_groups(stubs: Stubs) -> None:
    n1, n2, g1, g2 = uid("node"), uid("node"), uid("group"), uid("group")
    T = types_pb2
    created = await stubs.supply.UpsertNodes(
        supply_pb2.UpsertNodesRequest(
            nodes=[
                T.Node(node_id=n1, type=T.NODE_TYPE_STORE, lat=48.1, lon=11.5, enabled=True),
                T.Node(node_id=n2, type=T.NODE_TYPE_DC, enabled=True),
            ]
        )
    )
    assert list(created.statuses) == [OK, OK]
    assert (created.created, created.updated) == (2, 0)
    updated = await stubs.supply.UpsertNodes(
        supply_pb2.UpsertNodesRequest(nodes=[T.Node(node_id=n1, enabled=False)])
    )
    assert (updated.created, updated.updated) == (0, 1)
    await stock(stubs, "sku-disabled", n2, 1)
    groups = await stubs.supply.UpsertGroups(
        supply_pb2.UpsertGroupsRequest(
            groups=[
                T.Group(group_id=g1, node_ids=[n1, n2], buffer_pct=10.0),
                T.Group(group_id=g2, node_ids=[n1, uid("nonode")]),
            ]
        )
    )
    assert list(groups.statuses) == [OK, T.LINE_STATUS_UNKNOWN_NODE]
    assert (groups.created, groups.updated) == (1, 0)
    before = await state(stubs, [])
    for request, field in [
        (supply_pb2.UpsertNodesRequest(nodes=[]), "nodes"),
        (supply_pb2.UpsertNodesRequest(nodes=[T.Node(node_id="")]), "nodes[0].node_id"),
        (supply_pb2.UpsertNodesRequest(nodes=[T.Node(node_id="x", lat=91)]), "nodes[0].lat"),
    ]:
        await expect_error(
            stubs.supply.UpsertNodes(request),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
            field,
        )
    await expect_error(
        stubs.supply.UpsertGroups(
            supply_pb2.UpsertGroupsRequest(groups=[T.Group(group_id="g", buffer_pct=101)])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "groups[0].buffer_pct",
    )
    assert await state(stubs, []) == before


async def test_upsert_request_id_replays_and_a_late_retry_changes_nothing(stubs: Stubs) -> None:
    T = types_pb2
    node, group = uid("node"), uid("group")
    disable = supply_pb2.UpsertNodesRequest(
        request_id=uid("up"), nodes=[T.Node(node_id=node, enabled=False)]
    )
    first = await stubs.supply.UpsertNodes(disable)
    assert (first.created, first.updated, first.replayed) == (1, 0, False)
    enable = supply_pb2.UpsertNodesRequest(
        request_id=uid("up"), nodes=[T.Node(node_id=node, enabled=True)]
    )
    assert (await stubs.supply.UpsertNodes(enable)).updated == 1
    late = await stubs.supply.UpsertNodes(disable)  # the first one's retry, arriving last
    assert (late.created, late.updated, late.replayed) == (1, 0, True)
    sku = uid("sku")
    await stock(stubs, sku, node, 3)
    assert (await quantities(stubs, sku, node)).available == 3  # still enabled
    groups = supply_pb2.UpsertGroupsRequest(
        request_id=uid("ug"),
        groups=[
            T.Group(group_id=group, node_ids=[node]),
            T.Group(group_id=uid("g"), node_ids=["x"]),
        ],
    )
    answers = [await stubs.supply.UpsertGroups(groups) for _ in range(2)]
    assert [(list(a.statuses), a.created, a.replayed) for a in answers] == [
        ([OK, T.LINE_STATUS_UNKNOWN_NODE], 1, False),
        ([OK, T.LINE_STATUS_UNKNOWN_NODE], 1, True),
    ]
    await expect_error(
        stubs.supply.UpsertNodes(
            supply_pb2.UpsertNodesRequest(
                request_id=disable.request_id, nodes=[T.Node(node_id="y")]
            )
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_CONFLICT",
    )


async def test_stream_supply_groups_may_name_nodes_from_earlier_messages(
    stubs: Stubs, served: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk import streams the nodes, then the groups naming them. Messages that arrive
    together share a batch; the groups must still find their nodes (they were refused as
    UNKNOWN_NODE, checked before the batch applied)."""
    S, T = supply_pb2, types_pb2
    app = served[0]
    nodes = [uid("node") for _ in range(3)]
    group, sku = uid("group"), uid("sku")
    submit_many = app.sequencer.submit_many
    batches: list[list[str]] = []

    async def slow(commands: Any, **kwargs: Any) -> Any:
        batches.append([type(c).__name__ for c in commands])
        out = await submit_many(commands, **kwargs)
        await asyncio.sleep(0.05)  # a busy disk: the next messages arrive meanwhile
        return out

    monkeypatch.setattr(app.sequencer, "submit_many", slow)

    async def feed() -> AsyncIterator[Any]:
        yield S.SupplyMessage(adjust=_adjust(uid("adj"), (sku, uid("elsewhere"), 1, 1)))
        upsert = S.UpsertNodesRequest(nodes=[T.Node(node_id=n, enabled=True) for n in nodes])
        yield S.SupplyMessage(upsert_nodes=upsert)
        groups = S.UpsertGroupsRequest(groups=[T.Group(group_id=group, node_ids=nodes)])
        yield S.SupplyMessage(upsert_groups=groups)

    summary = await stubs.supply.StreamSupply(feed())
    monkeypatch.undo()
    assert ["UpsertNodes", "UpsertGroups"] in batches  # they shared a batch
    assert (summary.messages, summary.lines) == (3, 5)
    assert [(f.status, f.count) for f in summary.failures] == [(T.LINE_STATUS_UNKNOWN_NODE, 1)]
    await stock(stubs, sku, nodes[0], 2)
    A = availability_pb2
    answer = await stubs.availability.GetAvailability(
        A.GetAvailabilityRequest(queries=[A.AvailabilityQuery(sku=sku, group_id=group)])
    )
    assert answer.results[0].quantities.available == 2


async def test_stream_supply(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    S = supply_pb2
    rid = uid("adj")
    adjust = _adjust(rid, (sku, node, 5, types_pb2.ADJUST_REASON_RECEIPT))

    async def feed() -> AsyncIterator[Any]:
        yield S.SupplyMessage(
            upsert_nodes=S.UpsertNodesRequest(nodes=[types_pb2.Node(node_id=node, enabled=True)])
        )
        yield S.SupplyMessage(adjust=adjust)
        yield S.SupplyMessage(adjust=adjust)  # a replay
        yield S.SupplyMessage(
            adjust_columnar=S.AdjustColumnarRequest(
                request_id=uid("ac"),
                skus=[sku, sku],
                node_ids=[node, uid("nonode")],
                deltas=[2, 2],
                reason=types_pb2.ADJUST_REASON_RECEIPT,
            )
        )

    summary = await stubs.supply.StreamSupply(feed())
    assert (summary.messages, summary.messages_replayed) == (4, 1)
    assert (summary.lines, summary.lines_ok) == (5, 4)
    assert [(f.status, f.count) for f in summary.failures] == [
        (types_pb2.LINE_STATUS_UNKNOWN_NODE, 1)
    ]
    assert summary.journal_seq > 0
    assert (await quantities(stubs, sku, node)).on_hand == 7

    async def bad_feed() -> AsyncIterator[Any]:
        yield S.SupplyMessage(adjust=_adjust(uid("adj"), (sku, node, 1, 1)))
        yield S.SupplyMessage(adjust=_adjust(uid("adj"), (sku, node, 0, 1)))

    await expect_error(
        stubs.supply.StreamSupply(bad_feed()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
        "messages[1].adjust.adjustments[0].delta",
    )
    assert (await quantities(stubs, sku, node)).on_hand == 8  # message 0 was applied


async def test_stream_supply_rejection_behind_a_full_inbox_is_answered(
    stubs: Stubs, served: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejected message while the client has filled the server's inbox (slow batches: a busy
    disk) is answered with its error, not left hanging until the deadline; the messages that
    shared its batch after it were applied, and its message names them."""
    import re

    S = supply_pb2
    app = served[0]
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 100)
    submit_many = app.sequencer.submit_many

    async def slow(commands: Any, **kwargs: Any) -> Any:
        out = await submit_many(commands, **kwargs)
        await asyncio.sleep(0.02)
        return out

    monkeypatch.setattr(app.sequencer, "submit_many", slow)
    bad = 70

    async def feed() -> AsyncIterator[Any]:
        for i in range(300):
            if i == bad:
                cancel = S.TransferRequest(
                    transfer_id=uid("nosuch"), action=S.TRANSFER_ACTION_CANCEL
                )
                yield S.SupplyMessage(transfer=cancel)
            else:
                yield S.SupplyMessage(adjust=_adjust(uid("adj"), (sku, node, 1, 1)))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.supply.StreamSupply(feed(), timeout=10.0)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    details = raised.value.details() or ""
    assert details.startswith(f"messages[{bad}].transfer")
    named = re.search(r"messages\[(\d+)\.\.(\d+)\], which arrived with it, were applied", details)
    after = 0 if named is None else int(named[2]) - int(named[1]) + 1
    assert named is None or int(named[1]) == bad + 1
    monkeypatch.undo()
    assert (await quantities(stubs, sku, node)).on_hand == 100 + bad + after


# --- malformed request bytes ------------------------------------------------------------------

# Field 1 declared 5 bytes long, 2 sent: no message type parses it.
TRUNCATED = b"\n\x05ab"


def _methods(client_streaming: bool) -> list[str]:
    """The path of every omnistock method whose request is (or is not) a stream."""
    from omnistock.v1 import sourcing_pb2

    return [
        f"/{service.full_name}/{m.name}"
        for module in (availability_pb2, reservation_pb2, supply_pb2, admin_pb2, sourcing_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
        if m.client_streaming == client_streaming
    ]


@pytest.mark.parametrize("path", _methods(client_streaming=False))
async def test_malformed_request_is_invalid_argument(stubs: Stubs, path: str) -> None:
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 5)
    before = await state(stubs, [(sku, node)])
    if path.endswith("/WatchAvailability"):
        call: Any = stubs.channel.unary_stream(path)(TRUNCATED)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        exc = raised.value
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert error_info(exc).reason == "MALFORMED_MESSAGE"
    else:
        info = await expect_error(
            stubs.channel.unary_unary(path)(TRUNCATED),
            grpc.StatusCode.INVALID_ARGUMENT,
            "MALFORMED_MESSAGE",
        )
        assert "field" not in info.metadata
    assert await state(stubs, [(sku, node)]) == before


@pytest.mark.parametrize(
    "payload",
    [
        b"\n\x04\n\x02\xff\xfe",  # one query whose sku is the bytes ff fe (not UTF-8)
        b"\n\x08\n\x02\xff\xfe\x12\x02n1",  # the same at a node: the shape read from bytes
        b"\n\x08\n\x02ab\x12\x02\xc3(",  # a node id that is not UTF-8
    ],
)
async def test_malformed_utf8_id_is_invalid_argument(stubs: Stubs, payload: bytes) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.channel.unary_unary("/omnistock.v1.AvailabilityService/GetAvailability")(
            payload
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "MALFORMED_MESSAGE"
    assert "omnistock.v1.GetAvailabilityRequest" in raised.value.details()


async def test_malformed_stream_message_fails_the_stream_after_the_ones_before(
    stubs: Stubs,
) -> None:
    assert sorted(_methods(client_streaming=True)) == [
        "/omnistock.v1.AvailabilityService/StreamAvailability",
        "/omnistock.v1.ReservationService/StreamReserve",
        "/omnistock.v1.SupplyService/StreamSupply",
    ]
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 5)
    S = supply_pb2
    good = S.SupplyMessage(adjust=_adjust(uid("adj"), (sku, node, 2, 1))).SerializeToString()

    async def feed() -> AsyncIterator[bytes]:
        yield good
        yield TRUNCATED

    supply = stubs.channel.stream_unary("/omnistock.v1.SupplyService/StreamSupply")
    await expect_error(
        supply(feed()), grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MESSAGE", "messages[1]"
    )
    assert (await quantities(stubs, sku, node)).on_hand == 7  # message 0 was applied

    hold = reservation_pb2.ReserveBatchRequest(
        reservation_ids=[uid("r")], ttl_ms=TTL_MS, line_counts=[1], skus=[sku],
        node_ids=[node], qtys=[3],
    ).SerializeToString()  # fmt: skip
    columnar = availability_pb2.GetAvailabilityColumnarRequest(
        skus=[sku], node_ids=[node]
    ).SerializeToString()
    for path, first in (
        ("/omnistock.v1.ReservationService/StreamReserve", hold),
        ("/omnistock.v1.AvailabilityService/StreamAvailability", columnar),
    ):

        async def two(first: bytes = first) -> AsyncIterator[bytes]:
            yield first
            yield TRUNCATED

        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for answer in stubs.channel.stream_stream(path)(two()):
                answers.append(answer)
        exc = raised.value
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, exc.details())
        info = error_info(exc)
        assert (info.reason, info.metadata["field"]) == ("MALFORMED_MESSAGE", "messages[1]")
        assert len(answers) <= 1  # the first may be answered before the second is read
    assert (await quantities(stubs, sku, node)).reserved == 3  # the hold of message 0 stands


async def test_malformed_health_and_reflection_requests(stubs: Stubs) -> None:
    # Not omnistock's servicers (no error decorator of ours): the wrapper answers for them.
    await expect_error(
        stubs.channel.unary_unary("/grpc.health.v1.Health/Check")(TRUNCATED),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_MESSAGE",
    )

    async def one() -> AsyncIterator[bytes]:
        yield TRUNCATED

    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stubs.channel.stream_stream(reflection)(one()):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    info = error_info(raised.value)
    assert (info.reason, info.metadata["field"]) == ("MALFORMED_MESSAGE", "messages[0]")


# --- admin, overload, metrics ------------------------------------------------------------------


async def test_admin_stats_and_snapshot(stubs: Stubs) -> None:
    stats = await stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    assert stats.durability == "none" and stats.version
    assert stats.positions > 0 and stats.nodes > 0 and stats.journal_seq > 0
    assert stats.role == admin_pb2.SERVER_ROLE_PRIMARY
    taken = await stubs.admin.Snapshot(admin_pb2.SnapshotRequest())
    assert taken.journal_seq > 0 and taken.bytes > 0 and taken.location
    after = await stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    assert after.last_snapshot_journal_seq == taken.journal_seq
    assert after.last_snapshot_bytes == taken.bytes


async def test_overloaded_is_resource_exhausted(
    stubs: Stubs, served: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.sequencer import Overloaded

    app = served[0]
    sku, node = uid("sku"), uid("node")
    await stock(stubs, sku, node, 3)
    before = await state(stubs, [(sku, node)])

    async def full(*args: Any, **kwargs: Any) -> Any:
        raise Overloaded("write queue is full")

    monkeypatch.setattr(app.sequencer, "submit", full)
    monkeypatch.setattr(app.sequencer, "submit_many", full)
    info = await expect_error(
        reserve(stubs, uid("r"), [line(sku, node, 1)]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "OVERLOADED",
    )
    assert info.metadata["limit"] == str(app.config.queue_commands_max)
    await expect_error(
        stubs.reservation.CommitBatch(reservation_pb2.ReservationIdsBatch(reservation_ids=["x"])),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "OVERLOADED",
    )
    monkeypatch.undo()
    assert await state(stubs, [(sku, node)]) == before


async def test_real_queue_overload(tmp_path: Path) -> None:
    """A tiny queue under a burst of concurrent writes: some calls are refused with
    RESOURCE_EXHAUSTED (never an unbounded wait) and every other call succeeds."""
    config = ServerConfig(
        listen="127.0.0.1:0", data_dir=str(tmp_path), durability="sync", queue_commands_max=2
    )
    server, app, port = await start_server(config)
    s = make_stubs(port)
    try:
        sku, node = uid("sku"), uid("node")
        await stock(s, sku, node, 1_000)
        # Hold the first fsync of the burst so the burst meets a full queue however fast the
        # machine drains it (otherwise whether any call is refused is a matter of timing).
        journal = app.sequencer.journal
        commit = journal.commit
        first = threading.Event()

        def slow_commit() -> None:
            if not first.is_set():
                first.set()
                time.sleep(2.0)
            commit()

        journal.commit = slow_commit
        calls = [reserve(s, uid("r"), [line(sku, node, 1)]) for _ in range(200)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        held = [r for r in results if not isinstance(r, BaseException)]
        assert refused, "a queue of 2 should refuse some of 200 concurrent writes"
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
        assert all(error_info(r).reason == "OVERLOADED" for r in refused)
        assert len(held) + len(refused) == 200
        assert (await quantities(s, sku, node)).reserved == len(held)
    finally:
        await s.channel.close()
        await app.stop(server, 1.0)


async def test_metrics_record_methods_and_codes(stubs: Stubs, served: tuple[Any, int]) -> None:
    app = served[0]
    await expect_error(
        stubs.reservation.Commit(reservation_pb2.CommitRequest(reservation_id=uid("missing"))),
        grpc.StatusCode.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
    )
    await stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    registry = app.metrics.registry
    sample = registry.get_sample_value
    count = "omnistock_rpc_duration_seconds_count"
    commit = "/omnistock.v1.ReservationService/Commit"
    assert sample(count, {"method": commit, "code": "NOT_FOUND"}) >= 1
    assert sample(count, {"method": "/omnistock.v1.AdminService/GetStats", "code": "OK"}) >= 1
    assert sample("omnistock_rpc_in_flight", {"method": commit}) == 0
    assert sample("omnistock_batch_commands_count") > 0


async def test_deadline_reaches_the_sequencer(
    stubs: Stubs, served: tuple[Any, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes hand their remaining time to the sequencer (which drops a command whose caller has
    given up); the sequencer's DeadlineExceeded is answered DEADLINE_EXCEEDED."""
    from server.sequencer import DeadlineExceeded

    app = served[0]
    seen: list[float | None] = []
    submit = app.sequencer.submit

    async def spy(command: Any, *, timeout_s: float | None = None) -> Any:
        seen.append(timeout_s)
        return await submit(command, timeout_s=timeout_s)

    monkeypatch.setattr(app.sequencer, "submit", spy)
    commit = reservation_pb2.CommitRequest(reservation_id=uid("missing"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.reservation.Commit(commit, timeout=5.0)
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.reservation.Commit(commit)
    assert seen[0] is not None and 0 < seen[0] <= 5.5  # the deadline, give or take rounding
    assert seen[1] is None

    async def late(command: Any, *, timeout_s: float | None = None) -> Any:
        raise DeadlineExceeded("deadline passed before the write was applied")

    monkeypatch.setattr(app.sequencer, "submit", late)
    await expect_error(
        stubs.reservation.Commit(commit, timeout=5.0),
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "DEADLINE_EXCEEDED",
    )


async def test_metrics_http_endpoint(served: tuple[Any, int]) -> None:
    import urllib.request

    metrics = served[0].metrics
    port = metrics.start_http("127.0.0.1:0")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        metrics.stop_http()
    text = body.decode()
    for name in (
        "omnistock_rpc_duration_seconds_bucket",
        "omnistock_rpc_in_flight",
        "omnistock_batch_commands_bucket",
        "omnistock_journal_fsync_duration_seconds",
        "omnistock_snapshot_age_seconds",
        "omnistock_snapshot_bytes",
        "omnistock_snapshot_errors_total",
    ):
        assert name in text, name
