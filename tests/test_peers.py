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
from engine.commands import Commit, Line, Release, ReservationResult, Reserve, ReserveColumns
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


# --- many reserves at once (what ReserveBatch sends) -------------------------------------------


async def test_batched_race_never_oversells_and_never_deadlocks(backend: StockBackend) -> None:
    # Every reservation wants one unit of A and one of B, the lines in either order, in batches
    # racing each other: exactly min(stock) are held, a rejected one holds nothing (all or
    # nothing), and Postgres' batch transactions lock in one order (no deadlock, no retry left).
    stock_a, stock_b = 12, 9
    batches, per_batch = 8, 8
    for rnd in range(ROUNDS):
        await backend.load([("A", "N1", stock_a), ("B", "N1", stock_b), ("C", "N1", 1)])
        cmds = [
            [
                Reserve(
                    f"braced-{rnd}-{b}-{i}",
                    (Line("A", "N1", 1), Line("B", "N1", 1))[:: 1 if (b + i) % 2 else -1],
                    ttl_ms=60_000,
                )
                for i in range(per_batch)
            ]
            for b in range(batches)
        ]
        answers = await asyncio.wait_for(
            asyncio.gather(*(backend.reserve_many(batch, T0) for batch in cmds)), 30
        )
        held = 0
        for batch, outcomes in zip(cmds, answers, strict=True):
            assert len(outcomes) == len(batch)
            for cmd, r in zip(batch, outcomes, strict=True):
                assert isinstance(r, ReservationResult), r
                assert r.reservation.reservation_id == cmd.reservation_id
                assert [ln.line for ln in r.reservation.lines] == list(cmd.lines)
                if r.reservation.state == ReservationState.HELD:
                    held += 1
                    assert all(ln.held_qty == 1 for ln in r.reservation.lines)
                else:
                    assert r.reservation.state == ReservationState.REJECTED
                    assert all(ln.held_qty == 0 for ln in r.reservation.lines)
                    statuses = {ln.line.sku: ln.status for ln in r.reservation.lines}
                    assert statuses["B"] == LineStatus.INSUFFICIENT
        assert held == min(stock_a, stock_b)
        assert await backend.availability("A", ["N1"], T0) == [stock_a - held]
        assert await backend.availability("B", ["N1"], T0) == [stock_b - held]
        assert await backend.availability("C", ["N1"], T0) == [1]
    assert getattr(backend, "deadlock_retries", 0) == 0


