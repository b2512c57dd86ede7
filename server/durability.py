"""Durability glue: recovery at start, periodic snapshots and journal trimming while serving.

Recovery (docs/durability.md, "Recovery, end to end"): latest valid snapshot → `Ledger.from_state`,
open the journal (a torn tail is cut there), replay every entry after the snapshot's position.
Anything that would silently drop acknowledged work (mid-log corruption, trimmed entries, all
snapshots invalid, a journal that ends before the snapshot) is a `StartupError`: the CLI logs one
line and exits 2.

Snapshots are taken by the writer between batches (`Snapshotter.poll`): the state is exported and
its arrays copied on the loop (later batches mutate them in place), then written in a thread.
A failed save (Redis down or restarted) is counted, logged and retried with backoff while the
server goes on serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np
import redis

from engine.commands import Batch
from engine.ledger import Ledger
from engine.persistence import (
    FileSnapshotStore,
    Journal,
    JournalError,
    LoadedSnapshot,
    RedisSnapshotStore,
    SnapshotInfo,
    SnapshotStore,
    SnapshotStoreError,
)
from engine.replay import replay
from engine.state import ArraysWithRoom
from server.config import ServerConfig

__all__ = [
    "SNAPSHOT_RETRY_S_MAX",
    "Recovered",
    "SnapshotResult",
    "Snapshotter",
    "SnapshotterStats",
    "StartupError",
    "open_store",
    "recover",
]

log = logging.getLogger("omnistock.durability")

SNAPSHOT_RETRY_S_MIN = 1.0
SNAPSHOT_RETRY_S_MAX = 60.0
_SEGMENT_RE = re.compile(r"^journal-(\d{20})\.log$")


class StartupError(Exception):
    """Recovery cannot go on without risking acknowledged work; the message says why."""


class _Metrics(Protocol):
    def set_snapshot(self, age_s: float, bytes: int) -> None: ...  # noqa: A002

    def count_snapshot_error(self) -> None: ...


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


# --- recovery --------------------------------------------------------------------------------


def open_store(config: ServerConfig) -> SnapshotStore:
    if config.redis_url:
        return RedisSnapshotStore(config.redis_url, prefix=config.redis_prefix)
    return FileSnapshotStore(Path(config.data_dir) / "snapshots")


@dataclass(slots=True)
class Recovered:
    ledger: Ledger
    journal: Journal
    store: SnapshotStore
    snapshot_journal_seq: int  # 0 = started without a snapshot
    snapshot_at_ms: int
    snapshot_bytes: int
    replayed_entries: int
    seconds: float


def _journal_first_seq(directory: Path) -> int | None:
    """Seq of the oldest journal segment on disk (None if there is none), without opening it."""
    if not directory.is_dir():
        return None
    seqs = [int(m.group(1)) for p in directory.iterdir() if (m := _SEGMENT_RE.match(p.name))]
    return min(seqs) if seqs else None


def _unreachable(exc: SnapshotStoreError) -> bool:
    return isinstance(exc.__cause__, redis.ConnectionError | redis.TimeoutError | OSError)


def _load_snapshot(
    store: SnapshotStore, journal_dir: Path, wait_s: float, into: ArraysWithRoom
) -> LoadedSnapshot | None:
    deadline = time.monotonic() + wait_s
    delay_s = 0.2
    while True:
        try:
            return store.load_latest(into)
        except SnapshotStoreError as exc:
            if not _unreachable(exc):
                raise StartupError(
                    f"snapshot store {store.describe()}: {exc}; refusing to start "
                    "(starting without it would drop the state it holds)"
                ) from None
            if _journal_first_seq(journal_dir) == 1:
                # The journal is whole, so it alone rebuilds the exact state.
                log.warning(
                    "snapshot store %s is unreachable (%s); recovering from the whole journal",
                    store.describe(),
                    exc,
                )
                return None
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"snapshot store {store.describe()} unreachable for {wait_s:.0f} s ({exc}) "
                    "and the journal alone does not reach back to seq 1; refusing to start"
                ) from None
            log.warning("snapshot store unreachable, retrying in %.1f s: %s", delay_s, exc)
            time.sleep(delay_s)
            delay_s = min(2 * delay_s, 2.0)


def recover(config: ServerConfig, store: SnapshotStore | None = None) -> Recovered:
    """Rebuild the ledger from the latest snapshot and the journal; blocking (run in a thread)."""
    started = time.perf_counter()
    store = store if store is not None else open_store(config)
    journal_dir = Path(config.data_dir) / "journal"
    # The large arrays are read straight into the ones the ledger keeps (no second copy).
    room = ArraysWithRoom()
    snap = _load_snapshot(store, journal_dir, config.store_wait_s, room)
    after = snap.journal_seq if snap is not None else 0
    try:
        journal = Journal.open(
            journal_dir,
            config.durability,
            segment_bytes_max=config.journal_segment_bytes,
            async_interval_ms=config.async_fsync_interval_ms,
            start_seq=after + 1,
            keep_after=after,  # the checked segments stay in memory for `_replay`: read once
            durable_through=after,  # damage at or below the snapshot's seq is not a torn tail
        )
    except JournalError as exc:
        raise StartupError(f"journal {journal_dir}: {exc}; refusing to start") from None
    try:
        if journal.last_seq < after:
            raise StartupError(
                f"journal {journal_dir} ends at seq {journal.last_seq} but the snapshot "
                f"({store.describe()}) includes seq {after}: the journal lost entries the "
                "snapshot has; refusing to start"
            )
        if snap is None:
            ledger = Ledger()
        else:
            ledger = Ledger.from_state(snap.arrays, snap.meta, room=room.arrays)
        replayed = _replay(ledger, journal, after)
    except BaseException:
        journal.close()
        raise
    seconds = time.perf_counter() - started
    log.info(
        "recovered: snapshot at seq %d (%s), %d journal entries replayed, journal at seq %d, "
        "%.3f s",
        after,
        store.describe() if snap is not None else "none",
        replayed,
        journal.last_seq,
        seconds,
    )
    return Recovered(
        ledger=ledger,
        journal=journal,
        store=store,
        snapshot_journal_seq=after,
        snapshot_at_ms=snap.created_at_ms if snap is not None else 0,
        snapshot_bytes=snap.bytes if snap is not None else 0,
        replayed_entries=replayed,
        seconds=seconds,
    )


def _replay(ledger: Ledger, journal: Journal, after: int) -> int:
    """Apply every journal entry after `after` (engine/replay.py: in groups, no results built)."""
    decode = msgspec.msgpack.Decoder(Batch).decode
    seq = after

    def batches() -> Iterator[Batch]:
        nonlocal seq
        for entry_seq, payload in journal.replay(after):
            seq = entry_seq
            yield decode(payload)

    # Replay makes millions of short-lived objects and no reference cycles: the cyclic
    # collector would only walk the ledger's millions of live ones, over and over.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return replay(ledger, batches(), decoded=True)
    except JournalError as exc:
        raise StartupError(f"{exc}; refusing to start") from None
    except msgspec.DecodeError as exc:
        raise StartupError(
            f"journal entry {seq} does not decode as a batch ({exc}); written by an "
            "incompatible version? refusing to start"
        ) from None
    except Exception as exc:
        # Entries are applied in groups: the failing one is at most a group before `seq`.
        raise StartupError(
            f"replaying the journal up to entry {seq} failed ({type(exc).__name__}: {exc}); "
            "refusing to start"
        ) from exc
    finally:
        if gc_was_enabled:
            gc.enable()


# --- snapshots while serving -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    journal_seq: int
    bytes: int
    duration_ms: float
    location: str
    at_ms: int


@dataclass(slots=True)
class SnapshotterStats:
    store: str
    last_at_ms: int
    last_bytes: int
    last_journal_seq: int
    last_duration_ms: float
    saves: int
    errors: int
    last_error: str
    in_progress: bool
    trims: int


def redis_keeps_acknowledged_writes(url: str) -> bool:
    """True if Redis fsyncs every write (appendonly yes, appendfsync always); else False."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        found: dict[str, str] = {}
        for name in ("appendonly", "appendfsync"):
            for key, value in dict(client.config_get(name)).items():
                found[_text(key)] = _text(value)
        return found.get("appendonly") == "yes" and found.get("appendfsync") == "always"
    except redis.RedisError:
        return False
    finally:
        client.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Snapshotter:
    """Decides when to snapshot, copies the state in the writer and saves it in a thread.

    Trimming keeps the journal back to the *previous* snapshot, so the store's fallback snapshot
    stays usable. With Redis the journal is trimmed only when Redis fsyncs every write (see
    docs/durability.md): a Redis without persistence loses every snapshot when it restarts.
    """

    def __init__(
        self,
        store: SnapshotStore,
        journal: Journal,
        *,
        interval_s: float,
        journal_entries: int,
        last_journal_seq: int,
        last_at_ms: int,
        last_bytes: int,
        trim: bool,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        metrics: _Metrics | None = None,
    ) -> None:
        assert interval_s > 0 and journal_entries >= 1
        self.store = store
        self._journal = journal
        self._interval_s = interval_s
        self._journal_entries = journal_entries
        self._trim = trim
        self._clock_ms = clock_ms
        self._metrics = metrics
        self._last_seq = last_journal_seq
        self._last_at_ms = last_at_ms
        self._last_bytes = last_bytes
        self._last_duration_ms = 0.0
        self._last_monotonic = time.monotonic()
        self._retry_at = 0.0
        self._retry_s = SNAPSHOT_RETRY_S_MIN
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[SnapshotResult]] = []
        self._saves = 0
        self._errors = 0
        self._last_error = ""
        self._trims = 0
        self.wake: Callable[[], None] = lambda: None  # the App points this at the sequencer

    # --- called by the writer between batches ------------------------------------------------

    def next_due_monotonic(self, journal_seq: int) -> float | None:
        if self._task is not None:
            return None
        if self._waiters:
            return 0.0
        if journal_seq <= self._last_seq:
            return None
        if journal_seq - self._last_seq >= self._journal_entries:
            return self._retry_at
        return max(self._last_monotonic + self._interval_s, self._retry_at)

    def poll(self, ledger: Ledger, journal_seq: int) -> None:
        due = self.next_due_monotonic(journal_seq)
        if due is None or due > time.monotonic():
            return
        arrays, meta = ledger.export_state()
        # Later batches mutate the ledger's arrays in place; the thread writes private copies.
        copies = {name: np.array(a, copy=True) for name, a in arrays.items()}
        waiters, self._waiters = self._waiters, []
        self._task = asyncio.get_running_loop().create_task(
            self._save(copies, meta, journal_seq, waiters), name="snapshot"
        )

    # --- API -------------------------------------------------------------------------------

    async def snapshot_now(self) -> SnapshotResult:
        """Ask the writer for a snapshot at its next pause and wait for it to be saved."""
        if self._task is not None:  # one in flight covers older state; wait for it first
            await asyncio.shield(self._task)
        future: asyncio.Future[SnapshotResult] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self.wake()
        return await future

    async def final(self, ledger: Ledger) -> None:
        """At shutdown, after the writer stopped: one last snapshot if anything changed."""
        if self._task is not None:
            await asyncio.shield(self._task)
        seq = self._journal.last_seq
        if seq <= self._last_seq and not self._waiters:
            return
        self._retry_at = 0.0
        self._last_monotonic = -self._interval_s  # due now
        self.poll(ledger, seq)
        if self._task is not None:
            await self._task

    def stats(self) -> SnapshotterStats:
        return SnapshotterStats(
            store=self.store.describe(),
            last_at_ms=self._last_at_ms,
            last_bytes=self._last_bytes,
            last_journal_seq=self._last_seq,
            last_duration_ms=self._last_duration_ms,
            saves=self._saves,
            errors=self._errors,
            last_error=self._last_error,
            in_progress=self._task is not None,
            trims=self._trims,
        )

    # --- the save --------------------------------------------------------------------------

    async def _save(
        self,
        arrays: dict[str, np.ndarray],
        meta: bytes,
        journal_seq: int,
        waiters: list[asyncio.Future[SnapshotResult]],
    ) -> None:
        created_at_ms = self._clock_ms()
        try:
            info = await asyncio.to_thread(
                self._save_blocking, arrays, meta, journal_seq, created_at_ms
            )
        except Exception as exc:
            self._errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = time.monotonic() + self._retry_s
            log.error(
                "snapshot at seq %d to %s failed (%s); serving on, retrying in %.0f s",
                journal_seq,
                self.store.describe(),
                self._last_error,
                self._retry_s,
            )
            self._retry_s = min(2 * self._retry_s, SNAPSHOT_RETRY_S_MAX)
            if self._metrics is not None:
                self._metrics.count_snapshot_error()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(SnapshotStoreError(self._last_error))
            return
        finally:
            self._task = None
            self.wake()
        if self._errors and self._retry_s > SNAPSHOT_RETRY_S_MIN:
            log.info("snapshots to %s resumed", self.store.describe())
        self._retry_s = SNAPSHOT_RETRY_S_MIN
        self._retry_at = 0.0
        self._saves += 1
        self._last_seq = journal_seq
        self._last_at_ms = created_at_ms
        self._last_bytes = info.bytes
        self._last_duration_ms = info.duration_s * 1000.0
        self._last_monotonic = time.monotonic()
        if self._metrics is not None:
            self._metrics.set_snapshot(0.0, info.bytes)
        log.info(
            "snapshot at seq %d: %d bytes in %.1f ms to %s",
            journal_seq,
            info.bytes,
            info.duration_s * 1000.0,
            info.location,
        )
        result = SnapshotResult(
            journal_seq, info.bytes, info.duration_s * 1000.0, info.location, created_at_ms
        )
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)

    def _save_blocking(
        self, arrays: dict[str, np.ndarray], meta: bytes, journal_seq: int, created_at_ms: int
    ) -> SnapshotInfo:
        # In `async` and `none` modes the entries the snapshot covers may not be on disk yet: a
        # machine crash would then leave the journal ending before the snapshot, and recovery
        # would refuse to start. (`sync`: already durable, no fsync.)
        self._journal.sync()
        info = self.store.save(arrays, meta, journal_seq, created_at_ms)
        # The snapshot before this one stays the store's fallback; keep the journal after it.
        # A snapshot at the same seq as the last one (asked for with nothing written since)
        # replaced that one in a file store, whose fallback is then still the one before: trim
        # nothing.
        previous_seq = self._last_seq
        if self._trim and 0 < previous_seq < journal_seq:
            self._trim_upto(previous_seq, journal_seq)
        return info

    def _trim_upto(self, upto_seq: int, saved_seq: int) -> None:
        try:
            confirmed = self.store.latest_journal_seq()
            if confirmed is None or confirmed < saved_seq:
                log.warning("snapshot store does not confirm seq %d; journal kept", saved_seq)
                return
            removed = self._journal.trim(upto_seq)
        except (SnapshotStoreError, JournalError) as exc:
            log.warning("journal trim up to seq %d skipped: %s", upto_seq, exc)
            return
        if removed:
            self._trims += removed
            log.info("journal: %d segments up to seq %d trimmed", removed, upto_seq)
