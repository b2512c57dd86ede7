"""Supply kernels: bucket deltas (receipts, sales, returns, damage, moves, transfers), absolute
counts with a source sequence, and per-position settings (safety stock, backorder limit).

A supply operation is atomic: it is a short list of entries (one for an adjustment, two for a
transfer) that either all apply or none does. A position that does not exist yet is created by
the first operation that succeeds on it; a failed operation creates nothing.
"""

from __future__ import annotations

from numba import njit

from engine.kernels.atp import node_ok
from engine.kernels.index import find_slot, insert_position
from engine.kernels.status import INVALID_QTY, NEGATIVE_STOCK, OK, STALE, UNKNOWN_NODE, UNKNOWN_SKU
from engine.state import (
    ALLOCATED,
    BACKORDER,
    EMPTY,
    INBOUND,
    ON_HAND,
    RESERVED,
    SOURCE_SEQ,
    UNAVAILABLE,
)

# Columns of a delta entry.
D_ON_HAND = 0
D_UNAVAILABLE = 1
D_INBOUND = 2


@njit(inline="always", cache=True)
def buckets_valid(on_hand, unavailable, inbound, reserved, allocated, backorder):
    """The invariant of DESIGN §1 for one position."""
    return (
        on_hand >= 0
        and unavailable >= 0
        and inbound >= 0
        and unavailable <= on_hand
        and reserved + allocated <= on_hand - unavailable + backorder
    )


@njit(inline="always", cache=True)
def _slot_or_new(st, slot, s, n):
    if slot != EMPTY:
        return slot
    st.sku_known[s] = 1
    return insert_position(st, s, n)


@njit(cache=True)
def apply_deltas(st, op_offsets, sku_ids, node_ids, deltas, out_status):
    """Apply atomic operations; entries op_offsets[k]..op_offsets[k+1] form operation k.

    Entries of one operation must address distinct positions (the wrapper guarantees it).
    Returns the number of operations that applied.
    """
    qty = st.qty
    applied = 0
    n_skus = st.sku_head.shape[0]
    for k in range(op_offsets.shape[0] - 1):
        start = op_offsets[k]
        stop = op_offsets[k + 1]
        all_ok = True
        for e in range(start, stop):
            s = sku_ids[e]
            n = node_ids[e]
            if not node_ok(st.node_i64, n):
                out_status[e] = UNKNOWN_NODE
                all_ok = False
                continue
            if s < 0 or s >= n_skus:
                out_status[e] = UNKNOWN_SKU
                all_ok = False
                continue
            slot = find_slot(st.table, st.pos_key, s, n)
            on_hand = deltas[e, D_ON_HAND]
            unavailable = deltas[e, D_UNAVAILABLE]
            inbound = deltas[e, D_INBOUND]
            reserved = 0
            allocated = 0
            backorder = 0
            if slot != EMPTY:
                on_hand += qty[slot, ON_HAND]
                unavailable += qty[slot, UNAVAILABLE]
                inbound += qty[slot, INBOUND]
                reserved = qty[slot, RESERVED]
                allocated = qty[slot, ALLOCATED]
                backorder = qty[slot, BACKORDER]
            if not buckets_valid(on_hand, unavailable, inbound, reserved, allocated, backorder):
                out_status[e] = NEGATIVE_STOCK
                all_ok = False
                continue
            out_status[e] = OK
        if not all_ok:
            continue
        for e in range(start, stop):
            s = sku_ids[e]
            n = node_ids[e]
            slot = _slot_or_new(st, find_slot(st.table, st.pos_key, s, n), s, n)
            qty[slot, ON_HAND] += deltas[e, D_ON_HAND]
            qty[slot, UNAVAILABLE] += deltas[e, D_UNAVAILABLE]
            qty[slot, INBOUND] += deltas[e, D_INBOUND]
        applied += 1
    return applied


@njit(inline="always", cache=True)
def _setting_guard(node_i64, n_skus, s, n, value):
    """Guards of an absolute value for one position, in precedence order."""
    if value < 0:
        return INVALID_QTY
    if not node_ok(node_i64, n):
        return UNKNOWN_NODE
    if s < 0 or s >= n_skus:
        return UNKNOWN_SKU
    return OK


@njit(cache=True)
def set_on_hand(st, sku_ids, node_ids, counts, source_seqs, out_status):
    """Absolute counts. A count whose source sequence is not newer than the position's is STALE."""
    qty = st.qty
    n_skus = st.sku_head.shape[0]
    for i in range(sku_ids.shape[0]):
        s = sku_ids[i]
        n = node_ids[i]
        status = _setting_guard(st.node_i64, n_skus, s, n, counts[i])
        if status != OK:
            out_status[i] = status
            continue
        slot = find_slot(st.table, st.pos_key, s, n)
        if slot == EMPTY:
            if source_seqs[i] <= 0:
                out_status[i] = STALE
                continue
            slot = _slot_or_new(st, slot, s, n)
        elif source_seqs[i] <= qty[slot, SOURCE_SEQ]:
            out_status[i] = STALE
            continue
        elif not buckets_valid(
            counts[i],
            qty[slot, UNAVAILABLE],
            qty[slot, INBOUND],
            qty[slot, RESERVED],
            qty[slot, ALLOCATED],
            qty[slot, BACKORDER],
        ):
            out_status[i] = NEGATIVE_STOCK
            continue
        qty[slot, ON_HAND] = counts[i]
        qty[slot, SOURCE_SEQ] = source_seqs[i]
        out_status[i] = OK


@njit(cache=True)
def set_column(st, sku_ids, node_ids, values, column, out_status):
    """Set a per-position setting (safety stock or backorder limit), creating the position."""
    qty = st.qty
    n_skus = st.sku_head.shape[0]
    for i in range(sku_ids.shape[0]):
        s = sku_ids[i]
        n = node_ids[i]
        status = _setting_guard(st.node_i64, n_skus, s, n, values[i])
        if status != OK:
            out_status[i] = status
            continue
        slot = find_slot(st.table, st.pos_key, s, n)
        # Lowering a backorder limit below what is already promised would break the invariant.
        if (
            column == BACKORDER
            and slot != EMPTY
            and not buckets_valid(
                qty[slot, ON_HAND],
                qty[slot, UNAVAILABLE],
                qty[slot, INBOUND],
                qty[slot, RESERVED],
                qty[slot, ALLOCATED],
                values[i],
            )
        ):
            out_status[i] = NEGATIVE_STOCK
            continue
        slot = _slot_or_new(st, slot, s, n)
        qty[slot, column] = values[i]
        out_status[i] = OK