async def test_batch_is_all_or_nothing_per_reservation_and_idempotent(
    backend: StockBackend,
) -> None:
    await backend.load([("A", "N1", 3), ("B", "N1", 1)])
    # A unary reserve first: a batch repeating its id replays it (the same stored content).
    solo = Reserve("s1", (Line("A", "N1", 1),), ttl_ms=60_000)
    assert _held(await backend.reserve(solo, T0))
    batch = [
        Reserve("b1", (Line("A", "N1", 1), Line("B", "N1", 1)), ttl_ms=60_000),  # held
        Reserve("b2", (Line("A", "N1", 1), Line("B", "N1", 1)), ttl_ms=60_000),  # B gone
        Reserve("b3", (Line("A", "N1", 1), Line("Z", "N1", 1)), ttl_ms=60_000),  # no Z
        Reserve("b1", (Line("A", "N1", 1), Line("B", "N1", 1)), ttl_ms=60_000),  # replay of b1
        Reserve("b1", (Line("A", "N1", 2),), ttl_ms=60_000),  # same id, other content
        Reserve("b4", (Line("A", "N1", 0),), ttl_ms=60_000),  # invalid
        solo,  # replay of the unary one
        Reserve("s1", (Line("B", "N1", 1),), ttl_ms=60_000),  # conflicts with the unary one
        Reserve("b5", (Line("A", "N1", 1),), ttl_ms=30_000),  # the last unit of A
        Reserve("b6", (Line("A", "N1", 1),), ttl_ms=60_000),  # nothing left
    ]
    out = await backend.reserve_many(batch, T0)
    assert len(out) == len(batch)
    b1, b2, b3, b1_again, b1_other, b4, s1, s1_other, b5, b6 = out
    assert isinstance(b1, ReservationResult) and _held(b1) and not b1.replayed
    assert b1.reservation.expires_at_ms == T0 + 60_000
    assert isinstance(b2, ReservationResult)
    assert b2.reservation.state == ReservationState.REJECTED
    assert [ln.status for ln in b2.reservation.lines] == [LineStatus.OK, LineStatus.INSUFFICIENT]
    assert isinstance(b3, ReservationResult)
    assert b3.reservation.state == ReservationState.REJECTED
    assert [ln.status for ln in b3.reservation.lines] == [LineStatus.OK, LineStatus.UNKNOWN_SKU]
    assert isinstance(b1_again, ReservationResult) and b1_again.replayed
    assert b1_again.reservation == b1.reservation
    assert isinstance(b1_other, Rejection) and b1_other.code == Code.ALREADY_EXISTS
    assert isinstance(b4, Rejection) and b4.code == Code.INVALID_ARGUMENT
    assert isinstance(s1, ReservationResult) and s1.replayed and _held(s1)
    assert isinstance(s1_other, Rejection) and s1_other.code == Code.ALREADY_EXISTS
    assert isinstance(b5, ReservationResult) and _held(b5)
    assert b5.reservation.expires_at_ms == T0 + 30_000
    assert isinstance(b6, ReservationResult)
    assert b6.reservation.state == ReservationState.REJECTED
    # Held: s1 (A), b1 (A, B), b5 (A). The rejected ones took nothing.
    assert await backend.availability("A", ["N1"], T0 + 1) == [0]
    assert await backend.availability("B", ["N1"], T0 + 1) == [0]
    # The whole batch again: every outcome replays (rejected ids stay rejected), nothing moves.
    again = await backend.reserve_many(batch, T0 + 2)
    for first, second in zip(out, again, strict=True):
        if isinstance(first, Rejection):
            assert isinstance(second, Rejection) and second.code == first.code
        else:
            assert isinstance(second, ReservationResult) and second.replayed
            assert second.reservation == first.reservation
    # Batched holds are ordinary holds: commit, release and expiry work on them.
    committed = await backend.commit(Commit("b1"), T0 + 3)
    assert isinstance(committed, ReservationResult)
    assert committed.reservation.state == ReservationState.COMMITTED
    released = await backend.release(Release("b1"), T0 + 4)
    assert isinstance(released, ReservationResult)
    assert released.reservation.state == ReservationState.RELEASED
    assert await backend.availability("A", ["N1"], T0 + 5) == [1]
    assert await backend.availability("B", ["N1"], T0 + 5) == [1]
    late = await backend.commit(Commit("b5"), T0 + 30_000)  # expired at T0 + 30 s
    assert isinstance(late, Rejection) and late.code == Code.FAILED_PRECONDITION
    assert await backend.availability("A", ["N1"], T0 + 30_000) == [2]
    assert await backend.reserve_many([], T0) == []


