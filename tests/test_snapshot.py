from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from engine.codes import AdjustReason
from engine.commands import Adjust, Adjustment
from engine.persistence.snapshot import (
    FileSnapshotStore,
    LoadedSnapshot,
    RedisSnapshotStore,
    SnapshotStoreError,
)
from tests.redis_server import RedisServer, redis_server_fixture  # noqa: F401


def sample_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "qty": rng.integers(-(10**12), 10**12, size=(1000, 7), dtype=np.int64),
        "node": rng.integers(-(2**31), 2**31 - 1, size=3001, dtype=np.int32),
        "flags": rng.integers(-128, 127, size=517, dtype=np.int8),
        "lat": rng.standard_normal(333),
        "blob": np.frombuffer(rng.bytes(12345), dtype=np.uint8).copy(),
        "empty": np.zeros((0, 3), dtype=np.int64),
        "big_endian": np.arange(10, dtype=">u4"),
        "scalar": np.array(42, dtype=np.int16),
    }


def assert_same(loaded: LoadedSnapshot, arrays: dict[str, np.ndarray], meta: bytes) -> None:
    assert list(loaded.arrays) == list(arrays)
    for name, array in arrays.items():
        got = loaded.arrays[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        assert got.tobytes() == array.tobytes(), name
        assert got.flags.writeable and got.flags.c_contiguous, name
        assert got.ctypes.data % 64 == 0 or got.nbytes == 0, name
    assert loaded.meta == meta


# -- files ---------------------------------------------------------------------------------


def test_file_round_trip_is_byte_identical(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    assert store.load_latest() is None and store.latest_journal_seq() is None
    arrays = sample_arrays(1)
    info = store.save(arrays, b"meta\x00bytes", journal_seq=17, created_at_ms=1234)
    assert info.journal_seq == 17 and info.bytes == Path(info.location).stat().st_size
    loaded = store.load_latest()
    assert loaded is not None
    assert loaded.journal_seq == 17 and loaded.created_at_ms == 1234
    assert_same(loaded, arrays, b"meta\x00bytes")
    assert store.latest_journal_seq() == 17
    assert store.describe() == f"file:{tmp_path}"


def test_non_contiguous_input_is_saved_by_value(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    base = np.arange(100, dtype=np.int64).reshape(10, 10)
    store.save({"t": base.T, "s": base[::3]}, b"", 1, 0)
    loaded = store.load_latest()
    assert loaded is not None
    assert np.array_equal(loaded.arrays["t"], base.T)
    assert np.array_equal(loaded.arrays["s"], base[::3])


def test_keeps_newest_two(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    for seq in (5, 10, 15, 20):
        store.save({"a": np.full(10, seq)}, b"", seq, seq)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"snapshot-{15:020d}.snap",
        f"snapshot-{20:020d}.snap",
    ]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["array", "meta", "footer", "header", "truncated"])
def test_corrupted_newest_falls_back_to_previous(tmp_path: Path, where: str) -> None:
    store = FileSnapshotStore(tmp_path)
    old, new = sample_arrays(1), sample_arrays(2)
    store.save(old, b"old", 1, 100)
    info = store.save(new, b"new", 2, 200)
    newest = Path(info.location)
    size = newest.stat().st_size
    if where == "array":
        flip(newest, 64 * 3 + 5000)
    elif where == "meta":
        flip(newest, 64)
    elif where == "footer":
        flip(newest, size - 1)
    elif where == "header":
        flip(newest, size - 30)
    else:
        newest.write_bytes(newest.read_bytes()[: size // 2])
    loaded = store.load_latest()
    assert loaded is not None and loaded.journal_seq == 1
    assert_same(loaded, old, b"old")


def test_a_damaged_newest_does_not_push_out_the_fallback(tmp_path: Path) -> None:
    """Recovery fell back past a damaged newest snapshot; the next save must keep the valid one
    it fell back to, not the damaged one (two kept by name alone: a later damage to the new
    snapshot then left nothing valid)."""
    store = FileSnapshotStore(tmp_path)
    store.save({"a": np.full(10, 1)}, b"one", 1, 100)
    damaged = Path(store.save({"a": np.full(10, 2)}, b"two", 2, 200).location)
    flip(damaged, 64)
    loaded = store.load_latest()
    assert loaded is not None and loaded.journal_seq == 1
    newest = Path(store.save({"a": np.full(10, 3)}, b"three", 3, 300).location)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"snapshot-{1:020d}.snap",
        f"snapshot-{3:020d}.snap",
    ]
    flip(newest, 64)
    again = FileSnapshotStore(tmp_path).load_latest()
    assert again is not None and again.meta == b"one"


def test_all_snapshots_invalid_is_an_error_not_an_empty_start(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    store.save({"a": np.arange(100)}, b"", 1, 0)
    path = next(tmp_path.iterdir())
    flip(path, 64 * 2)
    with pytest.raises(SnapshotStoreError, match="no valid snapshot"):
        store.load_latest()


def test_torn_tmp_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    store.save({"a": np.arange(10)}, b"m", 3, 0)
    torn = tmp_path / f"snapshot-{9:020d}.snap.tmp"
    torn.write_bytes(b"OMNISNP1" + bytes(100))
    loaded = store.load_latest()
    assert loaded is not None and loaded.journal_seq == 3
    store.save({"a": np.arange(10)}, b"m", 4, 0)
    assert not torn.exists()


def test_limits_and_bad_input(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path, bytes_max=1000)
    with pytest.raises(SnapshotStoreError, match="exceeds the limit"):
        store.save({"a": np.zeros(200, dtype=np.int64)}, b"", 1, 0)
    with pytest.raises(ValueError, match="plain dtypes"):
        store.save({"a": np.array([object()])}, b"", 1, 0)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        store.save({"a": [1, 2]}, b"", 1, 0)  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


# -- redis ---------------------------------------------------------------------------------


def redis_store(server: RedisServer, **kwargs: object) -> RedisSnapshotStore:
    return RedisSnapshotStore(server.url, prefix="t", chunk_bytes=4096, **kwargs)  # type: ignore[arg-type]


def test_redis_round_trip_and_cleanup(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    assert store.load_latest() is None and store.latest_journal_seq() is None
    for seq in (1, 2, 3):
        arrays = sample_arrays(seq)
        info = store.save(arrays, b"meta-%d" % seq, seq, 1000 + seq)
        assert info.journal_seq == seq and f"127.0.0.1:{redis_server.port}" in info.location
        loaded = store.load_latest()
        assert loaded is not None and loaded.journal_seq == seq
        assert loaded.created_at_ms == 1000 + seq
        assert_same(loaded, arrays, b"meta-%d" % seq)
    assert store.latest_journal_seq() == 3
    client = redis.Redis.from_url(redis_server.url)
    try:
        headers = sorted(k for k in client.keys("t:snap:*:header"))
        assert len(headers) == 2  # latest and previous only
        assert len(client.hgetall("t:snap:index")) == 2
    finally:
        client.close()
        store.close()


def test_redis_crash_before_pointer_switch_keeps_old_snapshot(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_store(redis_server)
    old = sample_arrays(1)
    store.save(old, b"old", 1, 1)

    def crash(snap_id: str) -> None:
        raise redis.ConnectionError("simulated crash before the pointer switch")

    monkeypatch.setattr(store, "_switch_pointer", crash)
    with pytest.raises(SnapshotStoreError, match="pointer switch"):
        store.save(sample_arrays(2), b"new", 2, 2)
    monkeypatch.undo()
    loaded = store.load_latest()
    assert loaded is not None and loaded.journal_seq == 1
    assert_same(loaded, old, b"old")
    # The orphaned chunks are collected by the next successful save.
    store.save(sample_arrays(3), b"", 3, 3)
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert len(client.hgetall("t:snap:index")) == 2
        chunks = client.keys("t:snap:*:chunk:0")
        assert [k for k in chunks if b":00000000000000000002-" in k] == []
    finally:
        client.close()
        store.close()


def test_redis_corrupted_latest_falls_back_to_previous(redis_server: RedisServer) -> None:
    store = redis_store(redis_server)
    old = sample_arrays(1)
    store.save(old, b"old", 1, 1)
    store.save(sample_arrays(2), b"new", 2, 2)
    client = redis.Redis.from_url(redis_server.url)
    try:
        latest = client.get("t:snap:latest")
        assert latest is not None
        key = b"t:snap:" + latest + b":chunk:5"
        value = bytearray(client.get(key) or b"")
        value[100] ^= 1
        client.set(key, bytes(value))
        loaded = store.load_latest()
        assert loaded is not None and loaded.journal_seq == 1
        assert_same(loaded, old, b"old")
        client.delete(b"t:snap:" + latest + b":chunk:7")
        loaded = store.load_latest()
        assert loaded is not None and loaded.journal_seq == 1
    finally:
        client.close()
        store.close()


def test_redis_down_raises_then_recovers_after_restart(redis_server: RedisServer) -> None:
    store = redis_store(redis_server, socket_timeout_s=2.0)
    arrays = {"a": np.arange(50_000, dtype=np.int64)}
    store.save(arrays, b"", 1, 1)
    redis_server.kill()
    with pytest.raises(SnapshotStoreError, match="redis snapshot save failed"):
        store.save(arrays, b"", 2, 2)
    with pytest.raises(SnapshotStoreError, match="redis snapshot load failed"):
        store.load_latest()
    redis_server.restart()
    # No persistence on this Redis: the restart lost the snapshot, and the store says so.
    assert store.load_latest() is None
    store.save(arrays, b"", 3, 3)
    loaded = store.load_latest()
    assert loaded is not None and loaded.journal_seq == 3
    assert_same(loaded, arrays, b"")
    store.close()


def test_redis_size_limit(redis_server: RedisServer) -> None:
    store = redis_store(redis_server, bytes_max=100)
    with pytest.raises(SnapshotStoreError, match="exceeds the limit"):
        store.save({"a": np.zeros(100)}, b"", 1, 1)
    store.close()


def test_populated_buffers_are_writable_aligned_and_sized() -> None:
    from engine.state import ALIGN_BYTES, POPULATE_BYTES_MIN, populated_bytes

    for nbytes in (100, POPULATE_BYTES_MIN, POPULATE_BYTES_MIN + 12_345):
        buf = populated_bytes(nbytes)
        assert buf.dtype == np.uint8 and buf.shape == (nbytes,)
        assert buf.flags.writeable and buf.flags.c_contiguous
        buf[:] = 7
        assert int(buf[-1]) == 7 and int(buf.sum(dtype=np.int64)) == 7 * nbytes
    big = populated_bytes(POPULATE_BYTES_MIN)
    assert big.ctypes.data % ALIGN_BYTES == 0  # a mapping starts on a page


def _anon_huge_kib(address: int) -> int:
    """AnonHugePages of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return 0


def test_large_buffers_take_huge_pages_where_the_kernel_offers_them() -> None:
    from engine.state import populated_bytes

    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not setting.exists() or "[never]" in setting.read_text():
        pytest.skip("no transparent huge pages on this machine")
    buf = populated_bytes(64 << 20, zeroed=True)
    assert _anon_huge_kib(buf.ctypes.data) >= 2048  # at least one 2 MiB page, mapped up front
    assert int(buf[:: 1 << 20].sum()) == 0


def test_populated_buffers_fall_back_to_small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.state as state

    monkeypatch.setattr(state, "MADV_POPULATE_WRITE", 1 << 20)  # an advice no kernel knows
    buf = state.populated_bytes(state.POPULATE_BYTES_MIN, zeroed=True)
    assert _anon_huge_kib(buf.ctypes.data) == 0
    assert int(buf.sum(dtype=np.int64)) == 0
    buf[:] = 3
    assert int(buf[-1]) == 3


@pytest.mark.parametrize("where", ["file", "redis"])
def test_restored_ledger_adopts_the_arrays_it_was_read_into(
    where: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    from engine.commands import Line, Reserve
    from engine.ledger import Ledger
    from engine.state import ADOPTABLE_FILL, EMPTY, ArraysWithRoom, rows_with_room
    from tests.test_determinism import frozen, setup_commands

    ledger = Ledger()
    ledger.apply(1_000, setup_commands(5))
    ledger.apply(2_000, [Reserve("r1", (Line("s0", "n0", 2),), 60_000)])
    arrays, meta = ledger.export_state()
    store: Any = FileSnapshotStore(tmp_path) if where == "file" else redis_store(redis_server)
    store.save(arrays, meta, 3, 2_000)
    room = ArraysWithRoom()
    loaded = store.load_latest(room)
    assert loaded is not None
    positions = loaded.arrays["qty"].shape[0]
    restored = Ledger.from_state(loaded.arrays, loaded.meta, room=room.arrays)
    for name in ADOPTABLE_FILL:  # taken as they were read, not copied
        assert restored._a[name] is room.arrays[name]
    assert restored._a["qty"].shape[0] == rows_with_room(positions)
    assert (restored._a["pos_key"][positions:] == EMPTY).all()
    assert frozen(restored) == frozen(ledger)
    # The spare rows take new positions without growing anything.
    restored.apply(3_000, [Adjust("new", (Adjustment("s9", "n0", 4, AdjustReason.RECEIPT),))])
    assert restored._a["qty"] is room.arrays["qty"]
    assert int(restored.stats()["positions"]) == positions + 1
    assert restored.availability([("s9", "n0", None)])[0][1].available == 4
    if where == "redis":
        store.close()


def test_arrays_not_read_with_room_are_copied(tmp_path: Path) -> None:
    from engine.ledger import Ledger
    from engine.state import ArraysWithRoom
    from tests.test_determinism import frozen, setup_commands

    ledger = Ledger()
    ledger.apply(1_000, setup_commands(5))
    arrays, meta = ledger.export_state()
    FileSnapshotStore(tmp_path).save(arrays, meta, 1, 1_000)
    loaded = FileSnapshotStore(tmp_path).load_latest()  # plain buffers
    assert loaded is not None
    stale = ArraysWithRoom()  # holds nothing the snapshot was read into
    restored = Ledger.from_state(loaded.arrays, loaded.meta, room=stale.arrays)
    assert not any(np.shares_memory(restored._a[k], loaded.arrays[k]) for k in loaded.arrays)
    assert frozen(restored) == frozen(ledger)


def test_an_allocator_must_give_the_exact_shape(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    store.save(sample_arrays(1), b"m", 1, 0)

    def wrong(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
        return np.zeros((shape[0] + 1, *shape[1:]), dtype) if shape else None

    with pytest.raises(ValueError, match="unusable array"):
        store.load_latest(wrong)
