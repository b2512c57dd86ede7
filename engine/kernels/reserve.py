"""Reservation kernels: reserve (multi-line, all-or-nothing or partial), commit, release, extend,
fulfil, and exact expiry from a binary heap ordered by (expires_ms, reservation index).

Reservations are records in `st.res`; their lines live in the line arena `st.ln`. Every kernel
checks the reservation's state itself, because one batch may carry several commands for the same
reservation and they must see each other's effects in order.
"""

from __future__ import annotations

from numba import njit

from engine.codes import ReservationState
from engine.kernels.atp import atp_raw, group_buffer
from engine.kernels.index import (
    PREFETCH_ROW_AHEAD,
    PREFETCH_TABLE_AHEAD,
    find_slot,
    hash_key,
    pack_key,
)
from engine.kernels.prefetch import prefetch
from engine.kernels.status import (
    INSUFFICIENT,
    INVALID_QTY,
    NODE_DISABLED,
    OK,
    PARTIAL,
    UNKNOWN_GROUP,
    UNKNOWN_NODE,
    UNKNOWN_SKU,
)
from engine.limits import QTY_MAX
from engine.state import (
    ALLOCATED,
    BACKORDER,
    C_EXPIRED_OUT,
    C_HEAP_LEN,
    C_HEAP_SEQ,
    C_HELD,
    C_LINES_USED,
    EMPTY,
    G_BUFFER_BP,
    G_BUFFER_UNITS,
    G_DEFINED,
    H_EXPIRES_MS,
    H_RES,
    H_SEQ,
    L_FULFILLED,
    L_GRANTED,
    L_HELD,
    L_NODE,
    L_QTY,
    L_SKU,
    L_SLOT,
    L_STATUS,
    N_CAPACITY_DAY,
    N_CAPACITY_USED,
    N_ENABLED,
    N_REGISTERED,
    ON_HAND,
    R_ALLOW_PARTIAL,
    R_CREATED_MS,
    R_EXPIRES_MS,
    R_GROUP,
    R_LINE_COUNT,
    R_LINE_START,
    R_STATE,
    R_TERMINAL_MS,
    RESERVED,
    UNAVAILABLE,
)

HELD = int(ReservationState.HELD)
COMMITTED = int(ReservationState.COMMITTED)
FULFILLED = int(ReservationState.FULFILLED)
RELEASED = int(ReservationState.RELEASED)
EXPIRED = int(ReservationState.EXPIRED)
REJECTED = int(ReservationState.REJECTED)

# Columns of the reserve request matrix (one row per reservation in the batch).
Q_RES = 0
Q_EXPIRES_MS = 1
Q_ALLOW_PARTIAL = 2
Q_GROUP = 3
Q_LINE_COUNT = 4
REQ_COLS = 5

# Per-command outcomes of commit / release / extend / fulfil.
DONE = 0  # applied
REPLAY = 1  # already in the asked-for state: nothing changed
WRONG_STATE = 2  # not allowed from the current state: nothing changed
OVER_HELD = 3  # fulfil more than is held on a line: nothing changed
NO_STOCK = 4  # fulfil more than is on hand (backordered units not yet received): nothing changed

DAY_MS = 86_400_000


# --- the expiry heap --------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _less(heap, a, b):
    if heap[a, H_EXPIRES_MS] != heap[b, H_EXPIRES_MS]:
        return heap[a, H_EXPIRES_MS] < heap[b, H_EXPIRES_MS]
    return heap[a, H_SEQ] < heap[b, H_SEQ]


@njit(inline="always", cache=True)
def _swap(heap, a, b):
    for c in range(heap.shape[1]):
        x = heap[a, c]
        heap[a, c] = heap[b, c]
        heap[b, c] = x


@njit(cache=True)
def _sift_down(heap, i, n):
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        smallest = left
        right = left + 1
        if right < n and _less(heap, right, left):
            smallest = right
        if not _less(heap, smallest, i):
            return
        _swap(heap, i, smallest)
        i = smallest


