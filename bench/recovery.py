"""recovery: restart time with 10M positions and 1M journal entries.

Builds the state in-process the way `bench kernels` does (`--skus` × `--nodes` positions, 10M
by default, stock loaded by the supply kernel), snapshots it with `FileSnapshotStore` into a
fresh data directory (journal seq 0), then appends `--entries` small journal entries (1M by
default): one-line one-unit `Reserve`s and, for every other one, the `Release` of the previous
hold, each its own `Batch` as the sequencer writes it (so stock and holds stay bounded).

Then the server is restarted `--restarts` times (3 by default): each restart is a fresh Python
process, as a real restart is, that loads the kernels (`warm_up`, from numba's cache, timed on
its own as `App.start` runs it before SERVING) and times `server.durability.recover` — what
`App.start` runs — from nothing to a ready ledger (snapshot read and `Ledger.from_state`,
journal opened and validated, every entry replayed with `engine.replay`). `recovery_s` is the
median restart; every restart's time is in the JSON. Two more passes split the time: the journal
alone (opened, checked, read; nothing decoded or applied) and the snapshot alone (restarts with
the journal removed). For comparison with figures from before 23 Nov 2026, one recovery also
runs in the process that built the state (`recovery_same_process_s`): there it refaults the
memory the dropped build just returned, which made it slower and far noisier than a restart.

The snapshot was just written, so it is read from the page cache: this is a warm restart (a
process restart on the same machine); a cold disk adds its read time (~1 GB at disk speed).

    python -m bench recovery --json recovery.json
    python -m bench recovery --quick --json /tmp/r.json      # seconds (tests)
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, finish

RECOVERY_S_TARGET = 5.0
RESTART_TIMEOUT_S = 600.0  # one restart (cold numba cache included) of the default 10M positions
ROOT = Path(__file__).resolve().parents[1]
NOW0_MS = 1_700_000_000_000


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="40,000 positions, 2,000 entries, at most 2 restarts")  # fmt: skip
    p.add_argument("--skus", type=int, default=100_000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--entries", type=int, default=1_000_000, help="journal entries")
    p.add_argument("--restarts", type=_at_least_one, default=3,
                   help="fresh-process restarts timed (recovery_s is their median)")  # fmt: skip
    p.add_argument("--dir", default="", help="work directory (default: a temporary one)")


def journal_payloads(skus: int, nodes: int, entries: int) -> Any:
    """`entries` msgpack `Batch`es: Reserve r_k (one line, one unit), every odd k releases
    r_{k-1}. Positions are spread with a stride so consecutive entries hit different rows."""
    import msgspec

    from bench.kernels import node_name, sku_name
    from engine.commands import Batch, Line, Release, Reserve

    enc = msgspec.msgpack.Encoder()
    for k in range(entries):
        now = NOW0_MS + 1_000 + k
        if k % 2:
            cmd: Any = Release(f"rb-{k - 1}")
        else:
            p = (k * 7_919) % (skus * nodes)
            cmd = Reserve(f"rb-{k}", (Line(sku_name(p // nodes), node_name(p % nodes), 1),),
                          900_000)  # fmt: skip
        yield enc.encode(Batch(now, (cmd,)))


def restart(data: Path) -> dict[str, Any]:
    """One restart in this (fresh) process: `warm_up`, then `recover` timed, as `App.start`
    runs them; what it found."""
    from server.app import warm_up
    from server.config import ServerConfig
    from server.durability import recover

    t0 = time.perf_counter()
    warm_up()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    recovered = recover(ServerConfig(data_dir=str(data), durability="sync"))
    recovery_s = time.perf_counter() - t0
    stats = recovered.ledger.stats()
    recovered.journal.close()
    return {
        "recovery_s": recovery_s,
        "warm_up_s": warm_s,
        "replayed": recovered.replayed_entries,
        "positions": int(stats["positions"]),
        "held": int(stats["reservations_held"]),
    }


def restarts(data: Path, count: int) -> list[dict[str, Any]]:
    """`count` restarts, each `restart` in a fresh process (same interpreter, CPU affinity and
    environment as this one, run from the repository root)."""
    out = []
    for _ in range(count):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.recovery", "--restart", str(data)],
            cwd=ROOT, capture_output=True, text=True, timeout=RESTART_TIMEOUT_S,
        )  # fmt: skip
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"restart failed ({proc.returncode}): {proc.stderr[-2000:]}")
        out.append(json.loads(lines[-1]))
    return out


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    from bench.kernels import build_ledger
    from engine.persistence.journal import Journal
    from engine.persistence.snapshot import FileSnapshotStore
    from server.app import warm_up

    if args.quick:
        args.skus, args.nodes, args.entries = 2_000, 20, 2_000
        args.restarts = min(args.restarts, 2)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="omnistock-recovery-"))
    data = base / "data"
    if data.exists():
        shutil.rmtree(data)
    try:
        t0 = time.perf_counter()
        ledger = build_ledger(args.skus, args.nodes)
        positions = int(ledger.stats()["positions"])
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        arrays, meta = ledger.export_state()
        info = FileSnapshotStore(data / "snapshots").save(arrays, meta, 0, NOW0_MS)
        snapshot_s = time.perf_counter() - t0
        del ledger, arrays, meta
        gc.collect()
        t0 = time.perf_counter()
        with Journal.open(data / "journal", "none") as journal:
            chunk: list[bytes] = []
            for payload in journal_payloads(args.skus, args.nodes, args.entries):
                chunk.append(payload)
                if len(chunk) == 10_000:
                    journal.append_many(chunk)
                    chunk = []
            if chunk:
                journal.append_many(chunk)
            # On disk, as a `sync` server leaves its journal: else the first restart (opened in
            # `sync`, which fsyncs every segment) pays for flushing what this build wrote.
            journal.sync()

        journal_s = time.perf_counter() - t0
        journal_bytes = sum(f.stat().st_size for f in (data / "journal").iterdir())
        snapshot_bytes = sum(f.stat().st_size for f in (data / "snapshots").iterdir())
        # Every kernel compiled and in numba's cache first, as in a deployed server (the image
        # warms it at build time): each restart then loads them, as its warm_up_s shows.
        warm_up()
        full = restarts(data, args.restarts)
        replayed = full[0]["replayed"]
        if any(r["replayed"] != replayed or r["positions"] != full[0]["positions"] for r in full):
            raise RuntimeError(f"restarts recovered different states: {full}")
        # The earlier measurement: a restart in this process, which built (and dropped) the state.
        same = restart(data)
        assert same["replayed"] == replayed
        gc.collect()
        # Where the time goes: the journal alone (opened, validated and read as recovery reads
        # it: once, nothing decoded or applied), then the snapshot alone (restarts without the
        # journal).
        t0 = time.perf_counter()
        with Journal.open(data / "journal", "sync", keep_after=0) as journal:
            scanned = sum(1 for _ in journal.replay(0))
        journal_scan_s = time.perf_counter() - t0
        assert scanned == replayed
        shutil.rmtree(data / "journal")
        snap_only = restarts(data, args.restarts)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    recovery_s = statistics.median(r["recovery_s"] for r in full)
    snapshot_load_s = statistics.median(r["recovery_s"] for r in snap_only)
    warm_s = statistics.median(r["warm_up_s"] for r in full)
    each = ", ".join(f"{r['recovery_s']:.2f}" for r in full)
    figures = [
        Figure("recovery_s", recovery_s, "s", target=RECOVERY_S_TARGET, at_least=False,
               note=f"{positions:,} positions + {replayed:,} journal entries, to a ready "
                    f"ledger; median of {len(full)} restarts, each a fresh process ({each} s)"),
        Figure("recovery_snapshot_only_s", snapshot_load_s, "s",
               note="the same snapshot with an empty journal (median restart)"),
        Figure("replay_entries_per_s", replayed / max(recovery_s - snapshot_load_s, 1e-9),
               "entries/s", note="journal part of the recovery"),
        Figure("journal_scan_s", journal_scan_s, "s",
               note="of which the journal alone: opened, checked and read, nothing applied"),
        Figure("replay_apply_entries_per_s",
               replayed / max(recovery_s - snapshot_load_s - journal_scan_s, 1e-9), "entries/s",
               note="decode + apply only (engine/replay.py)"),
        Figure("recovery_same_process_s", same["recovery_s"], "s",
               note="one recovery in the process that built and dropped the state (the figure "
                    "reported before 23 Nov 2026)"),
        Figure("warm_up_s", warm_s, "s", note="kernels from numba's cache, before SERVING"),
        Figure("positions", float(full[0]["positions"]), "positions"),
        Figure("journal_entries", float(replayed), "entries"),
        Figure("snapshot_bytes", float(snapshot_bytes), "bytes"),
        Figure("journal_bytes", float(journal_bytes), "bytes"),
        Figure("build_s", build_s, "s", note="state built in-process (not part of recovery)"),
        Figure("snapshot_write_s", snapshot_s, "s"),
        Figure("journal_write_s", journal_s, "s"),
    ]  # fmt: skip
    extra = {
        "held_after_recovery": full[0]["held"],
        "snapshot_info": str(info),
        "restarts": full,
        "snapshot_only_restarts": snap_only,
    }
    payload = finish("recovery", figures, args.json, args.plot, extra=extra, argv=argv)
    md = "| figure | value |\n|---|---:|\n" + "\n".join(
        f"| `{f.key}` | {f.value:,.3f} {f.unit} |" for f in figures
    )
    if args.json:
        Path(args.json).with_suffix(".md").write_text(
            f"# recovery\n\n`{payload['command']}`\n\n{md}\n"
        )
    return payload


if __name__ == "__main__":
    # `python -m bench.recovery --restart DATA_DIR`: one restart (`restarts` runs this), its
    # figures as one JSON line on stdout.
    if len(sys.argv) != 3 or sys.argv[1] != "--restart":
        sys.exit("usage: python -m bench.recovery --restart DATA_DIR")
    print(json.dumps(restart(Path(sys.argv[2]))))
