"""Read replicas: `omnistock serve --replica-of redis://…` (issue 6 part 4).

A replica owns a `Ledger` it never writes to itself. At start it loads the newest snapshot the
primary saved in Redis (`RedisSnapshotStore`, same `--redis-prefix`), then tails the journal stream
`{prefix}:journal` (see `server/streams.py`) from the snapshot's journal seq with `XREAD BLOCK`,
applying each entry with the same `Ledger.apply_batch` the primary used. Batches carry their own
time and the engine is deterministic, so the replica's state after entry N is the primary's state
after entry N, byte for byte.

Every read RPC is served from that ledger by the ordinary servicers (they read `app.ledger`);
every write RPC goes to `app.sequencer`, which on a replica is `ReadOnlySequencer`: its submits
raise `ReadOnlyReplica` (FAILED_PRECONDITION / READ_ONLY_REPLICA, metadata `primary`).

Gaps: the stream is bounded (`MAXLEN ~`) and Redis may lose it. An entry whose seq is not the
next one (or a failed decode/apply, after which reads answer UNAVAILABLE until the reload, as the
state may be half applied) makes the replica reload the newest snapshot, provided the
stream continues from it (its first entry ≤ snapshot seq + 1); otherwise the replica asks the
primary for a fresh snapshot (`SET {prefix}:snap:wanted`) and retries, serving its last state
meanwhile with a growing lag. `GetStats` reports role REPLICA, `replica_lag_entries` (stream head
seen − applied) and `replica_lag_ms` (0 when caught up; else replica clock − the applied batch's
`now_ms`, or − the last contact with Redis while it is unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis
import redis.asyncio as aioredis

from engine.commands import Batch, Command
from engine.ledger import Ledger
from engine.persistence import RedisSnapshotStore
from engine.persistence.snapshot import LoadedSnapshot, SnapshotStoreError
from engine.state import ArraysWithRoom
from server.durability import StartupError
from server.sequencer import SequencerError
from server.streams import entry_seq, journal_key

__all__ = ["Follower", "ReadOnlyReplica", "ReadOnlySequencer", "ReplicaApp", "public_url"]

log = logging.getLogger("omnistock.replica")

READ_COUNT = 1_000  # stream entries per XREAD
BLOCK_MS = 1_000
RETRY_S_MIN = 0.05
RETRY_S_MAX = 2.0
SNAPSHOT_WANTED_TTL_S = 60

# What XRANGE / XREAD return on this client (RESP2, bytes); redis-py's annotations are looser.
_Entry = tuple[bytes, dict[bytes, bytes]]
_XReadReply = list[tuple[bytes, list[_Entry]]]


def public_url(url: str) -> str:
    """The URL without credentials (for messages and stats)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ReadOnlyReplica(SequencerError):
    code = "FAILED_PRECONDITION"
    reason = "READ_ONLY_REPLICA"


class _NotYet(Exception):
    """No usable base yet (no snapshot, or the stream does not continue from it)."""


_decode_batch = msgspec.msgpack.Decoder(Batch).decode


