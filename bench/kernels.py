"""`python -m bench kernels`: the engine's micro benchmarks (issue 2's contract).

Builds a ledger of `--skus` × `--nodes` positions (100,000 × 100 = 10M by default), then measures:

- `reserve_lines_per_s`: the reserve kernel, batches of `--batch` one-line reservations at
  uniformly random positions (prebuilt request arrays; each batch is released, untimed, so stock
  and counters stay put). `reserve_lines_per_s_ledger_api` is the same work through
  `Ledger.apply` with `Reserve` commands: validation, idempotency bookkeeping and result objects
  are Python, per line.
- `availability_lookups_per_s`: the `availability_at_nodes` kernel, batches of `--batch`
  uniformly random positions (the honest, cache-hostile workload); `…_hot` is a Zipf(1.0)-skewed
  hot set scattered over the same positions; `…_ledger_ids` goes through `Ledger.availability_ids`
  (the columnar read the server uses: it allocates the outputs).
- `batch1_call_us`: one one-line `Ledger.reserve` call, end to end through the public Python API
  (median; `…_p99` too); each is followed by an untimed `Ledger.release` to keep stock
  (`release1_call_us` is that release, timed on its own).
- `expire_per_s`: the expire kernel expiring `--expire-holds` holds with spread-out expiry times in
  one tick; `expire_per_s_ledger_api` is the same through `Ledger.tick` (which also hands back every
  expired id as a Python string and remembers it for idempotency).
- `bytes_per_position`: every state array's nbytes / positions, right after the build;
  `build_s`: wall time of the build (ledger, node upsert, SKU interning, stock load).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import Figure, finish, median_s, time_rounds
from engine.codes import LineStatus, NodeType, ReservationState
from engine.commands import Line, NodeSpec, Release, Reserve
from engine.kernels import atp, reserve, supply
from engine.kernels.index import hash_key
from engine.ledger import Ledger
from engine.state import (
    C_HEAP_LEN,
    C_HELD,
    C_LINES_USED,
    C_POSITIONS,
    L_STATUS,
)

__all__ = ["REQUIRED_KEYS", "TARGETS", "Workload", "add_arguments", "build_ledger", "run"]

# The figures issue 2 asks for, plus the variants reported beside them; the smoke test checks
# that every one is a positive number.
REQUIRED_KEYS: tuple[str, ...] = (
    "reserve_lines_per_s",
    "reserve_lines_per_s_ledger_api",
    "release_lines_per_s",
    "availability_lookups_per_s",
    "availability_lookups_per_s_hot",
    "availability_lookups_per_s_ledger_ids",
    "batch1_call_us",
    "batch1_call_us_p99",
    "release1_call_us",
    "expire_per_s",
    "expire_per_s_ledger_api",
    "bytes_per_position",
    "build_s",
    "positions",
    "hash_probes_mean",
)

# key -> (target, at_least): issue 2's targets for one core of the reference machine.
TARGETS: dict[str, tuple[float, bool]] = {
    "reserve_lines_per_s": (5_000_000, True),
    "availability_lookups_per_s": (20_000_000, True),
    "batch1_call_us": (5.0, False),
    "bytes_per_position": (100.0, False),
}

TTL_MS = 600_000
NOW0_MS = 1_000_000


def sku_name(i: int) -> str:
    return f"SKU-{i:07d}"


def node_name(i: int) -> str:
    return f"N{i:05d}"


def build_ledger(skus: int, nodes: int, *, seed: int = 1, on_hand_max: int = 1000) -> Ledger:
    """A ledger with every (sku, node) position stocked with 1..on_hand_max units.

    Nodes go through the public API; stock is loaded with the supply kernel on numpy arrays
    (one million positions per call), which is what a bulk import does, not a Python loop.
    """
    positions = skus * nodes
    ledger = Ledger(positions=positions, skus=skus, nodes=nodes)
    ledger.upsert_nodes(
        [
            NodeSpec(
                node_name(n),
                NodeType.DC if n % 10 == 0 else NodeType.STORE,
                lat=48.0 + (n % 37) * 0.1,
                lon=2.0 + (n % 41) * 0.1,
                pickup=n % 10 != 0,
            )
            for n in range(nodes)
        ],
        NOW0_MS,
    )
    # Interning is the ledger's own id map; a bulk loader interns each SKU once.
    names = ledger._skus
    for i in range(skus):
        names.intern(sku_name(i))
    ledger._ensure(skus=skus)
    st = ledger._st
    rng = np.random.default_rng(seed)
    chunk = 1_000_000
    status = np.zeros(min(chunk, positions), np.int8)
    seqs = np.ones(min(chunk, positions), np.int64)
    for start in range(0, positions, chunk):
        stop = min(positions, start + chunk)
        p = np.arange(start, stop, dtype=np.int64)
        counts = rng.integers(1, on_hand_max + 1, stop - start, dtype=np.int64)
        n = stop - start
        supply.set_on_hand(st, p // nodes, p % nodes, counts, seqs[:n], status[:n])
        assert (status[:n] == LineStatus.OK).all()
    assert int(ledger._ctr[C_POSITIONS]) == positions
    return ledger


def hash_probes(ledger: Ledger) -> tuple[float, int]:
    """Mean and max table probes a successful lookup takes (1 = found at its home bucket)."""
    table = ledger._a["table"]
    pos_key = ledger._a["pos_key"]
    mask = table.shape[0] - 1
    idx = np.flatnonzero(table != -1)
    keys = pos_key[table[idx]]
    h = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    home = (h & np.uint64(mask)).astype(np.int64)
    assert home[0] == hash_key(int(keys[0]), mask), "bench's hash copy drifted from the engine's"
    probes = ((idx - home) & mask) + 1
    return float(probes.mean()), int(probes.max())


@dataclass
class Workload:
    """Prebuilt arrays for the kernel loops on one ledger (shared with the pytest benchmarks)."""

    ledger: Ledger
    skus: int
    nodes: int
    batch: int
    rounds: int
    seed: int = 2

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        b, r = self.batch, self.rounds
        self.st = self.ledger._st
        # Uniformly random positions, a fresh set per round.
        self.sku_ids = rng.integers(0, self.skus, (r, b), dtype=np.int64)
        self.node_ids = rng.integers(0, self.nodes, (r, b), dtype=np.int64)
        # A Zipf(1.0) hot set: rank k is asked with weight 1/k, ranks scattered over positions.
        positions = self.skus * self.nodes
        cdf = np.cumsum(1.0 / np.arange(1, positions + 1))
        cdf /= cdf[-1]
        ranks = np.searchsorted(cdf, rng.random(r * b)).reshape(r, b)
        scatter = rng.permutation(positions)
        hot = scatter[np.minimum(ranks, positions - 1)]
        self.hot_sku_ids = hot // self.nodes
        self.hot_node_ids = hot % self.nodes
        self.out_status = np.empty(b, np.int8)
        self.out_qty = np.empty((b, atp.OUT_COLS), np.int64)
        # Reserve requests: one one-line reservation per row, in reservation rows the ledger has
        # not handed out (the ledger's own reservations are appended after them, see cleanup).
        self.res_base = len(self.ledger._res_names)
        self.ledger._ensure(res=self.res_base + b, lines=b, heap=b)
        self.st = self.ledger._st
        self.req = np.zeros((b, reserve.REQ_COLS), np.int64)
        self.req[:, reserve.Q_RES] = np.arange(self.res_base, self.res_base + b)
        self.req[:, reserve.Q_EXPIRES_MS] = NOW0_MS + TTL_MS
        self.req[:, reserve.Q_GROUP] = -1
        self.req[:, reserve.Q_LINE_COUNT] = 1
        self.lines = np.ones((r, b, 3), np.int64)
        self.lines[:, :, 0] = self.sku_ids
        self.lines[:, :, 1] = self.node_ids
        self.res_idxs = self.req[:, reserve.Q_RES].copy()
        self.codes = np.empty(b, np.int64)
        self.ok_lines = 0

    # --- kernel loops (one call = one batch) ---------------------------------------------

    def availability(self, i: int) -> None:
        k = i % self.rounds
        atp.availability_at_nodes(
            self.st, self.sku_ids[k], self.node_ids[k], self.out_status, self.out_qty
        )

    def availability_hot(self, i: int) -> None:
        k = i % self.rounds
        atp.availability_at_nodes(
            self.st, self.hot_sku_ids[k], self.hot_node_ids[k], self.out_status, self.out_qty
        )

    def availability_ledger_ids(self, i: int) -> None:
        k = i % self.rounds
        self.ledger.availability_ids(self.sku_ids[k], self.node_ids[k])

    def reserve(self, i: int) -> None:
        """One batch of one-line holds (call `undo_reserve` before the next one)."""
        reserve.reserve(self.st, self.req, self.lines[i % self.rounds], NOW0_MS)

    def release(self, i: int) -> None:
        reserve.release(self.st, self.res_idxs, NOW0_MS, self.codes)

    def save_counters(self) -> np.ndarray:
        return self.ledger._ctr.copy()

    def restore_counters(self, saved: np.ndarray) -> None:
        ctr = self.ledger._ctr
        for c in (C_LINES_USED, C_HEAP_LEN, C_HELD):
            ctr[c] = saved[c]

    def reserve_round(self, i: int) -> None:
        """Reserve then release one batch, leaving stock and counters as they were."""
        saved = self.save_counters()
        self.reserve(i)
        self.release(i)
        self.restore_counters(saved)

    def cleanup(self) -> None:
        """Forget the kernel-made reservations so the ledger's Python side stays consistent."""
        res = self.ledger._a["res"]
        res[self.res_base : self.res_base + self.batch] = 0
        assert len(self.ledger._res_names) == self.res_base, "the ledger reserved meanwhile"


