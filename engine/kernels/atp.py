"""Available-to-promise: reads of one position, of a SKU in a group, of a SKU network-wide.

`available = max(0, on_hand - reserved - allocated - safety_stock - unavailable)`; a group also
holds back its buffer per position (units plus a share of on-hand, rounded up) before summing.
Disabled nodes promise nothing: their position reads report NODE_DISABLED with the real buckets
and available 0, and they drop out of group and network sums.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels.index import (
    PREFETCH_RING,
    PREFETCH_ROW_AHEAD,
    PREFETCH_TABLE_AHEAD,
    find_slot,
    hash_key,
    pack_key,
)
from engine.kernels.prefetch import prefetch
from engine.kernels.status import NODE_DISABLED, OK, UNKNOWN_GROUP, UNKNOWN_NODE, UNKNOWN_SKU
from engine.state import (
    ALLOCATED,
    EMPTY,
    G_BUFFER_BP,
    G_BUFFER_UNITS,
    G_DEFINED,
    INBOUND,
    N_ENABLED,
    N_REGISTERED,
    ON_HAND,
    RESERVED,
    SAFETY,
    UNAVAILABLE,
)

# Output columns of every availability kernel (the wire's `Quantities` order).
OUT_COLS = 7
O_AVAILABLE = 6
_NODE_MASK = np.int64(0xFFFFFFFF)


@njit(inline="always", cache=True)
def atp_raw(qty, slot):
    """on_hand minus everything promised or held back; negative when over-committed."""
    return (
        qty[slot, ON_HAND]
        - qty[slot, RESERVED]
        - qty[slot, ALLOCATED]
        - qty[slot, SAFETY]
        - qty[slot, UNAVAILABLE]
    )


@njit(inline="always", cache=True)
def group_buffer(on_hand, units, bp):
    """Units a group holds back at one position: fixed units plus ceil(on_hand * bp / 10_000)."""
    share = 0
    if bp > 0 and on_hand > 0:
        share = (on_hand * bp + 9_999) // 10_000
    return units + share


@njit(inline="always", cache=True)
def node_ok(node_i64, node_id):
    return 0 <= node_id < node_i64.shape[0] and node_i64[node_id, N_REGISTERED] != 0


@njit(inline="always", cache=True)
def sku_ok(sku_known, sku_id):
    return 0 <= sku_id < sku_known.shape[0] and sku_known[sku_id] != 0


@njit(inline="always", cache=True)
def group_ok(grp_i64, group_id):
    return 0 <= group_id < grp_i64.shape[0] and grp_i64[group_id, G_DEFINED] != 0


@njit(inline="always", cache=True)
def position_status(node_i64, sku_known, sku_id, node_id):
    """A (sku, node) read's status, in the precedence order: node, then SKU, then enabled."""
    if not node_ok(node_i64, node_id):
        return UNKNOWN_NODE
    if not sku_ok(sku_known, sku_id):
        return UNKNOWN_SKU
    if node_i64[node_id, N_ENABLED] == 0:
        return NODE_DISABLED
    return OK


@njit(inline="always", cache=True)
def _add_buckets(qty, slot, out, i):
    out[i, 0] += qty[slot, ON_HAND]
    out[i, 1] += qty[slot, RESERVED]
    out[i, 2] += qty[slot, ALLOCATED]
    out[i, 3] += qty[slot, SAFETY]
    out[i, 4] += qty[slot, UNAVAILABLE]
    out[i, 5] += qty[slot, INBOUND]


