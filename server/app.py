"""The server's lifecycle: build → bind → recover and warm up → SERVING → drain → final snapshot.

`create_server(config)` builds the grpc.aio server (limits, metrics/auth, servicers, health,
reflection) and binds it; nothing is recovered yet and health says NOT_SERVING. `App.start()`
recovers the ledger (snapshot + journal), compiles the numba kernels, starts the sequencer and
flips health to SERVING. `App.stop()` is the graceful shutdown. `serve(config)` runs all of it on
uvloop with signal handling: the first SIGTERM/SIGINT drains and exits 0, a second one exits now.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine.codes import AdjustReason, MoveKind, NodeType
from engine.commands import (
    Adjust,
    Adjustment,
    Batch,
    Commit,
    Extend,
    Fulfil,
    GroupSpec,
    Line,
    Move,
    MoveLine,
    NodeSpec,
    Release,
    Reserve,
    ReserveColumns,
    SetBackorderLimit,
    SetOnHand,
    SetSafetyStock,
    Setting,
    StockCount,
    TransferCancel,
    TransferReceive,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
)
from engine.ids import IdTable
from engine.ledger import Ledger
from engine.persistence import RedisSnapshotStore
from engine.persistence.journal import check_records, encode_record
from engine.replay import replay
from server.config import ServerConfig
from server.durability import (
    Recovered,
    SnapshotResult,
    Snapshotter,
    StartupError,
    recover,
    redis_keeps_acknowledged_writes,
)
from server.events import EventHub
from server.metrics import Metrics
from server.sequencer import NotReady, Sequencer
from server.wire import encode_one_result, result_buffer

__all__ = ["App", "ConfigError", "VERSION", "create_server", "serve", "warm_up"]

log = logging.getLogger("omnistock.server")

VERSION = "0.1.0"
EXIT_OK = 0
EXIT_FORCED = 1
EXIT_STARTUP = 2


class ConfigError(Exception):
    """The configuration cannot be served as given (the message says which setting)."""


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class App:
    """Owns the ledger, the sequencer (single writer), the journal and the snapshotter."""

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.health = health.aio.HealthServicer()
        self.services: list[str] = []  # full names, filled by create_server
        self.started_at_ms = int(time.time() * 1000)
        self.recovered: Recovered | None = None
        self.snapshotter: Snapshotter | None = None
        self._sequencer: Sequencer | None = None
        self._ledger: Ledger | None = None
        self._not_ready_message = "the server is still recovering"  # why `_ledger` is None
        self._ready = False
        self._stopped = False
        self.publisher: Any = None  # server.streams.StreamPublisher with --redis (issue 6)
        # Stock events for WatchAvailability (and `publish_hooks` for other publishers).
        self.events = EventHub()

    # --- what the servicers use --------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def ledger(self) -> Ledger:
        """The live ledger, for reads on the event loop (raises NotReady while recovering)."""
        if self._ledger is None:
            raise NotReady(self._not_ready_message)
        return self._ledger

    @property
    def sequencer(self) -> Sequencer:
        if self._sequencer is None:
            raise NotReady("the server is still recovering")
        return self._sequencer

    async def snapshot_now(self) -> SnapshotResult:
        """Take a snapshot now (AdminService.Snapshot); raises SnapshotStoreError on failure."""
        if self.snapshotter is None:
            raise NotReady("the server is still recovering")
        return await self.snapshotter.snapshot_now()

    def stats(self) -> dict[str, Any]:
        """Fields of `omnistock.v1.GetStatsResponse`, by name."""
        out: dict[str, Any] = {
            "durability": self.config.durability,
            "uptime_ms": int(time.time() * 1000) - self.started_at_ms,
            "version": VERSION,
            "role": 1,  # SERVER_ROLE_PRIMARY
        }
        if self._ledger is not None:
            ls = self._ledger.stats()
            out.update(
                positions=ls["positions"],
                skus=ls["skus"],
                nodes=ls["nodes"],
                groups=ls["groups"],
                reservations_active=ls["reservations_held"],
            )
        if self._sequencer is not None:
            out["journal_seq"] = self._sequencer.journal_seq
        if self.snapshotter is not None:
            ss = self.snapshotter.stats()
            out.update(
                last_snapshot_at_ms=ss.last_at_ms,
                last_snapshot_bytes=ss.last_bytes,
                last_snapshot_journal_seq=ss.last_journal_seq,
                snapshot_store=ss.store,
                snapshot_errors=ss.errors,
            )
        return out

    def details(self) -> dict[str, Any]:
        """Everything `stats()` has plus sequencer, snapshotter and journal internals."""
        out = {"stats": self.stats(), "ready": self._ready}
        if self._sequencer is not None:
            out["sequencer"] = self._sequencer.stats()
            out["journal"] = self._sequencer.journal.stats()
        if self.snapshotter is not None:
            out["snapshotter"] = self.snapshotter.stats()
        if self.publisher is not None:
            out["publisher"] = self.publisher.stats()
        out["events"] = self.events.stats()
        if self.recovered is not None:
            r = self.recovered
            out["recovery"] = {
                "snapshot_journal_seq": r.snapshot_journal_seq,
                "replayed_entries": r.replayed_entries,
                "seconds": r.seconds,
            }
        return out

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover, warm the kernels, start the writer, then report SERVING."""
        config = self.config
        started = time.perf_counter()
        # Both are CPU- and I/O-bound; in a thread the loop keeps answering health checks.
        await asyncio.to_thread(warm_up)
        warm_s = time.perf_counter() - started
        recovered = await asyncio.to_thread(recover, config)
        await asyncio.to_thread(recovered.ledger.reserve_room, config.holds_capacity)
        # The recovered ledger's objects live as long as the process: out of the cyclic
        # collector's generations, so a full collection while serving does not walk them
        # (docs/server.md, "Process settings").
        gc.collect()
        gc.freeze()
        self.recovered = recovered
        trim = True
        if isinstance(recovered.store, RedisSnapshotStore):
            trim = await asyncio.to_thread(redis_keeps_acknowledged_writes, config.redis_url)
            if not trim:
                log.warning(
                    "redis does not fsync every write (appendonly yes + appendfsync always); "
                    "the journal is never trimmed, so a Redis restart cannot lose state"
                )
        self.snapshotter = Snapshotter(
            recovered.store,
            recovered.journal,
            interval_s=config.snapshot_interval_s,
            journal_entries=config.snapshot_journal_entries,
            last_journal_seq=recovered.snapshot_journal_seq,
            last_at_ms=recovered.snapshot_at_ms,
            last_bytes=recovered.snapshot_bytes,
            trim=trim,
            metrics=self.metrics,
        )
        self._ledger = recovered.ledger
        self._sequencer = Sequencer(
            recovered.ledger,
            recovered.journal,
            queue_commands_max=config.queue_commands_max,
            metrics=self.metrics,
            snapshotter=self.snapshotter,
            on_failure=self._on_writer_failure,
        )
        self.snapshotter.wake = self._sequencer.wake
        self.events.start_at(recovered.ledger.events_seq)
        self._sequencer.events_hook = self.events.publish
        if config.redis_url:
            from server.streams import attach_publisher

            self.publisher = attach_publisher(self)
        self._sequencer.start()
        for service in ("", *self.services):
            await self.health.set(service, _SERVING)
        self._ready = True
        log.info(
            "serving: journal at seq %d, kernels warmed in %.2f s, recovery %.2f s",
            recovered.journal.last_seq,
            warm_s,
            recovered.seconds,
        )

    def _on_writer_failure(self, exc: BaseException) -> None:
        # The state may be half applied: stop advertising this process to load balancers.
        self._ready = False
        task = asyncio.get_running_loop().create_task(self.health.enter_graceful_shutdown())
        task.add_done_callback(lambda t: t.exception())

    async def stop(
        self, server: grpc.aio.Server | None = None, grace_s: float | None = None
    ) -> None:
        """Graceful shutdown: NOT_SERVING, drain RPCs, drain the queue, final snapshot, close."""
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        self.events.close()  # watchers end now instead of holding the drain for `grace`
        if server is not None:
            await server.stop(grace)
        if self._sequencer is not None:
            await self._sequencer.close()
            if self.publisher is not None:
                await self.publisher.close()
            if self.snapshotter is not None and self._sequencer.failed is None:
                try:
                    await self.snapshotter.final(self.ledger)
                except Exception as exc:
                    log.error("final snapshot failed (the journal still has everything): %s", exc)
        if self.recovered is not None:
            self.recovered.journal.close()
            close = getattr(self.recovered.store, "close", None)
            if close is not None:
                close()
        log.info("stopped")


