"""The kernels of `engine.ids.IdTable`: a table of (hash, value) slots probed in bulk.

Open addressing with linear probing over a power-of-two array of int64 pairs
`slots[i] = (hash, value)`, value -1 = empty; four slots to a cache line, so one probe reads one
line. The table holds hashes only: whether a hash's slot is the key asked for is the wrapper's
question (it compares the key kept for the value). Deletion shifts the entries after the hole
back (no tombstones), so a lookup stops at the first empty slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels.prefetch import prefetch

__all__ = ["H", "V", "VACANT", "PROBE_AHEAD", "none_present", "put_all", "rehash"]

H = 0  # column of a slot: the key's hash
V = 1  # column of a slot: the value (>= 0), or VACANT
VACANT = -1

# Batch probes prefetch the home slot of the hash this many entries ahead, so the DRAM misses of
# neighbouring ids overlap (as the position index does: engine/kernels/index.py).
PROBE_AHEAD = 16


@njit(cache=True)
def none_present(slots, hashes):
    """True if no hash of `hashes` is in the table and none repeats within `hashes`."""
    m = hashes.shape[0]
    if m > 1:
        ordered = np.sort(hashes)
        for i in range(1, m):
            if ordered[i] == ordered[i - 1]:
                return False
    return _probe_all(slots, hashes, hashes, False)


@njit(cache=True)
def put_all(slots, hashes, values):
    """Put each (hashes[i], values[i]) in the first vacant slot of its probe run (the caller
    checked that none is present and that the table stays at most half full)."""
    _probe_all(slots, hashes, values, True)


@njit(inline="always", cache=True)
def _probe_all(slots, hashes, values, put):
    """Probe each hash's run to its first vacant slot: with `put`, fill it with (hash, value);
    without, return False at the first slot holding an equal hash. True otherwise."""
    mask = slots.shape[0] - 1
    m = hashes.shape[0]
    for i in range(min(PROBE_AHEAD, m)):
        prefetch(slots, hashes[i] & mask)
    for i in range(m):
        if i + PROBE_AHEAD < m:
            prefetch(slots, hashes[i + PROBE_AHEAD] & mask)
        h = hashes[i]
        j = h & mask
        while slots[j, V] != VACANT:
            if not put and slots[j, H] == h:
                return False
            j = (j + 1) & mask
        if put:
            slots[j, H] = h
            slots[j, V] = values[i]
    return True


@njit(cache=True)
def rehash(old, new):
    """Put every entry of `old` into `new` (all vacant, a larger power of two)."""
    mask = new.shape[0] - 1
    for i in range(old.shape[0]):
        if old[i, V] != VACANT:
            h = old[i, H]
            j = h & mask
            while new[j, V] != VACANT:
                j = (j + 1) & mask
            new[j, H] = h
            new[j, V] = old[i, V]
