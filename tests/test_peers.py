"""The bench peers are correct too: no oversell under a last-unit race, idempotent, TTL holds.

Redis runs on a private redis-server; Postgres gets its own uniquely named database on the local
cluster (skipped cleanly if the cluster is unreachable), dropped at teardown.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from bench.peers import StockBackend
from engine.codes import LineStatus, ReservationState
from engine.commands import Commit, Line, Release, ReservationResult, Reserve
from engine.errors import Code, Rejection
from tests.redis_server import RedisServer

psycopg = pytest.importorskip("psycopg")

PG_ADMIN = os.environ.get("OMNISTOCK_TEST_PG", "host=127.0.0.1 port=5432 dbname=postgres")
RACERS = 64
ROUNDS = 3
T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="module")
def pg_conninfo() -> Iterator[str]:
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN!r}: {exc}")
    name = f"omnistock_peer_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_ADMIN.replace('dbname=postgres', '')} dbname={name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["redis-lua", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StockBackend]:
    if request.param == "redis-lua":
        from bench.peers.redis_lua import RedisLuaBackend

        url = request.getfixturevalue("redis_url")
        peer: StockBackend = RedisLuaBackend(url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:
        from bench.peers.postgres import PostgresBackend

        peer = await PostgresBackend(request.getfixturevalue("pg_conninfo"), pool_size=8).open()
    try:
        yield peer
    finally:
        await peer.close()


def _held(result: ReservationResult | Rejection) -> bool:
    assert isinstance(result, ReservationResult), result
    return result.reservation.state == ReservationState.HELD


async def test_last_unit_race_never_oversells(backend: StockBackend) -> None:
    stock = 10
    await backend.load([("HOT", "N1", stock), ("COLD", "N1", 5)])
    for rnd in range(ROUNDS):
        cmds = [
            Reserve(f"race-{rnd}-{i}", (Line("HOT", "N1", 1),), ttl_ms=60_000)
            for i in range(RACERS)
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*(backend.reserve(c, T0) for c in cmds)), 30
        )
        winners = [c for c, r in zip(cmds, results, strict=True) if _held(r)]
        assert len(winners) == stock
        for r in results:
            assert isinstance(r, ReservationResult)
            if r.reservation.state == ReservationState.REJECTED:
                assert r.reservation.lines[0].status == LineStatus.INSUFFICIENT
        assert await backend.availability("HOT", ["N1", "N2"], T0) == [0, None]
        # Release every winner: the stock comes back, exactly.
        released = await asyncio.gather(
            *(backend.release(Release(c.reservation_id), T0) for c in winners)
        )
        assert all(
            isinstance(r, ReservationResult) and r.reservation.state == ReservationState.RELEASED
            for r in released
        )
        assert await backend.availability("HOT", ["N1"], T0) == [stock]
    assert await backend.availability("COLD", ["N1"], T0) == [5]


async def test_idempotency_and_transitions(backend: StockBackend) -> None:
    await backend.load([("A", "N1", 3), ("B", "N1", 2)])
    cmd = Reserve("r1", (Line("A", "N1", 2), Line("B", "N1", 1)), ttl_ms=60_000)
    first = await backend.reserve(cmd, T0)
    assert _held(first) and isinstance(first, ReservationResult) and not first.replayed
    assert first.reservation.expires_at_ms == T0 + 60_000
    again = await backend.reserve(cmd, T0 + 5)
    assert isinstance(again, ReservationResult) and again.replayed
    assert again.reservation == first.reservation
    other = await backend.reserve(Reserve("r1", (Line("A", "N1", 1),), ttl_ms=60_000), T0)
    assert isinstance(other, Rejection) and other.code == Code.ALREADY_EXISTS
    assert await backend.availability("A", ["N1"], T0 + 50) == [1]

    committed = await backend.commit(Commit("r1"), T0 + 10)
    assert isinstance(committed, ReservationResult)
    assert committed.reservation.state == ReservationState.COMMITTED and not committed.replayed
    assert committed.reservation.lines[0].line == Line("A", "N1", 2)
    replay = await backend.commit(Commit("r1"), T0 + 11)
    assert isinstance(replay, ReservationResult) and replay.replayed
    released = await backend.release(Release("r1"), T0 + 12)
    assert isinstance(released, ReservationResult)
    assert released.reservation.state == ReservationState.RELEASED
    assert await backend.availability("A", ["N1"], T0 + 50) == [3]
    assert await backend.availability("B", ["N1"], T0 + 50) == [2]
    late = await backend.commit(Commit("r1"), T0 + 13)
    assert isinstance(late, Rejection) and late.code == Code.FAILED_PRECONDITION
    missing = await backend.release(Release("nope"), T0)
    assert isinstance(missing, Rejection) and missing.code == Code.NOT_FOUND

    # All or nothing, lines of one position judged on their sum; a rejected id stays rejected.
    greedy = Reserve("r2", (Line("A", "N1", 2), Line("A", "N1", 2)), ttl_ms=60_000)
    rejected = await backend.reserve(greedy, T0 + 20)
    assert isinstance(rejected, ReservationResult)
    assert rejected.reservation.state == ReservationState.REJECTED
    assert await backend.availability("A", ["N1"], T0 + 50) == [3]
    unknown = await backend.reserve(
        Reserve("r3", (Line("A", "N1", 1), Line("Z", "N1", 1)), ttl_ms=60_000), T0 + 21
    )
    assert isinstance(unknown, ReservationResult)
    assert [ln.status for ln in unknown.reservation.lines] == [
        LineStatus.OK,
        LineStatus.UNKNOWN_SKU,
    ]
    assert await backend.availability("A", ["N1"], T0 + 50) == [3]
    replayed = await backend.reserve(greedy, T0 + 30)
    assert isinstance(replayed, ReservationResult) and replayed.replayed
    assert replayed.reservation.state == ReservationState.REJECTED
    bad = await backend.reserve(Reserve("r4", (Line("A", "N1", 0),), ttl_ms=60_000), T0)
    assert isinstance(bad, Rejection) and bad.code == Code.INVALID_ARGUMENT


async def test_holds_expire(backend: StockBackend) -> None:
    await backend.load([("A", "N1", 2)])
    assert _held(await backend.reserve(Reserve("e1", (Line("A", "N1", 2),), 1_000), T0))
    assert _held(await backend.reserve(Reserve("e2", (Line("A", "N1", 1),), 1_000), T0)) is False
    # At the expiry instant the hold is gone: commit fails, the units are back.
    late = await backend.commit(Commit("e1"), T0 + 1_000)
    assert isinstance(late, Rejection) and late.code == Code.FAILED_PRECONDITION
    assert await backend.availability("A", ["N1"], T0 + 1_000) == [2]
    # A hold expired lazily by another call is EXPIRED; releasing it is a replay.
    assert _held(await backend.reserve(Reserve("e3", (Line("A", "N1", 1),), 1_000), T0 + 2_000))
    assert _held(await backend.reserve(Reserve("e4", (Line("A", "N1", 2),), 1_000), T0 + 3_000))
    gone = await backend.release(Release("e3"), T0 + 3_001)
    assert isinstance(gone, ReservationResult) and gone.replayed
    assert gone.reservation.state == ReservationState.EXPIRED


# --- redis-direct: the same script without a front ---------------------------------------------


def test_resp_reply_counter() -> None:
    from bench.redis_direct import count_replies, encode_command

    assert encode_command("GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    buf = b"*3\r\n:1\r\n$2\r\nab\r\n$-1\r\n-ERR x\r\n+OK\r\n*2\r\n:1\r\n$5\r\nab"
    assert count_replies(buf) == (3, 1, buf.index(b"*2\r\n:1"))


def test_redis_direct_runs_the_reserve_script(redis_url: str) -> None:
    from bench.redis_direct import run_mode

    result = run_mode(redis_url, 2_000, 1, 16, "t-", None)
    assert result["reserves"] == 2_000 and result["errors"] == 0
    assert result["held_after"] == 2_000
    assert result["reserves_per_s"] > 0
