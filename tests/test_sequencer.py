"""The sequencer: coalescing, bounded queue, expiry wake-up, one journal entry per batch, and a
stop on engine failure. Runs against a real Journal in a tmp dir; no gRPC."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import msgspec
import pytest

from engine.codes import ReservationState
from engine.commands import (
    Batch,
    Commit,
    Line,
    NodeSpec,
    Reserve,
    ReserveColumns,
    SetOnHand,
    StockCount,
    UpsertNodes,
)
from engine.errors import Rejection
from engine.ledger import Ledger
from engine.persistence import Journal
from server.sequencer import (
    DeadlineExceeded,
    FsyncThread,
    NotReady,
    Overloaded,
    Sequencer,
    SequencerFailed,
    ShuttingDown,
)

_decode = msgspec.msgpack.Decoder(Batch).decode


def _entries(journal: Journal) -> list[Batch]:
    return [_decode(payload) for _, payload in journal.replay(0)]


@pytest.fixture
def journal(tmp_path: Path):
    with Journal.open(tmp_path / "journal", "sync") as j:
        yield j


async def _started(ledger: Ledger, journal: Journal, **kwargs) -> Sequencer:
    seq = Sequencer(ledger, journal, queue_commands_max=kwargs.pop("queue", 10_000), **kwargs)
    seq.start()
    await seq.submit(UpsertNodes((NodeSpec("n1"),)))
    await seq.submit(SetOnHand("soh", (StockCount("sku", "n1", 1_000, 1),)))
    return seq


async def test_not_ready_before_start(journal: Journal) -> None:
    seq = Sequencer(Ledger(), journal, queue_commands_max=10)
    with pytest.raises(NotReady):
        await seq.submit(Commit("x"))


async def test_concurrent_submits_coalesce_and_answer_in_order(journal: Journal) -> None:
    seq = await _started(Ledger(), journal)
    before = seq.stats().batches

    async def caller(k: int) -> list[object]:
        first = await seq.submit(Reserve(f"r{k}", (Line("sku", "n1", 1),), 60_000))
        rest = await seq.submit_many([Commit(f"r{k}"), Commit("nope"), Commit(f"r{k}")])
        return [first, *rest]

    results = await asyncio.gather(*(caller(k) for k in range(200)))
    for k, (reserved, committed, missing, again) in enumerate(results):
        assert reserved.reservation.reservation_id == f"r{k}"
        assert reserved.reservation.state == ReservationState.HELD
        assert committed.reservation.state == ReservationState.COMMITTED
        assert not committed.replayed and again.replayed
        assert isinstance(missing, Rejection) and missing.code == "NOT_FOUND"
    stats = seq.stats()
    batches = stats.batches - before
    # 400 submits from 200 concurrent callers: the writer takes what waits, so far fewer batches.
    assert batches <= 40, batches
    assert stats.batch_commands_max >= 50
    # One journal entry per batch, and the submit_many commands stayed contiguous.
    entries = _entries(journal)
    assert len(entries) == stats.batches
    for entry in entries:
        kinds = [type(c).__name__ for c in entry.commands]
        for i, kind in enumerate(kinds):
            if kind == "Commit" and entry.commands[i].reservation_id == "nope":
                assert kinds[i - 1] == kinds[i + 1] == "Commit"
    await seq.close()


async def test_full_queue_is_overloaded_immediately(journal: Journal) -> None:
    seq = await _started(Ledger(), journal, queue=8)
    # Without yielding to the writer the queue fills: the 9th command is refused at once.
    futures = [asyncio.ensure_future(seq.submit(Commit(f"x{k}"))) for k in range(8)]
    await asyncio.sleep(0)  # let the submits enqueue; the writer has not run yet
    started = time.monotonic()
    with pytest.raises(Overloaded) as info:
        await seq.submit_many([Commit("a"), Commit("b")])
    assert time.monotonic() - started < 0.05
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert all(isinstance(r, Rejection) for r in await asyncio.gather(*futures))
    assert seq.stats().overloaded == 1
    # Drained: accepted again.
    assert isinstance(await seq.submit(Commit("c")), Rejection)
    await seq.close()


async def test_columnar_reserves_count_per_reservation_in_the_queue(journal: Journal) -> None:
    seq = await _started(Ledger(), journal, queue=8)

    def columns(prefix: str, n: int) -> ReserveColumns:
        ids = [f"{prefix}{k}" for k in range(n)]
        return ReserveColumns.build(ids, [1] * n, ["sku"] * n, ["n1"] * n, [1] * n, 60_000)

    # Nine reservations in one command weigh nine commands: more than the queue holds.
    with pytest.raises(Overloaded):
        await seq.submit(columns("big", 9))
    waiting = asyncio.ensure_future(seq.submit(columns("a", 6)))
    await asyncio.sleep(0)  # enqueued, the writer has not run yet: 6 of 8 taken
    with pytest.raises(Overloaded):
        await seq.submit(columns("b", 3))
    await waiting
    assert seq.stats().overloaded == 2
    assert seq.stats().queued_commands == 0
    await seq.submit(columns("c", 8))  # drained: a full queue's worth is accepted
    assert seq.ledger.get_reservation("c7").state == ReservationState.HELD
    with pytest.raises(Exception, match="RESERVATION_NOT_FOUND|no such"):
        seq.ledger.get_reservation("big0")
    await seq.close()


async def test_expired_deadline_is_dropped_not_applied(journal: Journal) -> None:
    seq = await _started(Ledger(), journal)
    with pytest.raises(DeadlineExceeded):
        await seq.submit(Reserve("late", (Line("sku", "n1", 1),), 60_000), timeout_s=-1.0)
    with pytest.raises(Exception, match="RESERVATION_NOT_FOUND|no such"):
        seq.ledger.get_reservation("late")
    await seq.close()


@pytest.mark.parametrize("durability", ["sync", "none"])
async def test_holds_expire_without_traffic(tmp_path: Path, durability: str) -> None:
    """The hold is made in the express lane (the writer idle): its expiry still arms the idle
    writer's timer, in both the lane's forms (fsync awaited or not)."""
    journal = Journal.open(tmp_path / "journal", durability)
    clock = {"ms": 1_000_000}
    ledger = Ledger()
    seq = await _started(ledger, journal, clock_ms=lambda: clock["ms"])
    await asyncio.sleep(0.01)  # the writer is idle, waiting for work
    result = await seq.submit(Reserve("r", (Line("sku", "n1", 5),), 1_000))
    assert result.reservation.state == ReservationState.HELD
    entries_before = len(_entries(journal))
    # Time passes (the injected clock) and nobody calls: the writer wakes at the expiry itself.
    clock["ms"] += 1_000
    deadline = time.monotonic() + 3.0
    # Counters move once the batch is durable, a moment after its state is visible to reads.
    while seq.stats().ticks == 0:
        assert time.monotonic() < deadline, "the hold did not expire"
        await asyncio.sleep(0.01)
    assert ledger.get_reservation("r").state == ReservationState.EXPIRED
    # The tick was an empty batch, journaled (replay must expire the hold at the same time).
    entries = _entries(journal)
    assert len(entries) == entries_before + 1
    assert entries[-1].commands == () and entries[-1].now_ms == clock["ms"]
    assert seq.stats().ticks == 1
    assert seq.stats().express >= 1
    await seq.close()
    journal.close()


async def test_wall_clock_expiry_wakes_the_writer(journal: Journal) -> None:
    ledger = Ledger()
    seq = await _started(ledger, journal)
    await seq.submit(Reserve("r", (Line("sku", "n1", 5),), 1_000))  # TTL_MS_MIN
    await asyncio.sleep(1.3)
    assert ledger.get_reservation("r").state == ReservationState.EXPIRED
    await seq.close()


@pytest.mark.parametrize("lane", ["express", "writer"])
async def test_fsync_failure_fails_batch_and_stops_writes(journal: Journal, lane: str) -> None:
    ledger = Ledger()
    failures: list[BaseException] = []
    seq = await _started(ledger, journal, on_failure=failures.append)
    threads = {t.name for t in threading.enumerate()}
    assert "omnistock-fsync" in threads  # sync mode: the batches above were fsynced on it

    def broken() -> None:
        raise OSError(5, "disk gone")

    journal.commit = broken  # type: ignore[method-assign]
    reserve = Reserve("r1", (Line("sku", "n1", 1),), 60_000)
    with pytest.raises(SequencerFailed) as info:
        if lane == "express":
            await seq.submit(reserve)
        else:
            await seq.submit_many([reserve])
    assert info.value.code == "INTERNAL" and "disk gone" in str(info.value)
    assert len(failures) == 1 and isinstance(failures[0], OSError)
    with pytest.raises(SequencerFailed):
        await seq.submit(Commit("r1"))
    await seq.close()
    assert "omnistock-fsync" not in {t.name for t in threading.enumerate()}


async def test_fsync_thread_commits_in_order_and_closes(journal: Journal) -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[int, int]] = []
    journal.commit = lambda: calls.append((threading.get_ident(), len(calls)))  # type: ignore[method-assign]
    fsync = FsyncThread(journal)
    futures = [fsync.commit(loop) for _ in range(50)]
    assert await asyncio.gather(*futures) == [None] * 50
    assert [i for _, i in calls] == list(range(50))
    assert len({ident for ident, _ in calls}) == 1
    assert calls[0][0] != threading.get_ident()  # not on the loop's thread
    fsync.close()
    assert "omnistock-fsync" not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError):
        fsync.commit(loop)


async def test_engine_exception_fails_batch_and_stops_writes(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    failures: list[BaseException] = []
    seq = await _started(ledger, journal, on_failure=failures.append)
    entries_before = len(_entries(journal))

    def broken(batch: Batch) -> None:
        raise RuntimeError("kernel bug")

    ledger.apply_batch = broken  # type: ignore[method-assign]
    with pytest.raises(SequencerFailed) as info:
        await seq.submit(Commit("x"))
    assert info.value.code == "INTERNAL"
    assert len(failures) == 1 and "kernel bug" in str(failures[0])
    with pytest.raises(SequencerFailed):
        await seq.submit(Commit("y"))
    assert len(_entries(journal)) == entries_before  # the failed batch was never journaled
    assert seq.stats().failed
    assert any("writes are stopped" in r.getMessage() for r in caplog.records)
    await seq.close()


async def test_close_drains_then_refuses(journal: Journal) -> None:
    seq = await _started(Ledger(), journal)
    pending = asyncio.ensure_future(seq.submit(Reserve("r", (Line("sku", "n1", 1),), 60_000)))
    await asyncio.sleep(0)
    await seq.close()
    assert (await pending).reservation.state == ReservationState.HELD
    with pytest.raises(ShuttingDown):
        await seq.submit(Commit("r"))


async def test_sync_throughput_figure(journal: Journal, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints reserves/s through the sequencer in sync mode (a figure, not an assertion)."""
    seq = await _started(Ledger(), journal)
    count = 4_000
    started = time.perf_counter()

    async def client(c: int) -> None:
        for k in range(count // 64):
            await seq.submit(Reserve(f"t{c}-{k}", (Line("sku", "n1", 1),), 60_000))

    await seq.submit(SetOnHand("more", (StockCount("sku", "n1", 100_000, 2),)))
    await asyncio.gather(*(client(c) for c in range(64)))
    elapsed = time.perf_counter() - started
    stats = seq.stats()
    with capsys.disabled():
        print(
            f"\nsequencer sync mode: {count / elapsed:,.0f} reserves/s, 64 concurrent callers, "
            f"{stats.batches} batches (max {stats.batch_commands_max} commands)"
        )
    await seq.close()


@pytest.mark.parametrize("yields", [0, 2])
async def test_writes_ready_a_turn_later_join_the_batch(
    journal: Journal, monkeypatch: pytest.MonkeyPatch, yields: int
) -> None:
    import server.sequencer as sequencer_module

    monkeypatch.setattr(sequencer_module, "GROUP_YIELDS", yields)
    seq = await _started(Ledger(), journal)
    await asyncio.sleep(0.01)  # the writer is idle, waiting for work
    before = seq.stats().batches

    async def caller(k: int) -> object:
        for _ in range(k % 2):  # half of the handlers get to submit one loop turn later
            await asyncio.sleep(0)
        # submit_many: the writer's path (a lone `submit` to an idle writer takes the express
        # lane, tested below).
        return await seq.submit_many([Commit(f"x{k}")])

    await asyncio.gather(*(caller(k) for k in range(10)))
    # With the writer yielding first, the late half joins the same batch (one fsync).
    assert seq.stats().batches - before == (1 if yields else 2)
    await seq.close()


# --- the express lane -----------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["sync", "async", "none"])
async def test_express_lane_applies_a_lone_submit_as_its_own_batch(
    tmp_path: Path, durability: str
) -> None:
    """A submit to an idle writer is applied, journaled and answered without the writer task;
    commands that arrive while an express batch waits for its fsync queue for the writer, which
    applies them after it: the journal, the hooks and the answers keep one order."""
    with Journal.open(tmp_path / "journal", durability) as journal:
        ledger = Ledger()
        seq = await _started(ledger, journal)
        await asyncio.sleep(0.01)  # the writer is idle, waiting for work
        journaled: list[tuple[int, list[str]]] = []
        answered: list[str] = []
        seq.journaled_hook = lambda seq_no, payload, now_ms: journaled.append(
            (seq_no, [c.reservation_id for c in _decode(payload).commands])
        )
        before = seq.stats()

        async def caller(k: int) -> None:
            result = await seq.submit(Reserve(f"e{k}", (Line("sku", "n1", 1),), 60_000))
            answered.append(result.reservation.reservation_id)

        await asyncio.gather(*(caller(k) for k in range(5)))
        stats = seq.stats()
        assert stats.express - before.express == (1 if durability == "sync" else 5)
        # sync: e0 took the lane and e1..e4 waited for the writer (one batch after e0's fsync);
        # otherwise every lone submit was applied at once.
        expected = (
            [["e0"], ["e1", "e2", "e3", "e4"]]
            if durability == "sync"
            else [[f"e{k}"] for k in range(5)]
        )
        assert [ids for _, ids in journaled] == expected
        seqs = [s for s, _ in journaled]
        assert seqs == list(range(seqs[0], seqs[0] + len(expected)))
        assert answered == [f"e{k}" for k in range(5)]
        assert stats.batches - before.batches == len(expected)
        assert stats.queued_commands == 0
        entries = _entries(journal)[-len(expected) :]
        assert [[c.reservation_id for c in e.commands] for e in entries] == expected
        assert ledger.get_reservation("e4").state == ReservationState.HELD
        await seq.close()


async def test_express_batch_outlives_its_cancelled_caller(journal: Journal) -> None:
    """A caller that gives up while its express batch waits for the fsync cancels only its own
    wait: the batch is applied and journaled already, so it is made durable, its hooks run and
    the writer goes on after it."""
    ledger = Ledger()
    seq = await _started(ledger, journal)
    await asyncio.sleep(0.01)
    journaled: list[int] = []
    seq.journaled_hook = lambda seq_no, payload, now_ms: journaled.append(seq_no)
    first = asyncio.ensure_future(seq.submit(Reserve("c0", (Line("sku", "n1", 1),), 60_000)))
    await asyncio.sleep(0)  # c0 is applied and waits for its fsync
    assert ledger.get_reservation("c0").state == ReservationState.HELD
    later = asyncio.ensure_future(seq.submit(Reserve("c1", (Line("sku", "n1", 1),), 60_000)))
    first.cancel()
    assert (await later).reservation.state == ReservationState.HELD
    with pytest.raises(asyncio.CancelledError):
        await first
    assert journaled == [journaled[0], journaled[0] + 1]  # c0's batch, then c1's
    assert journal.synced_seq >= journaled[-1]
    assert seq.stats().queued_commands == 0
    await seq.close()


async def test_close_waits_for_an_express_batch(journal: Journal) -> None:
    seq = await _started(Ledger(), journal)
    await asyncio.sleep(0.01)
    journaled: list[int] = []
    seq.journaled_hook = lambda seq_no, payload, now_ms: journaled.append(seq_no)
    pending = asyncio.ensure_future(seq.submit(Reserve("w", (Line("sku", "n1", 1),), 60_000)))
    await asyncio.sleep(0)  # applied, waiting for its fsync
    await seq.close()
    assert journaled == [journal.last_seq]  # made durable and hooked before close returned
    assert (await pending).reservation.state == ReservationState.HELD


class _IntervalSnapshots:
    """The snapshotter's two hooks with `Snapshotter`'s timing rules (due `interval_s` after
    the last snapshot once the journal moved on; asked for at once when `wanted`), saving
    instantly: the seqs it saved at, and every poll."""

    def __init__(self, last_seq: int, interval_s: float) -> None:
        self.last_seq, self.last_at, self.interval_s = last_seq, time.monotonic(), interval_s
        self.wanted = False
        self.saved: list[int] = []
        self.polls: list[int] = []

    def next_due_monotonic(self, journal_seq: int) -> float | None:
        if self.wanted:
            return 0.0
        return None if journal_seq <= self.last_seq else self.last_at + self.interval_s

    def poll(self, ledger: Ledger, journal_seq: int) -> None:
        self.polls.append(journal_seq)
        due = self.next_due_monotonic(journal_seq)
        if due is not None and due <= time.monotonic():
            self.saved.append(journal_seq)
            self.last_seq, self.last_at, self.wanted = journal_seq, time.monotonic(), False


@pytest.mark.parametrize("lane", ["express", "writer"])
async def test_a_write_arms_the_idle_writers_snapshot_timer(journal: Journal, lane: str) -> None:
    """A snapshot just taken, the writer idle with no timer (nothing changed): one write, then
    silence. The interval snapshot still comes, from whichever lane applied the write."""
    seq = Sequencer(Ledger(), journal, queue_commands_max=100)
    seq.start()
    await seq.submit_many([UpsertNodes((NodeSpec("n1"),))])
    snapshots = _IntervalSnapshots(journal.last_seq, 0.2)
    seq._snapshotter = snapshots
    seq.wake()
    await asyncio.sleep(0.05)  # idle again, armed for nothing
    write = SetOnHand("soh", (StockCount("sku", "n1", 5, 1),))
    express_before = seq.stats().express
    await (seq.submit(write) if lane == "express" else seq.submit_many([write]))
    assert seq.stats().express - express_before == (lane == "express")
    deadline = time.monotonic() + 3.0
    while not snapshots.saved:
        assert time.monotonic() < deadline, "no snapshot after the interval"
        await asyncio.sleep(0.02)
    assert snapshots.saved == [journal.last_seq]
    await seq.close()


@pytest.mark.parametrize("failure", ["engine", "fsync"])
async def test_a_failed_express_batch_stops_the_writer_too(
    journal: Journal, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an express batch fails, the writer applies, journals, hooks and snapshots nothing
    more, though a hold falls due and a snapshot is asked for: the ledger may be half applied
    (engine) or ahead of the journal (fsync)."""
    import engine.persistence.journal as journal_module

    clock = {"ms": 1_000_000}
    ledger = Ledger()
    failures: list[BaseException] = []
    snapshots = _IntervalSnapshots(0, 3_600)
    seq = await _started(ledger, journal, clock_ms=lambda: clock["ms"],
                         on_failure=failures.append, snapshotter=snapshots)  # fmt: skip
    journaled: list[int] = []
    seq.journaled_hook = lambda seq_no, payload, now_ms: journaled.append(seq_no)
    await seq.submit(Reserve("r0", (Line("sku", "n1", 1),), 1_000))
    await asyncio.sleep(0.02)  # the writer idle, its timer armed for r0's expiry
    if failure == "engine":

        def broken(batch: Batch) -> None:
            raise RuntimeError("kernel bug")

        monkeypatch.setattr(ledger, "apply_batch", broken)
    else:

        def eio(fd: int) -> None:
            raise OSError(5, "EIO")

        monkeypatch.setattr(journal_module, "_fdatasync", eio)
    with pytest.raises(SequencerFailed):
        await seq.submit(Reserve("r1", (Line("sku", "n1", 1),), 60_000))
    monkeypatch.undo()
    last_seq, hooked, polls = journal.last_seq, len(journaled), len(snapshots.polls)
    clock["ms"] += 2_000  # r0 is due
    snapshots.wanted = True  # and a snapshot is asked for
    seq.wake()
    await asyncio.sleep(0.1)
    assert ledger.get_reservation("r0").state == ReservationState.HELD  # no expiry tick
    assert journal.last_seq == last_seq and len(journaled) == hooked
    assert len(snapshots.polls) == polls and not snapshots.saved
    assert len(failures) == 1
    await seq.close()
    assert "omnistock-fsync" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("lane", ["express", "writer"])
@pytest.mark.parametrize("durability", ["sync", "none"])
async def test_a_raising_hook_answers_its_batch_then_stops_writes(
    tmp_path: Path, lane: str, durability: str
) -> None:
    """Hooks must not raise; one that does (a bug) still lets its batch's callers have their
    answers (the batch is durable), then writes stop as after any internal error, and close()
    finishes its work."""
    journal = Journal.open(tmp_path / "journal", durability)
    failures: list[BaseException] = []
    seq = await _started(Ledger(), journal, on_failure=failures.append)
    await asyncio.sleep(0.02)

    def hook(seq_no: int, payload: bytes, now_ms: int) -> None:
        raise ValueError("hook bug")

    seq.journaled_hook = hook
    write = Reserve("r", (Line("sku", "n1", 1),), 60_000)
    if lane == "express":
        answer = await asyncio.wait_for(seq.submit(write), 2.0)
    else:
        (answer,) = await asyncio.wait_for(seq.submit_many([write]), 2.0)
    assert answer.reservation.state == ReservationState.HELD
    assert len(failures) == 1 and "hook bug" in str(failures[0])
    with pytest.raises(SequencerFailed):
        await asyncio.wait_for(seq.submit(Commit("r")), 2.0)
    await asyncio.wait_for(seq.close(), 2.0)
    assert "omnistock-fsync" not in {t.name for t in threading.enumerate()}
    journal.close()
