"""Append-only journal of opaque payloads, in numbered segment files.

Record framing (little endian, 20-byte header then the payload)::

    magic u32 | crc32 u32 | seq u64 | payload_len u32 | payload

``crc32`` is ``zlib.crc32`` over the 12 bytes ``seq | payload_len`` followed by the payload, so a
flipped bit anywhere in a record except the magic is caught by the checksum, and a damaged magic
is caught by the magic check. Segments are named ``journal-<first seq, 20 digits>.log``; the name
must match the sequence number of the segment's first record.

The journal knows nothing of what it stores; the server appends encoded command batches.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from engine.kernels import records

__all__ = [
    "ENTRY_BYTES_MAX",
    "KEPT_BYTES_MAX",
    "SEGMENT_BYTES_DEFAULT",
    "ASYNC_INTERVAL_MS_DEFAULT",
    "Durability",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalStats",
]

log = logging.getLogger("omnistock.journal")

Durability = Literal["sync", "async", "none"]
DURABILITY_MODES: tuple[Durability, ...] = ("sync", "async", "none")

RECORD_MAGIC = 0x4A534D4F  # b"OMSJ" read as little-endian u32.
_HEADER = struct.Struct("<IIQI")
RECORD_HEADER_BYTES = _HEADER.size
_CRC_FIELDS_OFFSET = 8  # The checksum covers seq and payload_len, then the payload.
_MAGIC_BYTES = struct.pack("<I", RECORD_MAGIC)

ENTRY_BYTES_MAX = 32 * 1024 * 1024
SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024
SEGMENT_BYTES_MIN = 1024
# `open(keep_after=...)` keeps at most this many bytes of checked segments for the first replay.
KEPT_BYTES_MAX = 512 * 1024 * 1024
ASYNC_INTERVAL_MS_DEFAULT = 5.0
ASYNC_INTERVAL_MS_MAX = 1000.0
SEQ_DIGITS = 20
LOCK_FILE_NAME = "journal.lock"

_SEGMENT_RE = re.compile(r"^journal-(\d{20})\.log$")

# A record larger than a default segment would be written to a segment of its own, which works
# but defeats trimming; keep the limits in the intended relationship.
assert ENTRY_BYTES_MAX + RECORD_HEADER_BYTES <= SEGMENT_BYTES_DEFAULT
assert SEGMENT_BYTES_DEFAULT <= KEPT_BYTES_MAX
assert 0 < ASYNC_INTERVAL_MS_DEFAULT <= ASYNC_INTERVAL_MS_MAX
assert 10**SEQ_DIGITS > 2**64  # Every u64 seq fits in a segment name.


class JournalError(Exception):
    """The journal cannot be used (directory locked, closed, a failed fsync, bad arguments)."""


class JournalCorruptError(JournalError):
    """The journal holds damage that is not a torn tail; recovery must stop here."""


@dataclass(frozen=True, slots=True)
class JournalStats:
    first_seq: int
    last_seq: int
    synced_seq: int
    segment_count: int
    bytes_total: int
    fsync_count: int
    fsync_seconds_last: float
    fsync_seconds_avg: float
    durability: Durability


@dataclass(slots=True)
class _Segment:
    path: Path
    first_seq: int
    last_seq: int  # first_seq - 1 while the segment is empty.
    size_bytes: int
    # The segment's bytes and record offsets as `open` checked them (see `_Checked`), kept for
    # the first `replay` so it neither reads nor checks them again; None otherwise.
    kept: _Checked | None = None


@dataclass(frozen=True, slots=True)
class _Checked:
    """Checked records of one segment: record i spans ``data[offsets[i]:offsets[i + 1]]``."""

    data: bytes
    offsets: array[int]  # the start of every record, then the end of the last one


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:0{SEQ_DIGITS}d}.log"


def _crc(seq_len: bytes | memoryview, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(seq_len))


def encode_record(seq: int, payload: bytes | memoryview) -> bytes:
    seq_len = struct.pack("<QI", seq, len(payload))
    head = struct.pack("<II", RECORD_MAGIC, _crc(seq_len, payload))
    return b"".join((head, seq_len, payload))


# Record starts `_scan` collects per kernel call (then it appends them and goes on).
_SCAN_CHUNK = 1 << 16


def _scan(data: bytes, offset: int, expected: int, offsets: array[int]) -> tuple[int, int]:
    """Walk the valid records ``expected, expected + 1, ...`` from ``offset``, appending the
    start of each to ``offsets``; return ``(offset, expected)`` where the walk stopped: the end of
    ``data`` or a record that ``_parse_at`` rejects or whose seq is not ``expected``.

    This is the hot loop of recovery, so it runs as a numba kernel (engine/kernels/records.py:
    the same checks, the CRC computed as ``zlib.crc32`` does).
    """
    view = np.frombuffer(data, np.uint8)
    records_max = max(0, len(data) - offset) // RECORD_HEADER_BYTES + 1
    out = np.empty(min(_SCAN_CHUNK, records_max), np.uint64)
    while True:
        offset, expected, count = records.scan(
            view,
            offset,
            expected,
            out,
            records.TABLES,
            RECORD_MAGIC,
            RECORD_HEADER_BYTES,
            ENTRY_BYTES_MAX,
        )
        offsets.frombytes(out[:count].tobytes())
        if count < out.shape[0]:
            return offset, expected


def check_records(data: bytes, first_seq: int = 1) -> int:
    """How many valid records ``first_seq, first_seq + 1, ...`` ``data`` starts with."""
    offsets: array[int] = array("Q")
    _scan(data, 0, first_seq, offsets)
    return len(offsets)


def _parse_at(data: bytes, offset: int) -> tuple[int, int] | str:
    """The record at ``offset`` as ``(seq, end_offset)``, or why it is not a valid record."""
    size = len(data)
    if size - offset < RECORD_HEADER_BYTES:
        return f"incomplete record header ({size - offset} of {RECORD_HEADER_BYTES} bytes)"
    magic, crc, seq, payload_len = _HEADER.unpack_from(data, offset)
    if magic != RECORD_MAGIC:
        return f"bad record magic 0x{magic:08x}"
    if payload_len > ENTRY_BYTES_MAX:
        return f"record length {payload_len} exceeds ENTRY_BYTES_MAX={ENTRY_BYTES_MAX}"
    end = offset + RECORD_HEADER_BYTES + payload_len
    if end > size:
        have = size - offset - RECORD_HEADER_BYTES
        return f"incomplete record payload ({have} of {payload_len} bytes)"
    fields = data[offset + _CRC_FIELDS_OFFSET : offset + RECORD_HEADER_BYTES]
    if _crc(fields, data[offset + RECORD_HEADER_BYTES : end]) != crc:
        return "record checksum mismatch"
    return seq, end


def _valid_record_after(data: bytes, start: int, seq_min: int) -> int | None:
    """Offset of a checksum-valid record at or after ``start`` with ``seq >= seq_min``."""
    offset = data.find(_MAGIC_BYTES, start)
    while offset != -1:
        parsed = _parse_at(data, offset)
        if isinstance(parsed, tuple) and parsed[0] >= seq_min:
            return offset
        offset = data.find(_MAGIC_BYTES, offset + 1)
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            _fdatasync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise JournalError(f"journal fsync of {path.name} failed: {exc}") from exc


def _fdatasync(fd: int) -> None:
    # fdatasync skips the inode timestamp flush; the size change it needs is still written.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Journal:
    """An append-only log of payloads numbered from 1 (the journal position).

    Thread-safe. Appends go straight to the kernel with ``os.write`` on an ``O_APPEND`` file, so
    a process crash never loses an appended entry; ``commit()`` makes them survive a machine crash
    as far as the durability mode promises (see docs/durability.md).
    """

    def __init__(
        self,
        directory: Path,
        durability: Durability,
        segments: list[_Segment],
        lock_fd: int,
        segment_bytes_max: int,
        async_interval_ms: float,
    ) -> None:
        self._directory = directory
        self._durability: Durability = durability
        self._segments = segments
        self._lock_fd = lock_fd
        self._segment_bytes_max = segment_bytes_max
        self._async_interval_s = async_interval_ms / 1000.0
        self._lock = threading.Lock()
        self._fd = os.open(segments[-1].path, os.O_WRONLY | os.O_APPEND)
        self._last_seq = segments[-1].last_seq
        self._synced_seq = 0
        self._failure: BaseException | None = None
        self._closed = False
        self._fsync_count = 0
        self._fsync_seconds_last = 0.0
        self._fsync_seconds_total = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if durability != "none":
            # Whatever survived the previous run is made durable before anything builds on it.
            self.sync()
        if durability == "async":
            self._thread = threading.Thread(
                target=self._sync_loop, name="journal-fsync", daemon=True
            )
            self._thread.start()

    # -- opening and recovery -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        durability: Durability = "sync",
        *,
        segment_bytes_max: int = SEGMENT_BYTES_DEFAULT,
        async_interval_ms: float = ASYNC_INTERVAL_MS_DEFAULT,
        start_seq: int = 1,
        keep_after: int | None = None,
        durable_through: int = 0,
    ) -> Journal:
        """Open (creating if needed) the journal in ``directory`` and recover it.

        Every record is validated. A torn tail (damage at the very end of the last segment with
        no valid record after it) is cut away and logged; any other damage raises
        ``JournalCorruptError`` naming the file and byte offset. ``start_seq`` is the first
        sequence number of a journal that has no segments yet.

        ``keep_after`` (recovery passes its snapshot's seq): the checked bytes of the segments
        holding entries after it (up to ``KEPT_BYTES_MAX``) stay in memory until the first
        ``replay``, which then reads and checks them no second time and lets each go once it has
        yielded its entries. An append drops what is kept of the segment it writes to.

        ``durable_through`` (recovery passes its snapshot's seq: the snapshotter fsyncs the
        journal's active segment through it before saving, ``sync()``): damage at the end of the
        last segment that leaves the journal ending before this seq is not a torn write but lost
        entries; it raises ``JournalCorruptError`` and nothing is cut, so the evidence stays on
        disk. (Damage in any segment but the last is refused in every case.)
        """
        if durability not in DURABILITY_MODES:
            raise JournalError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        if segment_bytes_max < SEGMENT_BYTES_MIN:
            raise JournalError(f"segment_bytes_max must be >= {SEGMENT_BYTES_MIN}")
        if not 0 < async_interval_ms <= ASYNC_INTERVAL_MS_MAX:
            raise JournalError(f"async_interval_ms must be in (0, {ASYNC_INTERVAL_MS_MAX}]")
        if not 1 <= start_seq < 2**63:
            raise JournalError(f"start_seq must be >= 1, got {start_seq}")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(f"journal {path} is in use by another process") from None
            segments = _recover(
                path,
                start_seq,
                truncate_sync=durability != "none",
                keep_after=keep_after,
                durable_through=durable_through,
            )
            if durability != "none":
                # A previous run in `none` mode, in this boot, may have left any segment in the
                # page cache only: the older ones are made durable here, the active one by the
                # constructor, before anything builds on them.
                for segment in segments[:-1]:
                    _fsync_file(segment.path)
            return cls(path, durability, segments, lock_fd, segment_bytes_max, async_interval_ms)
        except BaseException:
            os.close(lock_fd)
            raise

    # -- writing --------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest appended entry (0 if none was ever appended)."""
        return self._last_seq

    @property
    def synced_seq(self) -> int:
        """Every entry up to this one has been fsynced (by this process or at open)."""
        return self._synced_seq

    @property
    def first_seq(self) -> int:
        """The oldest entry still stored (``last_seq + 1`` when the journal is empty)."""
        return self._segments[0].first_seq

    @property
    def durability(self) -> Durability:
        return self._durability

    def append(self, payload: bytes) -> int:
        """Append one entry and return its sequence number."""
        return self.append_many((payload,))

    def append_many(self, payloads: Iterable[bytes]) -> int:
        """Append entries with as few writes as possible; return the last sequence number."""
        with self._lock:
            self._check_usable()
            pending: list[bytes] = []
            pending_bytes = 0
            seq = self._last_seq
            segment = self._segments[-1]
            for payload in payloads:
                if len(payload) > ENTRY_BYTES_MAX:
                    raise JournalError(
                        f"entry of {len(payload)} bytes exceeds ENTRY_BYTES_MAX={ENTRY_BYTES_MAX}"
                    )
                record = encode_record(seq + 1, payload)
                segment_bytes = segment.size_bytes + pending_bytes
                if segment_bytes and segment_bytes + len(record) > self._segment_bytes_max:
                    self._write_locked(pending, seq)
                    pending, pending_bytes = [], 0
                    segment = self._roll_locked(seq + 1)
                pending.append(record)
                pending_bytes += len(record)
                seq += 1
            self._write_locked(pending, seq)
            return seq

    def _write_locked(self, records: list[bytes], last_seq: int) -> None:
        if not records:
            return
        data = b"".join(records)
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            # A partial write leaves a torn record; refuse further appends rather than write a
            # valid record after it (which recovery would rightly call mid-log corruption).
            self._failure = exc
            raise JournalError(f"journal write failed: {exc}") from exc
        self._segments[-1].size_bytes += len(data)
        self._segments[-1].last_seq = last_seq
        self._segments[-1].kept = None
        self._last_seq = last_seq

    def _roll_locked(self, first_seq: int) -> _Segment:
        """Start segment `first_seq`. Any failure (an fsync, the new file, the directory's fsync)
        makes the journal refuse every later call, as a failed fsync or write does: the old
        segment's tail may not be on disk, or a new file exists that recovery would open."""
        path = self._directory / segment_name(first_seq)
        fd = -1
        try:
            if self._durability != "none":
                # The old segment must be complete on disk before a newer one can exist, or a
                # machine crash could leave a sequence gap that recovery would refuse.
                self._timed_fsync(self._fd)
                self._synced_seq = max(self._synced_seq, self._last_seq)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
            _fsync_dir(self._directory)
        except OSError as exc:
            self._failure = exc
            if fd >= 0:
                os.close(fd)
            raise JournalError(f"journal segment roll to {path.name} failed: {exc}") from exc
        os.close(self._fd)
        self._fd = fd
        segment = _Segment(path, first_seq, first_seq - 1, 0)
        self._segments.append(segment)
        return segment

    def commit(self) -> None:
        """Make appended entries as durable as the mode promises.

        ``sync``: one fdatasync now covering everything appended so far (group commit).
        ``async``: nothing here; the background thread syncs within ``async_interval_ms``.
        ``none``: nothing; entries live in the OS page cache.
        """
        if self._durability == "sync":
            self.sync()
        else:
            with self._lock:
                self._check_usable()

    def sync(self) -> None:
        """Make every entry appended so far durable now, whatever the mode (one fdatasync unless
        they are already): what `commit` does in `sync` mode, the background thread in `async`,
        and a snapshot of the state through them needs first, so that a machine crash never
        leaves a snapshot ahead of the journal. Raises `JournalError`, and the journal stops
        accepting work, if the fsync fails."""
        with self._lock:
            self._check_usable()
            target_seq = self._last_seq
            if target_seq <= self._synced_seq:
                return
            # A duplicate descriptor lets appends (and a segment roll closing the original)
            # proceed while this thread waits on the disk.
            fd = os.dup(self._fd)
        try:
            self._timed_fsync(fd)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages; nothing appended
            # since the last good sync can be trusted, so the journal stops accepting work.
            self._failure = exc
            raise JournalError(f"journal fsync failed: {exc}") from exc
        finally:
            os.close(fd)
        with self._lock:
            self._synced_seq = max(self._synced_seq, target_seq)

    def _timed_fsync(self, fd: int) -> None:
        started = time.perf_counter()
        _fdatasync(fd)
        elapsed = time.perf_counter() - started
        self._fsync_count += 1
        self._fsync_seconds_last = elapsed
        self._fsync_seconds_total += elapsed

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._async_interval_s):
            if self._failure is not None:
                return
            try:
                self.sync()
            except JournalError as exc:
                log.error("journal background fsync failed; appends now fail: %s", exc)
                return

    def _check_usable(self) -> None:
        if self._closed:
            raise JournalError("journal is closed")
        if self._failure is not None:
            raise JournalError(f"journal unusable after an I/O error: {self._failure}")

    # -- reading and trimming -------------------------------------------------------------

    def replay(self, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, payload)`` for every entry with ``seq > after_seq``, in order.

        Raises ``JournalCorruptError`` if entries after ``after_seq`` were trimmed away or a
        record no longer validates. The first call takes what ``open(keep_after=...)`` kept.
        """
        with self._lock:
            self._check_usable()
            end_seq = self._last_seq
            segments = [
                (s.path, s.first_seq, s.last_seq, s.size_bytes, s.kept)
                for s in self._segments
                if s.last_seq > after_seq and s.last_seq >= s.first_seq
            ]
            for segment in self._segments:
                segment.kept = None
            first_seq = self._segments[0].first_seq
        if after_seq + 1 < first_seq and end_seq > after_seq:
            raise JournalCorruptError(
                f"journal {self._directory} starts at seq {first_seq} but replay needs the "
                f"entries after seq {after_seq}: they were trimmed"
            )
        segments.reverse()
        while segments:
            # Popped one at a time, so each segment's bytes go as soon as it is replayed.
            path, seg_first, seg_last, size_bytes, kept = segments.pop()
            stop_seq = min(seg_last, end_seq)
            if kept is None:
                kept = _read_checked(path, seg_first, stop_seq, size_bytes)
            data, offsets = kept.data, kept.offsets
            seq = max(seg_first, after_seq + 1)
            start = offsets[seq - seg_first]
            for end in offsets[seq - seg_first + 1 : stop_seq - seg_first + 2]:
                yield seq, data[start + RECORD_HEADER_BYTES : end]
                start = end
                seq += 1
            del kept, data, offsets

    def trim(self, upto_seq: int) -> int:
        """Delete whole segments whose entries are all ``<= upto_seq``; return how many.

        The active (newest) segment is always kept.
        """
        with self._lock:
            self._check_usable()
            removed: list[_Segment] = []
            while len(self._segments) > 1 and self._segments[0].last_seq <= upto_seq:
                removed.append(self._segments.pop(0))
            for segment in removed:
                segment.path.unlink()
            if removed:
                _fsync_dir(self._directory)
            return len(removed)

    def stats(self) -> JournalStats:
        with self._lock:
            count = self._fsync_count
            return JournalStats(
                first_seq=self._segments[0].first_seq,
                last_seq=self._last_seq,
                synced_seq=self._synced_seq,
                segment_count=len(self._segments),
                bytes_total=sum(s.size_bytes for s in self._segments),
                fsync_count=count,
                fsync_seconds_last=self._fsync_seconds_last,
                fsync_seconds_avg=self._fsync_seconds_total / count if count else 0.0,
                durability=self._durability,
            )

    def close(self) -> None:
        """Sync (unless the mode is ``none``) and release the journal. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._durability != "none" and self._failure is None:
                self.sync()
        finally:
            with self._lock:
                self._closed = True
                for segment in self._segments:
                    segment.kept = None
                os.close(self._fd)
                os.close(self._lock_fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in directory.iterdir():
        match = _SEGMENT_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    found.sort()
    return found


def _read_checked(path: Path, first_seq: int, stop_seq: int, size_bytes: int) -> _Checked:
    """Read a segment again (``replay`` without what ``open`` kept) and check it up to
    ``stop_seq``."""
    with open(path, "rb") as file:
        data = file.read(size_bytes)
    offsets: array[int] = array("Q")
    offset, expected = _scan(data, 0, first_seq, offsets)
    if expected <= stop_seq:
        parsed = _parse_at(data, offset)
        why = parsed if isinstance(parsed, str) else f"seq {parsed[0]}"
        raise JournalCorruptError(
            f"journal {path} offset {offset}: {why} while replaying seq {expected}"
        )
    offsets.append(offset)
    return _Checked(data, offsets)


def _recover(
    directory: Path,
    start_seq: int,
    truncate_sync: bool,
    keep_after: int | None = None,
    durable_through: int = 0,
) -> list[_Segment]:
    listed = _list_segments(directory)
    if not listed:
        path = directory / segment_name(start_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        _fsync_dir(directory)
        return [_Segment(path, start_seq, start_seq - 1, 0)]
    segments: list[_Segment] = []
    kept_bytes = 0
    expected = listed[0][0]
    for index, (name_seq, path) in enumerate(listed):
        is_last = index == len(listed) - 1
        if name_seq != expected:
            raise JournalCorruptError(
                f"journal {path} offset 0: segment starts at seq {name_seq} but the previous "
                f"segment ends at seq {expected - 1} (sequence gap)"
            )
        with open(path, "rb") as file:
            data = file.read()
        offsets: array[int] = array("Q")
        offset, expected = _scan(data, 0, expected, offsets)
        if offset < len(data):
            parsed = _parse_at(data, offset)
            if isinstance(parsed, tuple):
                raise JournalCorruptError(
                    f"journal {path} offset {offset}: record has seq {parsed[0]}, "
                    f"expected {expected}"
                )
            if not is_last:
                raise JournalCorruptError(
                    f"journal {path} offset {offset}: {parsed} in a segment that is not the last"
                )
            later = _valid_record_after(data, offset + 1, expected)
            if later is not None:
                raise JournalCorruptError(
                    f"journal {path} offset {offset}: {parsed}, followed by a valid record at "
                    f"offset {later} (corruption in the middle of the journal)"
                )
            if expected - 1 < durable_through:
                raise JournalCorruptError(
                    f"journal {path} offset {offset}: {parsed} at seq {expected}, which was "
                    f"durable (entries through seq {durable_through} were fsynced before a "
                    "snapshot was saved); not cutting it as a torn tail"
                )
            log.warning(
                "journal %s: torn tail at offset %d (%s); cutting %d bytes after seq %d",
                path,
                offset,
                parsed,
                len(data) - offset,
                expected - 1,
            )
            _truncate(path, offset, truncate_sync)
        if not is_last and expected == name_seq:
            raise JournalCorruptError(
                f"journal {path} offset 0: empty segment followed by newer segments"
            )
        segment = _Segment(path, name_seq, expected - 1, offset)
        if (
            keep_after is not None
            and segment.last_seq > keep_after
            and kept_bytes + offset <= KEPT_BYTES_MAX
        ):
            offsets.append(offset)
            segment.kept = _Checked(data, offsets)
            kept_bytes += offset
        segments.append(segment)
    return segments


def _truncate(path: Path, size_bytes: int, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size_bytes)
        if sync:
            # The cut must reach the disk before new records are appended after it.
            _fdatasync(fd)
    finally:
        os.close(fd)
