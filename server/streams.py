"""Journal entries (and stock events) published to Redis Streams, for replicas and other services.

With `--redis`, every batch the primary journals is also appended to the stream
`{prefix}:journal` as one entry whose **stream id is `{journal seq}-0`**, with fields

    seq     the journal sequence number (decimal)
    now_ms  the batch time (decimal ms since the epoch)
    batch   the journal payload: msgpack `engine.commands.Batch`, byte for byte

so any client can `XREAD BLOCK 0 STREAMS {prefix}:journal {last seen seq}-0`, and a gap in the
seqs means entries were trimmed (`MAXLEN ~ stream_maxlen`) or lost (a Redis restart). Stock events
go to `{prefix}:events` the same way (`offer_events`, fed by the event hub's `publish_hooks`).

Publication never blocks or fails a write: the sequencer calls `offer(...)` after the journal
commit (a bounded in-memory queue, O(1)), and one background task sends what is queued with
pipelined `XADD … NOMKSTREAM MAXLEN ~ N`. When Redis is down the task retries with backoff
(0.05 s doubling to 2 s) and the queue keeps the entries; when the queue overflows it is dropped
as a whole (counted) and the stream has a gap. After any discontinuity (start, errors, a drop, the
stream vanished because Redis restarted) the task compares the stream's tail with what it is about
to send; if they do not join up it asks the snapshotter for a snapshot, so a replica that sees the
gap can reload a snapshot at or after it and continue from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

__all__ = ["PublisherStats", "StreamPublisher", "entry_seq", "journal_key", "events_key"]

log = logging.getLogger("omnistock.streams")

PIPELINE_ENTRIES_MAX = 512  # XADDs per round trip
PIPELINE_BYTES_MAX = 8 * 1024 * 1024
RETRY_S_MIN = 0.05
RETRY_S_MAX = 2.0
SOCKET_TIMEOUT_S = 5.0
CLOSE_FLUSH_S = 2.0  # at shutdown, how long queued entries may still be sent
WANTED_POLL_S = 0.5  # how often `{prefix}:snap:wanted` (a replica's snapshot request) is read


def journal_key(prefix: str) -> str:
    return f"{prefix}:journal"


def events_key(prefix: str) -> str:
    return f"{prefix}:events"


def entry_seq(entry_id: bytes | str) -> int:
    """The journal seq of a stream entry id `{seq}-0`."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.partition("-")[0])


@dataclass(slots=True)
class PublisherStats:
    stream: str
    published: int  # journal entries XADDed
    events_published: int
    dropped: int  # entries dropped because the queue overflowed (a gap in the stream)
    events_dropped: int
    errors: int  # failed round trips to Redis (each retried)
    resyncs: int  # discontinuities found after which a snapshot was requested
    queued: int
    lag_entries: int  # offered to the publisher but not yet in Redis
    lag_ms: float  # age of the oldest queued entry
    last_published_seq: int
    connected: bool


