"""The sequencer: the single writer between the servicers and the engine (DESIGN §2).

Servicers `await submit(command)` (or `submit_many`). Commands wait in one bounded queue; the
writer task takes everything that is waiting (no artificial wait), stamps it with the batch time,
applies it with `Ledger.apply`, appends it to the journal, commits per durability mode (in `sync`
mode one fsync per batch, run in a thread so the loop keeps serving reads), and only then
resolves the callers' futures. Under load the batches grow, which is how throughput scales while
latency stays flat. A `submit` that finds the writer idle and nothing queued takes the express
lane: it applies and journals its command itself, at once, instead of waking the writer task
(`_express`; the same steps, in the same order).

The writer also wakes on its own when the earliest hold is due, so holds expire on time without
traffic (that tick is an empty batch and is journaled: it changes state), and between batches it
lets the snapshotter copy a consistent state.

Failures are exceptions of one family (`SequencerError`) whose `code` is the gRPC status name the
servicer should answer with. A crash of the engine or the journal is a bug or a broken disk: the
batch's callers get INTERNAL and the sequencer refuses every later write, because the in-memory
state may be half applied or ahead of the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from engine import limits
from engine.commands import Batch, Command, ReserveColumns
from engine.ledger import BatchOutcome, Ledger, Outcome
from engine.persistence import ENTRY_BYTES_MAX, Journal

__all__ = [
    "BATCH_COMMANDS_MAX",
    "BATCH_LINES_MAX",
    "DeadlineExceeded",
    "FsyncThread",
    "NotReady",
    "Overloaded",
    "RequestTooLarge",
    "Sequencer",
    "SequencerError",
    "SequencerFailed",
    "SequencerStats",
    "ShuttingDown",
]

log = logging.getLogger("omnistock.sequencer")

# One batch carries at most this many lines and commands. Bounding both keeps a journal entry
# well under ENTRY_BYTES_MAX (a line is at most two ids plus a few integers) and bounds the
# time the loop spends in one kernel call.
BATCH_LINES_MAX = 50_000
BATCH_COMMANDS_MAX = 16_384
# Event-loop turns the writer yields before taking a batch (see `_run`). Unary reserves at
# 2,300/s offered: 1.55 → 1.97 reserves per journal entry, 2,161 → 2,295/s answered.
GROUP_YIELDS = 2
_LINE_BYTES_MAX = 2 * limits.ID_BYTES_MAX + 32
_COMMAND_BYTES_MAX = 3 * limits.ID_BYTES_MAX + 64
assert BATCH_LINES_MAX <= limits.BATCH_LINES_MAX
assert limits.REQUEST_LINES_MAX <= BATCH_LINES_MAX
assert BATCH_LINES_MAX * _LINE_BYTES_MAX + BATCH_COMMANDS_MAX * _COMMAND_BYTES_MAX < ENTRY_BYTES_MAX


class SequencerError(Exception):
    """A write was not applied. `code` names the gRPC status, `reason` the ErrorInfo reason."""

    code = "INTERNAL"
    reason = "INTERNAL"


class Overloaded(SequencerError):
    code = "RESOURCE_EXHAUSTED"
    reason = "OVERLOADED"


class DeadlineExceeded(SequencerError):
    code = "DEADLINE_EXCEEDED"
    reason = "DEADLINE_EXCEEDED"


class ShuttingDown(SequencerError):
    code = "UNAVAILABLE"
    reason = "NOT_SERVING"


class NotReady(SequencerError):
    code = "UNAVAILABLE"
    reason = "NOT_SERVING"


class RequestTooLarge(SequencerError):
    code = "INVALID_ARGUMENT"
    reason = "TOO_MANY_LINES"


class SequencerFailed(SequencerError):
    """The engine or the journal failed; writes are stopped until a restart recovers."""

    code = "INTERNAL"
    reason = "INTERNAL"


class _Metrics(Protocol):
    def observe_batch(self, commands: int, seconds: float) -> None: ...

    def observe_fsync(self, seconds: float) -> None: ...


class _BetweenBatches(Protocol):
    """The snapshotter's hooks, called by the writer where the state is consistent."""

    def poll(self, ledger: Ledger, journal_seq: int) -> None: ...

    def next_due_monotonic(self, journal_seq: int) -> float | None: ...


@dataclass(slots=True)
class SequencerStats:
    batches: int
    commands: int
    ticks: int
    batch_commands_last: int
    batch_commands_max: int
    queued_commands: int
    dropped_deadline: int
    overloaded: int
    failed: bool
    express: int = 0  # batches applied in the express lane (`Sequencer.submit`)


