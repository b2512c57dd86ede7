"""Races through the real server: the last unit, and the same reserve sent many times at once.

The server runs with `sync` durability (one fsync per batch), so concurrent calls really do pile
up in the sequencer's queue and are applied in coalesced batches.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from omnistock.v1 import availability_pb2, reservation_pb2, types_pb2
from tests.test_rpc import Stubs, line, quantities, reserve, serving_stubs, stock, uid

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELD = types_pb2.RESERVATION_STATE_HELD
REJECTED = types_pb2.RESERVATION_STATE_REJECTED
CALLERS = 64
ROUNDS = 25
SEED = 20240611


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stubs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stubs]:
    async with serving_stubs(tmp_path_factory.mktemp("races"), "sync") as s:
        yield s


async def _watch(stubs: Stubs, sku: str, node: str, stop: asyncio.Event) -> list[Any]:
    """Read the position over and over while the race runs; every reading seen."""
    seen = []
    query = availability_pb2.AvailabilityQuery(sku=sku, node_id=node)
    request = availability_pb2.GetAvailabilityRequest(queries=[query])
    while not stop.is_set():
        response = await stubs.availability.GetAvailability(request)
        seen.append(response.results[0].quantities)
        await asyncio.sleep(0)
    return seen


async def test_last_unit_race(stubs: Stubs) -> None:
    rng = random.Random(SEED)
    for round_ in range(ROUNDS):
        sku, node = uid("race-sku"), uid("race-node")
        # Scarce stock most rounds; every so often more stock than callers.
        on_hand = rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 31, 63, 64, 70])
        await stock(stubs, sku, node, on_hand)
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(_watch(stubs, sku, node, stop))
        calls = [reserve(stubs, uid("race"), [line(sku, node, 1)]) for _ in range(CALLERS)]
        answers = await asyncio.gather(*calls)
        stop.set()
        readings = await watcher
        states = [a.reservation.state for a in answers]
        won = states.count(HELD)
        assert won == min(on_hand, CALLERS), (round_, on_hand, won)
        assert states.count(REJECTED) == CALLERS - won
        for a in answers:
            if a.reservation.state == REJECTED:
                assert a.reservation.lines[0].status == types_pb2.LINE_STATUS_INSUFFICIENT
                assert a.reservation.lines[0].reserved_qty == 0
        final = await quantities(stubs, sku, node)
        assert (final.on_hand, final.reserved) == (on_hand, won)
        assert final.available == on_hand - won
        assert readings, "the watcher read the position at least once"
        for q in [*readings, final]:
            assert q.available >= 0
            assert q.reserved + q.allocated <= q.on_hand


async def _reserve_same(stubs: Stubs, rid: str, sku: str, node: str) -> Any:
    return await reserve(stubs, rid, [line(sku, node, 3)])


async def test_same_reserve_replayed_sequentially(stubs: Stubs) -> None:
    sku, node = uid("idem-sku"), uid("idem-node")
    await stock(stubs, sku, node, 10)
    rid = uid("idem")
    answers = [await _reserve_same(stubs, rid, sku, node) for _ in range(100)]
    assert not answers[0].replayed
    assert all(a.replayed for a in answers[1:])
    assert all(a.reservation == answers[0].reservation for a in answers)
    q = await quantities(stubs, sku, node)
    assert (q.reserved, q.available) == (3, 7)


async def test_same_reserve_replayed_concurrently(stubs: Stubs) -> None:
    for _ in range(3):
        sku, node = uid("idem-sku"), uid("idem-node")
        await stock(stubs, sku, node, 10)
        rid = uid("idem")
        answers = await asyncio.gather(*(_reserve_same(stubs, rid, sku, node) for _ in range(100)))
        assert [a.replayed for a in answers].count(False) == 1
        first = next(a for a in answers if not a.replayed)
        assert first.reservation.state == HELD
        assert all(a.reservation == first.reservation for a in answers)
        q = await quantities(stubs, sku, node)
        assert (q.reserved, q.available) == (3, 7)
        # Commit raced the same way: one commit, the rest replays.
        commits = await asyncio.gather(
            *(
                stubs.reservation.Commit(reservation_pb2.CommitRequest(reservation_id=rid))
                for _ in range(50)
            )
        )
        assert [c.replayed for c in commits].count(False) == 1
        q = await quantities(stubs, sku, node)
        assert (q.reserved, q.allocated, q.available) == (0, 3, 7)


async def test_conflicting_reserves_race(stubs: Stubs) -> None:
    """The same id with two different contents, sent at once: one wins, the other kind is
    ALREADY_EXISTS every time, and only the winner's units are held."""
    sku, node = uid("idem-sku"), uid("idem-node")
    await stock(stubs, sku, node, 100)
    rid = uid("idem")
    calls = [reserve(stubs, rid, [line(sku, node, 1 + k % 2)]) for k in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert ok and failed and len(ok) == len(failed) == 20
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in failed)
    assert all(r.code() == grpc.StatusCode.ALREADY_EXISTS for r in failed)  # type: ignore[union-attr]
    qty = ok[0].reservation.lines[0].line.qty
    assert all(r.reservation == ok[0].reservation for r in ok)
    assert (await quantities(stubs, sku, node)).reserved == qty
