"""The (sku_id, node_id) → slot hash index and the per-SKU chains.

Open addressing with linear probing over a power-of-two table of int32 slots (-1 = empty), kept
at most half full. The key lives in `pos_key[slot]`, so the table itself is 4 bytes an entry.
Positions are never deleted, so there are no tombstones.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels.prefetch import prefetch
from engine.state import C_POSITIONS, EMPTY

_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)


@njit(inline="always", cache=True)
def pack_key(sku_id, node_id):
    return (np.int64(sku_id) << 32) | np.int64(node_id)


@njit(inline="always", cache=True)
def hash_key(key, mask):
    h = np.uint64(key) * _MIX
    h ^= h >> _SHIFT
    return np.int64(h & np.uint64(mask))


@njit(inline="always", cache=True)
def find_slot(table, pos_key, sku_id, node_id):
    """Slot of (sku_id, node_id), or -1."""
    key = pack_key(sku_id, node_id)
    mask = table.shape[0] - 1
    i = hash_key(key, mask)
    while True:
        slot = table[i]
        if slot == EMPTY:
            return EMPTY
        if pos_key[slot] == key:
            return slot
        i = (i + 1) & mask


# Batch kernels prefetch the home table entry of the lookup this many lines ahead, and the
# pos_key entry and quantity row it points to this many lines ahead, so the DRAM misses of
# neighbouring lookups overlap (2x at 10M positions; the rate is flat from 16/8 to 48/24).
PREFETCH_TABLE_AHEAD = 24
PREFETCH_ROW_AHEAD = 12
# Kernels that carry per-lookup values from the prefetch stages to the lookup's own turn keep
# them in rings of this many entries (a power of two above the distance ahead).
PREFETCH_RING = 64
assert PREFETCH_ROW_AHEAD < PREFETCH_TABLE_AHEAD < PREFETCH_RING
assert PREFETCH_RING & (PREFETCH_RING - 1) == 0


@njit(inline="always", cache=True)
def prefetch_home(table, sku_id, node_id):
    """Start loading the home table entry of (sku_id, node_id) (any ids: the index is masked)."""
    prefetch(table, hash_key(pack_key(sku_id, node_id), table.shape[0] - 1))


@njit(inline="always", cache=True)
def prefetch_position(table, pos_key, qty, sku_id, node_id):
    """Start loading the key and quantity row the home entry of (sku_id, node_id) points to."""
    slot = table[hash_key(pack_key(sku_id, node_id), table.shape[0] - 1)]
    if slot != EMPTY:
        prefetch(pos_key, slot)
        prefetch(qty, slot)


@njit(inline="always", cache=True)
def _table_put(table, key, slot):
    mask = table.shape[0] - 1
    i = hash_key(key, mask)
    while table[i] != EMPTY:
        i = (i + 1) & mask
    table[i] = slot


@njit(cache=True)
def insert_position(st, sku_id, node_id):
    """Append a new position (caller checked it is absent and that there is room)."""
    slot = np.int32(st.ctr[C_POSITIONS])
    st.ctr[C_POSITIONS] += 1
    key = pack_key(sku_id, node_id)
    st.pos_key[slot] = key
    # New positions go to the head of the SKU chain; chain order is therefore newest first,
    # identical on every replay.
    st.pos_next[slot] = st.sku_head[sku_id]
    st.sku_head[sku_id] = slot
    _table_put(st.table, key, slot)
    return slot


@njit(cache=True)
def rebuild_table(table, pos_key, positions):
    """Fill an empty (all -1) table from the first `positions` keys."""
    for slot in range(positions):
        _table_put(table, pos_key[slot], np.int32(slot))


@njit(cache=True)
def lookup_slots(st, sku_ids, node_ids, out):
    """Batch lookup: out[i] = slot of (sku_ids[i], node_ids[i]) or -1 (ids < 0 give -1)."""
    n_skus = st.sku_head.shape[0]
    for i in range(sku_ids.shape[0]):
        s = sku_ids[i]
        n = node_ids[i]
        if s < 0 or n < 0 or s >= n_skus:
            out[i] = EMPTY
        else:
            out[i] = find_slot(st.table, st.pos_key, s, n)