class _Item:
    __slots__ = ("commands", "future", "deadline", "single", "lines", "weight")

    def __init__(
        self,
        commands: Sequence[Command],
        future: asyncio.Future[Any],
        deadline: float | None,
        single: bool,
        weight: int,
    ) -> None:
        self.commands = commands
        self.future = future
        self.deadline = deadline  # loop.time() after which the caller no longer waits
        self.single = single
        self.lines = sum(_lines(c) for c in commands)
        self.weight = weight  # what it counts against the queue's limit (`_weight`)


def _weight(command: Command) -> int:
    """What a command counts against the write queue's limit: a `ReserveColumns` as many
    commands as it has reservations (it stands for that many `Reserve`s), others as one."""
    if type(command) is ReserveColumns:
        return max(1, len(command.reservation_ids))
    return 1


def _lines(command: Command) -> int:
    """Lines a command carries (its repeated field), at least 1."""
    if type(command) is ReserveColumns:
        # Columns: its lines, or its ids when there are more (each id is at most a line's bytes).
        return max(1, len(command.skus), len(command.reservation_ids))
    for name in (
        "lines",
        "adjustments",
        "counts",
        "settings",
        "moves",
        "nodes",
        "groups",
        "thresholds",
    ):
        items = getattr(command, name, None)
        if items is not None:
            return max(1, len(items))
    return 1


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


_encode = msgspec.msgpack.Encoder().encode