def warm_up() -> None:
    """Run every command kind and read once on a throwaway ledger, so numba compiles (or loads
    from its cache) every kernel before the first real request."""
    ledger = Ledger(positions=16, skus=16, nodes=4, reservations=16)
    now = 1_000_000
    nodes = (
        NodeSpec("w1", NodeType.DC, 1.0, 2.0, pickup=True),
        NodeSpec("w2", NodeType.STORE, 1.5, 2.5),
    )
    for cmd in (
        UpsertNodes(nodes),
        UpsertGroups((GroupSpec("g", ("w1", "w2"), buffer_units=1, buffer_pct=5.0),)),
        SetOnHand("w-soh", (StockCount("s", "w1", 100, 1), StockCount("s", "w2", 50, 1))),
        Adjust("w-adj", (Adjustment("s", "w1", 5, AdjustReason.RECEIPT),)),
        Move("w-mv", (MoveLine("s", "w1", 1, MoveKind.TO_UNAVAILABLE),)),
        SetSafetyStock("w-ss", (Setting("s", "w2", 2),)),
        SetBackorderLimit("w-bo", (Setting("s", "w2", 0),)),
        Reserve("r1", (Line("s", "w1", 2),), 5_000),
        Reserve("r2", (Line("s", "w2", 1),), 5_000, group_id="g"),
        Reserve("r3", (Line("s", "w1", 1),), 1_000),
        Reserve("r4", (Line("s", "w1", 1_000),), 1_000, allow_partial=True),
        Commit("r1"),
        Release("r2"),
        Extend("r3", 2_000),
        Fulfil("r1", (Line("s", "w1", 1),), "w-f"),
        Fulfil("r1"),
        TransferShip("t1", "s", "w1", "w2", 3),
        TransferReceive("t1", 1),
        TransferShip("t2", "s", "w1", "w2", 1),
        TransferCancel("t2"),
    ):
        ledger.apply(now, (cmd,))
    # Runs of one kind go to one kernel call; warm those paths too.
    ledger.apply(now, (Reserve("r5", (Line("s", "w1", 1),), 1_000), Reserve("r6", (), 1_000)))
    ledger.apply(now, (Commit("r5"), Commit("zz")))
    # A ReserveColumns takes its ids in bulk (engine/ids.py); a growing id table rehashes.
    columns = ReserveColumns.build(["c1", "c2"], [1, 1], ["s", "s"], ["w1", "w1"], [1, 1], 1_000)
    ledger.apply(now, (columns,))
    IdTable([]).reserve(4_096)
    ledger.availability([("s", "w1", None), ("s", None, "g"), ("s", None, None), ("x", "q", None)])
    qty = np.zeros((1, 7), np.int64)
    status = ledger.availability_one(ledger.sku_id("s"), ledger.node_id("w1"), qty)
    encode_one_result(b"\n\x01s", status, qty, result_buffer())  # its answer's bytes
    # Sourcing: a plain plan, a nearby lookup, and source-and-reserve inside a batch.
    ledger.find_nearby(1.0, 2.0, 500.0, [("s", 1)])
    ledger.source_order([("s", 1)], lat=1.0, lon=2.0)
    ledger.source_reserve("r7", [("s", 1)], 5_000, now, lat=1.0, lon=2.0)
    ledger.tick(now + 10_000)
    arrays, meta = ledger.export_state()
    Ledger.from_state(arrays, meta).tick(now + 20_000)
    # What recovery runs: the journal's record check (engine/kernels/records.py) on every record,
    # and the group replay of plain Reserve / Commit / Release entries (engine/replay.py), whose
    # kernel would otherwise be compiled (seconds) inside the first recovery with a journal.
    assert check_records(encode_record(1, b"w")) == 1
    replay(
        Ledger.from_state(arrays, meta),
        [
            Batch(now + 1, (Reserve("p1", (Line("s", "w1", 1),), 1_000),)),
            Batch(now + 2, (Commit("p1"),)),
            Batch(now + 3, (Reserve("p2", (Line("s", "w1", 1),), 1_000),)),
            Batch(now + 4, (Release("p2"),)),
        ],
    )