async def test_reserve_batch_through_the_front_never_oversells(backend: StockBackend) -> None:
    # The SAME servicers over the peer (bench/peers/front.py): concurrent ReserveBatch calls race
    # for the last units; the answers' columns add up to exactly the stock.
    import grpc

    from bench.peers.front import start_front
    from omnistock.v1 import reservation_pb2, reservation_pb2_grpc

    stock, calls, per_call = 10, 8, 8
    await backend.load([("HOT", "N1", stock)])
    server, port = await start_front(backend, read=None)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reservation_pb2_grpc.ReservationServiceStub(channel)
            requests = [
                reservation_pb2.ReserveBatchRequest(
                    reservation_ids=[f"front-{c}-{i}" for i in range(per_call)] + [f"front-{c}-z"],
                    line_counts=[1] * (per_call + 1),
                    skus=["HOT"] * per_call + ["NOPE"],
                    node_ids=["N1"] * (per_call + 1),
                    qtys=[1] * (per_call + 1),
                    ttl_ms=60_000,
                    batch_id=c,
                )
                for c in range(calls)
            ]
            answers = await asyncio.wait_for(
                asyncio.gather(*(stub.ReserveBatch(r, timeout=30) for r in requests)), 60
            )
            held = 0
            for c, answer in enumerate(answers):
                assert answer.batch_id == c and not answer.errors
                assert len(answer.states) == per_call + 1 == len(answer.line_statuses)
                for state, qty, status in zip(
                    answer.states, answer.reserved_qtys, answer.line_statuses, strict=True
                ):
                    if state == ReservationState.HELD:
                        held += 1
                        assert qty == 1 and status == LineStatus.OK
                    else:
                        assert state == ReservationState.REJECTED and qty == 0
                        assert status in (LineStatus.INSUFFICIENT, LineStatus.UNKNOWN_SKU)
                assert answer.line_statuses[-1] == LineStatus.UNKNOWN_SKU
            assert held == stock
            assert await backend.availability("HOT", ["N1"]) == [0]
            # The same message again: every reservation replays its first outcome.
            again = await stub.ReserveBatch(requests[0], timeout=30)
            assert list(again.replayed) == [True] * (per_call + 1)
            assert list(again.states) == list(answers[0].states)
    finally:
        await server.stop(None)


async def test_redis_columns_fast_path_equals_reserve_many(redis_url: str) -> None:
    # RedisLuaBackend.reserve_columns (ids and columns straight to the batch script) answers
    # exactly what `reserve_many(cmd.to_reserves())` answers, for many lines or one line each.
    from bench.peers import columns_result
    from bench.peers.redis_lua import RedisLuaBackend

    stock = [("A", "N1", 3), ("B", "N1", 1), ("B", "N2", 2)]
    many_lines = ReserveColumns.build(
        ["m1", "m2", "m3", "m1", "m1", "m4", "m5"],
        [2, 2, 1, 2, 1, 3, 1],
        ["A", "B", "A", "B", "Z", "A", "B", "A", "A", "B", "B", "A"],
        ["N1", "N1", "N1", "N1", "N1", "N1", "N1", "N1", "N1", "N2", "N2", "N1"],
        [1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1],
        60_000,
    )
    one_line = ReserveColumns.build(
        [f"o{i}" for i in range(6)] + ["m1"],
        [1] * 7,
        ["A", "B", "B", "Z", "A", "A", "A"],
        ["N1", "N2", "N2", "N1", "N1", "N1", "N1"],
        [1, 1, 1, 1, 1, 5, 1],
        30_000,
    )
    answers = []
    for fast in (True, False):
        peer = RedisLuaBackend(redis_url, prefix=f"c{uuid.uuid4().hex[:8]}:")
        try:
            await peer.load(stock)
            got = []
            for cmd in (many_lines, one_line, many_lines):  # the third: every id replays
                if fast:
                    got.append(await peer.reserve_columns(cmd, T0))
                else:
                    outcomes = await peer.reserve_many(cmd.to_reserves(), T0)
                    got.append(columns_result(outcomes, cmd.counts()))
            got.append(await peer.availability("A", ["N1"], T0))
            got.append(await peer.availability("B", ["N1", "N2"], T0))
        finally:
            await peer.close()
        answers.append(got)
    assert answers[0] == answers[1]
    first = answers[0][0]
    assert first.states == [1, 6, 6, 1, 6, 1, 1]  # m2: no B at N1 left; m3: no Z
    assert list(first.rejections) == [4]  # m1 again with other content
    assert first.replayed == [False, False, False, True, False, False, False]
    assert first.held_qtys[:2] == [1, 1] and first.line_statuses[4] == 3  # Z: UNKNOWN_SKU
    assert all(answers[0][2].replayed[k] for k in (0, 1, 2, 3, 5, 6))