class StreamPublisher:
    """One background task that XADDs what the sequencer journaled; never blocks the writer."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        maxlen: int,
        queue_max: int,
        last_seq: int,
        request_snapshot: Callable[[], None] | None = None,
        snapshot_seq: Callable[[], int] | None = None,
        events_maxlen: int | None = None,
        metrics: Any = None,
    ) -> None:
        assert maxlen >= 1 and queue_max >= 1
        self._url = url
        self._prefix = prefix
        self.key = journal_key(prefix)
        self.events_key = events_key(prefix)
        self._maxlen = maxlen
        self._events_maxlen = events_maxlen or maxlen
        self._queue_max = queue_max
        self._queue: deque[tuple[int, bytes, int, float]] = deque()  # seq, payload, now_ms, t
        self._queue_bytes = 0
        self._events: deque[Any] = deque()  # EventBatch objects, expanded by the task
        self._request_snapshot = request_snapshot
        self._snapshot_seq = snapshot_seq
        self._last_offered = last_seq
        self._last_published = 0
        self._suspect = True  # check continuity before the first send
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = False
        self._published = 0
        self._events_published = 0
        self._dropped = 0
        self._events_dropped = 0
        self._errors = 0
        self._resyncs = 0
        self._wanted_check_at = 0.0
        self._stream_seen = False  # has this publisher seen the stream exist in Redis?
        if metrics is not None:
            _register_metrics(metrics, self)

    # --- called by the writer (on the loop) -------------------------------------------------

    def offer(self, seq: int, payload: bytes, now_ms: int) -> None:
        """Queue one journaled batch; O(1), never raises, never waits."""
        if self._closing:
            return
        if seq != self._last_offered + 1:
            self._suspect = True  # e.g. entries journaled before the publisher was attached
        self._last_offered = seq
        if (
            len(self._queue) >= self._queue_max
            or self._queue_bytes + len(payload) > PIPELINE_BYTES_MAX * 32
        ):
            self._dropped += len(self._queue) + 1
            if self._queue:
                log.warning(
                    "journal stream %s: publish queue full (%d entries); dropped, the stream "
                    "will have a gap and replicas reload a snapshot",
                    self.key,
                    len(self._queue) + 1,
                )
            self._queue.clear()
            self._queue_bytes = 0
            self._suspect = True
            return
        self._queue.append((seq, payload, now_ms, time.monotonic()))
        self._queue_bytes += len(payload)
        if not self._wake.is_set():
            self._wake.set()

    def offer_events(self, batch: Any) -> None:
        """Queue one batch of stock events (`engine.events.EventBatch`, anything with
        `to_list()` of `StockEvent`s) for `{prefix}:events`; O(1), never raises."""
        if self._closing:
            return
        if len(self._events) >= self._queue_max:
            self._events_dropped += len(batch)
            return
        self._events.append(batch)
        if not self._wake.is_set():
            self._wake.set()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-publisher")

    async def close(self, flush_s: float = CLOSE_FLUSH_S) -> None:
        """Send what is queued for up to `flush_s`, then stop."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), flush_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._queue:
                log.warning("journal stream %s: %d entries not sent at shutdown", self.key,
                            len(self._queue))  # fmt: skip

    def stats(self) -> PublisherStats:
        oldest = self._queue[0][3] if self._queue else None
        return PublisherStats(
            stream=self.key,
            published=self._published,
            events_published=self._events_published,
            dropped=self._dropped,
            events_dropped=self._events_dropped,
            errors=self._errors,
            resyncs=self._resyncs,
            queued=len(self._queue),
            lag_entries=len(self._queue),
            lag_ms=0.0 if oldest is None else (time.monotonic() - oldest) * 1000.0,
            last_published_seq=self._last_published,
            connected=self._connected,
        )

    # --- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        client = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=2.0, socket_timeout=SOCKET_TIMEOUT_S
        )
        delay = RETRY_S_MIN
        try:
            while True:
                if not self._queue and not self._events and not self._suspect:
                    if self._closing:
                        return
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), WANTED_POLL_S)
                try:
                    if time.monotonic() >= self._wanted_check_at:
                        await self._check_wanted(client)
                    if self._suspect:
                        await self._resync(client)
                    if self._queue:
                        await self._send(client)
                    if self._events:
                        await self._send_events(client)
                except (redis.RedisError, OSError) as exc:
                    self._errors += 1
                    if self._connected or self._errors == 1:
                        log.warning(
                            "journal stream %s: redis error (%s); retrying with backoff, "
                            "writes go on",
                            self.key,
                            exc,
                        )
                    self._connected = False
                    self._suspect = True
                    if self._closing:
                        return
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RETRY_S_MAX)
                    continue
                if not self._connected:
                    if self._errors:
                        log.info("journal stream %s: publishing resumed", self.key)
                    self._connected = True
                delay = RETRY_S_MIN
        finally:
            with contextlib.suppress(Exception):  # closing a broken connection
                await client.aclose()

    async def _check_wanted(self, client: aioredis.Redis) -> None:
        """A replica that cannot bridge a gap asks for a snapshot with `{prefix}:snap:wanted`."""
        self._wanted_check_at = time.monotonic() + WANTED_POLL_S
        wanted = await client.getdel(f"{self._prefix}:snap:wanted")
        if wanted is not None and self._request_snapshot is not None:
            log.info("journal stream %s: a replica asked for a snapshot", self.key)
            self._request_snapshot()

    async def _resync(self, client: aioredis.Redis) -> None:
        """Do the stream's tail and what we send next join up? If not, ask for a snapshot."""
        tail: list[Any] | None = await client.xrevrange(self.key, count=1)  # (ids are bytes)
        tail_seq = entry_seq(tail[0][0]) if tail else 0
        self._stream_seen = self._stream_seen or bool(tail)
        first = self._queue[0][0] if self._queue else self._last_offered + 1
        self._forget_sent(tail_seq)  # sent before an error cut the reply
        if tail_seq > self._last_offered:
            log.error(
                "journal stream %s ends at seq %d, past this primary's journal (seq %d): another "
                "writer on the prefix, or journal entries lost; deleting the stream",
                self.key,
                tail_seq,
                self._last_offered,
            )
            await client.delete(self.key)
            tail_seq = 0
        joined = tail_seq == first - 1
        has_snapshot = bool(await client.exists(f"{self._prefix}:snap:latest"))
        if not joined or not has_snapshot:
            # A replica needs a snapshot the stream continues from (even an empty one).
            snapshot_seq = self._snapshot_seq() if self._snapshot_seq is not None else -1
            if not (has_snapshot and snapshot_seq >= first - 1):
                self._resyncs += 1
                log.info(
                    "journal stream %s: tail at seq %d, next entry %d; requesting a snapshot so "
                    "replicas can bridge the gap",
                    self.key,
                    tail_seq,
                    first,
                )
                if self._request_snapshot is not None:
                    self._request_snapshot()
        self._suspect = False

    async def _send(self, client: aioredis.Redis) -> None:
        batch: list[tuple[int, bytes, int, float]] = []
        size = 0
        for item in self._queue:
            if batch and (len(batch) >= PIPELINE_ENTRIES_MAX or size >= PIPELINE_BYTES_MAX):
                break
            batch.append(item)
            size += len(item[1])
        pipe = client.pipeline(transaction=False)
        for seq, payload, now_ms, _ in batch:
            pipe.xadd(
                self.key,
                {"seq": seq, "now_ms": now_ms, "batch": payload},
                id=f"{seq}-0",
                maxlen=self._maxlen,
                approximate=True,
                nomkstream=True,
            )
        results = await pipe.execute(raise_on_error=False)
        sent = 0
        for (seq, _, _, _), result in zip(batch, results, strict=True):
            if result is None:  # the stream vanished (Redis restarted or flushed)
                self._suspect = True
                break
            if isinstance(result, Exception):
                if isinstance(result, redis.ResponseError) and "equal or smaller" in str(result):
                    sent += 1  # already there (a retried round trip)
                    self._last_published = seq
                    continue
                raise result
            sent += 1
            self._last_published = seq
            self._stream_seen = True
        if sent:
            self._forget_sent(batch[sent - 1][0])
        self._published += sent
        if self._suspect and self._queue:
            # Recreate the stream with the next entry, then check continuity.
            seq, payload, now_ms, _ = self._queue[0]
            await client.xadd(
                self.key,
                {"seq": seq, "now_ms": now_ms, "batch": payload},
                id=f"{seq}-0",
                maxlen=self._maxlen,
                approximate=True,
            )
            self._forget_sent(seq)
            self._published += 1
            self._last_published = seq
            self._suspect = False
            if self._stream_seen:  # else: its first entry (the resync already checked)
                self._resyncs += 1
                log.warning(
                    "journal stream %s was gone (redis restarted?); recreated at seq %d, "
                    "requesting a snapshot",
                    self.key,
                    seq,
                )
                if self._request_snapshot is not None:
                    self._request_snapshot()
            self._stream_seen = True

    def _forget_sent(self, upto_seq: int) -> None:
        """Drop the queued entries up to `upto_seq` once Redis has them. `offer` may have
        cleared the queue (an overflow) while the round trip was under way, so this matches by
        seq instead of popping a count."""
        while self._queue and self._queue[0][0] <= upto_seq:
            self._queue_bytes -= len(self._queue.popleft()[1])

    async def _send_events(self, client: aioredis.Redis) -> None:
        """Stock events as `{event seq}-0` entries: seq, sku, node_id, group_id, kind, at_ms and
        quantities (on_hand,reserved,allocated,safety,unavailable,inbound,available)."""
        batches = [self._events[i] for i in range(min(len(self._events), 64))]
        pipe = client.pipeline(transaction=False)
        count = 0
        for batch in batches:
            for event in batch.to_list():
                fields: dict[Any, Any] = {  # (xadd's parameter type is an invariant dict)
                    "seq": event.seq,
                    "sku": event.sku,
                    "node_id": event.node_id,
                    "group_id": event.group_id,
                    "kind": event.kind,
                    "at_ms": event.at_ms,
                    "quantities": ",".join(map(str, event.quantities)),
                }
                pipe.xadd(
                    self.events_key,
                    fields,
                    id=f"{event.seq}-0",
                    maxlen=self._events_maxlen,
                    approximate=True,
                )
                count += 1
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not (
                isinstance(result, redis.ResponseError) and "equal or smaller" in str(result)
            ):
                raise result
        for _ in batches:
            self._events.popleft()
        self._events_published += count


