"""Seeded workloads: a retail network, its stock, and a peak-sale operation stream.

Everything here is a pure function of a `WorkloadSpec` (seed included), so two runs, two machines
and two systems under test see the same catalogue, the same stock and the same requests in the same
order. Outputs are plain numpy arrays and small frozen structs; `engine_setup_commands()` turns a
network into engine commands and `peer_positions()` into the peers' load format.

The model (docs/bench-design.md has the reasoning):

- **Geography**: stores cluster around a few dozen real metro centres (weighted like metro
  populations, with ~15 km of jitter), a handful of distribution centres sit at national hubs, and
  dark stores serve the biggest metros.
- **Assortment and stock**: DCs carry most of the catalogue in depth, dark stores a large part,
  stores a smaller part. Quantities are long-tailed (Pareto): most positions hold a few units, a
  few hold hundreds, and a share of positions are at zero (sold out, still listed).
- **Demand**: SKU popularity is Zipf-skewed over a random ranking of the catalogue; a flash sale
  concentrates a share of all requests on a small hot set (also Zipf inside).
- **Peak-sale mix**: availability reads (single position and nearby lookups), reserves (carts of
  1–3 lines), then commits and releases of earlier reserves, in a deterministic order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

import msgspec
import numpy as np

from engine import limits
from engine.codes import NodeType
from engine.commands import (
    Command,
    Commit,
    Fulfil,
    Line,
    NodeSpec,
    Release,
    Reserve,
    SetOnHand,
    StockCount,
    UpsertNodes,
)

__all__ = [
    "METROS",
    "Mix",
    "Network",
    "Op",
    "OpKind",
    "PEAK_SALE_MIX",
    "WorkloadSpec",
    "engine_setup_commands",
    "generate_network",
    "generate_ops",
    "op_to_command",
    "peer_positions",
]

# (name, code, lat, lon, weight): metro centres, weight ~ metro population in millions.
METROS: tuple[tuple[str, str, float, float, float], ...] = (
    ("New York", "NYC", 40.71, -74.01, 19.8),
    ("Los Angeles", "LAX", 34.05, -118.24, 13.2),
    ("Chicago", "CHI", 41.88, -87.63, 9.5),
    ("Dallas", "DFW", 32.78, -96.80, 7.6),
    ("Houston", "HOU", 29.76, -95.37, 7.1),
    ("Washington", "WAS", 38.91, -77.04, 6.3),
    ("Philadelphia", "PHL", 39.95, -75.17, 6.2),
    ("Miami", "MIA", 25.76, -80.19, 6.1),
    ("Atlanta", "ATL", 33.75, -84.39, 6.1),
    ("Boston", "BOS", 42.36, -71.06, 4.9),
    ("Phoenix", "PHX", 33.45, -112.07, 4.8),
    ("San Francisco", "SFO", 37.77, -122.42, 4.7),
    ("Riverside", "RIV", 33.95, -117.40, 4.6),
    ("Detroit", "DTW", 42.33, -83.05, 4.4),
    ("Seattle", "SEA", 47.61, -122.33, 4.0),
    ("Minneapolis", "MSP", 44.98, -93.27, 3.7),
    ("San Diego", "SAN", 32.72, -117.16, 3.3),
    ("Tampa", "TPA", 27.95, -82.46, 3.2),
    ("Denver", "DEN", 39.74, -104.99, 3.0),
    ("St. Louis", "STL", 38.63, -90.20, 2.8),
    ("Baltimore", "BWI", 39.29, -76.61, 2.8),
    ("Charlotte", "CLT", 35.23, -80.84, 2.7),
    ("Orlando", "MCO", 28.54, -81.38, 2.7),
    ("San Antonio", "SAT", 29.42, -98.49, 2.6),
    ("Portland", "PDX", 45.52, -122.68, 2.5),
    ("Sacramento", "SMF", 38.58, -121.49, 2.4),
    ("Pittsburgh", "PIT", 40.44, -80.00, 2.4),
    ("Austin", "AUS", 30.27, -97.74, 2.3),
    ("Las Vegas", "LAS", 36.17, -115.14, 2.3),
    ("Cincinnati", "CVG", 39.10, -84.51, 2.3),
    ("Kansas City", "MCI", 39.10, -94.58, 2.2),
    ("Columbus", "CMH", 39.96, -83.00, 2.1),
    ("Indianapolis", "IND", 39.77, -86.16, 2.1),
    ("Cleveland", "CLE", 41.50, -81.69, 2.1),
    ("Nashville", "BNA", 36.16, -86.78, 2.0),
    ("San Jose", "SJC", 37.34, -121.89, 2.0),
    ("Milwaukee", "MKE", 43.04, -87.91, 1.6),
    ("Salt Lake City", "SLC", 40.76, -111.89, 1.3),
    ("Madison", "MSN", 43.07, -89.40, 0.7),
    ("Waco", "ACT", 31.55, -97.15, 0.3),
)
# Distribution centres at national logistics hubs (indexes into METROS).
DC_HUBS: tuple[int, ...] = (2, 3, 8, 1, 6, 10, 15, 31, 18, 14)

JITTER_DEG = 0.14  # ~15 km: stores spread over a metro area
WORKLOAD_OPS_MAX = 50_000_000
LINES_PER_RESERVE_MAX = 3


class OpKind(IntEnum):
    AVAILABILITY = 0  # GetAvailability: one SKU at a few nodes
    NEARBY = 1  # FindNearby: one SKU around a customer location
    RESERVE = 2
    COMMIT = 3
    RELEASE = 4
    FULFIL = 5  # hand over everything a committed reservation allocated (M5 replay)


@dataclass(frozen=True)
class Mix:
    """Shares of each operation; they must sum to 1. Commits and releases always refer to an
    earlier reserve of the stream (oldest first); if none is pending, the op becomes a reserve."""

    availability: float = 0.60
    nearby: float = 0.20
    reserve: float = 0.15
    commit: float = 0.035
    release: float = 0.015

    def shares(self) -> np.ndarray:
        p = np.array([self.availability, self.nearby, self.reserve, self.commit, self.release])
        if np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-9):
            raise ValueError(f"mix shares must be >= 0 and sum to 1, got {p.tolist()}")
        return p


PEAK_SALE_MIX = Mix()  # 80 % reads (60 % point, 20 % nearby), 15 % reserves, 5 % commit/release


@dataclass(frozen=True)
class WorkloadSpec:
    skus_count: int = 10_000
    stores_count: int = 200
    dcs_count: int = 4
    dark_stores_count: int = 12
    seed: int = 42
    # Share of the catalogue each node type lists (a position exists, possibly at zero).
    store_assortment: float = 0.30
    dark_store_assortment: float = 0.50
    dc_assortment: float = 0.90
    zero_share: float = 0.25  # listed positions at zero
    pareto_shape: float = 1.3  # smaller = longer tail
    qty_scale_store: float = 4.0
    qty_scale_dc: float = 120.0
    qty_max: int = 100_000
    zipf_s: float = 1.1  # catalogue popularity
    hot_skus_count: int = 100  # the flash-sale hot set
    hot_share: float = 0.5  # share of requests aimed at the hot set
    hot_zipf_s: float = 1.2
    ttl_ms: int = 15 * 60_000
    nearby_radius_km: float = 30.0

    def __post_init__(self) -> None:
        if self.skus_count < 1 or self.stores_count + self.dcs_count + self.dark_stores_count < 1:
            raise ValueError("need at least one SKU and one node")
        if not 0 <= self.hot_skus_count <= self.skus_count:
            raise ValueError("hot_skus_count must be in 0..skus_count")
        if self.dcs_count > len(DC_HUBS):
            raise ValueError(f"at most {len(DC_HUBS)} DCs")


@dataclass(frozen=True)
class Network:
    """Nodes and positions as arrays. Position k is (`skus[pos_sku[k]]`, `node_ids[pos_node[k]]`)
    with `pos_on_hand[k]` units; positions are sorted by SKU, and `sku_pos_start[s]` ..
    `sku_pos_start[s+1]` are the positions of SKU s."""

    spec: WorkloadSpec
    skus: list[str]
    node_ids: list[str]
    node_type: np.ndarray  # int8 NodeType
    node_lat: np.ndarray
    node_lon: np.ndarray
    node_metro: np.ndarray  # int16 index into METROS
    pos_sku: np.ndarray  # int32
    pos_node: np.ndarray  # int32
    pos_on_hand: np.ndarray  # int64
    sku_pos_start: np.ndarray  # int64, len skus + 1
    sku_weight: np.ndarray  # float64 popularity, sums to 1
    hot_skus: np.ndarray  # int32, most popular first

    @property
    def positions_count(self) -> int:
        return int(self.pos_sku.shape[0])

    def node_specs(self) -> list[NodeSpec]:
        out = []
        for i, node_id in enumerate(self.node_ids):
            kind = NodeType(int(self.node_type[i]))
            out.append(
                NodeSpec(
                    node_id=node_id,
                    type=kind,
                    lat=round(float(self.node_lat[i]), 5),
                    lon=round(float(self.node_lon[i]), 5),
                    pickup=kind == NodeType.STORE,
                    ship=True,
                    priority=1 if kind == NodeType.DC else 0,
                    name=f"{METROS[int(self.node_metro[i])][0]} {kind.name.lower()}",
                )
            )
        return out


def _metro_weights() -> np.ndarray:
    w = np.array([m[4] for m in METROS])
    return w / w.sum()


def generate_network(spec: WorkloadSpec) -> Network:
    rng = np.random.default_rng([spec.seed, 1])
    metro_w = _metro_weights()
    types: list[int] = []
    metros: list[int] = []
    ids: list[str] = []
    for d in range(spec.dcs_count):
        types.append(NodeType.DC)
        metros.append(DC_HUBS[d])
        ids.append(f"DC-{METROS[DC_HUBS[d]][1]}")
    ds_metros = np.argsort(-metro_w, kind="stable")[: max(1, min(len(METROS), 8))]
    for d in range(spec.dark_stores_count):
        m = int(ds_metros[d % len(ds_metros)])
        types.append(NodeType.DARK_STORE)
        metros.append(m)
        ids.append(f"DS-{METROS[m][1]}-{d // len(ds_metros) + 1:02d}")
    store_metros = rng.choice(len(METROS), size=spec.stores_count, p=metro_w)
    per_metro: dict[int, int] = {}
    for m in store_metros.tolist():
        per_metro[m] = per_metro.get(m, 0) + 1
        types.append(NodeType.STORE)
        metros.append(m)
        ids.append(f"ST-{METROS[m][1]}-{per_metro[m]:04d}")
    nodes_count = len(ids)
    node_type = np.array(types, np.int8)
    node_metro = np.array(metros, np.int16)
    centre_lat = np.array([METROS[m][2] for m in metros])
    centre_lon = np.array([METROS[m][3] for m in metros])
    jitter = np.where(node_type == NodeType.DC, 0.5, 1.0) * JITTER_DEG
    node_lat = centre_lat + rng.normal(0.0, 1.0, nodes_count) * jitter
    node_lon = centre_lon + rng.normal(0.0, 1.0, nodes_count) * jitter / np.cos(
        np.radians(centre_lat)
    )

    assort = np.select(
        [node_type == NodeType.DC, node_type == NodeType.DARK_STORE],
        [spec.dc_assortment, spec.dark_store_assortment],
        spec.store_assortment,
    )
    scale = np.where(node_type == NodeType.DC, spec.qty_scale_dc, spec.qty_scale_store)
    scale = np.where(node_type == NodeType.DARK_STORE, spec.qty_scale_store * 3, scale)
    pos_sku_parts: list[np.ndarray] = []
    pos_node_parts: list[np.ndarray] = []
    chunk = max(1, 4_000_000 // nodes_count)  # bounded memory for big catalogues
    for s0 in range(0, spec.skus_count, chunk):
        s1 = min(spec.skus_count, s0 + chunk)
        listed = rng.random((s1 - s0, nodes_count)) < assort
        ss, nn = np.nonzero(listed)  # row-major: sorted by SKU, then node
        pos_sku_parts.append((ss + s0).astype(np.int32))
        pos_node_parts.append(nn.astype(np.int32))
    pos_sku = np.concatenate(pos_sku_parts)
    pos_node = np.concatenate(pos_node_parts)
    qty = np.floor(rng.pareto(spec.pareto_shape, pos_sku.shape[0]) * scale[pos_node]) + 1
    qty[rng.random(pos_sku.shape[0]) < spec.zero_share] = 0
    pos_on_hand = np.minimum(qty, spec.qty_max).astype(np.int64)
    sku_pos_start = np.zeros(spec.skus_count + 1, np.int64)
    np.cumsum(np.bincount(pos_sku, minlength=spec.skus_count), out=sku_pos_start[1:])

    rank = rng.permutation(spec.skus_count)  # rank[s] = popularity rank of SKU s
    sku_weight = 1.0 / np.power(rank + 1.0, spec.zipf_s)
    sku_weight /= sku_weight.sum()
    hot_skus = np.argsort(rank)[: spec.hot_skus_count].astype(np.int32)
    width = max(6, len(str(spec.skus_count)))
    skus = [f"SKU-{s:0{width}d}" for s in range(spec.skus_count)]
    return Network(
        spec=spec,
        skus=skus,
        node_ids=ids,
        node_type=node_type,
        node_lat=node_lat,
        node_lon=node_lon,
        node_metro=node_metro,
        pos_sku=pos_sku,
        pos_node=pos_node,
        pos_on_hand=pos_on_hand,
        sku_pos_start=sku_pos_start,
        sku_weight=sku_weight,
        hot_skus=hot_skus,
    )


# --- the op stream ----------------------------------------------------------------------------


class Op(msgspec.Struct, frozen=True, array_like=True):
    """One request of the stream. Fields a kind does not use are empty."""

    kind: OpKind
    sku: str = ""
    node_ids: tuple[str, ...] = ()
    lat: float = 0.0
    lon: float = 0.0
    radius_km: float = 0.0
    reservation_id: str = ""
    lines: tuple[Line, ...] = ()
    ttl_ms: int = 0


def _draw_skus(net: Network, rng: np.random.Generator, count: int) -> np.ndarray:
    spec = net.spec
    out = rng.choice(spec.skus_count, size=count, p=net.sku_weight).astype(np.int32)
    if spec.hot_skus_count and spec.hot_share > 0:
        hot_w = 1.0 / np.power(np.arange(1, spec.hot_skus_count + 1), spec.hot_zipf_s)
        hot_w /= hot_w.sum()
        hot = rng.random(count) < spec.hot_share
        out[hot] = net.hot_skus[rng.choice(spec.hot_skus_count, size=int(hot.sum()), p=hot_w)]
    return out


def generate_ops(
    net: Network, count: int, mix: Mix = PEAK_SALE_MIX, seed: int | None = None, prefix: str = "r"
) -> list[Op]:
    """A deterministic stream of `count` ops. Reservation ids are `{prefix}{seed}-{n}`, unique per
    (prefix, seed), so several load processes can each take their own stream."""
    if not 0 <= count <= WORKLOAD_OPS_MAX:
        raise ValueError(f"count must be in 0..{WORKLOAD_OPS_MAX}")
    seed = net.spec.seed if seed is None else seed
    rng = np.random.default_rng([seed, 2])
    shares = mix.shares()
    kinds = rng.choice(len(shares), size=count, p=shares)
    skus_drawn = _draw_skus(net, rng, count * LINES_PER_RESERVE_MAX)
    u = rng.random((count, 4))
    metro_w = _metro_weights()
    cust_metro = rng.choice(len(METROS), size=count, p=metro_w)
    cust_jitter = rng.normal(0.0, JITTER_DEG, (count, 2))
    line_counts = np.where(u[:, 1] < 0.75, 1, np.where(u[:, 1] < 0.93, 2, 3))
    qtys = np.where(u[:, 2] < 0.85, 1, 2)
    ops: list[Op] = []
    pending: deque[str] = deque()
    spec = net.spec
    starts = net.sku_pos_start
    skus = net.skus
    node_ids = net.node_ids
    reserves = 0

    def pick_node(s: int, x: float) -> int | None:
        a, b = int(starts[s]), int(starts[s + 1])
        if a == b:
            return None
        return int(net.pos_node[a + int(x * (b - a))])

    for i in range(count):
        kind = OpKind(int(kinds[i]))
        if kind in (OpKind.COMMIT, OpKind.RELEASE):
            if pending:
                ops.append(Op(kind=kind, reservation_id=pending.popleft()))
                continue
            kind = OpKind.RESERVE
        s = int(skus_drawn[i * LINES_PER_RESERVE_MAX])
        if kind == OpKind.NEARBY:
            m = METROS[int(cust_metro[i])]
            ops.append(
                Op(
                    kind=kind,
                    sku=skus[s],
                    lat=round(m[2] + float(cust_jitter[i, 0]), 5),
                    lon=round(m[3] + float(cust_jitter[i, 1]), 5),
                    radius_km=spec.nearby_radius_km,
                )
            )
        elif kind == OpKind.AVAILABILITY:
            n = pick_node(s, float(u[i, 0]))
            ops.append(Op(kind=kind, sku=skus[s], node_ids=() if n is None else (node_ids[n],)))
        else:
            lines: list[Line] = []
            for j in range(int(line_counts[i])):
                s_j = int(skus_drawn[i * LINES_PER_RESERVE_MAX + j])
                n = pick_node(s_j, float(u[i, 3 if j else 0]))
                if n is not None:
                    lines.append(Line(skus[s_j], node_ids[n], int(qtys[i])))
            if not lines:  # a SKU listed nowhere: ask the first DC, which answers INSUFFICIENT
                lines.append(Line(skus[s], node_ids[0], 1))
            rid = f"{prefix}{seed}-{reserves}"
            reserves += 1
            pending.append(rid)
            ops.append(Op(kind=kind, reservation_id=rid, lines=tuple(lines), ttl_ms=spec.ttl_ms))
    return ops


def op_to_command(op: Op) -> Reserve | Commit | Release | Fulfil:
    """The engine command of a mutating op (reads have no command)."""
    if op.kind == OpKind.RESERVE:
        return Reserve(reservation_id=op.reservation_id, lines=op.lines, ttl_ms=op.ttl_ms)
    if op.kind == OpKind.COMMIT:
        return Commit(reservation_id=op.reservation_id)
    if op.kind == OpKind.RELEASE:
        return Release(reservation_id=op.reservation_id)
    if op.kind == OpKind.FULFIL:
        return Fulfil(reservation_id=op.reservation_id)
    raise ValueError(f"{op.kind.name} is a read; it has no engine command")


def engine_setup_commands(net: Network, chunk_lines: int = 10_000) -> Iterator[Command]:
    """UpsertNodes, then SetOnHand in chunks of at most `chunk_lines` counts (source_seq 1)."""
    chunk_lines = min(chunk_lines, limits.REQUEST_LINES_MAX)
    yield UpsertNodes(nodes=tuple(net.node_specs()))
    skus, nodes = net.skus, net.node_ids
    ps, pn, ph = net.pos_sku.tolist(), net.pos_node.tolist(), net.pos_on_hand.tolist()
    for c, a in enumerate(range(0, len(ps), chunk_lines)):
        b = min(len(ps), a + chunk_lines)
        counts = tuple(StockCount(skus[ps[k]], nodes[pn[k]], ph[k], 1) for k in range(a, b))
        yield SetOnHand(request_id=f"setup-{net.spec.seed}-{c}", counts=counts)


def peer_positions(net: Network) -> Iterator[tuple[str, str, int]]:
    """The peers' load format: (sku, node_id, on_hand) per position."""
    skus, nodes = net.skus, net.node_ids
    for s, n, q in zip(
        net.pos_sku.tolist(), net.pos_node.tolist(), net.pos_on_hand.tolist(), strict=True
    ):
        yield skus[s], nodes[n], q


def mix_counts(ops: Sequence[Op]) -> dict[str, int]:
    counts = {k.name: 0 for k in OpKind}
    for op in ops:
        counts[op.kind.name] += 1
    return counts
