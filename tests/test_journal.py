from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.persistence import journal as journal_module
from engine.persistence.journal import (
    RECORD_HEADER_BYTES,
    Journal,
    JournalCorruptError,
    JournalError,
    encode_record,
    segment_name,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def payload_for(seq: int) -> bytes:
    """Deterministic payloads of varied length (0..60 bytes), so framing bugs show up."""
    return bytes((seq * 7 + i) % 256 for i in range((seq * 13) % 61))


def write_journal(directory: Path, count: int, **kwargs: object) -> None:
    with Journal.open(directory, "none", **kwargs) as journal:  # type: ignore[arg-type]
        for seq in range(1, count + 1):
            assert journal.append(payload_for(seq)) == seq


def replayed(directory: Path, durability: str = "none") -> list[tuple[int, bytes]]:
    with Journal.open(directory, durability) as journal:  # type: ignore[arg-type]
        return list(journal.replay(0))


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*.log"))


def record_ends(count: int, first_seq: int = 1) -> list[int]:
    """End offset of each record in a segment holding ``count`` records from ``first_seq``."""
    ends, offset = [], 0
    for seq in range(first_seq, first_seq + count):
        offset += len(encode_record(seq, payload_for(seq)))
        ends.append(offset)
    return ends


def expected(count: int) -> list[tuple[int, bytes]]:
    return [(seq, payload_for(seq)) for seq in range(1, count + 1)]


# -- round trips ---------------------------------------------------------------------------


def test_round_trip_across_segment_rolls_and_reopen(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "sync", segment_bytes_max=1024) as journal:
        assert journal.last_seq == 0
        for seq in range(1, 101):
            assert journal.append(payload_for(seq)) == seq
        assert journal.append_many(payload_for(s) for s in range(101, 201)) == 200
        journal.commit()
        assert journal.synced_seq == 200
        assert list(journal.replay(0)) == expected(200)
        assert list(journal.replay(150)) == expected(200)[150:]
        assert list(journal.replay(200)) == []
    names = [p.name for p in segments(tmp_path)]
    assert len(names) > 5 and names[0] == segment_name(1)
    for path in segments(tmp_path):
        assert path.stat().st_size <= 1024
    with Journal.open(tmp_path, "sync", segment_bytes_max=1024) as journal:
        assert journal.last_seq == 200
        assert journal.append(b"after reopen") == 201
        assert list(journal.replay(199)) == [*expected(200)[199:], (201, b"after reopen")]


def test_empty_payload_and_large_payload(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    with Journal.open(tmp_path, "none", segment_bytes_max=4096) as journal:
        journal.append(b"")
        journal.append(big)
        journal.append(b"x")
    assert replayed(tmp_path) == [(1, b""), (2, big), (3, b"x")]


def test_trim_removes_only_whole_old_segments(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "none", segment_bytes_max=1024) as journal:
        journal.append_many(payload_for(s) for s in range(1, 201))
        before = journal.stats().segment_count
        removed = journal.trim(100)
        assert removed > 0 and journal.stats().segment_count == before - removed
        assert 1 < journal.first_seq <= 101
        assert list(journal.replay(100)) == expected(200)[100:]
        with pytest.raises(JournalCorruptError, match="trimmed"):
            list(journal.replay(0))
        journal.trim(10**6)  # The active segment always stays.
        assert journal.stats().segment_count == 1
        assert journal.append(b"z") == 201
    with Journal.open(tmp_path, "none", segment_bytes_max=1024) as journal:
        assert journal.last_seq == 201 and journal.first_seq > 101


def test_start_seq_for_an_empty_directory(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "none", start_seq=1001) as journal:
        assert journal.last_seq == 1000 and journal.first_seq == 1001
        assert journal.append(b"a") == 1001
    with Journal.open(tmp_path, "none") as journal:
        assert list(journal.replay(1000)) == [(1001, b"a")]
        with pytest.raises(JournalCorruptError, match="starts at seq 1001"):
            list(journal.replay(0))


def test_second_open_of_same_directory_is_refused(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "none"), pytest.raises(JournalError, match="in use"):
        Journal.open(tmp_path, "none")


def test_closed_journal_refuses_appends(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, "none")
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.append(b"x")


# -- recovery reads each segment once (open(keep_after=...)) ------------------------------


def _flip(path: Path, offset: int) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[offset] ^= 0xFF
    path.write_bytes(bytes(damaged))


def test_kept_segments_replay_what_open_checked_without_reading_again(tmp_path: Path) -> None:
    write_journal(tmp_path, 300, segment_bytes_max=2048)
    paths = segments(tmp_path)
    assert len(paths) > 4
    for keep_after, after in [(0, 0), (0, 137), (137, 137), (137, 250), (137, 0), (300, 0)]:
        with Journal.open(tmp_path, "none", keep_after=keep_after) as journal:
            kept = [s.kept is not None for s in journal._segments]
            assert kept == [s.last_seq > keep_after for s in journal._segments]
            # Damage on disk after `open` does not reach the replay of the kept segments: they
            # are not read again. A segment that was not kept is read and checked again.
            for path in paths:
                _flip(path, RECORD_HEADER_BYTES + 1)
            try:
                if all(kept[i] for i, s in enumerate(journal._segments) if s.last_seq > after):
                    assert list(journal.replay(after)) == expected(300)[after:]
                else:
                    with pytest.raises(JournalCorruptError, match="offset 0: record checksum"):
                        list(journal.replay(after))
                # The first replay took what was kept; the next one reads the files.
                assert all(s.kept is None for s in journal._segments)
                with pytest.raises(JournalCorruptError, match="while replaying seq"):
                    list(journal.replay(after))
            finally:
                for path in paths:
                    _flip(path, RECORD_HEADER_BYTES + 1)
    assert replayed(tmp_path) == expected(300)


def test_kept_segments_with_a_torn_tail_appends_and_a_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_journal(tmp_path, 300, segment_bytes_max=2048)
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes()[:-3])  # a torn tail: seq 300 is cut at open
    with Journal.open(tmp_path, "none", segment_bytes_max=2048, keep_after=0) as journal:
        assert journal.last_seq == 299 and journal._segments[-1].kept is not None
        assert journal.append(b"new") == 300  # drops what was kept of the segment written to
        assert journal._segments[-1].kept is None and journal._segments[0].kept is not None
        assert list(journal.replay(0)) == [*expected(299), (300, b"new")]
    monkeypatch.setattr(journal_module, "KEPT_BYTES_MAX", 2 * 2048)
    with Journal.open(tmp_path, "none", keep_after=0) as journal:
        kept_bytes = sum(s.size_bytes for s in journal._segments if s.kept is not None)
        assert 0 < kept_bytes <= 2 * 2048 and journal._segments[-1].kept is None
        assert list(journal.replay(50)) == [*expected(299), (300, b"new")][50:]


def test_open_with_keep_after_refuses_damage_like_open(tmp_path: Path) -> None:
    write_journal(tmp_path, 100, segment_bytes_max=1024)
    first = segments(tmp_path)[0]
    _flip(first, first.stat().st_size // 2)
    with pytest.raises(JournalCorruptError, match=f"{first.name} offset .*not the last"):
        Journal.open(tmp_path, "none", keep_after=0)


# -- torn tails and corruption -------------------------------------------------------------


def test_truncate_at_every_offset_keeps_exact_prefix(tmp_path: Path) -> None:
    source = tmp_path / "source"
    count = 12
    write_journal(source, count)
    original = (source / segment_name(1)).read_bytes()
    ends = record_ends(count)
    assert ends[-1] == len(original)
    work = tmp_path / "work"
    work.mkdir()
    for cut in range(len(original) + 1):
        for path in segments(work):
            path.unlink()
        (work / segment_name(1)).write_bytes(original[:cut])
        kept = sum(1 for end in ends if end <= cut)
        with Journal.open(work, "none") as journal:
            assert journal.last_seq == kept, f"cut at {cut}"
            assert list(journal.replay(0)) == expected(kept), f"cut at {cut}"
            assert journal.append(b"next") == kept + 1
        assert replayed(work) == [*expected(kept), (kept + 1, b"next")], f"cut at {cut}"


def test_truncate_last_segment_of_many_at_sampled_offsets(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_journal(source, 300, segment_bytes_max=2048)
    last = segments(source)[-1]
    first_seq = int(last.name[len("journal-") : -len(".log")])
    original = last.read_bytes()
    count_in_last = 300 - first_seq + 1
    ends = record_ends(count_in_last, first_seq)
    rng = random.Random(7)
    cuts = {0, len(original), *(rng.randrange(len(original)) for _ in range(40))}
    cuts |= {e for e in ends[:3]} | {e - 1 for e in ends[:3]}
    for cut in sorted(cuts):
        work = tmp_path / f"cut-{cut}"
        work.mkdir()
        for path in segments(source):
            (work / path.name).write_bytes(path.read_bytes())
        (work / last.name).write_bytes(original[:cut])
        kept = first_seq - 1 + sum(1 for end in ends if end <= cut)
        with Journal.open(work, "none") as journal:
            assert journal.last_seq == kept
            assert journal.append(b"next") == kept + 1
        assert replayed(work) == [*expected(kept), (kept + 1, b"next")]


def test_flip_a_byte_at_every_offset(tmp_path: Path) -> None:
    source = tmp_path / "source"
    count = 8
    write_journal(source, count)
    original = (source / segment_name(1)).read_bytes()
    ends = record_ends(count)
    work = tmp_path / "work"
    work.mkdir()
    corrupt_seen = torn_seen = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        for path in segments(work):
            path.unlink()
        (work / segment_name(1)).write_bytes(bytes(damaged))
        record_index = next(i for i, end in enumerate(ends) if offset < end)
        if record_index == count - 1:
            assert replayed(work) == expected(count - 1), f"flip at {offset}"
            torn_seen += 1
        else:
            with pytest.raises(JournalCorruptError) as info:
                Journal.open(work, "none")
            assert segment_name(1) in str(info.value)
            start = ends[record_index - 1] if record_index else 0
            assert f"offset {start}:" in str(info.value)
            corrupt_seen += 1
    assert corrupt_seen and torn_seen


def test_flip_in_a_non_last_segment_is_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, 100, segment_bytes_max=1024)
    first = segments(tmp_path)[0]
    size = first.stat().st_size
    for offset in (0, RECORD_HEADER_BYTES - 1, size // 2, size - 1):
        damaged = bytearray(first.read_bytes())
        damaged[offset] ^= 0x01
        first.write_bytes(bytes(damaged))
        with pytest.raises(JournalCorruptError, match="not the last"):
            Journal.open(tmp_path, "none")
        damaged[offset] ^= 0x01
        first.write_bytes(bytes(damaged))
    assert len(replayed(tmp_path)) == 100


def test_missing_middle_segment_is_a_sequence_gap(tmp_path: Path) -> None:
    write_journal(tmp_path, 100, segment_bytes_max=1024)
    segments(tmp_path)[1].unlink()
    with pytest.raises(JournalCorruptError, match="sequence gap"):
        Journal.open(tmp_path, "none")


def test_truncated_non_last_segment_is_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, 100, segment_bytes_max=1024)
    first = segments(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-5])
    with pytest.raises(JournalCorruptError, match=first.name):
        Journal.open(tmp_path, "none")


def test_garbage_tail_is_cut_and_random_damage_never_escapes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_journal(source, 20)
    original = (source / segment_name(1)).read_bytes()
    rng = random.Random(11)
    for round_index in range(60):
        work = tmp_path / f"r{round_index}"
        work.mkdir()
        damaged = bytearray(original + os.urandom(rng.randrange(0, 50)))
        for _ in range(rng.randrange(0, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        (work / segment_name(1)).write_bytes(bytes(damaged))
        try:
            entries = replayed(work)
        except JournalCorruptError:
            continue
        assert entries == expected(len(entries))


# -- durability modes ----------------------------------------------------------------------


def test_sync_mode_fsyncs_once_per_commit(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "sync") as journal:
        base = journal.stats().fsync_count
        for batch in range(1, 6):
            journal.append_many([b"a", b"b", b"c"])
            journal.commit()
            stats = journal.stats()
            assert stats.fsync_count == base + batch
            assert stats.synced_seq == stats.last_seq == 3 * batch
            assert stats.fsync_seconds_last > 0 and stats.fsync_seconds_avg > 0
        journal.commit()  # Nothing new appended: no fsync.
        assert journal.stats().fsync_count == base + 5


def test_async_mode_syncs_within_a_bounded_wait(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "async", async_interval_ms=5) as journal:
        journal.append(b"a")
        journal.commit()
        deadline = time.monotonic() + 2.0
        while journal.synced_seq < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert journal.synced_seq == 1
        assert journal.stats().fsync_count >= 1


def test_none_mode_never_fsyncs(tmp_path: Path) -> None:
    with Journal.open(tmp_path, "none", segment_bytes_max=1024) as journal:
        for seq in range(1, 101):
            journal.append(payload_for(seq))
            journal.commit()
        time.sleep(0.02)
        stats = journal.stats()
        assert stats.fsync_count == 0 and stats.synced_seq == 0 and stats.segment_count > 1
    assert len(replayed(tmp_path)) == 100


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_open_makes_every_segment_of_a_none_run_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    """Segments a `none` run wrote in this boot may be in the page cache only: a journal opened
    in `sync` or `async` fsyncs each of them before it builds on them (it fsynced only the
    active one, so a machine crash could lose older entries that later ones were acked after)."""
    with Journal.open(tmp_path, "none", segment_bytes_max=1024) as journal:
        journal.append_many(payload_for(s) for s in range(1, 101))
    on_disk = {p.name for p in segments(tmp_path)}
    assert len(on_disk) > 3
    synced: set[str] = set()
    real = journal_module._fdatasync

    def recording(fd: int) -> None:
        synced.add(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(journal_module, "_fdatasync", recording)
    with Journal.open(tmp_path, durability, segment_bytes_max=1024) as journal:  # type: ignore[arg-type]
        assert journal.synced_seq == 100
    assert synced == on_disk
    synced.clear()
    with Journal.open(tmp_path, "none", segment_bytes_max=1024):
        pass
    assert synced == set()  # `none` promises nothing and fsyncs nothing


def test_damage_below_the_durable_floor_is_refused_and_left_on_disk(tmp_path: Path) -> None:
    """A damaged last record is a torn write only if it may never have reached the disk. When a
    snapshot says entries through seq n were fsynced, damage that leaves the journal ending
    before n is lost data: open refuses and cuts nothing, so the evidence stays."""
    with Journal.open(tmp_path, "sync") as journal:
        journal.append_many(payload_for(s) for s in range(1, 11))
        journal.commit()
    (path,) = segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # inside the last record (seq 10)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match="seq 10, which was durable"):
        Journal.open(tmp_path, "sync", durable_through=10)
    assert path.read_bytes() == bytes(data)
    with Journal.open(tmp_path, "sync", durable_through=9) as journal:  # a torn tail after 9
        assert journal.last_seq == 9
    assert list(replayed(tmp_path)) == expected(9)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="durability"):
        Journal.open(tmp_path, "fast")  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="segment_bytes_max"):
        Journal.open(tmp_path, "none", segment_bytes_max=10)
    with Journal.open(tmp_path, "none") as journal, pytest.raises(JournalError, match="exceeds"):
        journal.append(bytes(33 * 1024 * 1024))


# -- crash test ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from engine.persistence.journal import Journal

    def payload(seq):
        return (b"%d:" % seq) * (seq % 17 + 1)

    journal = Journal.open(sys.argv[1], sys.argv[2], segment_bytes_max=8192)
    print("ready", journal.last_seq, flush=True)
    while True:
        seq = journal.append(payload(journal.last_seq + 1))
        journal.commit()
        print(seq, flush=True)
    """
)


def crash_payload(seq: int) -> bytes:
    return (b"%d:" % seq) * (seq % 17 + 1)


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_entry(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    acked_max = 0
    for round_index, mode in enumerate(["sync", "async", "none", "sync"]):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), mode],
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
        )
        assert child.stdout is not None
        acked: list[int] = []
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            buffer = b""
            kill_at: float | None = None
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                if kill_at is not None and time.monotonic() >= kill_at:
                    break
                if not selector.select(timeout=0.01):
                    continue
                chunk = os.read(child.stdout.fileno(), 65536)
                assert chunk, f"child exited early (seed {seed})"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"ready"):
                        assert int(line.split()[1]) >= acked_max, f"seed {seed}"
                        kill_at = time.monotonic() + rng.uniform(0.05, 0.5)
                    else:
                        acked.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
        child.stdout.close()
        assert acked, f"round {round_index}: nothing acknowledged (seed {seed})"
        acked_max = acked[-1]
        entries = dict(replayed(tmp_path))
        for seq in acked:
            assert entries.get(seq) == crash_payload(seq), f"seq {seq} lost (seed {seed})"
        assert sorted(entries) == list(range(1, len(entries) + 1))


# -- the record-check kernel against plain Python ---------------------------------------------


def scan_reference(data: bytes, offset: int, expected: int) -> tuple[int, int, list[int]]:
    """The record walk as plain Python: header unpack, checks, `zlib.crc32`."""
    import struct
    import zlib

    starts = []
    while offset + RECORD_HEADER_BYTES <= len(data):
        magic, crc, seq, payload_len = struct.unpack_from("<IIQI", data, offset)
        end = offset + RECORD_HEADER_BYTES + payload_len
        if (
            magic != journal_module.RECORD_MAGIC
            or seq != expected
            or end > len(data)
            or payload_len > journal_module.ENTRY_BYTES_MAX
            or zlib.crc32(data[offset + 8 : end]) != crc
        ):
            break
        starts.append(offset)
        offset, expected = end, expected + 1
    return offset, expected, starts


def test_record_kernel_crc_is_zlibs() -> None:
    import zlib

    import numpy as np

    from engine.kernels.records import TABLES, crc32

    rng = random.Random(5)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 200))
        start = rng.randrange(0, len(data) + 1)
        end = rng.randrange(start, len(data) + 1)
        view = np.frombuffer(data, np.uint8)
        assert crc32(view, start, end, TABLES) == zlib.crc32(data[start:end])


def test_record_kernel_walks_like_plain_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from array import array

    monkeypatch.setattr(journal_module, "_SCAN_CHUNK", 3)  # several kernel calls per walk
    rng = random.Random(11)
    for trial in range(200):
        first = rng.randrange(1, 1_000)
        data = bytearray(
            b"".join(encode_record(s, payload_for(s)) for s in range(first, first + 9))
        )
        damage = rng.randrange(4)
        if damage == 1 and data:  # one flipped byte anywhere
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif damage == 2:  # a torn tail
            del data[rng.randrange(len(data) + 1) :]
        elif damage == 3:  # trailing garbage
            data += rng.randbytes(rng.randrange(1, 40))
        start = rng.choice([0, len(encode_record(first, payload_for(first)))])
        want = first + (start > 0)
        offsets: array[int] = array("Q")
        got = journal_module._scan(bytes(data), start, want, offsets)
        ref_offset, ref_expected, ref_starts = scan_reference(bytes(data), start, want)
        assert (got, offsets.tolist()) == ((ref_offset, ref_expected), ref_starts), trial


@pytest.mark.parametrize("fails", ["old segment fsync", "directory fsync"])
def test_a_failed_segment_roll_stops_the_journal(
    tmp_path: Path, fails: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roll whose fsync fails must not let a later commit claim the entries durable, and one
    whose directory fsync fails must not leak the new file's descriptor: the journal refuses
    every later call, as after any failed fsync or write."""
    journal = Journal.open(tmp_path, "sync", segment_bytes_max=1024)
    while journal.stats().segment_count == 1:
        journal.append(payload_for(journal.last_seq + 1))
        journal.commit()
    synced = journal.synced_seq

    def broken(*args: object) -> None:
        raise OSError(5, "EIO")

    target = "_fdatasync" if fails == "old segment fsync" else "_fsync_dir"
    monkeypatch.setattr(journal_module, target, broken)
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(JournalError, match="roll"):
        while True:  # up to the next roll
            journal.append(payload_for(journal.last_seq + 1))
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    with pytest.raises(JournalError, match="unusable"):
        journal.commit()
    with pytest.raises(JournalError, match="unusable"):
        journal.append(b"x")
    assert journal.synced_seq <= journal.last_seq
    assert journal.stats().synced_seq >= synced
    if fails == "old segment fsync":
        assert journal.synced_seq == synced  # the failed fsync covered nothing
    journal.close()
