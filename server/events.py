"""The event hub: stock events from the writer to every watcher (issue 6, WatchAvailability).

The engine numbers its events (engine/events.py: contiguous sequence numbers, kept in snapshots);
the sequencer hands each batch's `EventBatch` to `EventHub.publish` after the batch's journal
commit, so watchers only ever see acknowledged state.

The writer's cost does not depend on the watchers: `publish` appends the batch to a bounded
in-memory history (a ring of batches holding at least `history_events_max` events) and sets one
wake-up flag per subscriber. Names and protobuf messages are built lazily, once per event, by the
first watcher that reads them. Each subscriber reads the shared history at its own cursor; its
"queue" is the distance between the newest event and its cursor, bounded by `lag_events_max`.
A subscriber further behind than that (its RPC cannot write because the client does not read) is
marked too slow at the next publish and gets a final RESOURCE_EXHAUSTED (SUBSCRIBER_TOO_SLOW);
it may resume from the last sequence it saw while the history still has it. A resumed subscriber
may start further behind than `lag_events_max` (that is why it was ended), so it is `catching_up`
until it is within `lag_events_max` of the newest event again, however many events arrive
meanwhile: while catching up, only the history dropping its cursor ends it (at a publish, or when
it reads), which for one that stalls takes up to `history_events_max` events instead of
`lag_events_max`. Once caught up, the usual rule holds.

What makes a subscriber fall behind is its `context.write`: in grpc-core a server-streaming
write completes when HTTP/2 flow control has let the message out (not when it is queued), and the
RPC keeps at most one write in flight, so a client that stops reading stalls its writes once the
stream window and the socket buffers are full, and its cursor stops while `last_seq` grows. The
server's memory per subscriber is bounded by one message in gRPC plus its cursor into the shared
history; how much the client buffers is the client's window (it grows with BDP probing while
the client's transport still reads). The lag is checked at each publish against the events
published before that batch (`disconnected_slow` counts subscribers marked too slow, whether at
publish or because the history dropped their cursor).

Resuming: `subscribe(resume_after_seq=s)` replays the retained events after `s`, then goes live,
with no gap and no duplicate (subscribe and publish both run on the event loop). `s` older than
the history raises `ResumeError` (OUT_OF_RANGE, RESUME_TOO_OLD); `s` newer than the last event
raises it with RESUME_AHEAD (the client saw another server's history). `s` = 0 means live only.

Hooks for other publishers (the Redis Streams engineer, issue 6 part 3): append a callable to
`publish_hooks`; it is called as `hook(batch)` with each `EventBatch` (`batch.seq_first`,
`batch.at_ms`, `batch.to_list()` → `engine.events.StockEvent`s) right after the history got it.
A hook must not block; an exception it raises is logged and counted, never propagated to the
writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from engine.events import CROSSINGS, EventBatch, StockEvent
from omnistock.v1 import availability_pb2
from server.convert import quantities_pb

__all__ = [
    "EventHub",
    "HISTORY_EVENTS_MAX",
    "LAG_EVENTS_MAX",
    "ResumeError",
    "SUBSCRIBERS_MAX",
    "Subscription",
    "SubscriberClosed",
    "SubscriberTooSlow",
]

log = logging.getLogger("omnistock.events")

# Events kept for resuming (at least this many; whole batches are dropped from the front).
HISTORY_EVENTS_MAX = 100_000
# How far a subscriber may fall behind the newest event before it is disconnected.
LAG_EVENTS_MAX = 20_000
# Concurrent watchers (each costs a wake-up per batch).
SUBSCRIBERS_MAX = 1_000
assert LAG_EVENTS_MAX <= HISTORY_EVENTS_MAX


class ResumeError(Exception):
    """The resume point is not in the retained history (`reason`: RESUME_TOO_OLD/AHEAD)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SubscriberTooSlow(Exception):
    pass


class SubscriberClosed(Exception):
    pass


