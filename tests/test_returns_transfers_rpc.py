"""Returns at any store and transfers end to end over gRPC (issue 4, item 4): a return adds to the
receiving node (to `unavailable` when it needs inspection); a transfer shows as inbound at the
target via GetAvailability and is promisable there by date when asked (`promise_by_ms`); a
pickup transfer leg says when dated inbound would have the stock there.

One real server on 127.0.0.1 (auth off, no durability) serves the module; every test uses SKU and
node ids of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from omnistock.v1 import (
    availability_pb2,
    availability_pb2_grpc,
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
S = supply_pb2
A = availability_pb2
OK = T.LINE_STATUS_OK
T0 = 1_700_000_000_000
DAY = 86_400_000
_ids = itertools.count()


def uid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


class Stubs:
    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.availability = availability_pb2_grpc.AvailabilityServiceStub(self.channel)
        self.supply = supply_pb2_grpc.SupplyServiceStub(self.channel)
        self.sourcing = sourcing_pb2_grpc.SourcingServiceStub(self.channel)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stubs]:
    data_dir: Path = tmp_path_factory.mktemp("returns-transfers-rpc")
    config = ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), durability="none")
    server, app, port = await start_server(config)
    s = Stubs(port)
    yield s
    await s.channel.close()
    await app.stop(server, 1.0)


async def add_nodes(stubs: Stubs, *nodes: str) -> None:
    await stubs.supply.UpsertNodes(
        S.UpsertNodesRequest(
            nodes=[
                T.Node(
                    node_id=n,
                    type=T.NODE_TYPE_STORE,
                    lat=10.0 + i * 0.01,
                    lon=20.0,
                    enabled=True,
                    ship=True,
                    pickup=True,
                )
                for i, n in enumerate(nodes)
            ]
        )
    )


async def adjust(stubs: Stubs, sku: str, node: str, delta: int, reason: int) -> None:
    response = await stubs.supply.Adjust(
        S.AdjustRequest(
            request_id=uid("adj"),
            adjustments=[S.Adjustment(sku=sku, node_id=node, delta=delta, reason=reason)],
        )
    )
    assert [r.status for r in response.results] == [OK], response


async def read(stubs: Stubs, *queries: A.AvailabilityQuery) -> list[A.AvailabilityResult]:
    response = await stubs.availability.GetAvailability(A.GetAvailabilityRequest(queries=queries))
    return list(response.results)


async def test_returns_add_to_the_receiving_node(stubs: Stubs) -> None:
    sku, dc, store = uid("sku"), uid("dc"), uid("store")
    await add_nodes(stubs, dc, store)
    await adjust(stubs, sku, dc, 10, T.ADJUST_REASON_RECEIPT)
    # Bought online, returned at a store that never stocked the SKU: sellable there at once.
    await adjust(stubs, sku, store, 2, T.ADJUST_REASON_RETURN)
    (r,) = await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store))
    assert r.status == OK
    assert (r.quantities.on_hand, r.quantities.unavailable, r.quantities.available) == (2, 0, 2)
    # Returned for inspection: on hand but not sellable until it passes.
    await adjust(stubs, sku, store, 3, T.ADJUST_REASON_RETURN_TO_INSPECTION)
    (r,) = await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store))
    assert (r.quantities.on_hand, r.quantities.unavailable, r.quantities.available) == (5, 3, 2)
    moved = await stubs.supply.MoveStock(
        S.MoveStockRequest(
            request_id=uid("mv"),
            moves=[
                S.StockMove(
                    sku=sku,
                    node_id=store,
                    qty=3,
                    from_bucket=S.STOCK_BUCKET_UNAVAILABLE,
                    to_bucket=S.STOCK_BUCKET_SELLABLE,
                )
            ],
        )
    )
    assert [x.status for x in moved.results] == [OK]
    (r,) = await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store))
    assert (r.quantities.on_hand, r.quantities.unavailable, r.quantities.available) == (5, 0, 5)
    # The DC is untouched; the network sums both.
    dc_r, net = await read(
        stubs, A.AvailabilityQuery(sku=sku, node_id=dc), A.AvailabilityQuery(sku=sku)
    )
    assert (dc_r.quantities.on_hand, net.quantities.on_hand, net.quantities.available) == (
        10,
        15,
        15,
    )


async def test_transfer_is_inbound_and_promisable_by_date_at_the_target(stubs: Stubs) -> None:
    sku, dc, store = uid("sku"), uid("dc"), uid("store")
    await add_nodes(stubs, dc, store)
    await adjust(stubs, sku, dc, 10, T.ADJUST_REASON_RECEIPT)
    await adjust(stubs, sku, store, 1, T.ADJUST_REASON_RECEIPT)
    tid = uid("t")
    shipped = await stubs.supply.Transfer(
        S.TransferRequest(
            request_id=uid("ship"),
            transfer_id=tid,
            action=S.TRANSFER_ACTION_SHIP,
            sku=sku,
            from_node_id=dc,
            to_node_id=store,
            qty=6,
            expected_at_ms=T0 + DAY,
        )
    )
    assert [r.status for r in shipped.results] == [OK, OK]
    plain, before, at, sender = await read(
        stubs,
        A.AvailabilityQuery(sku=sku, node_id=store),
        A.AvailabilityQuery(sku=sku, node_id=store, promise_by_ms=T0 + DAY - 1),
        A.AvailabilityQuery(sku=sku, node_id=store, promise_by_ms=T0 + DAY),
        A.AvailabilityQuery(sku=sku, node_id=dc, promise_by_ms=T0 + DAY),
    )
    assert (plain.quantities.inbound, plain.quantities.available) == (6, 1)
    assert not plain.HasField("available_by_date")  # not asked
    assert before.available_by_date == 1
    assert at.available_by_date == 7
    assert (sender.quantities.on_hand, sender.available_by_date) == (4, 4)
    (net,) = await read(stubs, A.AvailabilityQuery(sku=sku, promise_by_ms=T0 + DAY))
    assert (net.quantities.available, net.available_by_date) == (5, 11)
    # A pickup order for 4 at the store (1 there) comes by transfer from the DC (4 left); the
    # dated inbound says when the stock would be there.
    plan = (
        await stubs.sourcing.SourceOrder(
            sourcing_pb2.SourceOrderRequest(
                lines=[T.Line(sku=sku, qty=4)],
                pickup_node_id=store,
                mode=sourcing_pb2.FULFILMENT_MODE_PICKUP,
            )
        )
    ).plan
    (leg,) = plan.shipments
    assert (leg.node_id, leg.is_transfer, leg.ready_at_ms) == (dc, True, T0 + DAY)
    # Received: on hand at the target, nothing inbound, nothing more by date.
    await stubs.supply.Transfer(
        S.TransferRequest(transfer_id=tid, action=S.TRANSFER_ACTION_RECEIVE, request_id=uid("r"))
    )
    (r,) = await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store, promise_by_ms=T0 + DAY))
    assert (r.quantities.on_hand, r.quantities.inbound, r.available_by_date) == (7, 0, 7)


async def test_cancelled_transfer_is_no_longer_promised_and_bad_dates_are_refused(
    stubs: Stubs,
) -> None:
    sku, dc, store = uid("sku"), uid("dc"), uid("store")
    await add_nodes(stubs, dc, store)
    await adjust(stubs, sku, dc, 4, T.ADJUST_REASON_RECEIPT)
    tid = uid("t")
    await stubs.supply.Transfer(
        S.TransferRequest(
            transfer_id=tid,
            action=S.TRANSFER_ACTION_SHIP,
            sku=sku,
            from_node_id=dc,
            to_node_id=store,
            qty=4,
            expected_at_ms=T0,
        )
    )
    (r,) = await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store, promise_by_ms=T0))
    assert r.available_by_date == 4
    await stubs.supply.Transfer(S.TransferRequest(transfer_id=tid, action=S.TRANSFER_ACTION_CANCEL))
    (r,) = await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store, promise_by_ms=T0))
    assert (r.quantities.inbound, r.available_by_date) == (0, 0)
    (r,) = await read(stubs, A.AvailabilityQuery(sku=uid("nope"), node_id=store, promise_by_ms=T0))
    assert (r.status, r.available_by_date) == (T.LINE_STATUS_UNKNOWN_SKU, 0)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read(stubs, A.AvailabilityQuery(sku=sku, node_id=store, promise_by_ms=-1))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("queries[0].promise_by_ms: ")