# --- building and binding --------------------------------------------------------------------


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen {listen!r}: expected HOST:PORT (port 0 = any free port)")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not (config.tls_cert or config.tls_key or config.tls_client_ca):
        return None
    if not (config.tls_cert and config.tls_key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    try:
        cert = Path(config.tls_cert).read_bytes()
        key = Path(config.tls_key).read_bytes()
        ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


async def create_server(config: ServerConfig) -> tuple[grpc.aio.Server, App, int]:
    """Build and bind the server (not started; health NOT_SERVING). Returns the bound port.

    Then `await server.start()` and `await app.start()`; or use `start_server`.
    """
    from server.interceptors import build_handlers
    from server.servicers import add_servicers

    host, port = _split_listen(config.listen)
    if not config.tokens_file and not _is_loopback(host):
        raise ConfigError(
            f"listen {config.listen!r}: auth is off (no --tokens), so only a loopback address "
            "(127.0.0.1, ::1, localhost) may be bound"
        )
    credentials = _credentials(config)
    metrics = Metrics()
    if config.replica_of:
        from server.replica import ReplicaApp

        app = ReplicaApp(config, metrics)
    else:
        app = App(config, metrics)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.message_bytes_max),
            ("grpc.max_send_message_length", config.message_bytes_max),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.concurrent_rpcs_max,
    )
    # Metrics and auth wrap each handler once here, not per call (see server.interceptors).
    handlers = build_handlers(config, metrics)
    app.services = list(add_servicers(handlers, app))
    health_pb2_grpc.add_HealthServicer_to_server(app.health, handlers)
    for service in ("", *app.services):
        await app.health.set(service, _NOT_SERVING)
    reflection.enable_server_reflection(
        [*app.services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        handlers,
    )  # fmt: skip
    handlers.install(server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"cannot bind {config.listen}: {exc}") from None
    if bound == 0:
        raise ConfigError(f"cannot bind {config.listen} (address in use or not available)")
    return server, app, bound


async def start_server(config: ServerConfig) -> tuple[grpc.aio.Server, App, int]:
    """create_server + start + recovery: ready to serve on return (for tests and embedding)."""
    server, app, port = await create_server(config)
    await server.start()
    try:
        await app.start()
    except BaseException:
        await server.stop(None)
        raise
    return server, app, port


# --- serve -------------------------------------------------------------------------------------


async def _serve(config: ServerConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s: draining (a second signal exits now)", signal.Signals(signum).name)
            stop.set()
        else:
            log.warning("second signal: exiting now; the journal has every acknowledged write")
            logging.shutdown()
            os._exit(EXIT_FORCED)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        server, app, port = await create_server(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP
    await server.start()
    if config.port_file:
        tmp = Path(config.port_file + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(config.port_file)
    log.info(
        "listening on %s (port %d), data dir %s, durability %s",
        config.listen,
        port,
        config.data_dir,
        config.durability,
    )
    if config.metrics_listen:
        try:
            app.metrics.start_http(config.metrics_listen)
        except (OSError, ValueError) as exc:
            log.error("metrics listen %s: %s", config.metrics_listen, exc)
            await server.stop(None)
            return EXIT_STARTUP
    starting = loop.create_task(app.start())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        await asyncio.wait({starting})  # recovery runs in a thread; let it finish cleanly
    failure = starting.exception()
    if failure is not None:
        stopping.cancel()
        await server.stop(None)
        if isinstance(failure, StartupError):
            log.error("%s", failure)
            return EXIT_STARTUP
        raise failure
    await stopping
    await app.stop(server)
    return EXIT_OK


def serve(config: ServerConfig) -> int:
    """Run the server until a signal; the process exit code."""
    import uvloop

    code = uvloop.run(_serve(config))
    logging.shutdown()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve(ServerConfig()))
