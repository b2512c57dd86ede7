"""Great-circle distance and the FindNearby kernel: the K nearest eligible nodes around a point.

One kernel call scans the node table. A latitude band (and, away from the poles, a longitude
band) that contains the whole search circle rejects most nodes with one or two comparisons;
survivors get the exact haversine distance (Earth radius 6371.0088 km, the IUGG mean radius),
the survivors are sorted by (distance, node index) and only then is stock looked up, in that
order, until the K answers are known (ranking: not covers_all when full_cart_first, distance,
node index), so the answer is deterministic and, without full-cart options, only the K returned
nodes cost position lookups.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.kernels.index import find_slot, hash_key, pack_key
from engine.kernels.reserve import _reservable
from engine.state import EMPTY, N_ENABLED, N_PICKUP, N_REGISTERED, N_TYPE

EARTH_RADIUS_KM = 6371.0088
_DEG = math.pi / 180.0
# The bounding boxes are widened by this much (degrees) so rounding never drops a node the
# exact distance would keep.
_BOX_SLACK_DEG = 1e-7


@njit(inline="always", cache=True)
def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km between two points given in degrees."""
    p1 = lat1 * _DEG
    p2 = lat2 * _DEG
    dp = p2 - p1
    dl = (lon2 - lon1) * _DEG
    s1 = math.sin(dp * 0.5)
    s2 = math.sin(dl * 0.5)
    a = s1 * s1 + math.cos(p1) * math.cos(p2) * s2 * s2
    if a > 1.0:
        a = 1.0
    return 2.0 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


@njit(inline="always", cache=True)
def haversine_from(lat1, lon1, cos_lat1, lat2, lon2):
    """`haversine_km` with cos(lat1 in radians) given (one origin, many destinations);
    the same operations in the same order, so the same result."""
    p1 = lat1 * _DEG
    p2 = lat2 * _DEG
    dp = p2 - p1
    dl = (lon2 - lon1) * _DEG
    s1 = math.sin(dp * 0.5)
    s2 = math.sin(dl * 0.5)
    a = s1 * s1 + cos_lat1 * math.cos(p2) * s2 * s2
    if a > 1.0:
        a = 1.0
    return 2.0 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


@njit(inline="always", cache=True)
def lon_gap_deg(lon1, lon2):
    """Smallest absolute longitude difference in degrees (0..180), across the antimeridian."""
    x = abs(lon1 - lon2)
    if x > 180.0:
        x = 360.0 - x
    return x


@njit(inline="always", cache=True)
def search_box(lat0, radius_km):
    """(max |dlat| degrees, max |dlon| degrees or 400 for no longitude filter)."""
    ang = radius_km / EARTH_RADIUS_KM  # radians
    dlat = ang / _DEG + _BOX_SLACK_DEG
    dlon = 400.0
    if abs(lat0) + dlat < 90.0 and ang < 0.5 * math.pi:
        x = math.sin(ang) / math.cos(lat0 * _DEG)
        if x < 1.0:
            dlon = math.asin(x) / _DEG + _BOX_SLACK_DEG
    return dlat, dlon


@njit(inline="always", cache=True)
def node_type_ok(type_mask, node_type):
    return type_mask == 0 or (type_mask >> node_type) & 1 != 0


# FindNearby parameter vector `ii` (int64): header, then sku ids and quantities, then outputs.
F_LINES = 0  # request lines (n)
F_LIMIT = 1  # K
F_TYPE_MASK = 2
F_PICKUP_ONLY = 3
F_GROUP = 4  # -1: none
F_FULL_CART_ONLY = 5
F_FULL_CART_FIRST = 6
F_HEADER = 8
NEARBY_LINES_MAX = 100
NEARBY_LIMIT_MAX = 1_000
F_OUT = F_HEADER + 2 * NEARBY_LINES_MAX
II_SIZE = F_OUT + NEARBY_LIMIT_MAX * (2 + NEARBY_LINES_MAX)
F_ROW_NODE = 0
F_ROW_COVERS = 1
F_ROW_AVAIL = 2
FF_SIZE = 4 + NEARBY_LIMIT_MAX
# ii[F_HEADER : F_HEADER + n] sku ids, then n quantities; the outputs start at F_OUT: K rows
# of (node index, covers flag 0/1, n available units). `ff` (float64): [lat0, lon0,
# radius_km], then K distances from FF_DIST.
FF_LAT = 0
FF_LON = 1
FF_RADIUS = 2
FF_DIST = 4


@njit(inline="always", cache=True)
def _put_row(st, ii, row, n, g, n_lines):
    """Output row `row` for node n: reservable units (clamped at 0) per line; covers all?"""
    dst = F_OUT + row * (2 + n_lines)
    ii[dst + F_ROW_NODE] = n
    n_skus = st.sku_known.shape[0]
    covers = True
    for i in range(n_lines):
        s = ii[F_HEADER + i]
        a = 0
        if 0 <= s < n_skus:
            slot = find_slot(st.table, st.pos_key, s, n)
            if slot != EMPTY:
                a = max(0, _reservable(st.qty, slot, g, st.grp_i64))
        ii[dst + F_ROW_AVAIL + i] = a
        if a < ii[F_HEADER + n_lines + i]:
            covers = False
    ii[dst + F_ROW_COVERS] = 1 if covers else 0
    return covers


