"""Great-circle distance and the FindNearby kernel: the K nearest eligible nodes around a point.

One kernel call scans the node table. A latitude band (and, away from the poles, a longitude
band) that contains the whole search circle rejects most nodes with one or two comparisons;
survivors get the exact haversine distance (Earth radius 6371.0088 km, the IUGG mean radius),
then the per-line reservable units. The top K are kept in a small sorted buffer ordered by
(not covers_all when full_cart_first, distance, node index), so the answer is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.kernels.index import find_slot
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


@njit(cache=True)
def find_nearby(
    st,
    sku_ids,
    qtys,
    lat0,
    lon0,
    radius_km,
    limit,
    type_mask,
    pickup_only,
    g,
    full_cart_only,
    full_cart_first,
    out_nodes,
    out_dist,
    out_avail,
    out_covers,
):
    """Fill the first `count` rows of the outputs (nearest first) and return `count`.

    sku_ids < 0 are unknown SKUs (available 0). g < 0: no group; otherwise only members of g,
    with g's buffer held back. out_nodes/out_dist/out_covers have `limit` rows, out_avail is
    int64[limit, lines].
    """
    node_i64 = st.node_i64
    node_f64 = st.node_f64
    qty = st.qty
    n_lines = sku_ids.shape[0]
    n_skus = st.sku_known.shape[0]
    dlat, dlon = search_box(lat0, radius_km)
    avail = np.empty(n_lines, np.int64)
    count = 0
    for n in range(node_i64.shape[0]):
        lat = node_f64[n, 0]
        if abs(lat - lat0) > dlat:
            continue
        lon = node_f64[n, 1]
        if lon_gap_deg(lon, lon0) > dlon:
            continue
        if node_i64[n, N_REGISTERED] == 0 or node_i64[n, N_ENABLED] == 0:
            continue
        if pickup_only and node_i64[n, N_PICKUP] == 0:
            continue
        if not node_type_ok(type_mask, node_i64[n, N_TYPE]):
            continue
        if g >= 0 and st.member[g, n] == 0:
            continue
        d = haversine_km(lat0, lon0, lat, lon)
        if d > radius_km:
            continue
        full = count == limit
        if full and not full_cart_first and d > out_dist[count - 1]:
            # Cannot enter the top K whatever it holds (equal distance loses on node index).
            continue
        if full and full_cart_first and out_covers[count - 1] and d >= out_dist[count - 1]:
            continue
        covers = True
        for i in range(n_lines):
            s = sku_ids[i]
            a = 0
            if 0 <= s < n_skus:
                slot = find_slot(st.table, st.pos_key, s, n)
                if slot != EMPTY:
                    a = max(0, _reservable(qty, slot, g, st.grp_i64))
            avail[i] = a
            if a < qtys[i]:
                covers = False
        if full_cart_only and not covers:
            continue
        # Position in the sorted buffer: after every entry that ranks before or equal to it
        # (equal keys keep node-index order because nodes arrive in index order).
        pos = count
        while pos > 0:
            prev = pos - 1
            if full_cart_first and out_covers[prev] != covers:
                if out_covers[prev]:
                    break
            elif out_dist[prev] <= d:
                break
            pos = prev
        if pos >= limit:
            continue
        last = count if count < limit else limit - 1
        for j in range(last, pos, -1):
            out_nodes[j] = out_nodes[j - 1]
            out_dist[j] = out_dist[j - 1]
            out_covers[j] = out_covers[j - 1]
            for i in range(n_lines):
                out_avail[j, i] = out_avail[j - 1, i]
        out_nodes[pos] = n
        out_dist[pos] = d
        out_covers[pos] = covers
        for i in range(n_lines):
            out_avail[pos, i] = avail[i]
        if count < limit:
            count += 1
    return count