class Follower:
    """Loads a base snapshot and applies the journal stream after it; owns the replica ledger."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        on_ledger: Callable[[Ledger | None], None],
        on_events: Callable[[Any], None] | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._url = url
        self._prefix = prefix
        self.key = journal_key(prefix)
        self._on_ledger = on_ledger
        self.on_events = on_events  # the event hub's publish, for WatchAvailability
        self._clock_ms = clock_ms
        self.store = RedisSnapshotStore(url, prefix=prefix)
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=BLOCK_MS / 1000.0 + 5.0
        )
        self.ledger: Ledger | None = None
        self.applied_seq = 0
        self.head_seq = 0
        self.applied_now_ms = 0
        self.connected = False
        self.last_contact_ms = 0
        self.snapshot_seq = 0
        self.snapshot_at_ms = 0
        self.snapshot_bytes = 0
        self.reloads = 0
        self.gaps = 0
        self.errors = 0
        self.event_errors = 0  # event batches the hub refused (a bug; the entries were applied)
        self.applied_entries = 0
        self._need_reload = True
        self._gap_next = 0  # the entry seen after a gap in the stream (0: none)
        self._bad_seq = 0  # the entry that last failed to decode or apply ...
        self.bad_repeats = 0  # ... and how many times in a row (backs off the reloads)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._applied_event = asyncio.Event()

    # --- lag -----------------------------------------------------------------------------

    def lag_entries(self) -> int:
        return max(0, self.head_seq - self.applied_seq)

    def lag_ms(self) -> float:
        now = self._clock_ms()
        if not self.connected:
            return float(max(0, now - self.last_contact_ms)) if self.last_contact_ms else 0.0
        if self.lag_entries() == 0 and not self._need_reload:
            return 0.0
        return float(max(0, now - self.applied_now_ms)) if self.applied_now_ms else 0.0

    # --- base ------------------------------------------------------------------------------

    async def _stream_bounds(self) -> tuple[int, int]:
        """(first seq, last seq) in the stream; (0, 0) if it is empty or missing."""
        first = cast(list[_Entry], await self._client.xrange(self.key, count=1))
        last = cast(list[_Entry], await self._client.xrevrange(self.key, count=1))
        if not first or not last:
            return 0, 0
        return entry_seq(first[0][0]), entry_seq(last[0][0])

    async def _want_snapshot(self, after_seq: int) -> None:
        """Ask the primary (its stream publisher polls this key) for a snapshot."""
        await self._client.set(
            f"{self._prefix}:snap:wanted", str(after_seq), ex=SNAPSHOT_WANTED_TTL_S
        )

    async def _reload(self) -> None:
        """Load the newest snapshot the stream continues from; raise _NotYet if there is none."""
        first, last = await self._stream_bounds()
        try:
            room = ArraysWithRoom()  # read into the arrays the ledger will keep
            snap: LoadedSnapshot | None = await asyncio.to_thread(self.store.load_latest, room)
        except SnapshotStoreError as exc:
            if isinstance(exc.__cause__, redis.RedisError | OSError):
                raise exc.__cause__ from None
            raise _NotYet(str(exc)) from None
        # A base must reach the stream's first entry, and past a gap found inside it.
        need = max(first - 1 if first else 0, self._gap_next - 1)
        if snap is None:
            if first == 1 and not self._gap_next:  # the stream still holds the whole history
                ledger = Ledger()
                self._install(ledger, 0, 0, 0)
                return
            # Nothing to build on: replaying from an empty ledger would not reach the stream's
            # first entry, or would only hit the gap inside it again.
            await self._want_snapshot(need)
            gap = f", with a gap before seq {self._gap_next}" if self._gap_next else ""
            raise _NotYet(f"no snapshot in Redis and the stream starts at seq {first}{gap}")
        if snap.journal_seq < need:
            await self._want_snapshot(need)
            raise _NotYet(
                f"newest snapshot is at seq {snap.journal_seq} but the stream continues only "
                f"from seq {need + 1}; asked the primary for a newer snapshot"
            )
        if (
            self.ledger is not None
            and snap.journal_seq <= self.applied_seq
            and (not first or first <= self.applied_seq + 1)
            and self._gap_next <= self.applied_seq + 1
        ):
            # What we have still joins the stream; no need to reload (e.g. a decode hiccup).
            self._need_reload = False
            return
        ledger = await asyncio.to_thread(
            functools.partial(Ledger.from_state, snap.arrays, snap.meta, room=room.arrays)
        )
        self.snapshot_bytes = snap.bytes
        self._install(ledger, snap.journal_seq, snap.created_at_ms, snap.created_at_ms)
        self.head_seq = max(self.head_seq, last)

    def _install(self, ledger: Ledger, seq: int, at_ms: int, now_ms: int) -> None:
        self.ledger = ledger
        self.applied_seq = seq
        self.applied_now_ms = now_ms
        self.snapshot_seq = seq
        self.snapshot_at_ms = at_ms
        self.reloads += 1
        self._need_reload = False
        self._gap_next = 0
        self._applied_event.set()  # a reload moves applied_seq too (wait_applied re-checks)
        self._on_ledger(ledger)
        log.info("replica base: snapshot at seq %d from %s", seq, self.store.describe())

    async def bootstrap(self, wait_s: float) -> None:
        """Establish the base, retrying until `wait_s` passes (StartupError then)."""
        deadline = time.monotonic() + wait_s
        delay = RETRY_S_MIN
        while True:
            try:
                await self._reload()
                self.connected = True
                self.last_contact_ms = self._clock_ms()
                _, self.head_seq = await self._stream_bounds()
                self.head_seq = max(self.head_seq, self.applied_seq)
                return
            except (_NotYet, redis.RedisError, OSError) as exc:
                if time.monotonic() + delay > deadline:
                    raise StartupError(
                        f"replica of {public_url(self._url)}: no usable snapshot/stream after "
                        f"{wait_s:.0f} s ({exc}); refusing to start"
                    ) from None
                log.warning("replica: waiting for a base (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_S_MAX)

    # --- tailing ---------------------------------------------------------------------------

    def start(self) -> None:
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replica-follower")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # closing a broken connection
            await self._client.aclose()
        self.store.close()

    async def wait_applied(self, seq: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.applied_seq < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._applied_event.clear()
            try:
                await asyncio.wait_for(self._applied_event.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def _run(self) -> None:
        delay = RETRY_S_MIN
        while not self._closing:
            try:
                if self._need_reload:
                    await self._reload()
                reply = cast(
                    _XReadReply,
                    await self._client.xread(
                        {self.key: f"{self.applied_seq}-0"}, count=READ_COUNT, block=BLOCK_MS
                    ),
                )
            except _NotYet as exc:
                log.warning("replica: cannot reload yet (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_S_MAX)
                continue
            except (redis.RedisError, OSError) as exc:
                self.errors += 1
                if self.connected:
                    log.warning("replica: redis error (%s); retrying with backoff", exc)
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_S_MAX)
                continue
            if not self.connected:
                log.info("replica: connected to %s at seq %d", public_url(self._url),
                         self.applied_seq)  # fmt: skip
            self.connected = True
            self.last_contact_ms = self._clock_ms()
            delay = RETRY_S_MIN
            entries: Sequence[Any] = reply[0][1] if reply else ()
            if not entries:
                self.head_seq = self.applied_seq  # BLOCK timed out: nothing newer exists
                continue
            self._apply(entries)
            if self.bad_repeats > 1:
                # The same entry fails again after a reload: not a passing fault. Retry with
                # backoff instead of reloading (and ending every watcher) in a tight loop.
                await asyncio.sleep(min(RETRY_S_MIN * 2 ** (self.bad_repeats - 2), RETRY_S_MAX))

    def _bad_entry(self, seq: int, what: str) -> None:
        self.errors += 1
        self._need_reload = True
        self.bad_repeats = self.bad_repeats + 1 if seq == self._bad_seq else 1
        self._bad_seq = seq
        log.error("replica: %s; reloading (%d in a row at this seq)", what, self.bad_repeats)

    def _apply(self, entries: Sequence[Any]) -> None:
        ledger = self.ledger
        assert ledger is not None
        for entry_id, fields in entries:
            seq = entry_seq(entry_id)
            self.head_seq = max(self.head_seq, seq)
            if seq <= self.applied_seq:
                continue
            if seq != self.applied_seq + 1:
                self.gaps += 1
                log.warning(
                    "replica: stream gap (at seq %d, next entry %d); reloading a snapshot",
                    self.applied_seq,
                    seq,
                )
                self._need_reload = True
                self._gap_next = seq
                break
            try:
                batch = _decode_batch(fields[b"batch"])
            except Exception as exc:  # noqa: BLE001 (nothing applied: the state is whole)
                self._bad_entry(seq, f"entry {seq} cannot be decoded ({exc!r})")
                break
            try:
                outcome = ledger.apply_batch(batch)
            except Exception as exc:  # noqa: BLE001 (a bad entry: reload rather than diverge)
                self._bad_entry(seq, f"entry {seq} cannot be applied ({exc!r})")
                # The state may be half applied: reads stop (UNAVAILABLE) until a full reload.
                self.ledger = None
                self._on_ledger(None)
                break
            if seq == self._bad_seq:
                self._bad_seq = self.bad_repeats = 0
            self.applied_seq = seq
            self.applied_now_ms = batch.now_ms
            self.applied_entries += 1
            events = getattr(outcome, "events", None)
            if events is not None and self.on_events is not None:
                try:
                    self.on_events(events)
                except Exception:  # the watchers' side; the entry itself is applied
                    self.event_errors += 1
                    log.exception("replica: the events of entry %d could not be published", seq)
        self._applied_event.set()


class ReadOnlySequencer:
    """Stands in for the sequencer on a replica: reads its position, refuses every write."""

    def __init__(self, follower: Follower, primary: str) -> None:
        self._follower = follower
        self.primary = primary
        self.failed = None

    @property
    def journal_seq(self) -> int:
        return self._follower.applied_seq

    def _refuse(self) -> ReadOnlyReplica:
        return ReadOnlyReplica(
            f"this server is a read-only replica of the primary publishing to {self.primary}; "
            "send writes to the primary"
        )

    async def submit(self, command: Command, *, timeout_s: float | None = None) -> Any:
        raise self._refuse()

    async def submit_many(
        self, commands: Sequence[Command], *, timeout_s: float | None = None
    ) -> list[Any]:
        raise self._refuse()

    def wake(self) -> None:
        pass


def _app_class() -> type:
    from server.app import App

    return App


class _ReplicaMixin:
    """`App` with a follower instead of recovery, a sequencer and a snapshotter."""

    config: Any
    health: Any
    services: list[str]
    metrics: Any
    _ledger: Ledger | None
    _not_ready_message: str
    _sequencer: Any
    _ready: bool
    _stopped: bool

    follower: Follower | None = None

    def _set_ledger(self, ledger: Ledger | None) -> None:
        """The follower's new base, or None when an entry could not be applied: until the
        reload, reads answer UNAVAILABLE instead of serving a half-applied state."""
        self._ledger = ledger
        if ledger is None:
            self._not_ready_message = (
                "the replica is reloading its state (a journal entry could not be applied)"
            )
            return
        hub = getattr(self, "events", None)
        if hub is not None and hasattr(hub, "restart_at"):
            # A reloaded snapshot's event numbering is its own: the hub continues from it.
            hub.restart_at(getattr(ledger, "events_seq", 0))

    async def snapshot_now(self) -> Any:
        raise ReadOnlyReplica(
            "snapshots are taken by the primary; this server is a read-only replica of "
            f"{public_url(self.config.replica_of)}"
        )

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = super().stats()  # type: ignore[misc]
        out["role"] = 2  # SERVER_ROLE_REPLICA
        out["primary"] = public_url(self.config.replica_of)
        out["durability"] = "replica"
        f = self.follower
        if f is not None:
            out.update(
                journal_seq=f.applied_seq,
                replica_lag_entries=f.lag_entries(),
                replica_lag_ms=f.lag_ms(),
                last_snapshot_at_ms=f.snapshot_at_ms,
                last_snapshot_bytes=f.snapshot_bytes,
                last_snapshot_journal_seq=f.snapshot_seq,
                snapshot_store=f.store.describe(),
            )
        return out

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stats": self.stats(), "ready": self._ready}
        f = self.follower
        if f is not None:
            out["replica"] = {
                "applied_seq": f.applied_seq,
                "head_seq": f.head_seq,
                "connected": f.connected,
                "reloads": f.reloads,
                "gaps": f.gaps,
                "errors": f.errors,
                "applied_entries": f.applied_entries,
            }
        return out

    async def start(self) -> None:
        from server.app import _SERVING, warm_up

        config = self.config
        started = time.perf_counter()
        await asyncio.to_thread(warm_up)
        follower = Follower(config.replica_of, config.redis_prefix, on_ledger=self._set_ledger)
        self.follower = follower
        _register_metrics(self.metrics, follower)
        await follower.bootstrap(config.replica_wait_s)
        hub = getattr(self, "events", None)  # WatchAvailability's hub, fed like the primary's
        if hub is not None and hasattr(hub, "start_at") and follower.ledger is not None:
            hub.start_at(getattr(follower.ledger, "events_seq", 0))
            follower.on_events = hub.publish
        follower.start()
        head = follower.head_seq
        if not await follower.wait_applied(head, config.replica_wait_s):
            log.warning("replica: not caught up with seq %d yet; serving anyway", head)
        self._sequencer = ReadOnlySequencer(follower, public_url(config.replica_of))
        for service in ("", *self.services):
            await self.health.set(service, _SERVING)
        self._ready = True
        log.info(
            "serving as a read-only replica of %s at seq %d (%.2f s to start)",
            public_url(config.replica_of),
            follower.applied_seq,
            time.perf_counter() - started,
        )

    async def stop(self, server: Any = None, grace_s: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        hub = getattr(self, "events", None)
        if hub is not None and hasattr(hub, "close"):
            hub.close()  # watchers end now instead of holding the drain for `grace` (as App.stop)
        if server is not None:
            await server.stop(grace)
        if self.follower is not None:
            await self.follower.close()
        log.info("stopped")


def ReplicaApp(config: Any, metrics: Any = None) -> Any:  # noqa: N802 (a class factory)
    """An `App` that follows a primary through Redis (see the module docstring)."""
    cls = type("ReplicaApp", (_ReplicaMixin, _app_class()), {})
    return cls(config, metrics)


def _register_metrics(metrics: Any, follower: Follower) -> None:
    from prometheus_client import Gauge

    registry = getattr(metrics, "registry", None)
    if registry is None:
        return
    entries = Gauge(
        "omnistock_replica_lag_entries", "Journal entries the replica is behind.", registry=registry
    )
    entries.set_function(lambda: float(follower.lag_entries()))
    millis = Gauge(
        "omnistock_replica_lag_ms",
        "Replica staleness in ms (0 when caught up).",
        registry=registry,
    )
    millis.set_function(follower.lag_ms)
