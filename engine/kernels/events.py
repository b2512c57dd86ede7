"""Stock events: which touched positions (and tracked (sku, group) pairs) changed in a batch.

The wrapper (engine/events.py) hands over what a batch touched: reservation indexes (their lines
name the positions), (sku_id, node_id) pairs of supply lines, and nodes whose every position must
be looked at (a node enabled or disabled). The kernel compares each touched position's available
now with the last one it published (`last_avail`, int32, clamped) and writes one event row per
position whose available changed, with the crossing it made. Publishing updates `last_avail`
right away, so a position touched twice in one batch gives one row: duplicates cost nothing.

Kinds (the wire's EventKind numbers): a crossing wins over a plain change.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels.atp import atp_raw, group_buffer
from engine.kernels.index import find_slot, insert_position
from engine.state import (
    ALLOCATED,
    EMPTY,
    G_BUFFER_BP,
    G_BUFFER_UNITS,
    INBOUND,
    L_SLOT,
    N_ENABLED,
    ON_HAND,
    R_LINE_COUNT,
    R_LINE_START,
    RESERVED,
    SAFETY,
    UNAVAILABLE,
)

KIND_CHANGED = 1
KIND_OUT_OF_STOCK = 2
KIND_LOW_STOCK = 3
KIND_BACK_IN_STOCK = 4

# Event row columns (int64): kind, sku_id, node_id (-1 for a group event), group index (-1 for a
# position event), then the wire's Quantities order.
E_KIND = 0
E_SKU = 1
E_NODE = 2
E_GROUP = 3
E_QTY = 4  # 7 columns: on_hand, reserved, allocated, safety_stock, unavailable, inbound, available
EVENT_COLS = 11

AVAIL_CLAMP = np.int64(2**31 - 1)
_NODE_MASK = np.int64(0xFFFFFFFF)


@njit(inline="always", cache=True)
def kind_of(before, after, low_stock):
    """The event kind for available going from `before` to `after` (0 = no event)."""
    if before == after:
        return 0
    if after == 0:
        return KIND_OUT_OF_STOCK
    if before == 0:
        return KIND_BACK_IN_STOCK
    if after <= low_stock < before:
        return KIND_LOW_STOCK
    return KIND_CHANGED


@njit(inline="always", cache=True)
def position_available(qty, node_i64, slot, n):
    """Available as a position read reports it: a disabled node promises nothing."""
    if node_i64[n, N_ENABLED] == 0:
        return 0
    return max(0, atp_raw(qty, slot))


@njit(inline="always", cache=True)
def _diff_one(qty, node_i64, pos_key, slot, last_avail, low_stock, out, count):
    n = pos_key[slot] & _NODE_MASK
    a = min(position_available(qty, node_i64, slot, n), AVAIL_CLAMP)
    b = np.int64(last_avail[slot])
    kind = kind_of(b, a, np.int64(low_stock[slot]))
    if kind == 0:
        return count
    last_avail[slot] = a
    out[count, E_KIND] = kind
    out[count, E_SKU] = pos_key[slot] >> 32
    out[count, E_NODE] = n
    out[count, E_GROUP] = -1
    out[count, E_QTY + 0] = qty[slot, ON_HAND]
    out[count, E_QTY + 1] = qty[slot, RESERVED]
    out[count, E_QTY + 2] = qty[slot, ALLOCATED]
    out[count, E_QTY + 3] = qty[slot, SAFETY]
    out[count, E_QTY + 4] = qty[slot, UNAVAILABLE]
    out[count, E_QTY + 5] = qty[slot, INBOUND]
    out[count, E_QTY + 6] = position_available(qty, node_i64, slot, n)
    return count + 1


@njit(inline="always", cache=True)
def _mark_sku(sku_mark, skus_out, n_skus_out, s):
    if sku_mark.shape[0] == 0 or sku_mark[s] != 0:
        return n_skus_out
    sku_mark[s] = 1
    skus_out[n_skus_out] = s
    return n_skus_out + 1


@njit(cache=True)
def position_events(
    st, res_idx, sku_ids, node_ids, scan_nodes, last_avail, low_stock, sku_mark, out, skus_out
):
    """Event rows for every touched position whose available changed; returns (rows, skus).

    `skus_out[:skus]` lists the touched SKUs once each when `sku_mark` (zeroed, one byte per SKU)
    is given, for the group pass; an empty `sku_mark` skips that bookkeeping.
    """
    qty = st.qty
    node_i64 = st.node_i64
    pos_key = st.pos_key
    res = st.res
    ln = st.ln
    count = 0
    n_skus = 0
    for i in range(res_idx.shape[0]):
        r = res_idx[i]
        l0 = res[r, R_LINE_START]
        for a in range(l0, l0 + res[r, R_LINE_COUNT]):
            slot = ln[a, L_SLOT]
            if slot == EMPTY:
                continue
            count = _diff_one(qty, node_i64, pos_key, slot, last_avail, low_stock, out, count)
            n_skus = _mark_sku(sku_mark, skus_out, n_skus, pos_key[slot] >> 32)
    n_known = st.sku_head.shape[0]
    for i in range(sku_ids.shape[0]):
        s = sku_ids[i]
        n = node_ids[i]
        if s < 0 or n < 0 or s >= n_known or n >= node_i64.shape[0]:
            continue
        slot = find_slot(st.table, pos_key, s, n)
        if slot == EMPTY:
            continue
        count = _diff_one(qty, node_i64, pos_key, slot, last_avail, low_stock, out, count)
        n_skus = _mark_sku(sku_mark, skus_out, n_skus, s)
    if scan_nodes.shape[0] > 0:
        scan = np.zeros(node_i64.shape[0], np.bool_)
        for i in range(scan_nodes.shape[0]):
            scan[scan_nodes[i]] = True
        for slot in range(last_avail.shape[0]):
            key = pos_key[slot]
            if key == EMPTY or not scan[key & _NODE_MASK]:
                continue
            count = _diff_one(qty, node_i64, pos_key, slot, last_avail, low_stock, out, count)
            n_skus = _mark_sku(sku_mark, skus_out, n_skus, key >> 32)
    for i in range(n_skus):
        sku_mark[skus_out[i]] = 0
    return count, n_skus


@njit(inline="always", cache=True)
def group_sum(st, s, g, out_row, start):
    """Buckets and available of SKU `s` in group `g`, as availability_in_groups computes them."""
    qty = st.qty
    node_i64 = st.node_i64
    member = st.member
    pos_key = st.pos_key
    units = st.grp_i64[g, G_BUFFER_UNITS]
    bp = st.grp_i64[g, G_BUFFER_BP]
    for c in range(7):
        out_row[start + c] = 0
    available = 0
    slot = st.sku_head[s]
    while slot != EMPTY:
        n = pos_key[slot] & _NODE_MASK
        if node_i64[n, N_ENABLED] != 0 and member[g, n] != 0:
            out_row[start + 0] += qty[slot, ON_HAND]
            out_row[start + 1] += qty[slot, RESERVED]
            out_row[start + 2] += qty[slot, ALLOCATED]
            out_row[start + 3] += qty[slot, SAFETY]
            out_row[start + 4] += qty[slot, UNAVAILABLE]
            out_row[start + 5] += qty[slot, INBOUND]
            a = atp_raw(qty, slot) - group_buffer(qty[slot, ON_HAND], units, bp)
            if a > 0:
                available += a
        slot = st.pos_next[slot]
    out_row[start + 6] = available
    return available


@njit(cache=True)
def group_events(st, skus, n_skus, groups, grp_last, grp_low, grp_low_default, out, count):
    """Event rows for tracked (sku, group) pairs whose group available changed; returns rows.

    `groups[k]` is the group index of tracked group k; `grp_last[k, s]` its last published
    available for SKU s, `grp_low[k, s]` its threshold (-1: the group's default).
    """
    row = np.zeros(7, np.int64)
    for i in range(n_skus):
        s = skus[i]
        for k in range(groups.shape[0]):
            g = groups[k]
            a = group_sum(st, s, g, row, 0)
            b = grp_last[k, s]
            low = grp_low[k, s]
            if low < 0:
                low = grp_low_default[k]
            kind = kind_of(b, a, low)
            if kind == 0:
                continue
            grp_last[k, s] = a
            out[count, E_KIND] = kind
            out[count, E_SKU] = s
            out[count, E_NODE] = -1
            out[count, E_GROUP] = g
            for c in range(7):
                out[count, E_QTY + c] = row[c]
            count += 1
    return count


@njit(cache=True)
def baseline_positions(st, last_avail, positions):
    """last_avail = available now, for every position (after a restore)."""
    qty = st.qty
    node_i64 = st.node_i64
    pos_key = st.pos_key
    for slot in range(positions):
        n = pos_key[slot] & _NODE_MASK
        last_avail[slot] = min(position_available(qty, node_i64, slot, n), AVAIL_CLAMP)


@njit(cache=True)
def baseline_group(st, g, sku_count, grp_last_row):
    """grp_last_row[s] = the group's available now, for every SKU."""
    row = np.zeros(7, np.int64)
    for s in range(sku_count):
        if st.sku_known[s] != 0:
            grp_last_row[s] = group_sum(st, s, g, row, 0)
        else:
            grp_last_row[s] = 0


@njit(cache=True)
def set_position_thresholds(st, sku_ids, node_ids, values, low_stock, out_slot):
    """Find or create each (sku, node) position (nodes are checked registered by the wrapper)."""
    for i in range(sku_ids.shape[0]):
        s = sku_ids[i]
        n = node_ids[i]
        slot = find_slot(st.table, st.pos_key, s, n)
        if slot == EMPTY:
            st.sku_known[s] = 1
            slot = insert_position(st, s, n)
        out_slot[i] = slot
        if slot < low_stock.shape[0]:
            low_stock[slot] = values[i]