class _Entry:
    """One batch in the history, with its events built once, on first read."""

    __slots__ = ("batch", "seq_first", "seq_last", "_events")

    def __init__(self, batch: EventBatch) -> None:
        self.batch = batch
        self.seq_first = batch.seq_first
        self.seq_last = batch.seq_last
        self._events: list[tuple[StockEvent, Any]] | None = None

    def events(self) -> list[tuple[StockEvent, Any]]:
        if self._events is None:
            self._events = [(e, _to_pb(e)) for e in self.batch.to_list()]
        return self._events


def _to_pb(e: StockEvent) -> Any:
    msg = availability_pb2.StockEvent(
        seq=e.seq, sku=e.sku, quantities=quantities_pb(e.quantities), kind=e.kind, at_ms=e.at_ms
    )
    if e.node_id:
        msg.node_id = e.node_id
    else:
        msg.group_id = e.group_id
    return msg


class Subscription:
    """One watcher's view: a cursor into the hub's history and a filter."""

    def __init__(
        self,
        hub: EventHub,
        cursor: int,
        skus: frozenset[str],
        node_ids: frozenset[str],
        group_ids: frozenset[str],
        thresholds_only: bool,
    ) -> None:
        self._hub = hub
        self.cursor = cursor  # the last sequence read from the history (delivered or filtered)
        # A resume this far behind is not judged on lag until it is within it again.
        self.catching_up = cursor < hub.last_seq - hub.lag_events_max
        self._skus = skus
        self._nodes = node_ids
        self._groups = group_ids
        self._scoped = bool(node_ids or group_ids)
        self._thresholds_only = thresholds_only
        self.wake = asyncio.Event()  # set on every publish
        self.stopped = asyncio.Event()  # set once too slow or closed
        self.too_slow = False
        self.closed = False

    def hub_last_seq(self) -> int:
        return self._hub.last_seq

    def mark_too_slow(self) -> None:
        if self.too_slow or self.closed:
            return
        self.too_slow = True
        self._hub.disconnected_slow += 1
        self.stopped.set()
        self.wake.set()

    def matches(self, e: StockEvent) -> bool:
        if self._thresholds_only and e.kind not in CROSSINGS:
            return False
        if self._skus and e.sku not in self._skus:
            return False
        return not self._scoped or (
            e.node_id in self._nodes if e.node_id else e.group_id in self._groups
        )

    def pending(self) -> list[tuple[int, Any]]:
        """Matching (seq, message) pairs after the cursor, without moving it."""
        self._check()
        ring = self._hub._ring
        if ring and self.cursor < ring[0].seq_first - 1:
            self.mark_too_slow()  # the history no longer has what this subscriber missed
            self._check()
        out: list[tuple[int, Any]] = []
        for entry in self._hub._since(self.cursor):
            for e, msg in entry.events():
                if e.seq > self.cursor and self.matches(e):
                    out.append((e.seq, msg))
        return out

    def advance(self, seq: int) -> None:
        """Everything up to `seq` was delivered (or filtered out)."""
        self.cursor = max(self.cursor, seq)

    async def wait(self) -> None:
        """Until there is something after the cursor (or the subscription ended)."""
        while True:
            self._check()
            if self._hub.last_seq > self.cursor:
                return
            self.wake.clear()
            await self.wake.wait()

    def _check(self) -> None:
        if self.too_slow:
            raise SubscriberTooSlow(
                f"more than {self._hub.lag_events_max} events behind; resume after seq "
                f"{self.cursor} (the history keeps the last {self._hub.history_events_max})"
            )
        if self.closed:
            raise SubscriberClosed("the server is shutting down")

    def close(self) -> None:
        self.closed = True
        self._hub._subs.discard(self)
        self.stopped.set()
        self.wake.set()


