"""Snapshot stores: a set of named numpy arrays, opaque meta bytes and the journal position.

The arrays are the whole ledger (up to about 1 GB), so they are written straight from their
buffers and read straight into freshly allocated arrays, with checksums computed chunk by chunk
while the chunk is hot in cache. Two stores share one header format:

* ``FileSnapshotStore``: one file per snapshot, written to ``.tmp``, fsynced, renamed, directory
  fsynced. Layout: magic, meta, arrays (each 64-byte aligned), then the header as a trailer so
  it can carry checksums computed during the single write pass.
* ``RedisSnapshotStore``: chunk keys, then a header key, then the ``latest`` pointer, switched
  last, so a reader never sees a partial snapshot.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.state import populated_bytes

__all__ = [
    "FORMAT_VERSION",
    "SNAPSHOT_BYTES_MAX",
    "ArrayHeader",
    "FileSnapshotStore",
    "LoadedSnapshot",
    "RedisSnapshotStore",
    "SnapshotHeader",
    "SnapshotInfo",
    "SnapshotStore",
    "SnapshotStoreError",
]

log = logging.getLogger("omnistock.snapshot")
_T = TypeVar("_T")

FORMAT_VERSION = 1
SNAPSHOT_BYTES_MAX = 4 * 1024**3
ARRAYS_MAX = 256
ARRAY_NAME_BYTES_MAX = 128
ARRAY_NDIM_MAX = 8
HEADER_BYTES_MAX = 1024 * 1024
ALIGN_BYTES = 64  # Cache-line alignment keeps numba kernels on their aligned fast path.
IO_CHUNK_BYTES = 8 * 1024 * 1024
REDIS_CHUNK_BYTES_DEFAULT = 8 * 1024 * 1024
REDIS_CHUNK_BYTES_MAX = 64 * 1024 * 1024  # Well under Redis' 512 MB proto-max-bulk-len.
REDIS_PIPELINE_BYTES_MAX = 64 * 1024 * 1024
SNAPSHOTS_KEPT = 2

FILE_MAGIC = b"OMNISNP1"
FOOTER_MAGIC = b"OMNIEND1"
_FOOTER = struct.Struct("<II8s")  # header_len, header_crc32, FOOTER_MAGIC
_REDIS_HEADER_PREFIX = struct.Struct("<8sI")  # FILE_MAGIC, header_crc32
_FILE_NAME_RE = re.compile(r"^snapshot-(\d{20})\.snap$")

assert len(FILE_MAGIC) == len(FOOTER_MAGIC) == 8
assert len(FILE_MAGIC) <= ALIGN_BYTES
assert IO_CHUNK_BYTES % ALIGN_BYTES == 0
assert REDIS_CHUNK_BYTES_DEFAULT <= REDIS_CHUNK_BYTES_MAX <= REDIS_PIPELINE_BYTES_MAX
assert ARRAYS_MAX * (ARRAY_NAME_BYTES_MAX + 256) < HEADER_BYTES_MAX


class SnapshotStoreError(Exception):
    """A snapshot could not be saved or loaded (store unreachable, limits, all copies invalid)."""


class _InvalidSnapshot(Exception):
    """One stored snapshot failed validation; the loader falls back to an older one."""


class ArrayHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    dtype: str
    shape: tuple[int, ...]
    byte_count: int
    crc32: int


class SnapshotHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format_version: int
    journal_seq: int
    created_at_ms: int
    meta_byte_count: int
    meta_crc32: int
    arrays: tuple[ArrayHeader, ...]
    chunk_bytes: int = 0  # Redis only: the size of every chunk but an array's last.


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    journal_seq: int
    bytes: int
    duration_s: float
    location: str


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    arrays: dict[str, np.ndarray]
    meta: bytes
    journal_seq: int
    created_at_ms: int
    bytes: int
    location: str


class SnapshotStore(Protocol):
    def save(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: bytes,
        journal_seq: int,
        created_at_ms: int,
    ) -> SnapshotInfo: ...

    def load_latest(self, into: ArrayAllocator | None = None) -> LoadedSnapshot | None: ...

    def latest_journal_seq(self) -> int | None: ...

    def describe(self) -> str: ...


# Where a loaded array's bytes go: given the array's name, dtype and shape, a writable
# C-contiguous array of exactly that dtype and shape (a view of a larger one is fine: the caller
# may adopt the larger one, as `Ledger.from_state(..., room=)` does), or None for a fresh buffer.
ArrayAllocator = Callable[[str, np.dtype, tuple[int, ...]], np.ndarray | None]

_header_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)


def _align(offset: int) -> int:
    return -(-offset // ALIGN_BYTES) * ALIGN_BYTES


def _prepare(
    arrays: Mapping[str, np.ndarray],
    meta: bytes,
    journal_seq: int,
    created_at_ms: int,
    bytes_max: int,
) -> list[tuple[str, np.ndarray]]:
    """Validate inputs; return the arrays as C-contiguous (copying only those that are not)."""
    if journal_seq < 0 or created_at_ms < 0:
        raise ValueError("journal_seq and created_at_ms must be >= 0")
    if len(arrays) > ARRAYS_MAX:
        raise ValueError(f"{len(arrays)} arrays exceed ARRAYS_MAX={ARRAYS_MAX}")
    prepared = []
    total_bytes = len(meta)
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise TypeError(f"arrays[{name!r}] is {type(array).__name__}, expected numpy.ndarray")
        if not name or len(name.encode()) > ARRAY_NAME_BYTES_MAX:
            raise ValueError(f"array name {name!r} must be 1..{ARRAY_NAME_BYTES_MAX} bytes")
        if array.dtype.hasobject or array.dtype.fields is not None:
            raise ValueError(f"arrays[{name!r}] has dtype {array.dtype}: plain dtypes only")
        if array.ndim > ARRAY_NDIM_MAX:
            raise ValueError(f"arrays[{name!r}] has {array.ndim} dims > {ARRAY_NDIM_MAX}")
        # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
        prepared.append((name, array if array.flags.c_contiguous else array.copy(order="C")))
        total_bytes += array.nbytes
    if total_bytes > bytes_max:
        raise SnapshotStoreError(
            f"snapshot of {total_bytes} bytes exceeds the limit of {bytes_max} bytes"
        )
    return prepared


def _byte_view(array: np.ndarray) -> memoryview:
    return array.reshape(-1).view(np.uint8).data


def _chunks(view: memoryview, chunk_bytes: int) -> Iterator[memoryview]:
    for start in range(0, len(view), chunk_bytes):
        yield view[start : start + chunk_bytes]


def _new_array(spec: ArrayHeader, where: str, into: ArrayAllocator | None = None) -> np.ndarray:
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError as exc:
        bad = f"{where}: array {spec.name!r} has bad dtype {spec.dtype!r}"
        raise _InvalidSnapshot(bad) from exc
    if dtype.hasobject or dtype.fields is not None or any(n < 0 for n in spec.shape):
        raise _InvalidSnapshot(f"{where}: array {spec.name!r} has bad dtype or shape")
    count = int(np.prod(spec.shape, dtype=np.int64))
    if count * dtype.itemsize != spec.byte_count:
        raise _InvalidSnapshot(
            f"{where}: array {spec.name!r} byte_count {spec.byte_count} does not match "
            f"dtype {spec.dtype} x shape {spec.shape}"
        )
    if into is not None:
        given = into(spec.name, dtype, tuple(spec.shape))
        if given is not None:
            ok = given.dtype == dtype and given.shape == tuple(spec.shape)
            if not (ok and given.flags.c_contiguous and given.flags.writeable):
                raise ValueError(f"into() gave an unusable array for {spec.name!r}")
            return given
    # Over-allocate and start at a cache-line boundary, as the file layout does.
    raw = populated_bytes(spec.byte_count + ALIGN_BYTES)
    start = -raw.ctypes.data % ALIGN_BYTES
    array = raw[start : start + spec.byte_count].view(dtype).reshape(spec.shape)
    if array.nbytes != spec.byte_count:
        raise _InvalidSnapshot(
            f"{where}: array {spec.name!r} byte_count {spec.byte_count} does not match "
            f"dtype {spec.dtype} x shape {spec.shape}"
        )
    return array


def _check_header(header: SnapshotHeader, where: str, bytes_max: int) -> None:
    if header.format_version != FORMAT_VERSION:
        raise _InvalidSnapshot(
            f"{where}: format version {header.format_version}, this build reads {FORMAT_VERSION}"
        )
    total = header.meta_byte_count + sum(a.byte_count for a in header.arrays)
    if total > bytes_max or len(header.arrays) > ARRAYS_MAX:
        raise _InvalidSnapshot(f"{where}: header claims {total} bytes, over the limit")
    if len({a.name for a in header.arrays}) != len(header.arrays):
        raise _InvalidSnapshot(f"{where}: duplicate array names")


def _decode_header(raw: bytes | memoryview, crc: int, where: str) -> SnapshotHeader:
    if zlib.crc32(raw) != crc:
        raise _InvalidSnapshot(f"{where}: header checksum mismatch")
    try:
        return _header_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise _InvalidSnapshot(f"{where}: undecodable header: {exc}") from exc


def _file_layout(header: SnapshotHeader) -> tuple[int, list[int], int]:
    """Offsets of the meta, of each array, and where the trailer header starts."""
    meta_offset = ALIGN_BYTES
    offset = _align(meta_offset + header.meta_byte_count)
    array_offsets = []
    for spec in header.arrays:
        array_offsets.append(offset)
        offset = _align(offset + spec.byte_count)
    return meta_offset, array_offsets, offset


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSnapshotStore:
    """Snapshots as files ``snapshot-<journal_seq>.snap`` in one directory; keeps the newest 2
    that are not known to be damaged (a file ``load_latest`` found invalid goes at the next
    save, so the fallback it recovered from is kept instead)."""

    def __init__(self, directory: str | os.PathLike[str], bytes_max: int = SNAPSHOT_BYTES_MAX):
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._bytes_max = bytes_max
        self._invalid: set[Path] = set()  # found invalid by load_latest

    def describe(self) -> str:
        return f"file:{self._directory}"

    def _path(self, journal_seq: int) -> Path:
        return self._directory / f"snapshot-{journal_seq:020d}.snap"

    def _complete(self) -> list[tuple[int, Path]]:
        found = []
        for entry in self._directory.iterdir():
            match = _FILE_NAME_RE.match(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry))
        found.sort(reverse=True)
        return found

    def save(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: bytes,
        journal_seq: int,
        created_at_ms: int,
    ) -> SnapshotInfo:
        started = time.perf_counter()
        prepared = _prepare(arrays, meta, journal_seq, created_at_ms, self._bytes_max)
        path = self._path(journal_seq)
        tmp_path = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                size = self._write(fd, prepared, meta, journal_seq, created_at_ms)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_path, path)
            _fsync_dir(self._directory)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise SnapshotStoreError(f"cannot write snapshot {path}: {exc}") from exc
        self._prune()
        return SnapshotInfo(journal_seq, size, time.perf_counter() - started, str(path))

    @staticmethod
    def _write(
        fd: int,
        prepared: list[tuple[str, np.ndarray]],
        meta: bytes,
        journal_seq: int,
        created_at_ms: int,
    ) -> int:
        offset = 0

        def put(data: memoryview | bytes) -> None:
            nonlocal offset
            _write_all(fd, data)
            offset += len(data)

        def pad() -> None:
            put(bytes(_align(offset) - offset))

        put(FILE_MAGIC)
        pad()
        put(meta)
        pad()
        specs = []
        for name, array in prepared:
            crc = 0
            for chunk in _chunks(_byte_view(array), IO_CHUNK_BYTES):
                crc = zlib.crc32(chunk, crc)
                put(chunk)
            pad()
            specs.append(ArrayHeader(name, array.dtype.str, array.shape, array.nbytes, crc))
        header = _header_encoder.encode(
            SnapshotHeader(
                FORMAT_VERSION,
                journal_seq,
                created_at_ms,
                len(meta),
                zlib.crc32(meta),
                tuple(specs),
            )
        )
        put(header)
        put(_FOOTER.pack(len(header), zlib.crc32(header), FOOTER_MAGIC))
        return offset

    def _prune(self) -> None:
        # Older complete snapshots beyond the newest SNAPSHOTS_KEPT, and any leftover .tmp
        # from an interrupted save, are garbage once a newer snapshot is complete on disk.
        # A file `load_latest` found invalid neither counts as kept nor stays: keeping it would
        # push out the older valid snapshot that recovery fell back to.
        complete = [path for _, path in self._complete()]
        stale = [path for path in complete if path in self._invalid]
        stale += [path for path in complete if path not in self._invalid][SNAPSHOTS_KEPT:]
        stale += [p for p in self._directory.glob("snapshot-*.snap.tmp") if p.is_file()]
        self._invalid.clear()
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            _fsync_dir(self._directory)

    def latest_journal_seq(self) -> int | None:
        complete = self._complete()
        return complete[0][0] if complete else None

    def load_latest(self, into: ArrayAllocator | None = None) -> LoadedSnapshot | None:
        """The newest snapshot that validates; ``None`` only if there is no snapshot at all.

        If snapshots exist but none validates, ``SnapshotStoreError`` is raised: starting empty
        would silently drop the state they held. `into` chooses where each array is read.
        """
        failures = []
        for _, path in self._complete():
            try:
                return self._load(path, into)
            except (_InvalidSnapshot, OSError) as exc:
                log.error("snapshot %s is unusable, trying an older one: %s", path, exc)
                failures.append(str(exc))
                if isinstance(exc, _InvalidSnapshot):  # not a read error that may pass
                    self._invalid.add(path)
        if failures:
            raise SnapshotStoreError("no valid snapshot: " + "; ".join(failures))
        return None

    def _load(self, path: Path, into: ArrayAllocator | None) -> LoadedSnapshot:
        where = str(path)
        with open(path, "rb", buffering=0) as file:
            size = os.fstat(file.fileno()).st_size
            if size < ALIGN_BYTES + _FOOTER.size:
                raise _InvalidSnapshot(f"{where}: file of {size} bytes is too short")
            if file.read(len(FILE_MAGIC)) != FILE_MAGIC:
                raise _InvalidSnapshot(f"{where}: bad file magic")
            file.seek(size - _FOOTER.size)
            header_len, header_crc, footer_magic = _FOOTER.unpack(_read_exact(file, _FOOTER.size))
            if footer_magic != FOOTER_MAGIC or header_len > min(HEADER_BYTES_MAX, size):
                raise _InvalidSnapshot(f"{where}: bad footer (incomplete file?)")
            header_offset = size - _FOOTER.size - header_len
            file.seek(header_offset)
            header = _decode_header(_read_exact(file, header_len), header_crc, where)
            _check_header(header, where, self._bytes_max)
            meta_offset, array_offsets, end = _file_layout(header)
            if end != header_offset:
                raise _InvalidSnapshot(
                    f"{where}: header describes {end} data bytes, file holds {header_offset}"
                )
            file.seek(meta_offset)
            meta = _read_exact(file, header.meta_byte_count)
            if zlib.crc32(meta) != header.meta_crc32:
                raise _InvalidSnapshot(f"{where}: meta checksum mismatch")
            arrays = {}
            for spec, offset in zip(header.arrays, array_offsets, strict=True):
                array = _new_array(spec, where, into)
                file.seek(offset)
                crc = 0
                for chunk in _chunks(_byte_view(array), IO_CHUNK_BYTES):
                    _readinto_exact(file, chunk)
                    crc = zlib.crc32(chunk, crc)
                if crc != spec.crc32:
                    raise _InvalidSnapshot(f"{where}: array {spec.name!r} checksum mismatch")
                arrays[spec.name] = array
        return LoadedSnapshot(arrays, meta, header.journal_seq, header.created_at_ms, size, where)


def _as_bytes(value: object) -> bytes:
    # The client is created without decode_responses, so replies are bytes; a client passed in
    # with decode_responses=True would corrupt binary chunks, hence the hard check.
    if not isinstance(value, bytes):
        raise SnapshotStoreError("the redis client must not use decode_responses=True")
    return value


def _read_exact(file: Any, count: int) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise _InvalidSnapshot(f"short read: {len(data)} of {count} bytes")
    return bytes(data)


def _readinto_exact(file: Any, view: memoryview) -> None:
    while view:
        count = file.readinto(view)
        if not count:
            raise _InvalidSnapshot("short read: file ends inside an array")
        view = view[count:]


class RedisSnapshotStore:
    """Snapshots as binary chunk keys in Redis; the ``latest`` pointer is switched last.

    Keys, for a snapshot ``id`` (journal position plus a random suffix, so rewriting the same
    position never touches the chunks the current pointer names)::

        {prefix}:snap:index              hash id -> chunk count (finds orphans of a failed save)
        {prefix}:snap:{id}:chunk:{i}     meta chunks, then each array's chunks
        {prefix}:snap:{id}:header        FILE_MAGIC, header crc32, msgpack SnapshotHeader
        {prefix}:snap:latest / previous  ids of the newest and the one before

    Single writer per prefix. Any Redis failure surfaces as ``SnapshotStoreError``.
    """

    def __init__(
        self,
        client: str | redis.Redis,
        prefix: str = "omnistock",
        *,
        chunk_bytes: int = REDIS_CHUNK_BYTES_DEFAULT,
        bytes_max: int = SNAPSHOT_BYTES_MAX,
        socket_timeout_s: float = 30.0,
    ) -> None:
        if not 0 < chunk_bytes <= REDIS_CHUNK_BYTES_MAX:
            raise ValueError(f"chunk_bytes must be in 1..{REDIS_CHUNK_BYTES_MAX}")
        if isinstance(client, str):
            # One quick retry covers a pooled connection that died with a restarted Redis;
            # anything longer is the caller's retry policy, not ours.
            client = redis.Redis.from_url(
                client,
                socket_connect_timeout=2.0,
                socket_timeout=socket_timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
        self._redis = client
        self._prefix = prefix
        self._chunk_bytes = chunk_bytes
        self._bytes_max = bytes_max

    def describe(self) -> str:
        kwargs = self._redis.connection_pool.connection_kwargs
        host, port, db = kwargs.get("host", "?"), kwargs.get("port", "?"), kwargs.get("db", 0)
        return f"redis://{host}:{port}/{db} prefix={self._prefix}"

    def close(self) -> None:
        self._redis.close()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, "snap", *parts))

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except redis.RedisError as exc:
            where = self.describe()
            raise SnapshotStoreError(f"redis snapshot {what} failed ({where}): {exc}") from exc

    def save(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: bytes,
        journal_seq: int,
        created_at_ms: int,
    ) -> SnapshotInfo:
        started = time.perf_counter()
        prepared = _prepare(arrays, meta, journal_seq, created_at_ms, self._bytes_max)
        snap_id = f"{journal_seq:020d}-{secrets.token_hex(4)}"
        pieces: list[memoryview] = list(_chunks(memoryview(meta), self._chunk_bytes))
        for _, array in prepared:
            pieces.extend(_chunks(_byte_view(array), self._chunk_bytes))
        self._call("save", lambda: self._redis.hset(self._key("index"), snap_id, len(pieces)))
        self._call("save", lambda: self._write_chunks(snap_id, pieces))
        specs = []
        for name, array in prepared:
            # Checksums are a second pass over memory here; at several GB/s that is small next
            # to the network transfer, and it keeps chunking independent of array boundaries.
            crc = 0
            for chunk in _chunks(_byte_view(array), IO_CHUNK_BYTES):
                crc = zlib.crc32(chunk, crc)
            specs.append(ArrayHeader(name, array.dtype.str, array.shape, array.nbytes, crc))
        header = _header_encoder.encode(
            SnapshotHeader(
                FORMAT_VERSION,
                journal_seq,
                created_at_ms,
                len(meta),
                zlib.crc32(meta),
                tuple(specs),
                self._chunk_bytes,
            )
        )
        header_value = _REDIS_HEADER_PREFIX.pack(FILE_MAGIC, zlib.crc32(header)) + header
        self._call("save", lambda: self._redis.set(self._key(snap_id, "header"), header_value))
        self._call("pointer switch", lambda: self._switch_pointer(snap_id))
        try:
            self._delete_unreferenced()
        except redis.RedisError as exc:
            # The new snapshot is in place; leftovers are collected by the next save.
            log.warning("redis snapshot cleanup failed: %s", exc)
        size = len(meta) + sum(a.nbytes for _, a in prepared) + len(header_value)
        location = f"{self.describe()} id={snap_id}"
        return SnapshotInfo(journal_seq, size, time.perf_counter() - started, location)

    def _write_chunks(self, snap_id: str, pieces: list[memoryview]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pending_bytes = 0
        for index, piece in enumerate(pieces):
            pipe.set(self._key(snap_id, "chunk", str(index)), piece)
            pending_bytes += len(piece)
            if pending_bytes >= REDIS_PIPELINE_BYTES_MAX:
                pipe.execute()
                pending_bytes = 0
        pipe.execute()

    def _switch_pointer(self, snap_id: str) -> None:
        latest = self._redis.get(self._key("latest"))
        pipe = self._redis.pipeline(transaction=True)
        if latest is not None and _as_bytes(latest).decode() != snap_id:
            pipe.set(self._key("previous"), latest)
        pipe.set(self._key("latest"), snap_id)
        pipe.execute()

    def _delete_unreferenced(self) -> None:
        keep = {
            _as_bytes(v).decode()
            for v in self._redis.mget(self._key("latest"), self._key("previous"))
            if v is not None
        }
        index = self._redis.hgetall(self._key("index"))
        for raw_id, raw_count in index.items():
            snap_id = _as_bytes(raw_id).decode()
            if snap_id in keep:
                continue
            keys = [self._key(snap_id, "chunk", str(i)) for i in range(int(raw_count))]
            keys.append(self._key(snap_id, "header"))
            pipe = self._redis.pipeline(transaction=False)
            for start in range(0, len(keys), 1024):
                pipe.unlink(*keys[start : start + 1024])
            pipe.hdel(self._key("index"), snap_id)
            pipe.execute()

    def _pointers(self) -> list[str]:
        values = self._call(
            "load", lambda: self._redis.mget(self._key("latest"), self._key("previous"))
        )
        return [_as_bytes(v).decode() for v in values if v is not None]

    def latest_journal_seq(self) -> int | None:
        pointers = self._pointers()
        if not pointers:
            return None
        raw = self._call("load", lambda: self._redis.get(self._key(pointers[0], "header")))
        try:
            return self._header(pointers[0], None if raw is None else _as_bytes(raw)).journal_seq
        except _InvalidSnapshot as exc:
            raise SnapshotStoreError(str(exc)) from exc

    def load_latest(self, into: ArrayAllocator | None = None) -> LoadedSnapshot | None:
        """The newest snapshot that validates (falling back to the previous one).

        ``None`` if Redis holds no snapshot under this prefix; ``SnapshotStoreError`` if Redis is
        unreachable or no stored snapshot validates. `into` chooses where each array is read.
        """
        failures = []
        for snap_id in self._pointers():
            try:
                return self._call("load", functools.partial(self._load, snap_id, into))
            except _InvalidSnapshot as exc:
                log.error("redis snapshot %s is unusable, trying the previous: %s", snap_id, exc)
                failures.append(str(exc))
        if failures:
            raise SnapshotStoreError("no valid snapshot: " + "; ".join(failures))
        return None

    def _header(self, snap_id: str, raw: bytes | None) -> SnapshotHeader:
        where = f"{self.describe()} id={snap_id}"
        if raw is None or len(raw) < _REDIS_HEADER_PREFIX.size:
            raise _InvalidSnapshot(f"{where}: header key missing or short")
        magic, crc = _REDIS_HEADER_PREFIX.unpack_from(raw)
        if magic != FILE_MAGIC:
            raise _InvalidSnapshot(f"{where}: bad header magic")
        header = _decode_header(memoryview(raw)[_REDIS_HEADER_PREFIX.size :], crc, where)
        _check_header(header, where, self._bytes_max)
        if not 0 < header.chunk_bytes <= REDIS_CHUNK_BYTES_MAX:
            raise _InvalidSnapshot(f"{where}: bad chunk size {header.chunk_bytes}")
        return header

    def _load(self, snap_id: str, into: ArrayAllocator | None) -> LoadedSnapshot:
        where = f"{self.describe()} id={snap_id}"
        raw = self._redis.get(self._key(snap_id, "header"))
        header = self._header(snap_id, None if raw is None else _as_bytes(raw))
        chunk_bytes = header.chunk_bytes
        meta = bytearray(header.meta_byte_count)
        arrays = {spec.name: _new_array(spec, where, into) for spec in header.arrays}
        # Destinations in chunk order: the meta buffer first, then each array's bytes.
        targets: list[memoryview] = list(_chunks(memoryview(meta), chunk_bytes))
        for array in arrays.values():
            targets.extend(_chunks(_byte_view(array), chunk_bytes))
        batch = max(1, REDIS_PIPELINE_BYTES_MAX // chunk_bytes)
        for start in range(0, len(targets), batch):
            keys = [self._key(snap_id, "chunk", str(i)) for i in range(start, start + batch)]
            values = self._redis.mget(keys[: len(targets) - start])
            for index, value in enumerate(values, start):
                target = targets[index]
                if value is None or len(value) != len(target):
                    raise _InvalidSnapshot(f"{where}: chunk {index} missing or of wrong size")
                target[:] = _as_bytes(value)
        if zlib.crc32(meta) != header.meta_crc32:
            raise _InvalidSnapshot(f"{where}: meta checksum mismatch")
        size = len(meta)
        for spec, array in zip(header.arrays, arrays.values(), strict=True):
            crc = 0
            for chunk in _chunks(_byte_view(array), IO_CHUNK_BYTES):
                crc = zlib.crc32(chunk, crc)
            if crc != spec.crc32:
                raise _InvalidSnapshot(f"{where}: array {spec.name!r} checksum mismatch")
            size += array.nbytes
        return LoadedSnapshot(
            arrays, bytes(meta), header.journal_seq, header.created_at_ms, size, where
        )
