"""The omnistock gRPC front (the SAME servicers, proto and server options) over a peer backend.

`PeerApp` is what the servicers see as `app`:

- `app.sequencer.submit(command)` / `submit_many(commands)` forward `Reserve`, `Commit` and
  `Release` to the backend's async methods (other commands are refused: peers have no supply
  or sourcing); `journal_seq` is 0. A `ReserveColumns` (what `ReserveBatch` and
  `StreamReserve` send) is ONE `backend.reserve_columns` call (or `reserve_many` of its
  `to_reserves()`): one round trip to the peer; so is a `submit_many` of reserves only.
- `app.ledger` answers the reads the AvailabilityService makes (`sku_id(s)`, `node_id(s)`,
  `availability_ids`, `availability_one`) by asking the backend *synchronously* (a blocking
  redis-py / psycopg connection): the servicer's reads are synchronous, so a peer read holds the
  event loop for one round trip — the cost of putting these designs behind a Python front that
  reads them.
  Node- or group-less queries, `promise_by_ms`, sourcing and reservation reads are not served.

`python -m bench.peers.front --backend redis-lua --url redis://127.0.0.1:P/0 --port-file F`
(or `--backend postgres --conninfo "…" [--durability sync|async|none]`) serves on a free loopback
port, writes it to F, and reports SERVING; SIGTERM stops it. Loading stock is the caller's job
(`backend.load`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers import columns_result
from engine.codes import LineStatus
from engine.commands import Commit, Release, Reserve, ReserveColumns
from engine.errors import Code, EngineError, Rejection
from server import GRPC_EXPERIMENTS_DEFAULT  # noqa: F401  (the server's gRPC settings)

__all__ = ["PeerApp", "serve_front", "start_front"]

_AVAILABLE = 6
COLUMNS_MISFIT = Rejection(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", "line_counts: the columns "
                           "do not fit together")  # fmt: skip
UNSERVED = Rejection(Code.FAILED_PRECONDITION, "NOT_SERVED", "a peer backend serves only "
                     "Reserve, Commit, Release and point availability")  # fmt: skip


class _Names:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i


class PeerLedger:
    """The read side the AvailabilityService uses, over a blocking backend read."""

    def __init__(self, read: Any) -> None:
        self._read = read  # (sku, [node_id, ...]) -> [available | None, ...]
        self.sku_id = _Names()
        self.node_id = _Names()

    def sku_ids(self, skus: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.sku_id, skus), np.int64, len(skus))

    def node_ids(self, node_ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.node_id, node_ids), np.int64, len(node_ids))

    def availability_ids(self, sku_ids: np.ndarray, node_ids: np.ndarray) -> tuple[Any, Any]:
        n = int(sku_ids.shape[0])
        statuses = np.full(n, int(LineStatus.UNKNOWN_SKU), np.int8)
        qty = np.zeros((n, 7), np.int64)
        skus, nodes = self.sku_id.names, self.node_id.names
        by_sku: dict[int, list[int]] = {}
        for i, s in enumerate(sku_ids.tolist()):
            by_sku.setdefault(s, []).append(i)
        node_list = node_ids.tolist()
        for s, rows in by_sku.items():
            values = self._read(skus[s], [nodes[node_list[i]] for i in rows])
            for i, v in zip(rows, values, strict=True):
                if v is not None:
                    statuses[i] = int(LineStatus.OK)
                    qty[i, 0] = qty[i, _AVAILABLE] = v
        return statuses, qty

    def availability_one(self, sku_id: int, node_id: int, out: np.ndarray) -> int:
        """`availability_ids` of one query (the servicer's one-query path): its status, and its
        quantities in out[0]."""
        one = np.array([sku_id], np.int64), np.array([node_id], np.int64)
        statuses, qty = self.availability_ids(*one)
        out[0] = qty[0]
        return int(statuses[0])

    def availability_at(self, sku: str, node_id: str, out: np.ndarray) -> int:
        return self.availability_one(self.sku_id(sku), self.node_id(node_id), out)

    def availability_group_ids(self, sku_ids: np.ndarray, groups: np.ndarray) -> tuple[Any, Any]:
        raise EngineError(UNSERVED)

    def available_by_date(self, *args: Any) -> int:  # a query's promise_by_ms
        raise EngineError(UNSERVED)

    def group_id(self, name: str) -> int:
        raise EngineError(UNSERVED)

    def get_reservation(self, reservation_id: str) -> Any:
        raise EngineError(UNSERVED)


class PeerSequencer:
    journal_seq = 0

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    async def submit(self, command: Any, timeout_s: float | None = None) -> Any:
        b = self.backend
        if isinstance(command, Reserve):
            return await b.reserve(command)
        if isinstance(command, ReserveColumns):  # what ReserveBatch and StreamReserve send
            if not command.consistent():
                return COLUMNS_MISFIT
            if hasattr(b, "reserve_columns"):
                return await b.reserve_columns(command)
            outcomes = await b.reserve_many(command.to_reserves())
            return columns_result(outcomes, command.counts())
        if isinstance(command, Commit):
            return await b.commit(command)
        if isinstance(command, Release):
            return await b.release(command)
        return UNSERVED

    async def submit_many(self, commands: Sequence[Any], timeout_s: float | None = None) -> Any:
        if commands and all(type(c) is Reserve for c in commands):
            return await self.backend.reserve_many(commands)
        return await asyncio.gather(*(self.submit(c) for c in commands))


class PeerApp:
    def __init__(self, backend: Any, read: Any, config: Any) -> None:
        self.config = config
        self.ledger = PeerLedger(read)
        self.sequencer = PeerSequencer(backend)
        self.ready = True


def _redis(url: str, prefix: str = "os:") -> tuple[Any, Any, Any]:
    import redis

    from bench.peers.redis_lua import AVAILABILITY_LUA, RedisLuaBackend

    backend = RedisLuaBackend(url, prefix)
    sync = redis.Redis.from_url(url)
    sha = sync.script_load(AVAILABILITY_LUA)

    def read(sku: str, node_ids: list[str]) -> list[int | None]:
        reply = sync.evalsha(sha, 0, backend.prefix, 0, sku, *node_ids)
        return [None if v is None else max(0, int(v)) for v in reply]

    return backend, read, sync.close


def _postgres(conninfo: str, pool_size: int, durability: str) -> tuple[Any, Any, Any]:
    import psycopg

    from bench.peers.postgres import PostgresBackend

    backend = PostgresBackend(conninfo, pool_size, synchronous_commit=durability == "sync")
    conn = psycopg.connect(conninfo, autocommit=True)

    def read(sku: str, node_ids: list[str]) -> list[int | None]:
        rows = conn.execute(
            "SELECT node_id, on_hand - held FROM bench_positions WHERE sku = %s AND node_id = "
            "ANY(%s)",
            (sku, node_ids),
        ).fetchall()
        found = {n: max(0, int(a)) for n, a in rows}
        return [found.get(n) for n in node_ids]

    return backend, read, conn.close


async def start_front(backend: Any, read: Any) -> tuple[Any, int]:
    """The omnistock servicers over `backend`, started on a free loopback port, health SERVING.
    Returns (grpc.aio server, port)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from server.config import ServerConfig
    from server.interceptors import build_handlers
    from server.metrics import Metrics
    from server.servicers import add_servicers

    config = ServerConfig()
    app = PeerApp(backend, read, config)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.message_bytes_max),
            ("grpc.max_send_message_length", config.message_bytes_max),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.concurrent_rpcs_max,
    )
    # The same handler table as `server.app.create_server`: metrics wrapped once per method.
    handlers = build_handlers(config, Metrics())
    add_servicers(handlers, app)
    hs = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, handlers)
    handlers.install(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await hs.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def serve_front(args: argparse.Namespace) -> None:
    if args.backend == "redis-lua":
        backend, read, close_read = _redis(args.url)
    else:
        backend, read, close_read = _postgres(args.conninfo, args.pool_size, args.durability)
        await backend.open()
    server, port = await start_front(backend, read)
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(args.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 3_600)  # bounded
    await server.stop(1.0)
    await backend.close()
    close_read()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.peers.front")
    ap.add_argument("--backend", choices=("redis-lua", "postgres"), required=True)
    ap.add_argument("--url", default="")
    ap.add_argument("--conninfo", default="")
    ap.add_argument("--pool-size", type=int, default=8)
    ap.add_argument("--durability", choices=("sync", "async", "none"), default="sync",
                    help="postgres: synchronous_commit on for sync, off otherwise (redis-lua: "
                         "set by the redis-server the caller started)")  # fmt: skip
    ap.add_argument("--port-file", required=True)
    import uvloop

    uvloop.run(serve_front(ap.parse_args()))


if __name__ == "__main__":
    main()
