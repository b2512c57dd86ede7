"""Plain-Python brute force for sourcing and FindNearby (no numpy, no numba, no engine code).

`route` enumerates every assignment of lines to nodes (or to "unfulfilled") and keeps the best
under the documented rules (docs/sourcing.md); `nearby` ranks every node by exact haversine.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

EARTH_RADIUS_KM = 6371.0088
STORE = 2
UNLIMITED = 1 << 62


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


@dataclass
class Node:
    index: int
    node_id: str
    lat: float
    lon: float
    type: int = 1
    enabled: bool = True
    ship: bool = True
    pickup: bool = False
    priority: int = 0
    capacity_left: int = UNLIMITED
    groups: set[str] = field(default_factory=set)


@dataclass
class Policy:
    max_shipments: int = 0
    node_types: tuple[int, ...] = ()
    group: str = ""
    allow_ship_from_store: bool = True
    distance_weight: float = 1.0
    priority_weight: float = 0.0
    respect_capacity: bool = True


def eligible(node: Node, policy: Policy) -> bool:
    if not node.enabled or not node.ship:
        return False
    if policy.node_types and node.type not in policy.node_types:
        return False
    if node.type == STORE and not policy.allow_ship_from_store:
        return False
    return not (policy.group and policy.group not in node.groups)


def route(
    nodes: list[Node],
    reservable: dict[tuple[str, int], int],
    lines: list[tuple[str, int]],
    dest: tuple[float, float],
    policy: Policy,
) -> tuple[tuple[int, int, float, tuple[int, ...]], list[int]]:
    """(key, assignment): key = (-lines fulfilled, shipments, cost, node-per-line vector)."""
    cost = {
        n.index: policy.distance_weight * haversine_km(dest[0], dest[1], n.lat, n.lon)
        - policy.priority_weight * n.priority
        for n in nodes
    }
    choices: list[list[int]] = []
    for sku, qty in lines:
        ok = [
            n.index
            for n in nodes
            if eligible(n, policy)
            and reservable.get((sku, n.index), 0) >= qty
            and (not policy.respect_capacity or n.capacity_left >= qty)
        ]
        choices.append([-1, *ok])
    by_index = {n.index: n for n in nodes}
    best: tuple[int, int, float, tuple[int, ...]] | None = None
    best_assign: list[int] = []
    for assign in itertools.product(*choices):
        used = sorted(set(a for a in assign if a >= 0))
        if policy.max_shipments and len(used) > policy.max_shipments:
            continue
        if policy.respect_capacity:
            load: dict[int, int] = {}
            for (_, qty), a in zip(lines, assign, strict=True):
                if a >= 0:
                    load[a] = load.get(a, 0) + qty
            if any(load[a] > by_index[a].capacity_left for a in load):
                continue
        total = 0.0
        for a in used:
            total += cost[a]
        key = (
            -sum(a >= 0 for a in assign),
            len(used),
            total,
            tuple(a if a >= 0 else UNLIMITED for a in assign),
        )
        if best is None or key < best:
            best, best_assign = key, list(assign)
    assert best is not None
    return best, best_assign


def nearby(
    nodes: list[Node],
    reservable: dict[tuple[str, int], int],
    lines: list[tuple[str, int]],
    centre: tuple[float, float],
    radius_km: float,
    limit: int,
    *,
    pickup_only: bool = False,
    node_types: tuple[int, ...] = (),
    group: str = "",
    full_cart_only: bool = False,
    full_cart_first: bool = False,
) -> list[tuple[int, float, tuple[int, ...], bool]]:
    """(node index, km, available per line, covers_all), best first."""
    need: dict[str, int] = {}
    for sku, qty in lines:
        need[sku] = need.get(sku, 0) + qty
    rows = []
    for n in nodes:
        if not n.enabled or (pickup_only and not n.pickup):
            continue
        if node_types and n.type not in node_types:
            continue
        if group and group not in n.groups:
            continue
        d = haversine_km(centre[0], centre[1], n.lat, n.lon)
        if d > radius_km:
            continue
        avail = tuple(max(0, reservable.get((sku, n.index), 0)) for sku, _ in lines)
        covers = all(a >= need[sku] for a, (sku, _) in zip(avail, lines, strict=True))
        if full_cart_only and not covers:
            continue
        rows.append((n.index, d, avail, covers))
    rows.sort(key=lambda r: ((not r[3]) if full_cart_first else False, r[1], r[0]))
    return rows[:limit]
