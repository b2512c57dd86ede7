"""Replay kernel: many journal entries of plain Reserve / Commit / Release in one call.

The wrapper (engine/replay.py) has already done, entry by entry, everything that needs Python
objects (validation, id lookups, reservation indexes, names); this kernel does the rest of what
`Ledger.apply` does for each entry, in order: set the batch clock, expire what is due, run the
entry's operations with the same kernels the live path calls, count the stock events the entry
would publish (updating the last-published availabilities the way `events.position_events` and
`events.group_events` do), and compact the expiry heap when `Ledger._compact` would.

It records, in order, every reservation that reaches a final outcome (expired, rejected,
released), so the wrapper can append them to the ledger's idempotency memory afterwards.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels import reserve as rk
from engine.kernels.events import AVAIL_CLAMP, group_sum, position_available
from engine.state import (
    C_HEAP_LEN,
    C_HELD,
    C_NOW_MS,
    EMPTY,
    H_EXPIRES_MS,
    L_SLOT,
    R_LINE_COUNT,
    R_LINE_START,
    R_STATE,
)

# Operation kinds (op_kind).
OP_RESERVE = 0  # a fresh reservation: the next row of `req` and its lines
OP_COMMIT = 1
OP_RELEASE = 2
OP_TOUCH = 3  # no change (a replayed or rejected command): the events pass still looks at it
MARK_ENTRY = 4  # the start of an entry (its clock in the upper bits)
STREAM_SHIFT = 3
_KIND_MASK = np.int64((1 << STREAM_SHIFT) - 1)

# Ledger._compact compacts the heap past this slack (keep the two equal).
HEAP_SLACK = 65_536

_NODE_MASK = np.int64(0xFFFFFFFF)


@njit(cache=True)
def _entry_events(
    st,
    touched,
    n_touched,
    last_avail,
    sku_mark,
    skus_out,
    groups,
    grp_last,
    grp_row,
):
    """How many events one entry publishes (one per changed position and tracked (sku, group))."""
    qty = st.qty
    node_i64 = st.node_i64
    pos_key = st.pos_key
    res = st.res
    ln = st.ln
    tracked = groups.shape[0] > 0
    count = 0
    n_skus = 0
    for i in range(n_touched):
        r = touched[i]
        l0 = res[r, R_LINE_START]
        for a in range(l0, l0 + res[r, R_LINE_COUNT]):
            slot = ln[a, L_SLOT]
            if slot == EMPTY:
                continue
            n = pos_key[slot] & _NODE_MASK
            avail = min(position_available(qty, node_i64, slot, n), AVAIL_CLAMP)
            if avail != np.int64(last_avail[slot]):
                last_avail[slot] = avail
                count += 1
            if tracked:
                s = pos_key[slot] >> 32
                if sku_mark[s] == 0:
                    sku_mark[s] = 1
                    skus_out[n_skus] = s
                    n_skus += 1
    for i in range(n_skus):
        s = skus_out[i]
        sku_mark[s] = 0
        for k in range(groups.shape[0]):
            avail = group_sum(st, s, groups[k], grp_row, 0)
            if avail != grp_last[k, s]:
                grp_last[k, s] = avail
                count += 1
    return count


@njit(cache=True)
def replay_stream(
    st,
    stream,
    req,
    lines,
    last_avail,
    sku_mark,
    skus_out,
    groups,
    grp_last,
    touched,
    fin_now,
    fin_res,
):
    """Apply the entries of `stream`; returns (events published, final outcomes written to
    fin_now / fin_res, the last entry's clock).

    `stream` holds, for each entry, `now_ms << STREAM_SHIFT | MARK_ENTRY` and then its operations
    as `res_index << STREAM_SHIFT | OP_*`; fresh reservations take the rows of `req` (and their
    lines of `lines`) in order.
    """
    ctr = st.ctr
    heap = st.heap
    res = st.res
    code = np.zeros(1, np.int64)
    one = np.zeros(1, np.int64)
    grp_row = np.zeros(7, np.int64)
    events = 0
    fin = 0
    row = 0
    j = 0
    now = np.int64(-1)
    n_touched = 0
    n = stream.shape[0]
    for x in range(n + 1):
        if x == n or stream[x] & _KIND_MASK == MARK_ENTRY:
            if now >= 0:  # what follows the previous entry's commands
                if n_touched:
                    events += _entry_events(
                        st,
                        touched,
                        n_touched,
                        last_avail,
                        sku_mark,
                        skus_out,
                        groups,
                        grp_last,
                        grp_row,
                    )
                if ctr[C_HEAP_LEN] > 2 * ctr[C_HELD] + HEAP_SLACK:
                    rk.heap_compact(st)
            if x == n:
                break
            now = stream[x] >> STREAM_SHIFT
            ctr[C_NOW_MS] = now
            n_touched = 0
            if ctr[C_HEAP_LEN] > 0 and heap[0, H_EXPIRES_MS] <= now:
                count = rk.expire(st, now)
                expired = st.expired_out
                for y in range(count):
                    fin_now[fin] = now
                    fin_res[fin] = expired[y]
                    fin += 1
                    touched[n_touched] = expired[y]
                    n_touched += 1
            continue
        kind = stream[x] & _KIND_MASK
        r = stream[x] >> STREAM_SHIFT
        if kind == OP_RESERVE:
            count = req[row, rk.Q_LINE_COUNT]
            # The lines after this reservation's ride along: the kernel reads only its own, and
            # prefetches the positions of the next ones (the following entries' reserves).
            rk.reserve(st, req[row : row + 1], lines[j:], now)
            row += 1
            j += count
            if res[r, R_STATE] == rk.REJECTED:
                fin_now[fin] = now
                fin_res[fin] = r
                fin += 1
        elif kind == OP_COMMIT:
            one[0] = r
            rk.commit(st, one, now, code)
        elif kind == OP_RELEASE:
            one[0] = r
            rk.release(st, one, now, code)
            if code[0] == rk.DONE:
                fin_now[fin] = now
                fin_res[fin] = r
                fin += 1
        touched[n_touched] = r
        n_touched += 1
    return events, fin, now
