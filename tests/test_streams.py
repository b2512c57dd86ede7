"""Journal publication to a Redis Stream (issue 6 part 3), against a private redis-server.

The stream holds every journal entry as `{seq}-0` with the journal payload byte for byte; Redis
being down never fails or delays a write (entries wait in a bounded queue and are published when
Redis is back); an overflowing queue drops entries, counts them and asks for a snapshot so
replicas can bridge the gap.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from server.app import start_server
from server.config import ServerConfig
from server.streams import StreamPublisher, entry_seq
from tests.redis_server import RedisServer
from tests.stream_helpers import random_writes, setup_commands, wait_until

WAIT_S = 15.0


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[tuple[Any, RedisServer]]:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis_server:
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=str(tmp_path / "data"),
            redis_url=redis_server.url,
            durability="none",
        )
        server, app, _ = await start_server(config)
        try:
            for command in setup_commands():
                await app.sequencer.submit(command)
            yield app, redis_server
        finally:
            await app.stop(server, grace_s=1.0)


def _stream(url: str) -> list[tuple[int, dict[bytes, bytes]]]:
    client = redis.Redis.from_url(url)
    try:
        return [(entry_seq(i), f) for i, f in client.xrange("omnistock:journal")]
    finally:
        client.close()


def _journal(app: Any) -> dict[int, bytes]:
    return dict(app.sequencer.journal.replay(0))


async def _published_all(app: Any) -> None:
    await wait_until(
        lambda: (
            app.publisher.stats().last_published_seq == app.sequencer.journal_seq
            and app.publisher.stats().queued == 0
        ),
        WAIT_S,
        "the publisher to catch up",
    )


async def test_stream_entries_match_the_journal(primary: tuple[Any, RedisServer]) -> None:
    app, redis_server = primary
    await random_writes(app.sequencer, random.Random(1), 300)
    await _published_all(app)
    journal = _journal(app)
    stream = await asyncio.to_thread(_stream, redis_server.url)
    assert [seq for seq, _ in stream] == sorted(journal)  # every entry, in order, ids = seqs
    for seq, fields in stream:
        assert fields[b"batch"] == journal[seq]
        assert int(fields[b"seq"]) == seq
    stats = app.publisher.stats()
    assert stats.published == len(journal) and stats.dropped == 0 and stats.errors == 0


async def test_redis_down_writes_acknowledged_then_publication_resumes(
    primary: tuple[Any, RedisServer],
) -> None:
    app, redis_server = primary
    await random_writes(app.sequencer, random.Random(2), 50)
    await _published_all(app)
    before = app.sequencer.journal_seq
    redis_server.kill()
    # Every write is still acknowledged, promptly.
    await asyncio.wait_for(random_writes(app.sequencer, random.Random(3), 100, 1_000), 10.0)
    await wait_until(lambda: app.publisher.stats().errors > 0, WAIT_S, "a publish error")
    assert app.publisher.stats().queued > 0
    assert app.publisher.stats().lag_entries > 0
    redis_server.start()  # empty: no persistence
    await random_writes(app.sequencer, random.Random(4), 20, 2_000)
    await _published_all(app)
    journal = _journal(app)
    stream = await asyncio.to_thread(_stream, redis_server.url)
    seqs = [seq for seq, _ in stream]
    # Nothing queued while Redis was down was lost: the new stream starts right after `before`.
    assert seqs == list(range(before + 1, app.sequencer.journal_seq + 1))
    assert all(fields[b"batch"] == journal[seq] for seq, fields in stream)
    assert app.publisher.stats().dropped == 0
    # The stream vanished with the restart, so the primary asked for a snapshot for replicas.
    await wait_until(
        lambda: app.snapshotter.stats().last_journal_seq >= before, WAIT_S, "a new snapshot"
    )


async def test_queue_overflow_drops_counts_and_requests_a_snapshot(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis_server:
        config = ServerConfig(
            listen="127.0.0.1:0",
            data_dir=str(tmp_path / "data"),
            redis_url=redis_server.url,
            durability="none",
            publish_queue_max=5,
        )
        server, app, _ = await start_server(config)
        try:
            for command in setup_commands():
                await app.sequencer.submit(command)
            await _published_all(app)
            redis_server.kill()
            await asyncio.wait_for(random_writes(app.sequencer, random.Random(5), 60), 10.0)
            assert app.publisher.stats().dropped > 0
            redis_server.start()
            await random_writes(app.sequencer, random.Random(6), 10, 1_000)
            await _published_all(app)
            stats = app.publisher.stats()
            assert stats.resyncs >= 1
            first = (await asyncio.to_thread(_stream, redis_server.url))[0][0]
            # A snapshot the (gapped) stream continues from exists for replicas.
            await wait_until(
                lambda: app.snapshotter.stats().last_journal_seq >= first - 1,
                WAIT_S,
                "a snapshot bridging the gap",
            )
        finally:
            await app.stop(server, grace_s=1.0)


class _SlowPipeline:
    """A pipeline whose round trip waits until the test lets it finish."""

    def __init__(self, release: asyncio.Event) -> None:
        self._release = release
        self._count = 0

    def xadd(self, *args: Any, **kwargs: Any) -> None:
        self._count += 1

    async def execute(self, raise_on_error: bool = True) -> list[bytes]:
        await self._release.wait()
        return [b"ok"] * self._count


class _SlowClient:
    def __init__(self, release: asyncio.Event) -> None:
        self._release = release
        self.added: list[str] = []

    def pipeline(self, transaction: bool = False) -> _SlowPipeline:
        return _SlowPipeline(self._release)

    async def xadd(self, key: str, fields: dict[str, Any], id: str, **kwargs: Any) -> str:
        self.added.append(id)
        return id


async def test_an_overflow_during_a_send_does_not_break_the_publisher() -> None:
    """`offer` may clear the queue while a pipelined send is under way; the send must then
    forget only what it sent (it used to pop a count from the emptied queue and die)."""
    publisher = StreamPublisher("redis://127.0.0.1:1", "t", maxlen=100, queue_max=3, last_seq=0)
    for seq in (1, 2):
        publisher.offer(seq, b"x", 0)
    release = asyncio.Event()
    client = _SlowClient(release)
    send = asyncio.create_task(publisher._send(client))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the round trip is under way with entries 1 and 2
    for seq in (3, 4):  # the queue fills and overflows: everything queued is dropped
        publisher.offer(seq, b"x", 0)
    publisher.offer(5, b"x", 0)
    release.set()
    await send  # no IndexError
    stats = publisher.stats()
    assert stats.dropped == 4
    # 1 and 2 went out in the pipeline; 5, queued after the drop, is sent next (the stream is
    # suspect after a drop, so it restarts there) and nothing is left behind or sent twice.
    assert client.added == ["5-0"] and stats.last_published_seq == 5
    assert stats.published == 3 and not publisher._queue