class Sequencer:
    """Single writer: one queue in, one batch at a time through the ledger and the journal."""

    def __init__(
        self,
        ledger: Ledger,
        journal: Journal,
        *,
        queue_commands_max: int,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        metrics: _Metrics | None = None,
        snapshotter: _BetweenBatches | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        assert queue_commands_max >= 1
        self.ledger = ledger
        self.journal = journal
        self._queue_commands_max = queue_commands_max
        self._clock_ms = clock_ms
        self._metrics = metrics
        self._snapshotter = snapshotter
        self._on_failure = on_failure
        self._pending: deque[_Item] = deque()
        self._queued_commands = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: BaseException | None = None
        self._sync = journal.durability == "sync"
        # fsync gets its own thread so a snapshot write in the default pool never delays it.
        self._fsync = FsyncThread(journal)
        self._batches = 0
        self._commands = 0
        self._ticks = 0
        self._batch_last = 0
        self._batch_max = 0
        self._dropped = 0
        self._overloaded = 0
        self._express_count = 0
        # The express lane: open while the writer waits for work; `_express_done` is the express
        # batch still waiting for its fsync (sync mode), which the writer waits for before its
        # own next batch, so batches are applied, made durable and answered in journal order.
        self._writer_idle = False
        self._express_done: asyncio.Future[None] | None = None
        # What the idle writer's timer is armed for: the earliest hold's expiry (clock ms) and the
        # snapshotter's next due time (time.monotonic()), None when not armed for it.
        self._armed_expiry_ms: int | None = None
        self._armed_snapshot_at: float | None = None
        # Called after each batch is journaled and committed, before its callers are answered:
        # (journal seq, journal payload, batch now_ms). Must not block or raise (issue 6 streams).
        self.journaled_hook: Callable[[int, bytes, int], None] | None = None
        # Called with the batch's stock events (engine/events.py) after its journal commit, so
        # watchers only see acknowledged state (server/events.py EventHub.publish).
        self.events_hook: Callable[[Any], None] | None = None

    # --- public API --------------------------------------------------------------------------

    def start(self) -> None:
        assert self._task is None, "already started"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sequencer")

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    @property
    def journal_seq(self) -> int:
        return self.journal.last_seq

    async def submit(self, command: Command, *, timeout_s: float | None = None) -> Outcome:
        """Apply one command durably; its outcome (a result or a `Rejection` value)."""
        if (
            self._writer_idle
            and self._express_done is None
            and not self._pending
            and (timeout_s is None or timeout_s > 0)
        ):
            return await self._express(command)
        future = self._enqueue((command,), timeout_s, single=True)
        return await future

    async def submit_many(
        self, commands: Sequence[Command], *, timeout_s: float | None = None
    ) -> list[Outcome]:
        """Apply commands contiguously in one batch, in order; their outcomes, in order."""
        if not commands:
            return []
        future = self._enqueue(tuple(commands), timeout_s, single=False)
        return await future

    async def close(self) -> None:
        """Refuse new writes, apply everything already queued, stop the writer."""
        self._closing = True
        self._wake.set()
        try:
            if self._express_done is not None:
                await asyncio.shield(self._express_done)
            if self._task is not None:
                await self._task
        finally:
            self._task = None
            for item in self._pending:
                _fail(item, ShuttingDown("the server is shutting down"))
            self._pending.clear()
            self._queued_commands = 0
            self._fsync.close()

    def stats(self) -> SequencerStats:
        return SequencerStats(
            batches=self._batches,
            commands=self._commands,
            ticks=self._ticks,
            batch_commands_last=self._batch_last,
            batch_commands_max=self._batch_max,
            queued_commands=self._queued_commands,
            dropped_deadline=self._dropped,
            overloaded=self._overloaded,
            failed=self._failure is not None,
            express=self._express_count,
        )

    def wake(self) -> None:
        """Make the writer look at its timers and the snapshotter now (e.g. a snapshot request)."""
        self._wake.set()

    # --- queue -------------------------------------------------------------------------------

    def _admit(self, commands: Sequence[Command]) -> int:
        """The commands' weight against the queue's limit, or why they are refused."""
        if self._failure is not None:
            raise SequencerFailed(f"writes are stopped after an internal error: {self._failure}")
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._task is None:
            raise NotReady("the server is still recovering")
        count = sum(_weight(c) for c in commands)
        if self._queued_commands + count > self._queue_commands_max:
            self._overloaded += 1
            raise Overloaded(
                f"write queue is full ({self._queued_commands} of "
                f"{self._queue_commands_max} commands waiting); retry with backoff"
            )
        return count

    def _enqueue(
        self, commands: Sequence[Command], timeout_s: float | None, *, single: bool
    ) -> asyncio.Future[Any]:
        count = self._admit(commands)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Item(commands, future, deadline, single, count))
        self._queued_commands += count
        if not self._wake.is_set():
            self._wake.set()
        return future

    def _take(self) -> list[_Item]:
        """Everything waiting, up to one batch's worth; drops callers that gave up."""
        items: list[_Item] = []
        lines = 0
        commands = 0
        now = asyncio.get_running_loop().time()
        pending = self._pending
        while pending:
            item = pending[0]
            n = len(item.commands)
            if items and (
                lines + item.lines > BATCH_LINES_MAX or commands + n > BATCH_COMMANDS_MAX
            ):
                break
            pending.popleft()
            self._queued_commands -= item.weight
            if item.future.done():  # cancelled by the caller (its RPC was cancelled)
                self._dropped += 1
                continue
            if item.deadline is not None and now > item.deadline:
                self._dropped += 1
                _fail(item, DeadlineExceeded("deadline passed before the write was applied"))
                continue
            items.append(item)
            lines += item.lines
            commands += n
        return items

    # --- the writer --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._idle(loop)
            if self._express_done is not None:  # an express batch is waiting for its fsync
                await asyncio.shield(self._express_done)
            if self._failure is not None:  # an express batch failed: the writer stops too
                return
            # Let the loop run what is ready first (requests already received whose handlers
            # have not submitted yet) so they join this batch: under load a batch, and so an
            # fsync, then covers more writes (bench/history.md, "Where a unary Reserve's time
            # goes"); when idle this costs two empty loop turns.
            for _ in range(GROUP_YIELDS):
                await asyncio.sleep(0)
            items = self._take()
            now_ms = self._clock_ms()
            due = self.ledger.next_expiry_ms()
            tick = due is not None and due <= now_ms
            if (items or tick) and not await self._write(loop, now_ms, items):
                return
            if not self._poll_snapshotter():
                return

    def _poll_snapshotter(self) -> bool:
        """The snapshotter's turn between batches; False if writes must stop (it raised: a bug)."""
        if self._snapshotter is None:
            return True
        try:
            self._snapshotter.poll(self.ledger, self.journal.last_seq)
        except Exception as exc:
            self._stop_writes([], exc, "the snapshotter failed")
            return False
        return True

    def _snapshot_due(self) -> float | None:
        if self._snapshotter is None:
            return None
        return self._snapshotter.next_due_monotonic(self.journal.last_seq)

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until a command arrives, the earliest hold is due or a snapshot is due."""
        wake_at: float | None = None
        due_ms = self.ledger.next_expiry_ms()
        if due_ms is not None:
            wake_at = loop.time() + max(0, due_ms - self._clock_ms()) / 1000.0
        snap_at = self._snapshot_due()
        if snap_at is not None:
            at = loop.time() + max(0.0, snap_at - time.monotonic())
            wake_at = at if wake_at is None else min(wake_at, at)
        self._wake.clear()
        timer = None if wake_at is None else loop.call_at(wake_at, self._wake.set)
        self._armed_expiry_ms = due_ms
        self._armed_snapshot_at = snap_at
        self._writer_idle = True
        try:
            await self._wake.wait()
        finally:
            self._writer_idle = False
            if timer is not None:
                timer.cancel()

    async def _write(
        self, loop: asyncio.AbstractEventLoop, now_ms: int, items: list[_Item]
    ) -> bool:
        """Apply, journal and answer one batch; False if writes must stop."""
        commands: list[Command] = []
        for item in items:
            commands.extend(item.commands)
        batch = Batch(now_ms, tuple(commands))
        payload = _encode(batch)
        if len(payload) > ENTRY_BYTES_MAX:
            # Only reachable with pathological content; split and retry the halves.
            return await self._split(loop, now_ms, items)
        started = time.perf_counter()
        outcome = self._apply(batch, payload, items)
        if outcome is None:
            return False
        if self._sync:
            fsync_started = time.perf_counter()
            try:
                await self._fsync.commit(loop)
            except Exception as exc:  # the disk failed: the state is ahead of the journal
                self._stop_writes(items, exc, "the journal failed")
                return False
            if self._metrics is not None:
                self._metrics.observe_fsync(time.perf_counter() - fsync_started)
        return self._durable(batch, payload, outcome, items, started)

    def _apply(self, batch: Batch, payload: bytes, items: list[_Item]) -> BatchOutcome | None:
        """Apply a batch to the ledger and append it to the journal (committed unless the mode
        is `sync`, whose fsync the caller awaits); None if writes must stop."""
        try:
            outcome = self.ledger.apply_batch(batch)
        except Exception as exc:  # a bug: the state may be half applied
            self._stop_writes(items, exc, "the engine failed applying a batch")
            return None
        assert len(outcome.results) == len(batch.commands)
        try:
            self.journal.append(payload)
            if not self._sync:
                self.journal.commit()
        except Exception as exc:  # the disk failed: the state is ahead of the journal
            self._stop_writes(items, exc, "the journal failed")
            return None
        return outcome

    def _durable(
        self,
        batch: Batch,
        payload: bytes,
        outcome: BatchOutcome,
        items: list[_Item],
        started: float,
    ) -> bool:
        """A batch is as durable as the mode promises: count it, run the hooks, answer; False
        if writes must stop (a hook raised, which they must not: a bug; the batch's callers are
        still answered, their writes are durable)."""
        n_commands = len(batch.commands)
        self._batches += 1
        self._commands += n_commands
        self._batch_last = n_commands
        self._batch_max = max(self._batch_max, n_commands)
        if not n_commands:
            self._ticks += 1
        if self._metrics is not None:
            self._metrics.observe_batch(n_commands, time.perf_counter() - started)
        hook_failure = None
        try:
            if self.journaled_hook is not None:
                self.journaled_hook(self.journal.last_seq, payload, batch.now_ms)
            if outcome.events is not None and self.events_hook is not None:
                self.events_hook(outcome.events)
        except Exception as exc:
            hook_failure = exc
        results = outcome.results
        offset = 0
        for item in items:
            n = len(item.commands)
            if not item.future.done():
                item.future.set_result(
                    results[offset] if item.single else results[offset : offset + n]
                )
            offset += n
        if hook_failure is not None:
            self._stop_writes([], hook_failure, "a journaled or events hook failed")
            return False
        return True

    # --- the express lane --------------------------------------------------------------------

    async def _express(self, command: Command) -> Outcome:
        """`submit` while the writer waits for work and nothing is queued: apply and journal
        the command as a batch of its own now, as the writer would, without waking the writer
        task and yielding to the loop on the way (~35 µs less server CPU per unary Reserve with
        durability none, 10–20 µs with sync; bench/README.md, "The express lane").

        `sync`: the fsync is awaited as the writer's is; until it is done the lane is closed and
        the writer waits for it before its next batch, so batches stay durable and answered in
        journal order. A caller that gives up meanwhile cancels only its own wait."""
        weight = self._admit((command,))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        item = _Item((command,), future, None, True, weight)
        items = [item]
        now_ms = self._clock_ms()
        batch = Batch(now_ms, (command,))
        payload = _encode(batch)
        if len(payload) > ENTRY_BYTES_MAX:
            raise RequestTooLarge("the request encodes to more than a journal entry")
        started = time.perf_counter()
        outcome = self._apply(batch, payload, items)
        if outcome is not None:
            self._express_count += 1
            if self._sync:
                # Counted against the queue's limit until answered, as a waiting command is.
                self._queued_commands += weight
                done = self._express_done = loop.create_future()
                fsync_started = time.perf_counter()
                self._fsync.commit(loop).add_done_callback(
                    lambda fsync: self._express_synced(
                        fsync, fsync_started, batch, payload, outcome, item, started, done
                    )
                )
            elif self._durable(batch, payload, outcome, items, started):
                self._after_express()
        return await future

    def _express_synced(
        self,
        fsync: asyncio.Future[None],
        fsync_started: float,
        batch: Batch,
        payload: bytes,
        outcome: BatchOutcome,
        item: _Item,
        started: float,
        done: asyncio.Future[None],
    ) -> None:
        self._queued_commands -= item.weight
        self._express_done = None
        try:
            exc = asyncio.CancelledError() if fsync.cancelled() else fsync.exception()
            if exc is not None:  # the disk failed: the state is ahead of the journal
                self._stop_writes([item], exc, "the journal failed")
                return
            if self._metrics is not None:
                self._metrics.observe_fsync(time.perf_counter() - fsync_started)
            if self._durable(batch, payload, outcome, [item], started):
                self._after_express()
        except Exception as exc:  # a bug; a callback's exception would only be logged
            self._stop_writes([item], exc, "the express lane failed")
        finally:
            done.set_result(None)

    def _after_express(self) -> None:
        """What the writer does between batches: the snapshotter's turn; and a wake-up when the
        batch made a hold or a snapshot due earlier than the idle writer's timer is armed for
        (the writer then re-arms it). Both are compared in their own clock, exactly, so a batch
        that changes neither wakes nothing."""
        if not self._poll_snapshotter():
            return
        due = self.ledger.next_expiry_ms()
        if due is not None and (self._armed_expiry_ms is None or due < self._armed_expiry_ms):
            self._wake.set()
            return
        snap = self._snapshot_due()
        if snap is not None and (self._armed_snapshot_at is None or snap < self._armed_snapshot_at):
            self._wake.set()

    async def _split(
        self, loop: asyncio.AbstractEventLoop, now_ms: int, items: list[_Item]
    ) -> bool:
        if len(items) == 1:
            _fail(items[0], RequestTooLarge("the request encodes to more than a journal entry"))
            return True
        half = len(items) // 2
        return await self._write(loop, now_ms, items[:half]) and await self._write(
            loop, now_ms, items[half:]
        )

    def _stop_writes(self, items: list[_Item], exc: BaseException, what: str) -> None:
        log.critical("%s; writes are stopped until a restart recovers: %r", what, exc, exc_info=exc)
        self._failure = exc
        error = SequencerFailed(f"{what}: {type(exc).__name__}: {exc}")
        for item in items:
            _fail(item, error)
        for item in self._pending:
            _fail(item, error)
        self._pending.clear()
        self._queued_commands = 0
        self._wake.set()  # an idle writer wakes and stops
        if self._on_failure is not None:
            self._on_failure(exc)


class FsyncThread:
    """One thread that runs `journal.commit()` (its fsync) for the writer, which awaits it while
    the loop keeps serving.

    Leaner than `loop.run_in_executor` on a one-thread pool, which a `sync` batch paid for on
    every fsync: a concurrent future and a work item, the pool's idle semaphore and the future's
    condition (Python-level locks, so more GIL hand-offs between the two threads), then a
    wrapped asyncio future. Here the writer puts its asyncio future on a C-level queue and the
    thread resolves it with one `call_soon_threadsafe` (bench/README.md, "durability", "The fsync
    hand-off")."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._requests: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def commit(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Commit the journal on the thread; the future resolves (or fails) when that returns."""
        if self._closed:
            raise RuntimeError("the fsync thread is closed")
        if self._thread is None:  # started on first use, as the thread pool was
            self._thread = threading.Thread(target=self._serve, name="omnistock-fsync", daemon=True)
            self._thread.start()
        future: asyncio.Future[None] = loop.create_future()
        self._requests.put((loop, future))
        return future

    def close(self) -> None:
        """Finish the commits already asked for, then stop the thread."""
        self._closed = True
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            loop, future = request
            try:
                self._journal.commit()
            except BaseException as exc:  # noqa: BLE001 - handed to the writer, which stops writes
                _resolve_soon(loop, future, exc)
            else:
                _resolve_soon(loop, future, None)


def _resolve_soon(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], exc: BaseException | None
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_resolve, future, exc)


def _resolve(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():  # the writer was cancelled while the fsync ran
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


def _fail(item: _Item, error: SequencerError) -> None:
    if not item.future.done():
        item.future.set_exception(error)