def _rate(count: int, times: Sequence[float]) -> float:
    return count / median_s(times)


def bench_reserve(w: Workload, rounds: int) -> tuple[float, float, float]:
    """Median reserve and release rates (lines/s) and the share of lines granted."""
    saved = w.save_counters()
    ln = w.ledger._a["ln"]
    reserve_t: list[float] = []
    release_t: list[float] = []
    granted = 0
    clock = time.perf_counter_ns
    for i in range(rounds):
        l0 = int(w.ledger._ctr[C_LINES_USED])
        t0 = clock()
        w.reserve(i)
        t1 = clock()
        granted += int((ln[l0 : l0 + w.batch, L_STATUS] == LineStatus.OK).sum())
        t2 = clock()
        w.release(i)
        t3 = clock()
        w.restore_counters(saved)
        reserve_t.append((t1 - t0) * 1e-9)
        release_t.append((t3 - t2) * 1e-9)
    return _rate(w.batch, reserve_t), _rate(w.batch, release_t), granted / (rounds * w.batch)


def bench_expire_kernel(w: Workload, holds: int, rounds: int) -> float:
    """Expire `holds` one-line holds with spread-out expiry times in one kernel call."""
    ledger = w.ledger
    rng = np.random.default_rng(7)
    base = len(ledger._res_names)
    ledger._ensure(res=base + holds, lines=holds, heap=holds)
    st = ledger._st
    times = []
    for _ in range(rounds):
        saved = ledger._ctr.copy()
        req = np.zeros((holds, reserve.REQ_COLS), np.int64)
        req[:, reserve.Q_RES] = np.arange(base, base + holds)
        req[:, reserve.Q_EXPIRES_MS] = NOW0_MS + rng.integers(1_000, 61_000, holds)
        req[:, reserve.Q_GROUP] = -1
        req[:, reserve.Q_LINE_COUNT] = 1
        lines = np.ones((holds, 3), np.int64)
        lines[:, 0] = rng.integers(0, w.skus, holds)
        lines[:, 1] = rng.integers(0, w.nodes, holds)
        held = reserve.reserve(st, req, lines, NOW0_MS)
        t0 = time.perf_counter_ns()
        count = reserve.expire(st, NOW0_MS + 100_000)
        times.append((time.perf_counter_ns() - t0) * 1e-9)
        assert count == held, (count, held)
        for c in (C_LINES_USED, C_HEAP_LEN, C_HELD):
            ledger._ctr[c] = saved[c]
        ledger._a["res"][base : base + holds] = 0
    return holds / median_s(times)


