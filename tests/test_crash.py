"""Crash test: clients reserve and commit in a loop while `omnistock serve` is SIGKILLed at random
points and restarted, several rounds. Afterwards every acknowledged reservation is present in its
acknowledged (or a later legal) state, nothing is applied twice (each SKU's reserved + allocated
equals the units of the live reservations found on it), and no bucket is negative. In-doubt
requests (no answer before the kill) are retried with the same id after the restart: the answer
is the original outcome or a first application, never a second one.

Variants: file snapshots; Redis snapshots; Redis snapshots with Redis killed and restarted.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from omnistock.v1 import (
    availability_pb2,
    availability_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
    types_pb2,
)
from tests.redis_server import RedisServer
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

ROUNDS = 5
TRAFFIC_S_MAX = 1.0
CLIENTS = 4
NODE = "dc1"
SKUS = [f"sku{i}" for i in range(5)]
ON_HAND = 1_000_000
TTL_MS = 600_000  # no hold expires during the test
HELD = types_pb2.RESERVATION_STATE_HELD
COMMITTED = types_pb2.RESERVATION_STATE_COMMITTED
LIVE = (HELD, COMMITTED)
RPC_TIMEOUT_S = 5.0


class Client:
    """One client thread's view: what it was told, and what is in doubt."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.next_id = 0
        self.sku: dict[str, str] = {}
        self.acked: dict[str, int] = {}  # reservation id -> state acknowledged last
        self.in_doubt: dict[str, str] = {}  # reservation id -> "reserve" | "commit"

    def run(self, target: str, stop: threading.Event) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = reservation_pb2_grpc.ReservationServiceStub(channel)
            while not stop.is_set():
                rid = f"{self.name}-{self.next_id}"
                self.next_id += 1
                self.sku[rid] = self.rng.choice(SKUS)
                if not self.reserve(stub, rid):
                    return
                if self.rng.random() < 0.6 and not self.commit(stub, rid):
                    return

    def _request(self, rid: str) -> reservation_pb2.ReserveRequest:
        line = types_pb2.Line(sku=self.sku[rid], node_id=NODE, qty=1)
        return reservation_pb2.ReserveRequest(reservation_id=rid, lines=[line], ttl_ms=TTL_MS)

    def reserve(self, stub: reservation_pb2_grpc.ReservationServiceStub, rid: str) -> bool:
        try:
            reply = stub.Reserve(self._request(rid), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            self.in_doubt[rid] = "reserve"
            return False
        assert reply.reservation.state == HELD, reply
        self.acked[rid] = HELD
        return True

    def commit(self, stub: reservation_pb2_grpc.ReservationServiceStub, rid: str) -> bool:
        try:
            reply = stub.Commit(
                reservation_pb2.CommitRequest(reservation_id=rid), timeout=RPC_TIMEOUT_S
            )
        except grpc.RpcError:
            self.in_doubt[rid] = "commit"
            return False
        assert reply.reservation.state == COMMITTED, reply
        self.acked[rid] = COMMITTED
        return True

    def resolve(self, stub: reservation_pb2_grpc.ReservationServiceStub) -> None:
        """After a restart, retry what was in doubt with the same ids (idempotent)."""
        for rid, what in list(self.in_doubt.items()):
            if what == "reserve":
                reply = stub.Reserve(self._request(rid), timeout=RPC_TIMEOUT_S)
                assert reply.reservation.state in LIVE, reply
                self.acked[rid] = reply.reservation.state
            else:
                reply = stub.Commit(
                    reservation_pb2.CommitRequest(reservation_id=rid), timeout=RPC_TIMEOUT_S
                )
                assert reply.reservation.state == COMMITTED, reply
                self.acked[rid] = COMMITTED
            del self.in_doubt[rid]


def _setup(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        supply = supply_pb2_grpc.SupplyServiceStub(channel)
        supply.UpsertNodes(
            supply_pb2.UpsertNodesRequest(
                request_id="crash-nodes",
                nodes=[
                    types_pb2.Node(
                        node_id=NODE, type=types_pb2.NODE_TYPE_DC, ship=True, enabled=True
                    )
                ],
            ),
            timeout=RPC_TIMEOUT_S,
        )
        counts = [
            supply_pb2.StockCount(sku=s, node_id=NODE, on_hand=ON_HAND, source_seq=1) for s in SKUS
        ]
        reply = supply.SetOnHand(
            supply_pb2.SetOnHandRequest(request_id="crash-stock", counts=counts),
            timeout=RPC_TIMEOUT_S,
        )
        assert all(r.status == types_pb2.LINE_STATUS_OK for r in reply.results), reply


def _check(target: str, clients: list[Client], rng: random.Random) -> None:
    """The invariants, once every doubt is resolved (so every id tried is acknowledged)."""
    with grpc.insecure_channel(target) as channel:
        stub = reservation_pb2_grpc.ReservationServiceStub(channel)
        availability = availability_pb2_grpc.AvailabilityServiceStub(channel)
        held: dict[str, int] = dict.fromkeys(SKUS, 0)
        committed: dict[str, int] = dict.fromkeys(SKUS, 0)
        sample: list[tuple[str, int]] = []
        for client in clients:
            client.resolve(stub)
            assert set(client.acked) == set(client.sku)
            for rid, state in client.acked.items():
                (committed if state == COMMITTED else held)[client.sku[rid]] += 1
            sample += rng.sample(sorted(client.acked.items()), min(50, len(client.acked)))
        for rid, acked in sample:
            reply = stub.GetReservation(
                reservation_pb2.GetReservationRequest(reservation_id=rid), timeout=RPC_TIMEOUT_S
            )
            assert reply.reservation.state == acked, (rid, reply.reservation.state, acked)
        queries = [availability_pb2.AvailabilityQuery(sku=s, node_id=NODE) for s in SKUS]
        reply = availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(queries=queries), timeout=RPC_TIMEOUT_S
        )
        for sku, result in zip(SKUS, reply.results, strict=True):
            q = result.quantities
            # Exact: a reservation lost or applied twice would show here.
            assert q.on_hand == ON_HAND, (sku, q)
            assert q.reserved == held[sku] and q.allocated == committed[sku], (
                sku,
                q,
                held,
                committed,
            )
            assert q.available == ON_HAND - q.reserved - q.allocated >= 0, (sku, q)
            assert q.unavailable == 0, (sku, q)


def _crash_rounds(
    tmp_path: Path, args: list[str], seed: int, between: Callable[[int], None] | None = None
) -> None:
    rng = random.Random(seed)
    server = ServerProcess(tmp_path / "data", args=["--snapshot-journal-entries", "40", *args])
    clients = [Client(f"c{i}", seed * 100 + i) for i in range(CLIENTS)]
    try:
        server.start()
        _setup(server.target)
        for round_index in range(ROUNDS):
            stop = threading.Event()
            threads = [
                threading.Thread(target=c.run, args=(server.target, stop), daemon=True)
                for c in clients
            ]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, TRAFFIC_S_MAX))
            if between is not None:
                between(round_index)
            server.kill()  # SIGKILL mid-traffic
            stop.set()
            for t in threads:
                t.join(timeout=RPC_TIMEOUT_S + 5)
                assert not t.is_alive()
            server.start()
            _check(server.target, clients, rng)
        assert sum(len(c.acked) for c in clients) > 50
        assert server.stop() == 0  # graceful: drains and exits 0
    finally:
        server.kill()


def test_crash_file_snapshots(tmp_path: Path) -> None:
    _crash_rounds(tmp_path, [], seed=1)


def test_crash_redis_snapshots(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis_server:
        _crash_rounds(tmp_path, ["--redis", redis_server.url], seed=2)


def test_crash_redis_killed_and_restarted(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis_server:

        def chaos(round_index: int) -> None:
            # Odd rounds: Redis dies mid-run and comes back empty before the server is killed;
            # even rounds: it is still down while the server restarts (journal-only recovery).
            if redis_server.running:
                redis_server.kill()
            if round_index % 2:
                redis_server.start()

        _crash_rounds(tmp_path, ["--redis", redis_server.url], seed=3, between=chaos)