@njit(inline="always", cache=True)
def _put_rows(st, ii, nodes, count, g, n_lines):
    """`_put_row` for rows 0..count-1 (nodes[row]), with the lookups batched: all first-probe
    table reads, then all key checks and quantity reads, so the cache misses of independent
    lookups overlap instead of queuing one after another."""
    table = st.table
    pos_key = st.pos_key
    qty = st.qty
    mask = table.shape[0] - 1
    n_skus = st.sku_known.shape[0]
    w = 2 + n_lines
    for row in range(count):
        dst = F_OUT + row * w
        n = nodes[row]
        ii[dst + F_ROW_NODE] = n
        for i in range(n_lines):
            s = ii[F_HEADER + i]
            slot = EMPTY
            if 0 <= s < n_skus:
                slot = table[hash_key(pack_key(s, n), mask)]
            ii[dst + F_ROW_AVAIL + i] = slot
    for row in range(count):
        dst = F_OUT + row * w
        n = ii[dst + F_ROW_NODE]
        covers = True
        for i in range(n_lines):
            slot = ii[dst + F_ROW_AVAIL + i]
            a = 0
            if slot != EMPTY:
                s = ii[F_HEADER + i]
                if pos_key[slot] != pack_key(s, n):
                    slot = find_slot(table, pos_key, s, n)  # a collision: probe on
                if slot != EMPTY:
                    a = max(0, _reservable(qty, slot, g, st.grp_i64))
            ii[dst + F_ROW_AVAIL + i] = a
            if a < ii[F_HEADER + n_lines + i]:
                covers = False
        ii[dst + F_ROW_COVERS] = 1 if covers else 0


@njit(cache=True)
def find_nearby(st, ii, ff, cand_n, cand_d):
    """Fill the first `count` output rows of ii/ff (nearest first, layout above); return `count`.

    sku ids < 0 are unknown SKUs (available 0). g < 0: no group; otherwise only members of g,
    with g's buffer held back. cand_n / cand_d are scratch with a row per node.

    Pass 1 scans the node table (bounding box, filters, exact distance) into the candidate
    list; it is sorted by (distance, node index) (stable: nodes arrive in index order); pass 2
    looks stock up in that order only until the answer is known, so without full-cart options
    only the K returned nodes pay for the position lookups.
    """
    node_i64 = st.node_i64
    node_f64 = st.node_f64
    n_lines = ii[F_LINES]
    limit = ii[F_LIMIT]
    type_mask = ii[F_TYPE_MASK]
    pickup_only = ii[F_PICKUP_ONLY] != 0
    g = ii[F_GROUP]
    full_cart_only = ii[F_FULL_CART_ONLY] != 0
    full_cart_first = ii[F_FULL_CART_FIRST] != 0
    lat0 = ff[FF_LAT]
    lon0 = ff[FF_LON]
    radius_km = ff[FF_RADIUS]
    dlat, dlon = search_box(lat0, radius_km)
    cos_lat0 = math.cos(lat0 * _DEG)
    # Bounding box over the whole table, branch-free (which nodes pass is unpredictable, and a
    # mispredicted branch per node costs more than the comparisons).
    boxed = 0
    for n in range(node_i64.shape[0]):
        x = abs(node_f64[n, 1] - lon0)
        x = min(x, 360.0 - x)  # lon_gap_deg
        cand_n[boxed] = n
        boxed += (abs(node_f64[n, 0] - lat0) <= dlat) & (x <= dlon)
    c = 0
    for b in range(boxed):
        n = cand_n[b]
        lat = node_f64[n, 0]
        lon = node_f64[n, 1]
        if node_i64[n, N_REGISTERED] == 0 or node_i64[n, N_ENABLED] == 0:
            continue
        if pickup_only and node_i64[n, N_PICKUP] == 0:
            continue
        if not node_type_ok(type_mask, node_i64[n, N_TYPE]):
            continue
        if g >= 0 and st.member[g, n] == 0:
            continue
        d = haversine_from(lat0, lon0, cos_lat0, lat, lon)
        if d > radius_km:
            continue
        cand_n[c] = n
        cand_d[c] = d
        c += 1
    if c == 0:
        return 0
    if c <= 64:
        # insertion sort, stable: equal distances keep node-index order
        for a in range(1, c):
            x_n = cand_n[a]
            x_d = cand_d[a]
            b = a
            while b > 0 and cand_d[b - 1] > x_d:
                cand_n[b] = cand_n[b - 1]
                cand_d[b] = cand_d[b - 1]
                b -= 1
            cand_n[b] = x_n
            cand_d[b] = x_d
    else:
        order = np.argsort(cand_d[:c], kind="mergesort")  # stable
        tmp_n = cand_n[:c][order]
        tmp_d = cand_d[:c][order]
        cand_n[:c] = tmp_n
        cand_d[:c] = tmp_d
    count = 0
    if not full_cart_only and not full_cart_first:
        count = min(c, limit)
        _put_rows(st, ii, cand_n, count, g, n_lines)
        for k in range(count):
            ff[FF_DIST + k] = cand_d[k]
        return count
    # Covering nodes in distance order; the others are compacted to the front of the
    # candidate list (their stock is looked up again if they are needed to fill the answer).
    others = 0
    for k in range(c):
        if count == limit:
            break
        n = cand_n[k]
        d = cand_d[k]
        if _put_row(st, ii, count, n, g, n_lines):
            ff[FF_DIST + count] = d
            count += 1
        else:
            cand_n[others] = n
            cand_d[others] = d
            others += 1
    if full_cart_only:
        return count
    for k in range(others):
        if count == limit:
            break
        _put_row(st, ii, count, cand_n[k], g, n_lines)
        ff[FF_DIST + count] = cand_d[k]
        count += 1
    return count
