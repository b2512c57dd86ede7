"""Recovery: snapshot + journal replay rebuilds the exact state; a torn tail is cut; mid-log
corruption refuses to start (exit 2, one clear line); Redis snapshots survive Redis going away.

In-process tests drive `App` (recovery, sequencer, snapshotter) without gRPC; the corruption test
runs `omnistock serve` as a subprocess to check the exit code and the log.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from engine.codes import AdjustReason
from engine.commands import (
    Adjust,
    Adjustment,
    Batch,
    Commit,
    Extend,
    Fulfil,
    Line,
    NodeSpec,
    Release,
    Reserve,
    SetOnHand,
    StockCount,
    UpsertNodes,
)
from engine.ledger import Ledger
from engine.persistence import Journal
from server.app import App
from server.config import ServerConfig
from server.durability import StartupError
from tests.redis_server import RedisServer, redis_server_fixture  # noqa: F401
from tests.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
NODES = [f"n{i}" for i in range(4)]
SKUS = [f"s{i}" for i in range(12)]


def _config(data_dir: Path, **overrides: object) -> ServerConfig:
    values: dict[str, object] = {
        "data_dir": str(data_dir),
        "snapshot_journal_entries": 25,
        "snapshot_interval_s": 3600.0,
        "store_wait_s": 1.0,
    }
    values.update(overrides)
    return ServerConfig(**values)  # type: ignore[arg-type]


def _random_commands(rng: random.Random, k: int, count: int) -> list[object]:
    out: list[object] = []
    for i in range(count):
        rid = f"r{rng.randrange(k * 10 + i + 1)}"
        roll = rng.random()
        if roll < 0.4:
            lines = tuple(
                Line(rng.choice(SKUS), rng.choice(NODES), rng.randint(1, 5))
                for _ in range(rng.randint(1, 3))
            )
            out.append(Reserve(f"r{k * 10 + i}", lines, rng.choice([1_000, 60_000])))
        elif roll < 0.55:
            out.append(Commit(rid))
        elif roll < 0.65:
            out.append(Release(rid))
        elif roll < 0.72:
            out.append(Extend(rid, 30_000))
        elif roll < 0.8:
            out.append(Fulfil(rid))
        else:
            adj = Adjustment(
                rng.choice(SKUS), rng.choice(NODES), rng.randint(1, 20), AdjustReason.RECEIPT
            )
            out.append(Adjust(f"a{k}-{i}", (adj,)))
    return out


async def _seed(app: App) -> None:
    await app.sequencer.submit(UpsertNodes(tuple(NodeSpec(n) for n in NODES)))
    counts = tuple(StockCount(s, n, 50, 1) for s in SKUS for n in NODES)
    await app.sequencer.submit(SetOnHand("seed", counts))


async def _drive(app: App, seed: int, rounds: int = 30) -> None:
    rng = random.Random(seed)
    for r in range(rounds):
        calls = [
            app.sequencer.submit_many(_random_commands(rng, r * 100 + c, rng.randint(1, 6)))
            for c in range(rng.randint(1, 12))
        ]
        await asyncio.gather(*calls)


def _state(ledger: Ledger) -> tuple[dict[str, bytes], bytes]:
    arrays, meta = ledger.export_state()
    return {name: np.ascontiguousarray(a).tobytes() for name, a in arrays.items()}, meta


async def _crash(app: App) -> None:
    """Stop like a SIGKILL would: no final snapshot (the journal is closed to free its lock)."""
    assert app.snapshotter is not None
    await app.sequencer.close()
    deadline = time.monotonic() + 10
    while app.snapshotter.stats().in_progress:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert app.recovered is not None
    app.recovered.journal.close()


async def _wait(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_restart_from_snapshot_and_journal_is_byte_identical(tmp_path: Path) -> None:
    config = _config(tmp_path / "data")
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=1)
    await _wait(lambda: not app.snapshotter.stats().in_progress)  # type: ignore[union-attr]
    await _drive(app, seed=2, rounds=5)  # some entries after the last snapshot
    before = _state(app.ledger)
    seq = app.sequencer.journal_seq
    snapshots = app.snapshotter.stats().saves  # type: ignore[union-attr]
    assert snapshots >= 1
    await _crash(app)

    started = time.perf_counter()
    again = App(config)
    await again.start()
    elapsed = time.perf_counter() - started
    assert again.recovered is not None
    assert 0 < again.recovered.snapshot_journal_seq < seq
    assert again.recovered.replayed_entries == seq - again.recovered.snapshot_journal_seq
    assert _state(again.ledger) == before
    print(f"\nrecovery of {again.recovered.replayed_entries} entries + snapshot: {elapsed:.3f} s")
    # The clean stop writes a final snapshot; a third start replays nothing.
    await again.stop()
    third = App(config)
    await third.start()
    assert third.recovered is not None and third.recovered.replayed_entries == 0
    assert _state(third.ledger) == before
    await third.stop()


async def test_torn_tail_is_cut(tmp_path: Path) -> None:
    config = _config(tmp_path / "data", snapshot_journal_entries=1_000_000)
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=3, rounds=10)
    await _crash(app)
    journal_dir = tmp_path / "data" / "journal"
    with Journal.open(journal_dir, "none") as journal:
        entries = [payload for _, payload in journal.replay(0)]
    (segment,) = sorted(journal_dir.glob("journal-*.log"))
    size = segment.stat().st_size
    with segment.open("r+b") as file:  # cut the last record in half
        file.truncate(size - len(entries[-1]) // 2 - 1)
    expected = Ledger()
    decode = msgspec.msgpack.Decoder(Batch).decode
    for payload in entries[:-1]:
        expected.apply_batch(decode(payload))

    again = App(config)
    await again.start()
    assert again.sequencer.journal_seq == len(entries) - 1
    assert _state(again.ledger) == _state(expected)
    await again.sequencer.submit(Commit("whatever"))  # appends continue at the next seq
    assert again.sequencer.journal_seq == len(entries)
    await again.stop()


# Run in a fresh process: `warm_up` as `App.start` runs it, then `recover`, which must not load or
# compile any kernel (a kernel first met there costs seconds of compiling, or its cache load,
# inside the restart that recovery time is measured by).
_KERNELS_AFTER_WARM_UP = """
import json, sys
import numba.core.registry
from server.app import warm_up
from server.config import ServerConfig
from server.durability import recover

