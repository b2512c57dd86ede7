"""WatchAvailability end to end: order, resume without gaps, stalled watchers, too-old resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio

from engine.events import EventBatch
from engine.kernels.events import EVENT_COLS
from omnistock.v1 import availability_pb2, reservation_pb2, supply_pb2, types_pb2
from server.app import start_server
from server.config import ServerConfig
from server.events import EventHub
from tests.test_rpc import Stubs, add_node, error_info, line, make_stubs, uid

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHANGED = availability_pb2.EVENT_KIND_CHANGED
OUT_OF_STOCK = availability_pb2.EVENT_KIND_OUT_OF_STOCK
LOW_STOCK = availability_pb2.EVENT_KIND_LOW_STOCK
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
    """Until the stream is live: the server sends its headers once the watcher is subscribed,
    then one poke of the SKU must reach it."""
    await call.wait_for_connection()
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


async def test_thresholds_set_over_grpc_drive_low_stock_events(stubs: Stubs) -> None:
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    await adjust(stubs, sku, node, 10)
    answer = await stubs.supply.SetThresholds(
        supply_pb2.SetThresholdsRequest(
            thresholds=[supply_pb2.LowStockThreshold(sku=sku, node_id=node, low_stock=3)]
        )
    )
    assert answer.count == 1
    call = stubs.availability.WatchAvailability(
        availability_pb2.WatchRequest(skus=[sku], thresholds_only=True)
    )
    await call.wait_for_connection()  # subscribed
    await adjust(stubs, sku, node, -7)  # 10 -> 3: at the threshold
    await adjust(stubs, sku, node, -3)  # 3 -> 0
    events = await take(call, 2)
    assert [e.kind for e in events] == [LOW_STOCK, OUT_OF_STOCK]
    assert events[0].quantities.available == 3
    call.cancel()
    # Both scopes at once, or an unregistered node: refused, nothing set.
    for bad, code in (
        (
            supply_pb2.LowStockThreshold(sku=sku, node_id=node, group_id="g", low_stock=1),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            supply_pb2.LowStockThreshold(sku=sku, node_id=uid("nowhere"), low_stock=1),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.supply.SetThresholds(supply_pb2.SetThresholdsRequest(thresholds=[bad]))
        assert raised.value.code() == code


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


# A watcher in its own process: subscribes, says READY once the server has sent its headers
# (it is subscribed), then reads nothing until it gets a line on stdin; then it drains the
# stream and prints the final status. The test freezes it (SIGSTOP) in between, so nothing on its
# side (not even gRPC's transport) reads: the server's writes stall on HTTP/2 flow control and
# the socket buffers, whatever the client library would otherwise have buffered. BDP probing off
# and a small lookahead keep its stream window small, so that takes few events.
_STALLED_WATCHER = """
import asyncio, json, sys
import grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2
from omnistock.v1 import availability_pb2, availability_pb2_grpc

async def main(port):
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        call = stub.WatchAvailability(availability_pb2.WatchRequest())
        await call.wait_for_connection()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        last, code, reason = 0, "OK", ""
        try:
            async for event in call:
                last = event.seq
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            status = rpc_status.from_call(exc)
            for detail in status.details if status else ():
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason = info.reason
        print(json.dumps({"code": code, "reason": reason, "last": last}), flush=True)

