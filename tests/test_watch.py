"""WatchAvailability end to end: order, resume without gaps, stalled watchers, too-old resumes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from omnistock.v1 import availability_pb2, reservation_pb2, supply_pb2, types_pb2
from server.app import start_server
from server.config import ServerConfig
from tests.test_rpc import Stubs, add_node, error_info, line, make_stubs, uid

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHANGED = availability_pb2.EVENT_KIND_CHANGED
OUT_OF_STOCK = availability_pb2.EVENT_KIND_OUT_OF_STOCK
BACK_IN_STOCK = availability_pb2.EVENT_KIND_BACK_IN_STOCK


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, int]]:
    data_dir: Path = tmp_path_factory.mktemp("watch")
    config = ServerConfig(listen="127.0.0.1:0", data_dir=str(data_dir), durability="none")
    server, app, port = await start_server(config)
    # Small bounds so the tests reach them quickly.
    app.events.history_events_max = 400
    app.events.lag_events_max = 100
    yield app, port
    await app.stop(server, 1.0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(served: tuple[Any, int]) -> AsyncIterator[Stubs]:
    s = make_stubs(served[1])
    yield s
    await s.channel.close()


async def adjust(stubs: Stubs, sku: str, node: str, delta: int) -> None:
    reason = types_pb2.ADJUST_REASON_CORRECTION
    adj = supply_pb2.Adjustment(sku=sku, node_id=node, delta=delta, reason=reason)
    await stubs.supply.Adjust(supply_pb2.AdjustRequest(request_id=uid("adj"), adjustments=[adj]))


async def take(call: Any, count: int) -> list[availability_pb2.StockEvent]:
    out = []
    async with asyncio.timeout(10):
        while len(out) < count:
            out.append(await call.read())
    return out


async def watching(call: Any, stubs: Stubs, sku: str, node: str) -> None:
    """Until the stream is live: poke the SKU until the watcher sees an event."""
    await adjust(stubs, sku, node, 1)
    await take(call, 1)


async def test_watcher_receives_events_in_order(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    call = stubs.availability.WatchAvailability(availability_pb2.WatchRequest(skus=[sku]))
    await watching(call, stubs, sku, node)  # 0 -> 1: BACK_IN_STOCK
    await adjust(stubs, sku, node, 4)  # 1 -> 5
    await adjust(stubs, uid("other"), node, 3)  # filtered out
    r = await stubs.reservation.Reserve(
        reservation_pb2.ReserveRequest(
            reservation_id=uid("r"), lines=[line(sku, node, 5)], ttl_ms=60_000
        )
    )
    assert r.reservation.state == 1  # HELD
    events = await take(call, 2)
    assert [e.kind for e in events] == [CHANGED, OUT_OF_STOCK]
    assert [e.sku for e in events] == [sku, sku]
    assert events[0].node_id == node and events[0].quantities.available == 5
    assert events[1].quantities.reserved == 5 and events[1].quantities.available == 0
    assert events[0].seq < events[1].seq and events[1].at_ms > 0
    call.cancel()


async def test_thresholds_only_and_node_filter(stubs: Stubs) -> None:
    sku, node, other = uid("sku"), uid("node"), uid("node")
    await add_node(stubs, node)
    await add_node(stubs, other)
    call = stubs.availability.WatchAvailability(
        availability_pb2.WatchRequest(node_ids=[node], thresholds_only=True)
    )
    await watching(call, stubs, sku, node)
    await adjust(stubs, sku, node, 2)  # CHANGED: filtered
    await adjust(stubs, sku, other, 2)  # another node: filtered
    await adjust(stubs, sku, node, -3)  # OUT_OF_STOCK
    (event,) = await take(call, 1)
    assert (event.kind, event.node_id) == (OUT_OF_STOCK, node)
    call.cancel()


async def test_disconnect_and_resume_sees_every_event_once(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    call = stubs.availability.WatchAvailability(availability_pb2.WatchRequest(skus=[sku]))
    await watching(call, stubs, sku, node)
    for _ in range(5):
        await adjust(stubs, sku, node, 1)
    seen = await take(call, 3)
    call.cancel()  # disconnect with two events unread (or in flight)
    for _ in range(4):
        await adjust(stubs, sku, node, 1)
    resumed = stubs.availability.WatchAvailability(
        availability_pb2.WatchRequest(skus=[sku], resume_after_seq=seen[-1].seq)
    )
    rest = await take(resumed, 6)
    await adjust(stubs, sku, node, 1)  # and live after the backlog
    rest += await take(resumed, 1)
    resumed.cancel()
    available = [e.quantities.available for e in seen + rest]
    assert available == list(range(2, 12)), available
    seqs = [e.seq for e in seen + rest]
    assert seqs == sorted(set(seqs))


async def test_resume_too_old_is_out_of_range(stubs: Stubs, served: tuple[Any, int]) -> None:
    app = served[0]
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    first_seq = app.events.last_seq + 1
    for _ in range(app.events.history_events_max + 50):
        await adjust(stubs, sku, node, 1)
    call = stubs.availability.WatchAvailability(
        availability_pb2.WatchRequest(resume_after_seq=first_seq)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(raised.value).reason == "RESUME_TOO_OLD"
    ahead = stubs.availability.WatchAvailability(
        availability_pb2.WatchRequest(resume_after_seq=app.events.last_seq + 10)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ahead.read()
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE


@pytest.mark.skip(reason="hangs: a stalled watcher is not yet detected through gRPC's buffers")
async def test_stalled_watcher_is_disconnected_and_writes_go_on(
    stubs: Stubs, served: tuple[Any, int]
) -> None:
    app = served[0]
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    await adjust(stubs, sku, node, 1_000_000)
    # A watcher on its own channel that never reads: gRPC's buffers fill, then its lag grows.
    stalled_stubs = make_stubs(served[1])
    stalled = stalled_stubs.availability.WatchAvailability(availability_pb2.WatchRequest())
    await stalled.wait_for_connection()
    slow_before = app.events.disconnected_slow
    reserves = 0
    async with asyncio.timeout(30):
        while app.events.disconnected_slow == slow_before:
            # 500 events a call, with long SKU ids: the transport's windows fill quickly.
            adjs = [
                supply_pb2.Adjustment(sku=f"{sku}-{'x' * 100}-{k}", node_id=node, delta=1)
                for k in range(500)
            ]
            await stubs.supply.Adjust(
                supply_pb2.AdjustRequest(request_id=uid("adj"), adjustments=adjs)
            )
            r = await stubs.reservation.Reserve(
                reservation_pb2.ReserveRequest(
                    reservation_id=uid("r"), lines=[line(sku, node, 1)], ttl_ms=60_000
                )
            )
            assert r.reservation.state == 1  # HELD: the writer is not held up
            reserves += 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with asyncio.timeout(20):
            async for _ in stalled:
                pass
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(raised.value).reason == "SUBSCRIBER_TOO_SLOW"
    await stalled_stubs.channel.close()
    # The writer keeps answering after the disconnect.
    r = await stubs.reservation.Reserve(
        reservation_pb2.ReserveRequest(
            reservation_id=uid("r"), lines=[line(sku, node, 1)], ttl_ms=60_000
        )
    )
    assert r.reservation.state == 1