class EventHub:
    """Fan-out of the engine's stock events to watchers, with a bounded resume history."""

    def __init__(
        self,
        *,
        history_events_max: int = HISTORY_EVENTS_MAX,
        lag_events_max: int = LAG_EVENTS_MAX,
        subscribers_max: int = SUBSCRIBERS_MAX,
    ) -> None:
        assert 1 <= lag_events_max <= history_events_max
        self.history_events_max = history_events_max
        self.lag_events_max = lag_events_max
        self.subscribers_max = subscribers_max
        self.last_seq = 0
        self.publish_hooks: list[Callable[[EventBatch], None]] = []
        self._ring: deque[_Entry] = deque()
        self._ring_events = 0
        self._subs: set[Subscription] = set()
        self.published = 0
        self.disconnected_slow = 0
        self.hook_errors = 0

    def start_at(self, seq: int) -> None:
        """The engine's event sequence at start (after recovery): numbering continues from it."""
        assert not self._ring
        self.last_seq = seq

    def restart_at(self, seq: int) -> None:
        """The state behind the events was replaced (a read replica reloaded a snapshot): the
        numbering continues from the new state's `seq`, the history goes, and every watcher is
        ended as too slow (it missed what lies between), to resume from what it saw."""
        self._ring.clear()
        self._ring_events = 0
        self.last_seq = seq
        for sub in self._subs:
            sub.mark_too_slow()
            sub.wake.set()

    # --- the writer's side ----------------------------------------------------------------

    def publish(self, batch: EventBatch) -> None:
        """Called by the sequencer after each journal commit with the batch's events."""
        assert batch.seq_first == self.last_seq + 1, (batch.seq_first, self.last_seq)
        ring = self._ring
        ring.append(_Entry(batch))
        self._ring_events += len(batch)
        while len(ring) > 1 and self._ring_events - len(ring[0].batch) >= self.history_events_max:
            self._ring_events -= len(ring.popleft().batch)
        # Lag is judged against the events published before this batch, which a subscriber had
        # a chance to write: one batch larger than `lag_events_max` does not drop everyone.
        floor = self.last_seq - self.lag_events_max
        self.last_seq = batch.seq_last
        self.published += len(batch)
        kept_after = ring[0].seq_first - 1  # the history holds the events after this seq
        for sub in self._subs:
            if sub.cursor < floor:
                if not sub.catching_up or sub.cursor < kept_after:
                    sub.mark_too_slow()
            elif sub.catching_up:
                sub.catching_up = False
            sub.wake.set()
        for hook in self.publish_hooks:
            try:
                hook(batch)
            except Exception:
                self.hook_errors += 1
                log.exception("an event publish hook failed")

    # --- the watchers' side ---------------------------------------------------------------

    def subscribe(
        self,
        *,
        skus: Iterable[str] = (),
        node_ids: Iterable[str] = (),
        group_ids: Iterable[str] = (),
        thresholds_only: bool = False,
        resume_after_seq: int = 0,
    ) -> Subscription:
        """A new subscription; no filter = everything. Raises ResumeError, OverflowError."""
        if len(self._subs) >= self.subscribers_max:
            raise OverflowError(f"more than {self.subscribers_max} watchers")
        cursor = self.last_seq
        if resume_after_seq:
            first = self._ring[0].seq_first if self._ring else self.last_seq + 1
            if resume_after_seq > self.last_seq:
                raise ResumeError(
                    "RESUME_AHEAD",
                    f"resume_after_seq {resume_after_seq} is after the last event "
                    f"{self.last_seq} of this server",
                )
            if resume_after_seq < first - 1:
                raise ResumeError(
                    "RESUME_TOO_OLD",
                    f"resume_after_seq {resume_after_seq} is older than the retained history "
                    f"(events {first}..{self.last_seq}); read the current availability and "
                    "watch live",
                )
            cursor = resume_after_seq
        sub = Subscription(
            self, cursor, frozenset(skus), frozenset(node_ids), frozenset(group_ids),
            thresholds_only,
        )  # fmt: skip
        self._subs.add(sub)
        return sub

    def _since(self, seq: int) -> list[_Entry]:
        """History entries holding events after `seq`, oldest first."""
        out: list[_Entry] = []
        for entry in reversed(self._ring):
            if entry.seq_last <= seq:
                break
            out.append(entry)
        out.reverse()
        return out

    def close(self) -> None:
        """End every subscription (server shutdown)."""
        for sub in list(self._subs):
            sub.close()

    def stats(self) -> dict[str, int]:
        return {
            "last_seq": self.last_seq,
            "history_events": self._ring_events,
            "subscribers": len(self._subs),
            "published": self.published,
            "disconnected_slow": self.disconnected_slow,
            "hook_errors": self.hook_errors,
        }