def _register_metrics(metrics: Any, publisher: StreamPublisher) -> None:
    from prometheus_client import Gauge

    registry = getattr(metrics, "registry", None)
    if registry is None:
        return
    gauge = Gauge(
        "omnistock_stream_publisher",
        "Journal stream publication: published, dropped, errors, resyncs (counts since start), "
        "lag_entries and lag_ms (queued, not yet in Redis).",
        ["what"],
        registry=registry,
    )
    for what in ("published", "dropped", "errors", "resyncs", "lag_entries", "lag_ms"):
        gauge.labels(what).set_function(lambda what=what: float(getattr(publisher.stats(), what)))  # type: ignore[misc]


def attach_publisher(app: Any) -> StreamPublisher:
    """Build the publisher for a primary with `--redis`, hook it to the sequencer (and to the
    event hub when there is one) and start it. Called by `App.start` before the writer starts."""
    config = app.config
    sequencer = app.sequencer
    snapshotter = app.snapshotter
    loop = asyncio.get_running_loop()

    def request_snapshot() -> None:
        if snapshotter is None:
            return
        task = loop.create_task(snapshotter.snapshot_now())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    publisher = StreamPublisher(
        config.redis_url,
        config.redis_prefix,
        maxlen=config.stream_maxlen,
        queue_max=config.publish_queue_max,
        last_seq=sequencer.journal_seq,
        request_snapshot=request_snapshot,
        snapshot_seq=(lambda: snapshotter.stats().last_journal_seq) if snapshotter else None,
        metrics=app.metrics,
    )
    sequencer.journaled_hook = publisher.offer
    hooks = getattr(getattr(app, "events", None), "publish_hooks", None)
    if isinstance(hooks, list):
        # The event hub (server/events.py) hands over each batch's stock events.
        hooks.append(publisher.offer_events)
    publisher.start()
    return publisher