def _reserve_commands(w: Workload, prefix: str, count: int, rng: np.random.Generator) -> list:
    s = rng.integers(0, w.skus, count)
    n = rng.integers(0, w.nodes, count)
    return [
        Reserve(f"{prefix}-{i}", (Line(sku_name(a), node_name(b), 1),), TTL_MS)
        for i, (a, b) in enumerate(zip(s.tolist(), n.tolist(), strict=True))
    ]


def bench_ledger_api(w: Workload, rounds: int, calls: int, expire_holds: int) -> dict[str, float]:
    """Reserve/release batches through Ledger.apply, one-line calls, and expiry through tick."""
    ledger = w.ledger
    rng = np.random.default_rng(11)
    now = NOW0_MS
    out: dict[str, float] = {}

    # Batches of one-line Reserve commands through apply (commands prebuilt, as the server
    # decodes them before it hands a batch to the engine).
    reserve_t = []
    release_t = []
    for r in range(rounds + 1):  # round 0 warms up and grows the reservation arrays
        cmds = _reserve_commands(w, f"api{r}", w.batch, rng)
        rel = [Release(c.reservation_id) for c in cmds]
        t0 = time.perf_counter_ns()
        res = ledger.apply(now, cmds).results
        t1 = time.perf_counter_ns()
        assert res[0].reservation.reservation_id == cmds[0].reservation_id
        ledger.apply(now, rel)
        t2 = time.perf_counter_ns()
        if r:
            reserve_t.append((t1 - t0) * 1e-9)
            release_t.append((t2 - t1) * 1e-9)
        now += 1
    out["reserve_lines_per_s_ledger_api"] = _rate(w.batch, reserve_t)
    out["release_lines_per_s_ledger_api"] = _rate(w.batch, release_t)

    # One one-line reserve per call, end to end through the friendly API.
    s = rng.integers(0, w.skus, calls).tolist()
    n = rng.integers(0, w.nodes, calls).tolist()
    ids = [f"one-{i}" for i in range(calls)]
    lines = [[(sku_name(a), node_name(b), 1)] for a, b in zip(s, n, strict=True)]
    reserve_us = []
    release_us = []
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        ledger.reserve(ids[i], lines[i], TTL_MS, now)
        t1 = clock()
        ledger.release(ids[i], now)
        t2 = clock()
        reserve_us.append((t1 - t0) * 1e-3)
        release_us.append((t2 - t1) * 1e-3)
        now += 1
    warm = calls // 10  # the first calls pay for cache warm-up and array growth
    out["batch1_call_us"] = statistics.median(reserve_us[warm:])
    out["batch1_call_us_p99"] = float(np.percentile(reserve_us[warm:], 99))
    out["release1_call_us"] = statistics.median(release_us[warm:])

    # Many holds with spread-out TTLs, all expiring in one tick.
    exp_rng = np.random.default_rng(13)
    held = 0  # a few lines meet a position that has run out: those holds are rejected
    for start in range(0, expire_holds, w.batch):
        count = min(w.batch, expire_holds - start)
        cmds = _reserve_commands(w, f"exp{start}", count, exp_rng)
        ttls = exp_rng.integers(1_000, 61_000, count).tolist()
        cmds = [Reserve(c.reservation_id, c.lines, t) for c, t in zip(cmds, ttls, strict=True)]
        results = ledger.apply(now, cmds).results
        held += sum(r.reservation.state == ReservationState.HELD for r in results)
    t0 = time.perf_counter_ns()
    expired = ledger.tick(now + 100_000)
    elapsed = (time.perf_counter_ns() - t0) * 1e-9
    assert len(expired) == held, (len(expired), held)
    out["expire_per_s_ledger_api"] = held / elapsed
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10_000, help="lines per kernel call")
    parser.add_argument("--rounds", type=int, default=50, help="timed batches per figure")
    parser.add_argument("--calls", type=int, default=20_000, help="one-line API calls")
    parser.add_argument("--expire-holds", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="a small ledger and few rounds (for tests)"
    )


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    if args.quick:
        args.skus, args.nodes, args.batch = 2_000, 20, 1_000
        args.rounds, args.calls, args.expire_holds = 5, 500, 2_000
    t0 = time.perf_counter()
    ledger = build_ledger(args.skus, args.nodes, seed=args.seed)
    build_s = time.perf_counter() - t0
    positions = int(ledger._ctr[C_POSITIONS])
    bytes_per_position = ledger.stats()["array_bytes"] / positions
    probes_mean, probes_max = hash_probes(ledger)
    print(
        f"built {positions:,} positions in {build_s:.2f} s "
        f"({bytes_per_position:.1f} B/position, hash probes mean {probes_mean:.3f} "
        f"max {probes_max})"
    )

    w = Workload(ledger, args.skus, args.nodes, args.batch, args.rounds, seed=args.seed + 1)
    gc.collect()
    # Warm-up: load every kernel from numba's cache (or compile it), and run each loop for a
    # while, before timing: the first batches after the build run at under half the steady
    # rate on this VM (first touches of freshly built memory).
    for i in range(max(1, args.rounds // 5)):
        w.availability(i)
        w.availability_hot(i)
        w.availability_ledger_ids(i)
        w.reserve_round(i)

    avail = _rate(args.batch, time_rounds(w.availability, args.rounds))
    avail_hot = _rate(args.batch, time_rounds(w.availability_hot, args.rounds))
    avail_ids = _rate(args.batch, time_rounds(w.availability_ledger_ids, args.rounds))
    reserve_rate, release_rate, granted = bench_reserve(w, args.rounds)
    w.cleanup()
    expire_rate = bench_expire_kernel(w, args.expire_holds, max(3, args.rounds // 10))
    api = bench_ledger_api(w, max(2, args.rounds // 10), args.calls, args.expire_holds)

    def fig(key: str, value: float, unit: str, note: str = "") -> Figure:
        target, at_least = TARGETS.get(key, (None, True))
        return Figure(key, value, unit, target, at_least, note)

    b = f"batches of {args.batch:,}"
    figures = [
        fig("reserve_lines_per_s", reserve_rate, "lines/s", f"kernel, {b}, uniform random"),
        fig(
            "reserve_lines_per_s_ledger_api",
            api["reserve_lines_per_s_ledger_api"],
            "lines/s",
            f"Ledger.apply, {b} one-line Reserve commands",
        ),
        fig("release_lines_per_s", release_rate, "lines/s", f"kernel, {b}"),
        fig(
            "release_lines_per_s_ledger_api",
            api["release_lines_per_s_ledger_api"],
            "lines/s",
            f"Ledger.apply, {b} Release commands",
        ),
        fig("reserve_granted_share", granted, "ratio", "lines granted OK by the kernel"),
        fig("availability_lookups_per_s", avail, "lookups/s", f"kernel, {b}, uniform random"),
        fig("availability_lookups_per_s_hot", avail_hot, "lookups/s", f"kernel, {b}, Zipf(1.0)"),
        fig(
            "availability_lookups_per_s_ledger_ids",
            avail_ids,
            "lookups/s",
            f"Ledger.availability_ids, {b}, uniform random",
        ),
        fig("batch1_call_us", api["batch1_call_us"], "µs", "Ledger.reserve, one line, median"),
        fig("batch1_call_us_p99", api["batch1_call_us_p99"], "µs", "Ledger.reserve, p99"),
        fig("release1_call_us", api["release1_call_us"], "µs", "Ledger.release, median"),
        fig("expire_per_s", expire_rate, "holds/s", f"kernel, {args.expire_holds:,} in one tick"),
        fig(
            "expire_per_s_ledger_api",
            api["expire_per_s_ledger_api"],
            "holds/s",
            f"Ledger.tick, {args.expire_holds:,} in one tick",
        ),
        fig("bytes_per_position", bytes_per_position, "B", "all state arrays after the build"),
        fig("build_s", build_s, "s", f"{args.skus:,} SKUs x {args.nodes:,} nodes"),
        fig("positions", positions, "positions"),
        fig("hash_probes_mean", probes_mean, "probes", "table slots read per hit"),
        fig("hash_probes_max", probes_max, "probes"),
        fig("array_bytes_end", ledger.stats()["array_bytes"], "B", "after every benchmark"),
    ]
    params = {
        "params": {
            k: getattr(args, k)
            for k in ("skus", "nodes", "batch", "rounds", "calls", "expire_holds", "seed", "quick")
        }
    }
    return finish("kernels", figures, args.json, args.plot, extra=params, argv=argv)