@njit(cache=True)
def availability_at_nodes(st, sku_ids, node_ids, out_status, out_qty):
    """One (sku, node) position per query.

    Query i + PREFETCH_TABLE_AHEAD has its home table entry prefetched and query
    i + PREFETCH_ROW_AHEAD the key and quantity row that entry points to, while query i is
    answered; two rings carry the home index and that first entry to the query's own turn.
    """
    # Read every field of `st` once: each StructRef field read inside the loop costs a
    # reference-count round trip, which was a third of a lookup's time.
    qty = st.qty
    node_i64 = st.node_i64
    sku_known = st.sku_known
    table = st.table
    pos_key = st.pos_key
    mask = table.shape[0] - 1
    ring_mask = PREFETCH_RING - 1
    count = sku_ids.shape[0]
    homes = np.empty(PREFETCH_RING, np.int64)
    firsts = np.empty(PREFETCH_RING, np.int64)
    for i in range(min(PREFETCH_TABLE_AHEAD, count)):
        homes[i] = hash_key(pack_key(sku_ids[i], node_ids[i]), mask)
    for i in range(min(PREFETCH_ROW_AHEAD, count)):
        firsts[i] = table[homes[i]]
    for i in range(count):
        ahead = i + PREFETCH_TABLE_AHEAD
        if ahead < count:
            home = hash_key(pack_key(sku_ids[ahead], node_ids[ahead]), mask)
            homes[ahead & ring_mask] = home
            prefetch(table, home)
        ahead = i + PREFETCH_ROW_AHEAD
        if ahead < count:
            first = table[homes[ahead & ring_mask]]
            firsts[ahead & ring_mask] = first
            if first != EMPTY:
                prefetch(pos_key, first)
                prefetch(qty, first)
        s = sku_ids[i]
        n = node_ids[i]
        status = position_status(node_i64, sku_known, s, n)
        out_status[i] = status
        slot = EMPTY
        first = firsts[i & ring_mask]
        if first != EMPTY and (status == OK or status == NODE_DISABLED):  # noqa: SIM109
            slot = first if pos_key[first] == pack_key(s, n) else find_slot(table, pos_key, s, n)
        if slot == EMPTY:
            for c in range(out_qty.shape[1]):
                out_qty[i, c] = 0
            continue
        # Into locals first: out_qty may alias qty as far as the compiler knows.
        on_hand = qty[slot, ON_HAND]
        reserved = qty[slot, RESERVED]
        allocated = qty[slot, ALLOCATED]
        safety = qty[slot, SAFETY]
        unavailable = qty[slot, UNAVAILABLE]
        inbound = qty[slot, INBOUND]
        out_qty[i, 0] = on_hand
        out_qty[i, 1] = reserved
        out_qty[i, 2] = allocated
        out_qty[i, 3] = safety
        out_qty[i, 4] = unavailable
        out_qty[i, 5] = inbound
        available = 0
        if status == OK:
            available = max(0, on_hand - reserved - allocated - safety - unavailable)
        out_qty[i, O_AVAILABLE] = available
        for c in range(OUT_COLS, out_qty.shape[1]):
            out_qty[i, c] = 0


@njit(cache=True)
def availability_one_at_node(qty, node_i64, sku_known, table, pos_key, sku_id, node_id, out_qty):
    """One query of `availability_at_nodes`, answered into out_qty[0]; returns its status.

    For a caller answering one query per call (a storefront's GetAvailability): the arguments
    are arrays and two ints, which numba's dispatcher types in C. A `State` argument is typed
    and unboxed through Python on every call, which cost ~9 µs more a call once the caller's
    other work had evicted that path from the CPU caches (docs/architecture.md). The body is
    the batch kernel's per-query step, written out: sharing all of it as an inlined helper
    halved the batch kernel's rate (`bench kernels`, availability_lookups_per_s).
    """
    status = position_status(node_i64, sku_known, sku_id, node_id)
    for c in range(out_qty.shape[1]):
        out_qty[0, c] = 0
    if status != OK and status != NODE_DISABLED:  # noqa: SIM109
        return status
    slot = find_slot(table, pos_key, sku_id, node_id)
    if slot != EMPTY:
        _add_buckets(qty, slot, out_qty, 0)  # the buckets, in the wire's order
        if status == OK:
            out_qty[0, O_AVAILABLE] = max(0, atp_raw(qty, slot))
    return status


@njit(cache=True)
def availability_in_groups(st, sku_ids, group_ids, out_status, out_qty):
    """A SKU summed over the enabled nodes of a group, after the group's buffer.

    A negative group id means the whole network (every enabled node, no buffer).
    """
    qty = st.qty
    grp_i64 = st.grp_i64
    sku_known = st.sku_known
    sku_head = st.sku_head
    pos_key = st.pos_key
    pos_next = st.pos_next
    node_i64 = st.node_i64
    member = st.member
    for i in range(sku_ids.shape[0]):
        s = sku_ids[i]
        g = group_ids[i]
        for c in range(out_qty.shape[1]):
            out_qty[i, c] = 0
        whole_network = g < 0
        if not whole_network and not group_ok(grp_i64, g):
            out_status[i] = UNKNOWN_GROUP
            continue
        if not sku_ok(sku_known, s):
            out_status[i] = UNKNOWN_SKU
            continue
        units = 0
        bp = 0
        if not whole_network:
            units = grp_i64[g, G_BUFFER_UNITS]
            bp = grp_i64[g, G_BUFFER_BP]
        slot = sku_head[s]
        available = 0
        while slot != EMPTY:
            n = pos_key[slot] & _NODE_MASK
            if node_i64[n, N_ENABLED] != 0 and (whole_network or member[g, n] != 0):
                _add_buckets(qty, slot, out_qty, i)
                a = atp_raw(qty, slot) - group_buffer(qty[slot, ON_HAND], units, bp)
                if a > 0:
                    available += a
            slot = pos_next[slot]
        out_qty[i, O_AVAILABLE] = available
        out_status[i] = OK