asyncio.run(main(int(sys.argv[1])))
"""


async def test_stalled_watcher_is_disconnected_and_writes_go_on(
    stubs: Stubs, served: tuple[Any, int]
) -> None:
    app, port = served
    hub = app.events
    sku, node = uid("sku"), uid("node")
    await add_node(stubs, node)
    await adjust(stubs, sku, node, 1_000_000)
    # A control watcher that reads everything: it must never be dropped.
    control = stubs.availability.WatchAvailability(availability_pb2.WatchRequest())
    async with asyncio.timeout(10):
        await control.wait_for_connection()
    subscribers = hub.stats()["subscribers"]
    slow_before = hub.disconnected_slow
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STALLED_WATCHER, str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(10):
            assert (await proc.stdout.readline()).strip() == b"READY"
        assert hub.stats()["subscribers"] == subscribers + 1  # the stalled watcher is live
        os.kill(proc.pid, signal.SIGSTOP)
        # Flood: 50 events a batch (long SKU ids, so the stalled stream's window fills within a
        # few batches), each followed by a reserve; the control reads up to the newest event
        # before the next batch, so only a watcher that does not read can fall behind.
        last = 0
        for _ in range(200):  # the stalled watcher goes after ~lag_events_max + a window
            if hub.disconnected_slow > slow_before:
                break
            adjs = [
                supply_pb2.Adjustment(
                    sku=f"{sku}-{'x' * 100}-{k}", node_id=node, delta=1,
                    reason=types_pb2.ADJUST_REASON_CORRECTION,
                )
                for k in range(50)
            ]  # fmt: skip
            await stubs.supply.Adjust(
                supply_pb2.AdjustRequest(request_id=uid("adj"), adjustments=adjs)
            )
            r = await reserve_one(stubs, sku, node)
            assert r.reservation.state == 1  # HELD: the writer is not held up
            async with asyncio.timeout(10):
                while last < hub.last_seq:
                    last = (await control.read()).seq
        assert hub.disconnected_slow == slow_before + 1  # the stalled watcher, not the control
        # The server dropped the subscription at once, although the client cannot be told yet.
        async with asyncio.timeout(5):
            while hub.stats()["subscribers"] != subscribers:
                await asyncio.sleep(0.01)
        r = await reserve_one(stubs, sku, node)
        assert r.reservation.state == 1
        # Thawed, the client drains what reached it and then gets the reason it was dropped.
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        async with asyncio.timeout(10):
            verdict = json.loads(await proc.stdout.readline())
        assert verdict["code"] == "RESOURCE_EXHAUSTED", verdict
        assert verdict["reason"] == "SUBSCRIBER_TOO_SLOW", verdict
        # It was dropped more than lag_events_max behind, and never got the rest.
        assert 0 < verdict["last"] < hub.last_seq - hub.lag_events_max, verdict
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # The control is still live and the writer keeps answering after the disconnect.
    await adjust(stubs, sku, node, 1)
    async with asyncio.timeout(10):
        while last < hub.last_seq:
            last = (await control.read()).seq
    control.cancel()
    r = await reserve_one(stubs, sku, node)
    assert r.reservation.state == 1


async def reserve_one(stubs: Stubs, sku: str, node: str) -> Any:
    return await stubs.reservation.Reserve(
        reservation_pb2.ReserveRequest(
            reservation_id=uid("r"), lines=[line(sku, node, 1)], ttl_ms=60_000
        )
    )


async def test_one_large_batch_does_not_drop_a_caught_up_watcher() -> None:
    """Lag is judged on the events published before a batch: a burst larger than
    `lag_events_max` is not slowness; staying behind through the next publish is."""
    hub = EventHub(history_events_max=1_000, lag_events_max=10)
    sub = hub.subscribe()

    def batch(n: int) -> EventBatch:
        return EventBatch(hub.last_seq + 1, 0, np.zeros((n, EVENT_COLS), np.int64), [], [], [])

    hub.publish(batch(50))
    assert not sub.too_slow and hub.disconnected_slow == 0
    hub.publish(batch(50))  # it wrote nothing of the first 50: more than 10 behind
    assert sub.too_slow and hub.disconnected_slow == 1
    hub.publish(batch(50))
    assert hub.disconnected_slow == 1  # counted once
    sub.close()
    assert hub.stats()["subscribers"] == 0


async def test_a_resumed_watcher_may_catch_up_before_it_is_judged_on_lag() -> None:
    """A watcher ended as too slow resumes from its cursor, by definition more than
    `lag_events_max` behind. It keeps its subscription while it reads its way back, however many
    events arrive meanwhile; once caught up, falling behind again ends it as before. The history
    dropping what it has not read ends it whether it catches up or not."""
    hub = EventHub(history_events_max=100, lag_events_max=10)

    def batch(n: int) -> EventBatch:
        return EventBatch(hub.last_seq + 1, 0, np.zeros((n, EVENT_COLS), np.int64), [], [], [])

    slow = hub.subscribe()
    hub.publish(batch(20))
    slow.advance(5)
    hub.publish(batch(20))
    hub.publish(batch(20))
    assert slow.too_slow
    slow.close()
    sub = hub.subscribe(resume_after_seq=slow.cursor)  # 55 events behind
    hub.publish(batch(5))
    assert not sub.too_slow  # old code: dropped at once
    sub.advance(30)
    hub.publish(batch(5))
    assert not sub.too_slow
    # It reads 10 events while 5 arrive: more than lag_events_max arrive before it is back.
    while sub.catching_up:
        sub.advance(sub.cursor + 10)
        hub.publish(batch(5))
        assert not sub.too_slow, (sub.cursor, hub.last_seq)
    assert hub.last_seq - 60 > hub.lag_events_max  # that many arrived since its resume
    sub.advance(hub.last_seq)
    assert not sub.too_slow and hub.disconnected_slow == 1
    for _ in range(2):
        hub.publish(batch(20))  # behind again, not catching up: the usual rule
    assert sub.too_slow and hub.disconnected_slow == 2
    sub.close()

    # Resumed and never reading: the history drops its cursor, which ends it.
    stalled = hub.subscribe(resume_after_seq=hub.last_seq - 50)
    for _ in range(6):
        hub.publish(batch(20))
    assert stalled.too_slow and hub.disconnected_slow == 3
    stalled.close()
