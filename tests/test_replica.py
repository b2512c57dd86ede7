"""Read replicas (issue 6 part 4) against a private redis-server.

A replica loads the primary's newest Redis snapshot and applies the journal stream through the same
`Ledger.apply_batch`, so once caught up its exported state equals the primary's byte for byte.
Restarting the replica, killing Redis (lag reported, then recovery) and a gap in the stream (a
snapshot reload) all converge again; writes to a replica answer FAILED_PRECONDITION /
READ_ONLY_REPLICA naming the primary. One test runs both as `omnistock serve` processes and
compares GetAvailability for every position.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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
from tests.redis_server import RedisServer
from tests.server_process import ServerProcess
from tests.stream_helpers import NODES, SKUS, random_writes, same_state, setup_commands, wait_until

WAIT_S = 20.0


class Cluster:
    def __init__(self, tmp_path: Path, redis_server: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.redis = redis_server
        self.primary: Any = None
        self._servers: list[tuple[Any, Any]] = []
        self._replicas = 0

    async def start_primary(self, **overrides: Any) -> Any:
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=str(self.tmp_path / "primary"),
            redis_url=self.redis.url,
            durability="none",
            **overrides,
        )
        server, app, _ = await start_server(config)
        self._servers.append((server, app))
        self.primary = app
        return app

    async def start_replica(self) -> tuple[Any, int]:
        self._replicas += 1
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=str(self.tmp_path / f"replica{self._replicas}"),
            replica_of=self.redis.url,
            replica_wait_s=WAIT_S,
        )
        server, app, port = await start_server(config)
        self._servers.append((server, app))
        return app, port

    async def stop(self, app: Any) -> None:
        for server, a in self._servers:
            if a is app:
                await a.stop(server, grace_s=0.5)

    async def close(self) -> None:
        for server, app in reversed(self._servers):
            await app.stop(server, grace_s=0.5)

    async def converged(self, replica: Any) -> None:
        primary = self.primary
        await wait_until(
            lambda: replica.follower.applied_seq == primary.sequencer.journal_seq,
            WAIT_S,
            f"the replica to reach seq {primary.sequencer.journal_seq}",
        )
        assert same_state(primary.ledger, replica.ledger)
        stats = replica.stats()
        assert stats["role"] == 2 and stats["journal_seq"] == primary.sequencer.journal_seq


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis_server:
        c = Cluster(tmp_path, redis_server)
        try:
            yield c
        finally:
            await c.close()


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


async def test_replica_converges_refuses_writes_and_restarts(cluster: Cluster) -> None:
    primary = await cluster.start_primary()
    rng = random.Random(11)
    for command in setup_commands():
        await primary.sequencer.submit(command)
    await random_writes(primary.sequencer, rng, 200)
    replica, port = await cluster.start_replica()
    await random_writes(primary.sequencer, rng, 300, 200)
    await cluster.converged(replica)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        supply = supply_pb2_grpc.SupplyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await supply.Adjust(
                supply_pb2.AdjustRequest(
                    request_id="w1",
                    adjustments=[
                        supply_pb2.Adjustment(
                            sku="s1", node_id="n1", delta=1, reason=types_pb2.ADJUST_REASON_RECEIPT
                        )
                    ],
                ),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = _error_info(caught.value)
        assert info.reason == "READ_ONLY_REPLICA"
        assert info.metadata["primary"] == cluster.redis.url
        reservations = reservation_pb2_grpc.ReservationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reservations.Reserve(
                reservation_pb2.ReserveRequest(
                    reservation_id="x",
                    lines=[types_pb2.Line(sku="s1", node_id="n1", qty=1)],
                    ttl_ms=60_000,
                ),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _error_info(caught.value).reason == "READ_ONLY_REPLICA"
        stats = await admin_pb2_grpc.AdminServiceStub(channel).GetStats(
            admin_pb2.GetStatsRequest(), timeout=5
        )
        assert stats.role == admin_pb2.SERVER_ROLE_REPLICA
        assert stats.primary == cluster.redis.url
        assert stats.replica_lag_entries == 0

    # Restart: a new replica process state from scratch converges again.
    await cluster.stop(replica)
    await random_writes(primary.sequencer, rng, 100, 500)
    replica2, _ = await cluster.start_replica()
    await random_writes(primary.sequencer, rng, 100, 600)
    await cluster.converged(replica2)


async def test_redis_killed_replica_reports_lag_then_recovers(cluster: Cluster) -> None:
    primary = await cluster.start_primary()
    rng = random.Random(12)
    for command in setup_commands():
        await primary.sequencer.submit(command)
    await random_writes(primary.sequencer, rng, 100)
    replica, _ = await cluster.start_replica()
    await cluster.converged(replica)
    cluster.redis.kill()
    await asyncio.wait_for(random_writes(primary.sequencer, rng, 100, 100), 10.0)
    await wait_until(lambda: not replica.follower.connected, WAIT_S, "the replica to notice")
    await asyncio.sleep(0.3)
    assert replica.stats()["replica_lag_ms"] > 0
    cluster.redis.start()  # empty: the stream and the snapshots are gone
    await random_writes(primary.sequencer, rng, 100, 200)
    await cluster.converged(replica)
    await wait_until(lambda: replica.stats()["replica_lag_ms"] == 0.0, WAIT_S, "lag 0")


async def test_gap_in_the_stream_reloads_a_snapshot(cluster: Cluster) -> None:
    primary = await cluster.start_primary(publish_queue_max=5)
    rng = random.Random(13)
    for command in setup_commands():
        await primary.sequencer.submit(command)
    await random_writes(primary.sequencer, rng, 50)
    replica, _ = await cluster.start_replica()
    await cluster.converged(replica)
    reloads = replica.follower.reloads
    cluster.redis.kill()
    await asyncio.wait_for(random_writes(primary.sequencer, rng, 80, 100), 10.0)
    assert primary.publisher.stats().dropped > 0  # the stream will have a gap
    cluster.redis.start()
    await random_writes(primary.sequencer, rng, 20, 200)
    await cluster.converged(replica)
    assert replica.follower.gaps >= 1 and replica.follower.reloads > reloads
    # Writes after the reload (their stock events numbered from the snapshot's state, which the
    # replica's event hub must continue from) still apply, without a reload loop.
    reloads, errors = replica.follower.reloads, replica.follower.errors
    for k in range(10):  # a few at a time, each published before the next: no new gap
        await random_writes(primary.sequencer, rng, 3, 300 + 3 * k)
        await wait_until(
            lambda: primary.publisher.stats().last_published_seq == primary.sequencer.journal_seq,
            WAIT_S,
            "the stream to hold every entry",
        )
    await cluster.converged(replica)
    assert replica.follower.errors == errors and replica.follower.event_errors == 0
    assert replica.follower.reloads == reloads
    assert replica.events.last_seq == primary.ledger.events_seq


async def test_a_bad_entry_stops_reads_until_the_reload(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry the replica cannot apply may leave its ledger half applied: reads answer
    UNAVAILABLE (NOT_SERVING) until a reload installs a whole state again. They were served
    from the half-applied ledger meanwhile."""
    primary = await cluster.start_primary()
    rng = random.Random(17)
    for command in setup_commands():
        await primary.sequencer.submit(command)
    await random_writes(primary.sequencer, rng, 20)
    await primary.snapshot_now()
    replica, port = await cluster.start_replica()
    await cluster.converged(replica)
    follower = replica.follower
    reload_gate = asyncio.Event()
    real_reload = follower._reload

    async def held_reload() -> None:
        await reload_gate.wait()
        await real_reload()

    def bad_apply(batch: Any) -> Any:
        raise ValueError("a bad entry")

    monkeypatch.setattr(follower, "_reload", held_reload)
    monkeypatch.setattr(follower.ledger, "apply_batch", bad_apply)
    await random_writes(primary.sequencer, rng, 3, 100)
    await wait_until(lambda: follower.errors == 1, WAIT_S, "the replica to meet the entry")
    query = availability_pb2.AvailabilityQuery(sku=SKUS[0], node_id=NODES[0])
    request = availability_pb2.GetAvailabilityRequest(queries=[query])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetAvailability(request)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _error_info(raised.value).reason == "NOT_SERVING"
        assert "reloading" in (raised.value.details() or "")
        reload_gate.set()
        await cluster.converged(replica)
        answer = await stub.GetAvailability(request)
        assert answer.results[0].status == types_pb2.LINE_STATUS_OK