@njit(inline="always", cache=True)
def _heap_push(heap, ctr, expires_ms, res_idx):
    i = ctr[C_HEAP_LEN]
    ctr[C_HEAP_LEN] = i + 1
    ctr[C_HEAP_SEQ] += 1
    heap[i, H_EXPIRES_MS] = expires_ms
    heap[i, H_SEQ] = ctr[C_HEAP_SEQ]
    heap[i, H_RES] = res_idx
    while i > 0:
        parent = (i - 1) // 2
        if not _less(heap, i, parent):
            break
        _swap(heap, i, parent)
        i = parent


@njit(cache=True)
def heap_push(st, expires_ms, res_idx):
    _heap_push(st.heap, st.ctr, expires_ms, res_idx)


@njit(cache=True)
def _heap_pop(heap, ctr):
    n = ctr[C_HEAP_LEN] - 1
    ctr[C_HEAP_LEN] = n
    if n > 0:
        for c in range(heap.shape[1]):
            heap[0, c] = heap[n, c]
        _sift_down(heap, 0, n)


@njit(inline="always", cache=True)
def _entry_live(heap, res, i):
    r = heap[i, H_RES]
    return res[r, R_STATE] == HELD and res[r, R_EXPIRES_MS] == heap[i, H_EXPIRES_MS]


