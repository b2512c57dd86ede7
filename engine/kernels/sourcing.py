"""The SourceOrder kernel: choose the nodes that ship an order's lines (docs/sourcing.md).

Each line ships whole from one node. Plans are compared lexicographically by
(most lines fulfilled, fewest shipments, lowest cost, smallest node-per-line vector), where a
plan's cost is the sum of its nodes' costs, each `distance_weight * km - priority_weight *
priority`, summed in node-index order.

1. Candidates: walk each line's SKU chain; a node covers a line when it is eligible (enabled,
   ship-capable, type/group filters, daily capacity left for the line) and its reservable units
   (as the reserve kernel sees them) are at least the line's quantity. Each node becomes a
   coverage bitmask over the lines.
2. Reduction: for every nonempty line subset (mask), keep the K cheapest nodes that can ship
   exactly that subset (covered, and within remaining daily capacity as a whole), where K is the
   most shipments a plan may have. Any optimal plan can be rewritten to use only these nodes.
3. Exact search: depth-first over partitions of the lines (the lowest undecided line either
   joins a mask shipped by one unused node, or stays unfulfilled), pruned by the best plan found
   so far; `work_max` bounds the number of branches tried (the plan then says so).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.kernels.geo import _DEG, haversine_from, node_type_ok
from engine.kernels.index import find_slot
from engine.kernels.reserve import DAY_MS, _reservable
from engine.state import (
    EMPTY,
    INBOUND,
    N_CAPACITY_DAILY,
    N_CAPACITY_DAY,
    N_CAPACITY_USED,
    N_ENABLED,
    N_PRIORITY,
    N_REGISTERED,
    N_SHIP,
    N_TYPE,
)

STORE_TYPE = 2  # codes.NodeType.STORE
LINES_MAX = 12  # masks are int64 and per-mask tables have 2**lines rows
_NODE_MASK = np.int64(0xFFFFFFFF)
_NO_LIMIT = np.int64(1) << 62

# out_info columns
I_COVERED = 0  # lines the plan fulfils
I_SHIPMENTS = 1
I_BOUND_HIT = 2  # 1 when work_max stopped the search (the plan is the best found, not proven)
I_WORK = 3  # branches tried
I_COVERABLE = 4  # mask of lines some eligible node covers on its own
I_BEST_SINGLE = 5  # most lines one eligible node covers
I_CANDIDATES = 6  # eligible nodes covering at least one line
I_CHEAPER = 7  # candidates cheaper than every plan node, not in the plan
I_CHEAPER_BEST = 8  # most lines one of those cheaper candidates covers
I_BEST_SINGLE_NODE = 9  # the cheapest node among those covering I_BEST_SINGLE lines
INFO_COLS = 10

# plan_order parameter vector `ii` (int64): header, info, then per-line arrays.
P_EXCLUDE = 0  # a node never used (-1 = none)
P_TYPE_MASK = 1
P_GROUP = 2  # -1: none
P_SHIP_FROM_STORE = 3
P_RESPECT_CAPACITY = 4
P_MAX_SHIPMENTS = 5  # <= 0: no limit
P_NOW_MS = 6
P_WORK_MAX = 7
P_LINES = 8
P_SKUS = 16  # n sku ids (< 0: unknown), then n quantities
P_ASSIGN = P_SKUS + 2 * LINES_MAX  # out: node shipping line i, or -1
P_INFO = P_ASSIGN + LINES_MAX  # out: INFO_COLS info columns
II_SIZE = P_INFO + INFO_COLS
# `ff` (float64): destination, weights, then per-line outputs.
Q_LAT = 0
Q_LON = 1
Q_DISTANCE_WEIGHT = 2
Q_PRIORITY_WEIGHT = 3
Q_KM = 8  # out: LINES_MAX distances of the line's node
Q_COST = Q_KM + LINES_MAX  # out: LINES_MAX costs of the line's node
FF_SIZE = Q_COST + LINES_MAX
# Node scratch `wn` int64[WN_ROWS, nodes]: masks (kept 0 between calls), node -> candidate
# index (kept -1), candidates, used flags. `wf` float64[WF_ROWS, nodes]: candidate cost, km.
WN_MASK = 0
WN_NODE_POS = 1
WN_TOUCHED = 2
WN_USED = 3
WN_ROWS = 4
WF_ROWS = 2
# Fixed scratch `wt` int64: per-mask tables and the search frames.
_MASKS_MAX = 1 << LINES_MAX
T_QSUM = 0
T_LST_LEN = T_QSUM + _MASKS_MAX
T_LST_NODE = T_LST_LEN + _MASKS_MAX  # [mask, k] at T_LST_NODE + mask * k_cap + k
T_FRAMES = T_LST_NODE + _MASKS_MAX * LINES_MAX
_F = LINES_MAX + 1  # frame columns: depth 0..lines
T_F_U = T_FRAMES
T_F_SUB = T_F_U + _F
T_F_K = T_F_SUB + _F
T_F_PHASE = T_F_K + _F
T_F_NODE = T_F_PHASE + _F
T_F_MASK = T_F_NODE + _F
T_ASSIGN = T_F_MASK + _F
T_BEST = T_ASSIGN + LINES_MAX
T_SEL = T_BEST + LINES_MAX
WT_SIZE = T_SEL + LINES_MAX


@njit(inline="always", cache=True)
def _popcount(x):
    c = 0
    while x:
        x &= x - 1
        c += 1
    return c


@njit(inline="always", cache=True)
def _capacity_left(node_i64, n, day):
    cap = node_i64[n, N_CAPACITY_DAILY]
    if cap <= 0:
        return _NO_LIMIT
    used = node_i64[n, N_CAPACITY_USED] if node_i64[n, N_CAPACITY_DAY] == day else 0
    return cap - used


@njit(inline="always", cache=True)
def node_eligible(st, n, type_mask, g, ship_from_store, exclude):
    ni = st.node_i64
    if n == exclude or ni[n, N_REGISTERED] == 0 or ni[n, N_ENABLED] == 0 or ni[n, N_SHIP] == 0:
        return False
    t = ni[n, N_TYPE]
    if not node_type_ok(type_mask, t):
        return False
    if t == STORE_TYPE and not ship_from_store:
        return False
    return not (g >= 0 and st.member[g, n] == 0)


@njit(inline="always", cache=True)
def _before(cost_a, n_a, cost_b, n_b):
    return cost_a < cost_b or (cost_a == cost_b and n_a < n_b)


@njit(cache=True)
def plan_order(st, ii, ff, wn, wf, wt):
    """Plan lines (distinct SKUs; sku id < 0 = unknown). Returns the plan's total node cost.

    Parameters and outputs are in `ii` / `ff` (layout above); wn / wf / wt are scratch (wn and
    wf with a column per node). out assign[i]: node shipping line i, or -1; out km / cost[i]:
    that node's distance and cost. max_shipments <= 0 means no limit. `exclude` is a node never
    used (-1 = none).
    """
    exclude = ii[P_EXCLUDE]
    type_mask = ii[P_TYPE_MASK]
    g = ii[P_GROUP]
    ship_from_store = ii[P_SHIP_FROM_STORE] != 0
    respect_capacity = ii[P_RESPECT_CAPACITY] != 0
    max_shipments = ii[P_MAX_SHIPMENTS]
    now_ms = ii[P_NOW_MS]
    work_max = ii[P_WORK_MAX]
    n_lines = ii[P_LINES]
    dest_lat = ff[Q_LAT]
    dest_lon = ff[Q_LON]
    distance_weight = ff[Q_DISTANCE_WEIGHT]
    priority_weight = ff[Q_PRIORITY_WEIGHT]
    sku_ids = ii[P_SKUS : P_SKUS + n_lines]
    qtys = ii[P_SKUS + n_lines : P_SKUS + 2 * n_lines]
    out_assign = ii[P_ASSIGN : P_ASSIGN + n_lines]
    out_info = ii[P_INFO : P_INFO + INFO_COLS]
    out_km = ff[Q_KM : Q_KM + n_lines]
    out_cost = ff[Q_COST : Q_COST + n_lines]
    node_i64 = st.node_i64
    n_skus = st.sku_known.shape[0]
    day = now_ms // DAY_MS
    for c in range(INFO_COLS):
        out_info[c] = 0
    for i in range(n_lines):
        out_assign[i] = -1
        out_km[i] = 0.0
        out_cost[i] = 0.0
    out_info[I_BEST_SINGLE_NODE] = -1

    # 1. coverage masks of eligible nodes, walking the lines' SKU chains of positions in
    # lockstep (one step of each chain per round), so the cache misses of the independent
    # chains overlap. The order nodes are found in does not matter: every later choice is
    # ordered by (cost, node index).
    masks = wn[WN_MASK]  # all 0 on entry, reset on exit
    touched = wn[WN_TOUCHED]
    n_touched = 0
    cur = wt[T_SEL : T_SEL + n_lines]  # chain cursors (`sel` is only used by the search)
    active = 0
    for i in range(n_lines):
        s = sku_ids[i]
        cur[i] = EMPTY
        if 0 <= s < n_skus and st.sku_known[s] != 0:
            cur[i] = st.sku_head[s]
            if cur[i] != EMPTY:
                active += 1
    while active > 0:
        for i in range(n_lines):
            slot = cur[i]
            if slot == EMPTY:
                continue
            nxt = st.pos_next[slot]
            cur[i] = nxt
            if nxt == EMPTY:
                active -= 1
            q = qtys[i]
            n = st.pos_key[slot] & _NODE_MASK
            if (
                node_eligible(st, n, type_mask, g, ship_from_store, exclude)
                and _reservable(st.qty, slot, g, st.grp_i64) >= q
                and (not respect_capacity or _capacity_left(node_i64, n, day) >= q)
            ):
                if masks[n] == 0:
                    touched[n_touched] = n
                    n_touched += 1
                masks[n] |= np.int64(1) << i

    # node costs, and the per-mask lists of the K cheapest nodes
    k_max = n_lines if max_shipments <= 0 else min(n_lines, max_shipments)
    n_masks = 1 << n_lines
    qsum = wt[T_QSUM : T_QSUM + n_masks]
    qsum[0] = 0
    for m in range(1, n_masks):
        low = m & -m
        i = 0
        while (1 << i) != low:
            i += 1
        qsum[m] = qsum[m ^ low] + qtys[i]
    k_cap = max(1, k_max)
    lst_node = wt[T_LST_NODE : T_LST_NODE + n_masks * k_cap].reshape((n_masks, k_cap))
    lst_len = wt[T_LST_LEN : T_LST_LEN + n_masks]
    for m in range(n_masks):
        lst_len[m] = 0
    cost = wf[0]
    km = wf[1]
    node_pos = wn[WN_NODE_POS]  # node -> index into touched; all -1 on entry, reset on exit
    coverable = np.int64(0)
    cos_dest = math.cos(dest_lat * _DEG)
    best_single = 0
    best_single_node = -1
    for t in range(n_touched):
        n = touched[t]
        node_pos[n] = t
        d = haversine_from(dest_lat, dest_lon, cos_dest, st.node_f64[n, 0], st.node_f64[n, 1])
        km[t] = d
        cost[t] = distance_weight * d - priority_weight * node_i64[n, N_PRIORITY]
    for t in range(n_touched):
        n = touched[t]
        m_all = masks[n]
        coverable |= m_all
        pc = _popcount(m_all)
        if pc > best_single or (
            pc == best_single
            and best_single_node >= 0
            and _before(cost[t], n, cost[node_pos[best_single_node]], best_single_node)
        ):
            best_single = pc
            best_single_node = n
        cap = _capacity_left(node_i64, n, day) if respect_capacity else _NO_LIMIT
        sub = m_all
        while sub:
            if qsum[sub] <= cap:
                # insert (cost, n) into the sorted list of `sub`, keeping at most k_max
                ln = lst_len[sub]
                pos = ln
                while pos > 0:
                    o = lst_node[sub, pos - 1]
                    if _before(cost[node_pos[o]], o, cost[t], n):
                        break
                    pos -= 1
                if pos < k_max:
                    last = ln if ln < k_max else k_max - 1
                    for j in range(last, pos, -1):
                        lst_node[sub, j] = lst_node[sub, j - 1]
                    lst_node[sub, pos] = n
                    if ln < k_max:
                        lst_len[sub] = ln + 1
            sub = (sub - 1) & m_all
    out_info[I_COVERABLE] = coverable
    out_info[I_BEST_SINGLE] = best_single
    out_info[I_BEST_SINGLE_NODE] = best_single_node
    out_info[I_CANDIDATES] = n_touched

    # 2. exact depth-first search over partitions of the coverable lines
    depth_max = n_lines + 1
    f_u = wt[T_F_U : T_F_U + depth_max]  # undecided lines at this depth
    f_sub = wt[T_F_SUB : T_F_SUB + depth_max]
    f_k = wt[T_F_K : T_F_K + depth_max]
    f_phase = wt[T_F_PHASE : T_F_PHASE + depth_max]  # 0: masks, 1: skip next, 2: exhausted
    f_node = wt[T_F_NODE : T_F_NODE + depth_max]  # node chosen at this depth (-1: skip)
    f_mask = wt[T_F_MASK : T_F_MASK + depth_max]
    for x in range(depth_max):
        f_u[x] = 0
        f_sub[x] = 0
        f_k[x] = 0
        f_phase[x] = 0
        f_node[x] = -1
        f_mask[x] = 0
    used = wn[WN_USED]
    for t in range(n_touched):
        used[t] = 0
    assign = wt[T_ASSIGN : T_ASSIGN + n_lines]
    best_assign = wt[T_BEST : T_BEST + n_lines]
    for i in range(n_lines):
        assign[i] = -1
        best_assign[i] = -1
    best_cov = -1
    best_cnt = 0
    best_cost = 0.0
    sel = wt[T_SEL : T_SEL + n_lines]
    work = 0
    bound_hit = False
    d = 0
    cov = 0
    cnt = 0
    part_cost = 0.0
    f_u[0] = coverable
    f_phase[0] = 0
    f_sub[0] = -1  # "not started"
    while d >= 0:
        u = f_u[d]
        if u == 0:
            # a complete plan: compare with the best
            ns = 0
            for t in range(n_touched):
                if used[t]:
                    sel[ns] = t
                    ns += 1
            # sum in node-index order so equal node sets give bit-identical costs
            for a in range(1, ns):
                x = sel[a]
                b = a
                while b > 0 and touched[sel[b - 1]] > touched[x]:
                    sel[b] = sel[b - 1]
                    b -= 1
                sel[b] = x
            total = 0.0
            for a in range(ns):
                total += cost[sel[a]]
            better = False
            if cov > best_cov:
                better = True
            elif cov == best_cov:
                if cnt < best_cnt:
                    better = True
                elif cnt == best_cnt:
                    if total < best_cost:
                        better = True
                    elif total == best_cost:
                        for i in range(n_lines):
                            a_new = assign[i] if assign[i] >= 0 else _NO_LIMIT
                            a_old = best_assign[i] if best_assign[i] >= 0 else _NO_LIMIT
                            if a_new != a_old:
                                better = a_new < a_old
                                break
            if better:
                best_cov = cov
                best_cnt = cnt
                best_cost = total
                for i in range(n_lines):
                    best_assign[i] = assign[i]
            d -= 1
            if d >= 0:
                # undo the choice made at depth d
                if f_node[d] >= 0:
                    used[node_pos[f_node[d]]] = 0
                    m = f_mask[d]
                    cov -= _popcount(m)
                    cnt -= 1
                    part_cost -= cost[node_pos[f_node[d]]]
                    for i in range(n_lines):
                        if (m >> i) & 1:
                            assign[i] = -1
                f_node[d] = -1
            continue
        if work >= work_max:
            bound_hit = True
            break
        # advance frame d to its next choice
        low = u & -u
        rest = u ^ low
        remaining = _popcount(u)
        chose = False
        while f_phase[d] < 2 and not chose:
            if f_phase[d] == 1:
                f_phase[d] = 2
                # leave the lowest line unfulfilled
                if best_cov < 0 or cov + remaining - 1 >= best_cov:
                    f_node[d] = -1
                    f_mask[d] = low
                    chose = True
                break
            if f_sub[d] < 0:
                f_sub[d] = rest
                f_k[d] = -1
            f_k[d] += 1
            m = f_sub[d] | low
            if f_k[d] < lst_len[m]:
                n = lst_node[m, f_k[d]]
                t = node_pos[n]
                if used[t]:
                    continue
                if max_shipments > 0 and cnt + 1 > max_shipments:
                    continue
                if best_cov >= 0:
                    if cov + remaining < best_cov:
                        continue
                    if cov + remaining == best_cov:
                        if cnt + 1 > best_cnt:
                            continue
                        # with the count fixed, no competitive completion adds a shipment
                        if cnt + 1 == best_cnt and part_cost + cost[t] > best_cost + 1e-9 * (
                            1.0 + abs(best_cost)
                        ):
                            continue
                f_node[d] = n
                f_mask[d] = m
                chose = True
                break
            if f_sub[d] == 0:
                f_phase[d] = 1
            else:
                f_sub[d] = (f_sub[d] - 1) & rest
                f_k[d] = -1
        if not chose:
            # frame exhausted: pop and undo the parent's choice
            d -= 1
            if d >= 0:
                if f_node[d] >= 0:
                    used[node_pos[f_node[d]]] = 0
                    m = f_mask[d]
                    cov -= _popcount(m)
                    cnt -= 1
                    part_cost -= cost[node_pos[f_node[d]]]
                    for i in range(n_lines):
                        if (m >> i) & 1:
                            assign[i] = -1
                f_node[d] = -1
            continue
        work += 1
        m = f_mask[d]
        n = f_node[d]
        if n >= 0:
            t = node_pos[n]
            used[t] = 1
            cov += _popcount(m)
            cnt += 1
            part_cost += cost[t]
            for i in range(n_lines):
                if (m >> i) & 1:
                    assign[i] = n
        d += 1
        f_u[d] = u & ~m
        f_phase[d] = 0
        f_sub[d] = -1
        f_node[d] = -1

    out_info[I_WORK] = work
    out_info[I_BOUND_HIT] = 1 if bound_hit else 0
    if best_cov < 0:
        best_cov = 0
        best_cnt = 0
        best_cost = 0.0
    out_info[I_COVERED] = best_cov
    out_info[I_SHIPMENTS] = best_cnt
    min_plan_cost = 0.0
    first = True
    for i in range(n_lines):
        n = best_assign[i]
        out_assign[i] = n
        if n >= 0:
            t = node_pos[n]
            out_km[i] = km[t]
            out_cost[i] = cost[t]
            if first or cost[t] < min_plan_cost:
                min_plan_cost = cost[t]
                first = False
    # candidates cheaper than every node of the plan (for the explanation)
    if not first:
        cheaper = 0
        cheaper_best = 0
        for t in range(n_touched):
            n = touched[t]
            if cost[t] < min_plan_cost:
                in_plan = False
                for i in range(n_lines):
                    if best_assign[i] == n:
                        in_plan = True
                if not in_plan:
                    cheaper += 1
                    cheaper_best = max(cheaper_best, _popcount(masks[n]))
        out_info[I_CHEAPER] = cheaper
        out_info[I_CHEAPER_BEST] = cheaper_best
    # leave the node scratch clean for the next call
    for t in range(n_touched):
        n = touched[t]
        masks[n] = 0
        node_pos[n] = -1
    return best_cost


@njit(cache=True)
def local_cover(st, sku_ids, qtys, n, g, out_avail, out_inbound):
    """Reservable and inbound units of each line at node n (the pickup node); returns the mask
    of lines it covers. g >= 0 applies the group's buffer (the caller checked membership)."""
    mask = np.int64(0)
    n_skus = st.sku_known.shape[0]
    for i in range(sku_ids.shape[0]):
        out_avail[i] = 0
        out_inbound[i] = 0
        s = sku_ids[i]
        if s < 0 or s >= n_skus:
            continue
        slot = find_slot(st.table, st.pos_key, s, n)
        if slot == EMPTY:
            continue
        a = max(0, _reservable(st.qty, slot, g, st.grp_i64))
        out_avail[i] = a
        out_inbound[i] = st.qty[slot, INBOUND]
        if a >= qtys[i]:
            mask |= np.int64(1) << i
    return mask