# --- equal durability: the peers' settings per mode ---------------------------------------------


@pytest.mark.parametrize(
    ("mode", "appendonly", "appendfsync"),
    [("sync", "yes", "always"), ("async", "yes", "everysec"), ("none", "no", None)],
)
def test_private_redis_persistence_per_durability(
    mode: str, appendonly: str, appendfsync: str | None
) -> None:
    import redis

    from bench.redis_direct import _PrivateRedis

    private = _PrivateRedis(None, mode)
    try:
        with redis.Redis.from_url(private.url, decode_responses=True) as r:
            assert r.config_get("appendonly")["appendonly"] == appendonly
            assert r.config_get("save")["save"] == ""
            if appendfsync is not None:
                assert r.config_get("appendfsync")["appendfsync"] == appendfsync
    finally:
        private.close()


@pytest.mark.parametrize("synchronous_commit", [True, False])
async def test_postgres_synchronous_commit_per_session(
    pg_conninfo: str, synchronous_commit: bool
) -> None:
    from bench.peers.postgres import PostgresBackend

    peer = await PostgresBackend(pg_conninfo, 2, synchronous_commit=synchronous_commit).open()
    try:
        for _ in range(2):
            async with peer._conn() as conn:
                cur = await conn.execute("SHOW synchronous_commit")
                row = await cur.fetchone()
                assert row == ("on" if synchronous_commit else "off",)
    finally:
        await peer.close()


async def test_one_query_availability_through_the_front() -> None:
    # GetAvailability of one query takes the servicer's one-query path (`ledger.availability_one`);
    # over a peer it must answer as the columnar read does, from the peer's read.
    import grpc

    from bench.peers.front import start_front
    from omnistock.v1 import availability_pb2, availability_pb2_grpc

    stock = {("A", "N1"): 4, ("A", "N2"): 0}
    server, port = await start_front(None, lambda sku, nodes: [stock.get((sku, n)) for n in nodes])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
            queries = [("A", "N1"), ("A", "N2"), ("B", "N1")]
            one = [
                await stub.GetAvailability(
                    availability_pb2.GetAvailabilityRequest(
                        queries=[availability_pb2.AvailabilityQuery(sku=sku, node_id=node)]
                    ),
                    timeout=10,
                )
                for sku, node in queries
            ]
            many = await stub.GetAvailability(
                availability_pb2.GetAvailabilityRequest(
                    queries=[
                        availability_pb2.AvailabilityQuery(sku=s, node_id=n) for s, n in queries
                    ],
                ),
                timeout=10,
            )
    finally:
        await server.stop(None)
    assert [r.results[0] for r in one] == list(many.results)
    assert [(r.status, r.quantities.available) for r in many.results] == [
        (LineStatus.OK, 4), (LineStatus.OK, 0), (LineStatus.UNKNOWN_SKU, 0)
    ]  # fmt: skip


def test_private_postgres_is_pinned_and_goes_away() -> None:
    """`peers` runs PostgreSQL on the server core only: every process of the private cluster
    (postmaster, its workers and a client's backend) may run on CPU 0 alone, and `close()`
    stops them all and deletes the cluster."""
    import subprocess

    from bench.peers.private_pg import PrivatePostgres, pg_bindir

    if pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to tell pinned from not")
    pg = PrivatePostgres(0)
    try:
        with psycopg.connect(pg.admin) as conn:
            backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert conn.execute("SHOW fsync").fetchone()[0] == "on"
            pids = pg.pids()
            assert backend_pid in pids and len(pids) >= 3
            assert {p: os.sched_getaffinity(p) for p in pids} == {p: {0} for p in pids}
        directory = pg.dir
    finally:
        pg.close()
    assert not directory.exists()
    assert pg.proc is not None and pg.proc.poll() is not None
    alive = subprocess.run(["ps", "-o", "pid=", "-p", ",".join(map(str, pids))],
                           capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    assert alive == []