@njit(cache=True)
def heap_compact(st):
    """Drop stale entries (extended, committed or released holds) and re-heapify."""
    heap = st.heap
    res = st.res
    n = st.ctr[C_HEAP_LEN]
    kept = 0
    for i in range(n):
        if _entry_live(heap, res, i):
            for c in range(heap.shape[1]):
                heap[kept, c] = heap[i, c]
            kept += 1
    st.ctr[C_HEAP_LEN] = kept
    for i in range(kept // 2 - 1, -1, -1):
        _sift_down(heap, i, kept)
    return kept


# --- line helpers -----------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _reservable(qty, slot, g, grp_i64):
    """Units one more hold may take at a position (negative when already over-committed)."""
    free = atp_raw(qty, slot) + qty[slot, BACKORDER]
    if g >= 0:
        free -= group_buffer(
            qty[slot, ON_HAND], grp_i64[g, G_BUFFER_UNITS], grp_i64[g, G_BUFFER_BP]
        )
    return free


@njit(inline="always", cache=True)
def _set_terminal(st, r, state, now_ms):
    st.res[r, R_STATE] = state
    st.res[r, R_TERMINAL_MS] = now_ms


# --- reserve ----------------------------------------------------------------------------------


@njit(cache=True)
def reserve(st, req, lines, now_ms):
    """Reserve a batch of reservations, in order; lines are the concatenation of their lines.

    The caller allocated each reservation index (req[k, Q_RES]) and made room in the line arena
    and the heap. Returns the number of reservations that ended HELD.
    """
    # Every StructRef field is read once, here: a field read costs a reference-count round trip.
    qty = st.qty
    ln = st.ln
    res = st.res
    ctr = st.ctr
    heap = st.heap
    grp_i64 = st.grp_i64
    node_i64 = st.node_i64
    sku_known = st.sku_known
    member = st.member
    table = st.table
    pos_key = st.pos_key
    lines_count = lines.shape[0]
    mask = table.shape[0] - 1
    held_count = 0
    j = 0
    for k in range(req.shape[0]):
        r = req[k, Q_RES]
        g = req[k, Q_GROUP]
        partial = req[k, Q_ALLOW_PARTIAL] != 0
        count = req[k, Q_LINE_COUNT]
        l0 = ctr[C_LINES_USED]
        ctr[C_LINES_USED] = l0 + count
        failed = False
        # Guards, and (all-or-nothing) tentatively add every valid line so that lines for the
        # same position are judged on their sum.
        #
        # The prefetches and the line guard are written out here rather than called as inlined
        # helpers taking arrays: those cost reference-count operations per line that doubled a
        # line's time (183 -> 85 ns in cache).
        for x in range(count):
            ahead = j + x + PREFETCH_TABLE_AHEAD
            if ahead < lines_count:
                prefetch(table, hash_key(pack_key(lines[ahead, 0], lines[ahead, 1]), mask))
            ahead = j + x + PREFETCH_ROW_AHEAD
            if ahead < lines_count:
                first = table[hash_key(pack_key(lines[ahead, 0], lines[ahead, 1]), mask)]
                if first != EMPTY:
                    prefetch(pos_key, first)
                    prefetch(qty, first)
            a = l0 + x
            s = lines[j + x, 0]
            n = lines[j + x, 1]
            q = lines[j + x, 2]
            # The line's status before looking at quantities, in precedence order, and its slot.
            slot = EMPTY
            if q <= 0 or q > QTY_MAX:
                status = INVALID_QTY
            elif g >= 0 and not (0 <= g < grp_i64.shape[0] and grp_i64[g, G_DEFINED] != 0):
                status = UNKNOWN_GROUP
            elif not (0 <= n < node_i64.shape[0] and node_i64[n, N_REGISTERED] != 0):
                status = UNKNOWN_NODE
            elif not (0 <= s < sku_known.shape[0] and sku_known[s] != 0):
                status = UNKNOWN_SKU
            elif node_i64[n, N_ENABLED] == 0:
                status = NODE_DISABLED
            elif g >= 0 and member[g, n] == 0:
                status = INSUFFICIENT
            else:
                slot = find_slot(table, pos_key, s, n)
                status = OK if slot != EMPTY else INSUFFICIENT
            ln[a, L_SLOT] = slot
            ln[a, L_SKU] = s
            ln[a, L_NODE] = n
            ln[a, L_QTY] = q
            ln[a, L_HELD] = 0
            ln[a, L_GRANTED] = 0
            ln[a, L_FULFILLED] = 0
            ln[a, L_STATUS] = status
            if status != OK:
                failed = True
                continue
            if partial:
                grant = min(q, max(0, _reservable(qty, slot, g, grp_i64)))
                qty[slot, RESERVED] += grant
                ln[a, L_HELD] = grant
                ln[a, L_GRANTED] = grant
                if grant == 0:
                    ln[a, L_STATUS] = INSUFFICIENT
                elif grant < q:
                    ln[a, L_STATUS] = PARTIAL
            elif count == 1:
                # A single line is judged on its own: the same outcome as the tentative add
                # below, in one pass (the passes were a sixth of a one-line reserve's time).
                if _reservable(qty, slot, g, grp_i64) < q:
                    ln[a, L_STATUS] = INSUFFICIENT
                    failed = True
                else:
                    qty[slot, RESERVED] += q
                    ln[a, L_HELD] = q
                    ln[a, L_GRANTED] = q
            else:
                qty[slot, RESERVED] += q
        if not partial and count > 1:
            for x in range(count):
                a = l0 + x
                slot = ln[a, L_SLOT]
                if ln[a, L_STATUS] == OK and _reservable(qty, slot, g, grp_i64) < 0:
                    ln[a, L_STATUS] = INSUFFICIENT
                    failed = True
            for x in range(count):
                a = l0 + x
                if ln[a, L_SLOT] != EMPTY:
                    if failed:
                        qty[ln[a, L_SLOT], RESERVED] -= ln[a, L_QTY]
                    else:
                        ln[a, L_HELD] = ln[a, L_QTY]
                        ln[a, L_GRANTED] = ln[a, L_QTY]
        total = 0
        for x in range(count):
            total += ln[l0 + x, L_HELD]
        res[r, R_LINE_START] = l0
        res[r, R_LINE_COUNT] = count
        res[r, R_GROUP] = g
        res[r, R_CREATED_MS] = now_ms
        res[r, R_ALLOW_PARTIAL] = 1 if partial else 0
        if total > 0:
            res[r, R_STATE] = HELD
            res[r, R_EXPIRES_MS] = req[k, Q_EXPIRES_MS]
            res[r, R_TERMINAL_MS] = 0
            _heap_push(heap, ctr, req[k, Q_EXPIRES_MS], r)
            ctr[C_HELD] += 1
            held_count += 1
        else:
            res[r, R_EXPIRES_MS] = 0
            res[r, R_STATE] = REJECTED
            res[r, R_TERMINAL_MS] = now_ms
        j += count
    return held_count


# --- state transitions ------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _move_held(res, ln, qty, r, from_col, to_col):
    """Move (or, with to_col < 0, drop) every line's held units out of bucket from_col."""
    l0 = res[r, R_LINE_START]
    for a in range(l0, l0 + res[r, R_LINE_COUNT]):
        h = ln[a, L_HELD]
        if h == 0:
            continue
        slot = ln[a, L_SLOT]
        qty[slot, from_col] -= h
        if to_col >= 0:
            qty[slot, to_col] += h
        else:
            ln[a, L_HELD] = 0


@njit(inline="always", cache=True)
def _count_capacity(st, r, now_ms):
    """Committed units count against each node's daily capacity."""
    day = now_ms // DAY_MS
    l0 = st.res[r, R_LINE_START]
    for a in range(l0, l0 + st.res[r, R_LINE_COUNT]):
        h = st.ln[a, L_HELD]
        if h == 0:
            continue
        n = st.ln[a, L_NODE]
        if st.node_i64[n, N_CAPACITY_DAY] != day:
            st.node_i64[n, N_CAPACITY_DAY] = day
            st.node_i64[n, N_CAPACITY_USED] = 0
        st.node_i64[n, N_CAPACITY_USED] += h


@njit(inline="always", cache=True)
def _commit_hold(st, r, now_ms):
    """HELD -> COMMITTED: reserved units become allocated and stop expiring."""
    _move_held(st.res, st.ln, st.qty, r, RESERVED, ALLOCATED)
    _count_capacity(st, r, now_ms)
    st.res[r, R_STATE] = COMMITTED
    st.res[r, R_EXPIRES_MS] = 0
    st.ctr[C_HELD] -= 1


@njit(cache=True)
def commit(st, res_idxs, now_ms, out_code):
    for k in range(res_idxs.shape[0]):
        r = res_idxs[k]
        state = st.res[r, R_STATE]
        if state == COMMITTED or state == FULFILLED:  # noqa: SIM109 (numba-friendly)
            out_code[k] = REPLAY
        elif state == HELD and st.res[r, R_EXPIRES_MS] > now_ms:
            _commit_hold(st, r, now_ms)
            out_code[k] = DONE
        else:
            out_code[k] = WRONG_STATE


@njit(cache=True)
def release(st, res_idxs, now_ms, out_code):
    """Give back what a hold or an order still holds. Releasing a finished one is a replay."""
    for k in range(res_idxs.shape[0]):
        r = res_idxs[k]
        state = st.res[r, R_STATE]
        if state == HELD:
            _move_held(st.res, st.ln, st.qty, r, RESERVED, -1)
            _set_terminal(st, r, RELEASED, now_ms)
            st.res[r, R_EXPIRES_MS] = 0
            st.ctr[C_HELD] -= 1
            out_code[k] = DONE
        elif state == COMMITTED:
            _move_held(st.res, st.ln, st.qty, r, ALLOCATED, -1)
            fulfilled = 0
            l0 = st.res[r, R_LINE_START]
            for a in range(l0, l0 + st.res[r, R_LINE_COUNT]):
                fulfilled += st.ln[a, L_FULFILLED]
            _set_terminal(st, r, FULFILLED if fulfilled > 0 else RELEASED, now_ms)
            out_code[k] = DONE
        else:
            out_code[k] = REPLAY


@njit(cache=True)
def extend(st, res_idxs, expires_ms, now_ms, out_code):
    for k in range(res_idxs.shape[0]):
        r = res_idxs[k]
        if st.res[r, R_STATE] == HELD and st.res[r, R_EXPIRES_MS] > now_ms:
            st.res[r, R_EXPIRES_MS] = expires_ms[k]
            heap_push(st, expires_ms[k], r)
            out_code[k] = DONE
        else:
            out_code[k] = WRONG_STATE


@njit(cache=True)
def fulfil(st, res_idxs, op_offsets, line_idxs, qtys, now_ms, out_code):
    """Hand over units of orders; a live hold is committed first.

    Items op_offsets[k]..op_offsets[k+1] belong to reservation res_idxs[k] and name arena lines,
    each at most once per operation.
    """
    qty = st.qty
    ln = st.ln
    for k in range(res_idxs.shape[0]):
        r = res_idxs[k]
        state = st.res[r, R_STATE]
        live_hold = state == HELD and st.res[r, R_EXPIRES_MS] > now_ms
        if state != COMMITTED and not live_hold:
            out_code[k] = WRONG_STATE
            continue
        code = DONE
        for e in range(op_offsets[k], op_offsets[k + 1]):
            if qtys[e] > ln[line_idxs[e], L_HELD]:
                code = OVER_HELD
                break
        if code == DONE:
            # Only sellable units on hand can be handed over (backordered ones are not there
            # yet). Lines of one position are judged on their sum: take them off tentatively.
            for e in range(op_offsets[k], op_offsets[k + 1]):
                qty[ln[line_idxs[e], L_SLOT], ON_HAND] -= qtys[e]
            for e in range(op_offsets[k], op_offsets[k + 1]):
                slot = ln[line_idxs[e], L_SLOT]
                if qty[slot, ON_HAND] < qty[slot, UNAVAILABLE]:
                    code = NO_STOCK
            for e in range(op_offsets[k], op_offsets[k + 1]):
                qty[ln[line_idxs[e], L_SLOT], ON_HAND] += qtys[e]
        out_code[k] = code
        if code != DONE:
            continue
        if live_hold:
            # Handing over a hold (click & collect at the counter) commits it on the way.
            _commit_hold(st, r, now_ms)
        for e in range(op_offsets[k], op_offsets[k + 1]):
            a = line_idxs[e]
            slot = ln[a, L_SLOT]
            qty[slot, ALLOCATED] -= qtys[e]
            qty[slot, ON_HAND] -= qtys[e]
            ln[a, L_HELD] -= qtys[e]
            ln[a, L_FULFILLED] += qtys[e]
        remaining = 0
        l0 = st.res[r, R_LINE_START]
        for a in range(l0, l0 + st.res[r, R_LINE_COUNT]):
            remaining += ln[a, L_HELD]
        if remaining == 0:
            _set_terminal(st, r, FULFILLED, now_ms)


@njit(cache=True)
def expire(st, now_ms):
    """Expire every hold with expires_ms <= now_ms, in (expires_ms, deadline set) order.

    Writes the expired reservation indices to st.expired_out and returns how many.
    """
    heap = st.heap
    ctr = st.ctr
    res = st.res
    ln = st.ln
    qty = st.qty
    expired_out = st.expired_out
    out = 0
    while ctr[C_HEAP_LEN] > 0 and heap[0, H_EXPIRES_MS] <= now_ms:
        live = _entry_live(heap, res, 0)
        r = heap[0, H_RES]
        _heap_pop(heap, ctr)
        if not live:
            continue
        _move_held(res, ln, qty, r, RESERVED, -1)
        res[r, R_STATE] = EXPIRED
        res[r, R_TERMINAL_MS] = now_ms
        ctr[C_HELD] -= 1
        expired_out[out] = r
        out += 1
    ctr[C_EXPIRED_OUT] = out
    return out