def kernels():
    out = {}
    for name, module in list(sys.modules.items()):
        if name.startswith(("engine", "server")):
            for attr, value in list(vars(module).items()):
                if isinstance(value, numba.core.registry.CPUDispatcher):
                    out[f"{name}.{attr}"] = len(value.overloads)
    return out

warm_up()
before = kernels()
recovered = recover(ServerConfig(data_dir=sys.argv[1]))
after = kernels()
print(json.dumps({"replayed": recovered.replayed_entries,
                  "new": sorted(k for k in after if after[k] != before.get(k, 0))}))
"""


async def test_warm_up_loads_every_kernel_recovery_runs(tmp_path: Path) -> None:
    config = _config(tmp_path / "data", snapshot_journal_entries=1_000_000)
    app = App(config)
    await app.start()
    await _seed(app)
    # One-command entries of plain Reserve / Commit / Release: replayed in groups by their own
    # kernel (engine/replay.py); the rest through `apply_batch`.
    for i in range(4):
        await app.sequencer.submit(Reserve(f"w{i}", (Line(SKUS[i], NODES[0], 1),), 60_000))
    await app.sequencer.submit(Commit("w0"))
    await app.sequencer.submit(Release("w1"))
    await _drive(app, seed=5, rounds=5)
    await _crash(app)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KERNELS_AFTER_WARM_UP, config.data_dir,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    found = json.loads(out.decode().splitlines()[-1])
    assert found["replayed"] == app.sequencer.journal_seq > 8
    assert found["new"] == []


async def _seeded_snapshot_then_stopped(tmp_path: Path) -> ServerConfig:
    """A server seeded, snapshotted and stopped; its config."""
    config = _config(tmp_path / "data")
    app = App(config)
    await app.start()
    await _seed(app)
    await app.snapshot_now()
    await app.stop()
    return config


async def test_snapshot_ahead_of_journal_refuses(tmp_path: Path) -> None:
    config = await _seeded_snapshot_then_stopped(tmp_path)
    for segment in (tmp_path / "data" / "journal").glob("journal-*.log"):
        segment.write_bytes(b"")  # the journal lost what the snapshot has
    with pytest.raises(StartupError, match="refusing to start"):
        await App(config).start()


async def test_damage_to_an_entry_the_snapshot_covers_is_refused_not_cut(tmp_path: Path) -> None:
    """The last journal entry is damaged, and the snapshot includes it: not a torn write (the
    snapshotter fsynced it first) but lost data. Recovery refuses and leaves the file as it was
    (it used to cut the record as a torn tail first, then refuse)."""
    config = await _seeded_snapshot_then_stopped(tmp_path)
    (segment,) = sorted((tmp_path / "data" / "journal").glob("journal-*.log"))
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(StartupError, match="which was durable"):
        await App(config).start()
    assert segment.read_bytes() == bytes(data)


async def test_flipped_byte_mid_log_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = App(_config(data, snapshot_journal_entries=1_000_000))
    await app.start()
    await _seed(app)
    await _drive(app, seed=4, rounds=5)
    await _crash(app)
    (segment,) = sorted((data / "journal").glob("journal-*.log"))
    raw = bytearray(segment.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    segment.write_bytes(bytes(raw))

    server = ServerProcess(data)
    process = server.spawn()
    code = process.wait(timeout=60)
    log = server.log_path.read_text()
    assert code == 2, log
    assert "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, errors
    assert "refusing to start" in errors[0]["msg"] and "journal" in errors[0]["msg"]


async def test_redis_snapshots_survive_redis_going_away(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    config = _config(tmp_path / "data", redis_url=redis_server.url, snapshot_journal_entries=10)
    app = App(config)
    await app.start()
    assert app.snapshotter is not None
    assert app.stats()["snapshot_store"].startswith("redis://")
    await _seed(app)
    await _drive(app, seed=5, rounds=15)
    await _wait(
        lambda: app.snapshotter.stats().saves >= 1 and not app.snapshotter.stats().in_progress
    )  # type: ignore[union-attr]

    redis_server.kill()
    await _drive(app, seed=6, rounds=15)  # writes keep working without Redis
    await _wait(lambda: app.stats()["snapshot_errors"] >= 1)
    assert app.snapshotter.stats().last_error
    saves = app.snapshotter.stats().saves

    redis_server.start()  # an empty Redis (no persistence), as after a restart
    deadline = time.monotonic() + 8
    while app.snapshotter.stats().saves == saves:  # retries with backoff, then resumes
        assert time.monotonic() < deadline, "snapshots did not resume"
        await app.sequencer.submit(Commit("tick"))
        await asyncio.sleep(0.05)
    await _wait(lambda: not app.snapshotter.stats().in_progress)  # type: ignore[union-attr]
    await _drive(app, seed=7, rounds=3)
    before = _state(app.ledger)
    await _crash(app)

    again = App(config)
    await again.start()
    assert again.recovered is not None and again.recovered.snapshot_journal_seq > 0
    assert _state(again.ledger) == before
    await again.stop()


async def test_redis_unreachable_at_start_recovers_from_whole_journal(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    config = _config(tmp_path / "data", redis_url=redis_server.url, snapshot_journal_entries=10)
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=8, rounds=10)
    before = _state(app.ledger)
    await _crash(app)
    redis_server.kill()
    again = App(config)
    await again.start()  # the journal reaches back to seq 1: it alone rebuilds the state
    assert again.recovered is not None and again.recovered.snapshot_journal_seq == 0
    assert _state(again.ledger) == before
    assert again.stats()["journal_seq"] > 0
    await _crash(again)


async def test_journal_is_trimmed_behind_the_previous_snapshot(tmp_path: Path) -> None:
    config = _config(tmp_path / "data", snapshot_journal_entries=10, journal_segment_bytes=4096)
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=9, rounds=40)
    await _wait(lambda: not app.snapshotter.stats().in_progress)  # type: ignore[union-attr]
    stats = app.snapshotter.stats()  # type: ignore[union-attr]
    journal = app.sequencer.journal
    assert stats.trims > 0 and journal.first_seq > 1
    # The journal still reaches back past the newest snapshot to the one before it.
    assert journal.first_seq <= stats.last_journal_seq
    before = _state(app.ledger)
    await _crash(app)
    again = App(config)
    await again.start()
    assert _state(again.ledger) == before
    await again.stop()


async def test_redis_without_fsync_always_never_trims(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    config = _config(
        tmp_path / "data",
        redis_url=redis_server.url,
        snapshot_journal_entries=10,
        journal_segment_bytes=4096,
    )
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=10, rounds=30)
    await _wait(lambda: not app.snapshotter.stats().in_progress)  # type: ignore[union-attr]
    assert app.snapshotter.stats().saves >= 2  # type: ignore[union-attr]
    assert app.sequencer.journal.first_seq == 1
    await app.stop()


# --- lifecycle -----------------------------------------------------------------------------


async def test_auth_off_refuses_non_loopback(tmp_path: Path) -> None:
    from server.app import ConfigError, create_server

    with pytest.raises(ConfigError, match="loopback"):
        await create_server(_config(tmp_path / "data", listen="0.0.0.0:0"))


async def test_health_not_serving_until_recovered_then_final_snapshot(tmp_path: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.app import create_server

    server, app, port = await create_server(_config(tmp_path / "data", listen="127.0.0.1:0"))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        assert (await stub.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await app.start()
        assert (await stub.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
        for service in app.services:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await _seed(app)
        seq = app.sequencer.journal_seq
        await app.stop(server, grace_s=1.0)
    assert app.snapshotter is not None and app.snapshotter.stats().last_journal_seq == seq


@pytest.mark.parametrize("durability", ["async", "none"])
async def test_a_snapshot_makes_the_entries_it_covers_durable_first(
    tmp_path: Path, durability: str
) -> None:
    """`async` and `none` fsync the journal later or never; a snapshot through entries not yet
    on disk would, after a machine crash, be ahead of the journal, and recovery refuses that."""
    config = _config(tmp_path / "data", durability=durability, async_fsync_interval_ms=1000,
                     snapshot_journal_entries=1_000_000)  # fmt: skip
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=3, rounds=5)
    journal = app.sequencer.journal
    assert journal.stats().synced_seq < journal.last_seq  # written, not yet fsynced
    result = await app.snapshot_now()
    assert journal.stats().synced_seq >= result.journal_seq == journal.last_seq
    await app.stop()


async def test_a_repeated_snapshot_keeps_the_fallbacks_journal(tmp_path: Path) -> None:
    """A snapshot asked for again with nothing written since replaces the newest file; the one
    before stays the fallback, and the journal after it stays: with the newest file damaged, a
    restart recovers the same state from the fallback."""
    data = tmp_path / "data"
    config = _config(data, snapshot_journal_entries=1_000_000, journal_segment_bytes=4096)
    app = App(config)
    await app.start()
    await _seed(app)
    await _drive(app, seed=1, rounds=5)
    fallback = await app.snapshot_now()
    await _drive(app, seed=2, rounds=20)
    newest = await app.snapshot_now()  # trims up to the fallback
    again = await app.snapshot_now()
    assert again.journal_seq == newest.journal_seq > fallback.journal_seq
    assert app.sequencer.journal.first_seq <= fallback.journal_seq + 1
    before = _state(app.ledger)
    await _crash(app)
    path = data / "snapshots" / f"snapshot-{newest.journal_seq:020d}.snap"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    restarted = App(config)
    await restarted.start()
    assert _state(restarted.ledger) == before
    await restarted.stop()