async def test_an_entry_that_fails_to_decode_keeps_reads_and_a_poison_entry_backs_off(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry that does not decode changed nothing: reads go on from the whole state. One that
    fails again after every reload is retried with backoff, not in a tight reload loop."""
    import server.replica as replica_module

    primary = await cluster.start_primary()
    rng = random.Random(19)
    for command in setup_commands():
        await primary.sequencer.submit(command)
    await primary.snapshot_now()
    replica, _ = await cluster.start_replica()
    await cluster.converged(replica)
    follower = replica.follower
    poison = primary.sequencer.journal_seq + 1
    real_decode = replica_module._decode_batch
    poisoned = [True]
    attempts: list[int] = []

    def failing_decode(data: bytes) -> Any:
        if poisoned[0]:
            attempts.append(1)
            raise ValueError("not a batch")
        return real_decode(data)

    monkeypatch.setattr(replica_module, "_decode_batch", failing_decode)
    await primary.sequencer.submit(setup_commands()[0])  # entry `poison`, the next one read
    await wait_until(lambda: follower.errors >= 1, WAIT_S, "the replica to meet the entry")
    assert replica.ledger is follower.ledger  # still serving: nothing was applied
    await asyncio.sleep(1.5)
    assert follower.bad_repeats == len(attempts)
    assert 3 <= len(attempts) <= 10, len(attempts)  # without backoff: thousands
    assert follower.applied_seq == poison - 1
    poisoned[0] = False
    await random_writes(primary.sequencer, rng, 5, 500)
    await cluster.converged(replica)
    assert follower.bad_repeats == 0 and follower.applied_seq > poison


async def test_a_gap_inside_the_stream_is_bridged_by_a_newer_snapshot(cluster: Cluster) -> None:
    """A gap after the stream's first entry (entries lost mid-stream) cannot be bridged by an
    older snapshot: the replica must ask the primary for one past the gap, not loop on it."""
    primary = await cluster.start_primary()
    rng = random.Random(17)
    for command in setup_commands():
        await primary.sequencer.submit(command)

    async def write_and_publish(count: int, first_id: int) -> None:
        await random_writes(primary.sequencer, rng, count, first_id)
        await wait_until(
            lambda: primary.publisher.stats().last_published_seq == primary.sequencer.journal_seq,
            WAIT_S,
            "the stream to hold every entry",
        )

    await write_and_publish(30, 0)
    await write_and_publish(30, 100)  # entries after the snapshots taken at start-up
    snapshot_seq = primary.snapshotter.stats().last_journal_seq
    last = primary.sequencer.journal_seq
    assert last >= snapshot_seq + 4
    lost = [f"{seq}-0" for seq in (snapshot_seq + 2, snapshot_seq + 3)]
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        assert client.xdel("omnistock:journal", *lost) == len(lost)
    finally:
        client.close()
    replica, _ = await cluster.start_replica()
    await cluster.converged(replica)
    assert replica.follower.gaps >= 1
    assert primary.snapshotter.stats().last_journal_seq >= snapshot_seq + 3


async def test_a_gap_in_a_stream_from_seq_1_without_a_snapshot_asks_for_one(
    cluster: Cluster,
) -> None:
    """The stream still starts at seq 1 but lost an entry inside, and Redis holds no snapshot
    (evicted keys, a failed save): replaying from an empty ledger would only hit the gap again,
    so the replica asks the primary for a snapshot past it (it used to loop, reloading an empty
    ledger, and never caught up)."""
    from server.replica import Follower

    primary = await cluster.start_primary()
    rng = random.Random(23)
    for command in setup_commands():
        await primary.sequencer.submit(command)
    await random_writes(primary.sequencer, rng, 40)
    await wait_until(
        lambda: primary.publisher.stats().last_published_seq == primary.sequencer.journal_seq,
        WAIT_S,
        "the stream to hold every entry",
    )
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        client.delete("omnistock:snap:latest", "omnistock:snap:previous")
        assert client.xdel("omnistock:journal", "10-0") == 1
        assert client.xrange("omnistock:journal", count=1)[0][0] == b"1-0"
    finally:
        client.close()
    follower = Follower(cluster.redis.url, "omnistock", on_ledger=lambda ledger: None)
    await follower.bootstrap(WAIT_S)
    follower.start()
    try:
        await wait_until(
            lambda: follower.applied_seq == primary.sequencer.journal_seq,
            WAIT_S,
            f"the follower to reach seq {primary.sequencer.journal_seq}",
        )
        assert follower.gaps >= 1 and follower.reloads <= 3
        assert follower.ledger is not None and same_state(primary.ledger, follower.ledger)
    finally:
        await follower.close()


async def test_replica_shutdown_ends_watchers_at_once(cluster: Cluster) -> None:
    """Open WatchAvailability streams end when a replica stops (UNAVAILABLE, "shutting down"),
    as on the primary, instead of holding the drain for the whole grace period and then being
    cancelled with it ("Cancelling all calls")."""
    primary = await cluster.start_primary()
    for command in setup_commands():
        await primary.sequencer.submit(command)
    replica, port = await cluster.start_replica()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = availability_pb2_grpc.AvailabilityServiceStub(channel).WatchAvailability(
            availability_pb2.WatchRequest()
        )
        await call.wait_for_connection()
        await cluster.stop(replica)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in call:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (ended.value.details() or "")


def _all_positions(target: str) -> list[tuple[int, int, int]]:
    with grpc.insecure_channel(target) as channel:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        queries = [
            availability_pb2.AvailabilityQuery(sku=s, node_id=n) for s in SKUS for n in NODES
        ]
        reply = stub.GetAvailability(availability_pb2.GetAvailabilityRequest(queries=queries))
        return [(r.status, r.quantities.available, r.quantities.reserved) for r in reply.results]


def _journal_seq(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return int(stub.GetStats(admin_pb2.GetStatsRequest(), timeout=5).journal_seq)


def _random_rpc_writes(target: str, rng: random.Random, count: int, start: int) -> None:
    with grpc.insecure_channel(target) as channel:
        supply = supply_pb2_grpc.SupplyServiceStub(channel)
        reservations = reservation_pb2_grpc.ReservationServiceStub(channel)
        for i in range(start, start + count):
            sku, node = rng.choice(SKUS), rng.choice(NODES)
            if rng.random() < 0.5:
                supply.Adjust(
                    supply_pb2.AdjustRequest(
                        request_id=f"a{i}",
                        adjustments=[
                            supply_pb2.Adjustment(
                                sku=sku,
                                node_id=node,
                                delta=rng.randint(1, 9),
                                reason=types_pb2.ADJUST_REASON_RECEIPT,
                            )
                        ],
                    ),
                    timeout=5,
                )
            else:
                reservations.Reserve(
                    reservation_pb2.ReserveRequest(
                        reservation_id=f"r{i}",
                        lines=[types_pb2.Line(sku=sku, node_id=node, qty=rng.randint(1, 3))],
                        ttl_ms=60_000,
                    ),
                    timeout=5,
                )


async def _until_same(primary: ServerProcess, replica: ServerProcess) -> None:
    def same() -> bool:
        return _journal_seq(primary.target) == _journal_seq(replica.target) and _all_positions(
            primary.target
        ) == _all_positions(replica.target)

    await wait_until(same, WAIT_S, "the replica process to answer like the primary")


@pytest.mark.slow
async def test_replica_process_answers_like_the_primary(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis_server:
        primary = ServerProcess(tmp_path / "primary", args=["--redis", redis_server.url])
        replica = ServerProcess(tmp_path / "replica", args=["--replica-of", redis_server.url])
        try:
            await asyncio.to_thread(primary.start)
            await asyncio.to_thread(_random_rpc_writes, primary.target, random.Random(21), 0, 0)
            with grpc.insecure_channel(primary.target) as channel:
                supply_pb2_grpc.SupplyServiceStub(channel).UpsertNodes(
                    supply_pb2.UpsertNodesRequest(
                        request_id="nodes",
                        nodes=[
                            types_pb2.Node(
                                node_id=n, lat=48.0, lon=2.0, enabled=True, ship=True, type=2
                            )
                            for n in NODES
                        ],
                    ),
                    timeout=5,
                )
            rng = random.Random(22)
            await asyncio.to_thread(_random_rpc_writes, primary.target, rng, 150, 0)
            await asyncio.to_thread(replica.start)
            await asyncio.to_thread(_random_rpc_writes, primary.target, rng, 150, 150)
            await _until_same(primary, replica)
            assert any(available > 0 for _, available, _ in _all_positions(replica.target))
            replica.kill()
            await asyncio.to_thread(_random_rpc_writes, primary.target, rng, 100, 300)
            await asyncio.to_thread(replica.start)
            await _until_same(primary, replica)
        finally:
            replica.kill()
            primary.kill()
