"""FindNearby and SourceOrder over a `Ledger`: validation, the kernel calls, plans and their words.

The rules are in docs/sourcing.md. Everything here reads the ledger's live arrays; nothing
mutates it (source-and-reserve is the ledger's `SourceReserve` command, which calls `plan` and
then the ordinary reserve path with the planned lines).
"""

from __future__ import annotations

import contextlib
import math
import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from engine import limits
from engine.codes import LineStatus, NodeType, ReservationState
from engine.commands import (
    FulfilmentMode,
    Line,
    NearbyNode,
    NearbyResult,
    ReservationResult,
    ReservationView,
    Reserve,
    Shipment,
    SkuQty,
    SourceReserve,
    SourcingPlan,
    SourcingPolicy,
    SourcingResult,
    UnfulfilledLine,
)
from engine.errors import Code, Rejection, id_conflict
from engine.kernels import geo
from engine.kernels import sourcing as ks
from engine.state import G_DEFINED, N_ENABLED, N_PICKUP, N_PRIORITY, N_REGISTERED

if TYPE_CHECKING:
    from engine.ledger import Ledger

__all__ = [
    "NEARBY_LIMIT_DEFAULT",
    "NEARBY_LIMIT_MAX",
    "RADIUS_KM_MAX",
    "SOURCE_LINES_MAX",
    "SEARCH_WORK_MAX",
    "find_nearby",
    "merge_lines",
    "plan",
    "source_reserve",
    "validate_policy",
]

NEARBY_LIMIT_DEFAULT = 10
NEARBY_LIMIT_MAX = geo.NEARBY_LIMIT_MAX
NEARBY_LINES_MAX = geo.NEARBY_LINES_MAX
# Half the Earth's circumference: every point is within this distance.
RADIUS_KM_MAX = 20_040.0
# Distinct SKUs in one SourceOrder (coverage masks have 2**lines entries).
SOURCE_LINES_MAX = ks.LINES_MAX
# Branches the exact search may try before it returns the best plan found so far.
SEARCH_WORK_MAX = 200_000
WEIGHT_MAX = 1e9

assert NEARBY_LIMIT_DEFAULT <= NEARBY_LIMIT_MAX
assert SOURCE_LINES_MAX <= 62 and NEARBY_LINES_MAX <= limits.REQUEST_LINES_MAX

_TYPE_VALUES = frozenset(int(t) for t in NodeType if t != NodeType.UNSPECIFIED)


def _invalid(field: str, message: str) -> Rejection:
    return Rejection(Code.INVALID_ARGUMENT, "FIELD_INVALID", f"{field}: {message}")


def _check_id(value: object, field: str) -> Rejection | None:
    if not isinstance(value, str) or not value:
        return _invalid(field, "must be a non-empty string")
    if len(value.encode()) > limits.ID_BYTES_MAX:
        return _invalid(field, f"longer than {limits.ID_BYTES_MAX} bytes")
    return None


def _id_ok(value: object) -> bool:
    """`_check_id(value) is None`, without building the field name (the hot path)."""
    return (
        isinstance(value, str)
        and value != ""
        and (len(value) <= limits.ID_CHARS_SURELY_OK or len(value.encode()) <= limits.ID_BYTES_MAX)
    )


def _check_point(lat: object, lon: object, prefix: str = "") -> Rejection | None:
    if not isinstance(lat, int | float) or not math.isfinite(lat) or not -90.0 <= lat <= 90.0:
        return _invalid(f"{prefix}lat", f"must be in -90..90, got {lat!r}")
    if not isinstance(lon, int | float) or not math.isfinite(lon) or not -180.0 <= lon <= 180.0:
        return _invalid(f"{prefix}lon", f"must be in -180..180, got {lon!r}")
    return None


def merge_lines(
    lines: Sequence[SkuQty | tuple[str, int]], lines_max: int, *, allow_empty: bool = False
) -> tuple[list[str], list[int]] | Rejection:
    """Validate (sku, qty) lines and merge duplicate SKUs (quantities summed, first-seen order)."""
    if not lines and not allow_empty:
        return _invalid("lines", "must have at least one line")
    if len(lines) > limits.REQUEST_LINES_MAX:
        return _invalid("lines", f"more than {limits.REQUEST_LINES_MAX} lines ({len(lines)})")
    merged: dict[str, int] = {}
    qty_max = limits.QTY_MAX
    for i, line in enumerate(lines):
        sku, qty = (line.sku, line.qty) if isinstance(line, SkuQty) else line
        if not _id_ok(sku):
            return _check_id(sku, f"lines[{i}].sku") or _invalid(f"lines[{i}].sku", "invalid")
        if type(qty) is not int or not 1 <= qty <= qty_max:  # noqa: E721
            return _invalid(f"lines[{i}].qty", f"must be an integer in 1..{qty_max}")
        total = merged.get(sku, 0) + qty
        if total > qty_max:
            return _invalid(f"lines[{i}].qty", f"{sku!r} totals more than {qty_max}")
        merged[sku] = total
    if len(merged) > lines_max:
        return _invalid("lines", f"more than {lines_max} distinct SKUs ({len(merged)})")
    return list(merged), list(merged.values())


def _type_mask(types: Sequence[int], field: str) -> int | Rejection:
    mask = 0
    for i, t in enumerate(types):
        if int(t) not in _TYPE_VALUES:
            return _invalid(f"{field}[{i}]", f"unknown node type {t!r}")
        mask |= 1 << int(t)
    return mask


def validate_policy(policy: SourcingPolicy) -> Rejection | None:
    f = "policy."
    if type(policy.max_shipments) is not int or not 0 <= policy.max_shipments <= 1_000:  # noqa: E721
        return _invalid(f + "max_shipments", "must be in 0..1000 (0 = no limit)")
    for name in ("distance_weight", "priority_weight", "split_penalty"):
        w = getattr(policy, name)
        if not isinstance(w, int | float) or not math.isfinite(w) or not 0 <= w <= WEIGHT_MAX:
            return _invalid(f + name, f"must be a finite number in 0..{WEIGHT_MAX:g}")
    if policy.group_id and _check_id(policy.group_id, f + "group_id") is not None:
        return _invalid(f + "group_id", f"longer than {limits.ID_BYTES_MAX} bytes")
    bad = _type_mask(policy.node_types, f + "node_types")
    return bad if isinstance(bad, Rejection) else None


_policy_masks: dict[SourcingPolicy, int] = {}
_POLICY_CACHE_MAX = 1_024


def _policy_mask(policy: SourcingPolicy) -> int | Rejection:
    """Validate the policy (cached for policies seen valid) and return its node-type mask."""
    last = _last_policy
    if last[0] is policy:
        return last[1]
    mask: int | Rejection | None
    try:
        mask = _policy_masks.get(policy)
    except TypeError:  # an unhashable field: validate it the long way
        mask = None
    # (a cached equal policy may differ in a bool that validation rejects as an int)
    if mask is not None and type(policy.max_shipments) is int:  # noqa: E721
        return mask
    bad = validate_policy(policy)
    if bad is not None:
        return bad
    mask = _type_mask(policy.node_types, "policy.node_types")
    assert not isinstance(mask, Rejection)
    if len(_policy_masks) >= _POLICY_CACHE_MAX:
        _policy_masks.clear()
    with contextlib.suppress(TypeError):
        _policy_masks[policy] = mask
    return mask


def _remember_policy(policy: SourcingPolicy, mask: int) -> None:
    global _last_policy
    _last_policy = (policy, mask)


_last_policy: tuple[object, int] = (None, 0)


def _group(ledger: Ledger, group_id: str) -> int | None:
    """Group index, -1 for none, None when the group is not defined."""
    if not group_id:
        return -1
    g = ledger._groups.ids.get(group_id)
    if g is None or ledger._a["grp_i64"][g, G_DEFINED] == 0:
        return None
    return g


# --- FindNearby -------------------------------------------------------------------------------


def find_nearby(
    ledger: Ledger,
    lat: float,
    lon: float,
    radius_km: float,
    lines: Sequence[SkuQty | tuple[str, int]] = (),
    *,
    limit: int = 0,
    pickup_only: bool = False,
    node_types: Sequence[int] = (),
    group_id: str = "",
    full_cart_only: bool = False,
    full_cart_first: bool = False,
) -> NearbyResult | Rejection:
    bad = _check_point(lat, lon)
    if bad is not None:
        return bad
    if (
        not isinstance(radius_km, int | float)
        or not math.isfinite(radius_km)
        or not 0 < radius_km <= RADIUS_KM_MAX
    ):
        return _invalid("radius_km", f"must be in (0, {RADIUS_KM_MAX:g}], got {radius_km!r}")
    if type(limit) is not int or not 0 <= limit <= NEARBY_LIMIT_MAX:  # noqa: E721
        return _invalid("limit", f"must be in 0..{NEARBY_LIMIT_MAX} (0 = default)")
    if len(lines) > NEARBY_LINES_MAX:
        return _invalid("lines", f"more than {NEARBY_LINES_MAX} lines ({len(lines)})")
    ws = _workspace(ledger)
    ii = ws.nb_ii
    n_lines = len(lines)
    skus: list[str] = []
    totals: dict[str, int] = {}
    sku_index = ledger._skus.ids
    for i, line in enumerate(lines):
        sku, qty = (line.sku, line.qty) if isinstance(line, SkuQty) else line
        if not _id_ok(sku):
            return _check_id(sku, f"lines[{i}].sku") or _invalid(f"lines[{i}].sku", "invalid")
        if type(qty) is not int or not 1 <= qty <= limits.QTY_MAX:  # noqa: E721
            return _invalid(f"lines[{i}].qty", f"must be an integer in 1..{limits.QTY_MAX}")
        skus.append(sku)
        totals[sku] = totals.get(sku, 0) + qty
    mask = _type_mask(node_types, "node_types") if node_types else 0
    if isinstance(mask, Rejection):
        return mask
    k = limit or NEARBY_LIMIT_DEFAULT
    g = _group(ledger, group_id)
    if g is None:
        return NearbyResult((), (LineStatus.UNKNOWN_GROUP,) * n_lines)
    sku_ids = [sku_index.get(s, -1) for s in skus]
    # A SKU asked for twice must be covered in its total.
    ff = ws.nb_ff
    _NEARBY_IN[n_lines].pack_into(
        ii,  # type: ignore[arg-type]  # (an ndarray is a buffer: see _NEARBY_IN)
        0,
        n_lines,
        k,
        mask,
        bool(pickup_only),
        g,
        bool(full_cart_only),
        bool(full_cart_first),
        0,
        *sku_ids,
        *[totals[s] for s in skus],
    )
    _NEARBY_FF.pack_into(ff, 0, lat, lon, radius_km)  # type: ignore[arg-type]
    count = geo.find_nearby(ledger._st, ii, ff, ws.cand_n, ws.cand_d)
    known = ledger._a["sku_known"]
    ok, unknown = LineStatus.OK, LineStatus.UNKNOWN_SKU
    statuses = tuple(ok if s >= 0 and known[s] else unknown for s in sku_ids)
    if not count:
        return NearbyResult((), statuses)
    names = ledger._nodes.names
    w = 2 + n_lines
    rows = ii[geo.F_OUT : geo.F_OUT + count * w].tolist()
    dist = ff[geo.FF_DIST : geo.FF_DIST + count].tolist()
    nodes: list[NearbyNode] = []
    add = nodes.append
    b = 0
    for d in dist:
        add(NearbyNode(names[rows[b]], d, tuple(rows[b + 2 : b + w]), rows[b + 1] == 1))
        b += w
    return NearbyResult(tuple(nodes), statuses)


# Packers for the kernels' parameter vectors, by line count: struct.pack_into / unpack_from on
# the preallocated arrays cost a fraction of numpy slice assignment from lists and `tolist`.
# (Their `# type: ignore[arg-type]`: an ndarray is a buffer, but numpy's stubs declare
# `__buffer__` only for Python >= 3.12 and mypy checks as 3.11.)
_NEARBY_IN = [struct.Struct(f"{geo.F_HEADER + 2 * n}q") for n in range(NEARBY_LINES_MAX + 1)]
_NEARBY_FF = struct.Struct("3d")


class _Workspace:
    """Preallocated kernel parameter, output and scratch arrays (one set per thread).

    Node-sized scratch grows with the node table. The plan kernel leaves its node scratch
    clean (masks 0, positions -1) for the next call.
    """

    def __init__(self) -> None:
        self.nodes = 0
        self.nb_ii = np.zeros(geo.II_SIZE, np.int64)
        self.nb_ff = np.zeros(geo.FF_SIZE, np.float64)
        self.cand_n = np.zeros(0, np.int64)
        self.cand_d = np.zeros(0, np.float64)
        self.pl_ii = np.zeros(ks.II_SIZE, np.int64)
        self.pl_ff = np.zeros(ks.FF_SIZE, np.float64)
        self.pl_wt = np.zeros(ks.WT_SIZE, np.int64)
        self.pl_wn = np.zeros((ks.WN_ROWS, 0), np.int64)
        self.pl_wf = np.zeros((ks.WF_ROWS, 0), np.float64)

    def grow(self, nodes: int) -> None:
        self.nodes = nodes
        self.cand_n = np.zeros(nodes, np.int64)
        self.cand_d = np.zeros(nodes, np.float64)
        wn = np.zeros((ks.WN_ROWS, nodes), np.int64)
        wn[ks.WN_NODE_POS] = -1
        self.pl_wn = wn
        self.pl_wf = np.zeros((ks.WF_ROWS, nodes), np.float64)


_local = threading.local()


def _workspace(ledger: Ledger) -> _Workspace:
    try:
        ws: _Workspace = _local.ws
    except AttributeError:
        ws = _local.ws = _Workspace()
    nodes = ledger._a["node_i64"].shape[0]
    if ws.nodes < nodes:
        ws.grow(nodes)
    return ws


# --- SourceOrder ------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def plan(
    ledger: Ledger,
    lines: Sequence[SkuQty | tuple[str, int]],
    *,
    mode: FulfilmentMode | int = FulfilmentMode.SHIP,
    lat: float = 0.0,
    lon: float = 0.0,
    pickup_node_id: str = "",
    policy: SourcingPolicy | None = None,
    now_ms: int | None = None,
) -> tuple[SourcingPlan, tuple[Line, ...]] | Rejection:
    """The plan, and the (sku, node, qty) lines it would hold. Reads only."""
    policy = policy or _DEFAULT_POLICY
    merged = merge_lines(lines, SOURCE_LINES_MAX)
    if isinstance(merged, Rejection):
        return merged
    type_mask = _policy_mask(policy)
    if isinstance(type_mask, Rejection):
        return type_mask
    _remember_policy(policy, type_mask)
    skus, qtys = merged
    if mode == FulfilmentMode.SHIP:
        bad = _check_point(lat, lon, "ship_to.")
        if bad is not None:
            return bad
        if pickup_node_id:
            return _invalid("pickup_node_id", "must be empty in mode SHIP (use ship_to)")
    elif mode == FulfilmentMode.PICKUP:
        bad = _check_id(pickup_node_id, "pickup_node_id")
        if bad is not None:
            return bad
    else:
        return _invalid("mode", "must be SHIP or PICKUP")
    now = ledger.now_ms if now_ms is None else now_ms
    g = _group(ledger, policy.group_id) if policy.group_id else -1
    if g is None:
        return _nothing(skus, qtys, LineStatus.UNKNOWN_GROUP, "group_id is not a defined group")
    get = ledger._skus.ids.get
    sku_ids = [get(s, -1) for s in skus]
    if mode == FulfilmentMode.PICKUP:
        return _plan_pickup(ledger, skus, qtys, sku_ids, pickup_node_id, g, policy, now)
    return _plan_ship(ledger, skus, qtys, sku_ids, lat, lon, g, policy, now)


_DEFAULT_POLICY = SourcingPolicy()


def _nothing(
    skus: list[str], qtys: list[int], reason: LineStatus, why: str
) -> tuple[SourcingPlan, tuple[Line, ...]]:
    unfulfilled = tuple(UnfulfilledLine(s, q, reason) for s, q in zip(skus, qtys, strict=True))
    return SourcingPlan((), 0, 0.0, unfulfilled, f"nothing can be fulfilled: {why}"), ()


def _run_kernel(
    ledger: Ledger,
    sku_ids: list[int],
    qtys: list[int],
    lat: float,
    lon: float,
    exclude: int,
    g: int,
    policy: SourcingPolicy,
    max_shipments: int,
    now: int,
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
    n = len(sku_ids)
    mask = _policy_mask(policy)
    assert not isinstance(mask, Rejection)
    ws = _workspace(ledger)
    ii = ws.pl_ii
    ff = ws.pl_ff
    _PLAN_IN[n].pack_into(
        ii,  # type: ignore[arg-type]  # (an ndarray is a buffer: see _NEARBY_IN)
        0,
        exclude,
        mask,
        g,
        bool(policy.allow_ship_from_store),
        bool(policy.respect_capacity),
        max_shipments,
        now,
        SEARCH_WORK_MAX,
        n,
        *sku_ids,
        *qtys,
    )
    _PLAN_FF.pack_into(ff, 0, lat, lon, policy.distance_weight, policy.priority_weight)  # type: ignore[arg-type]
    ks.plan_order(ledger._st, ii, ff, ws.pl_wn, ws.pl_wf, ws.pl_wt)
    out_i = _PLAN_OUT_I[n].unpack_from(ii, ks.P_ASSIGN * 8)  # type: ignore[arg-type]
    out_f = _PLAN_OUT_F[n].unpack_from(ff, ks.Q_KM * 8)  # type: ignore[arg-type]
    return out_i[:n], out_f[:n], out_f[n:], out_i[n:]


_PLAN_IN = [
    struct.Struct(f"{ks.P_LINES + 1}q{(ks.P_SKUS - ks.P_LINES - 1) * 8}x{2 * n}q")
    for n in range(ks.LINES_MAX + 1)
]
_PLAN_OUT_I = [
    struct.Struct(f"{n}q{(ks.LINES_MAX - n) * 8}x{ks.INFO_COLS}q") for n in range(ks.LINES_MAX + 1)
]
_PLAN_OUT_F = [struct.Struct(f"{n}d{(ks.LINES_MAX - n) * 8}x{n}d") for n in range(ks.LINES_MAX + 1)]
_PLAN_FF = struct.Struct("4d")


def _unfulfilled_reason(ledger: Ledger, sku_id: int) -> LineStatus:
    if sku_id < 0 or not ledger._a["sku_known"][sku_id]:
        return LineStatus.UNKNOWN_SKU
    return LineStatus.INSUFFICIENT


def _shipments(
    ledger: Ledger,
    skus: list[str],
    qtys: list[int],
    assign: Sequence[int],
    km: Sequence[float],
    cost: Sequence[float],
    *,
    is_transfer: bool,
) -> list[Shipment]:
    """Group the assigned lines by node, in order of each node's first line."""
    names = ledger._nodes.names
    by_node: dict[int, list[int]] = {}
    for i, n in enumerate(assign):
        if n >= 0:
            idx = by_node.get(n)
            if idx is None:
                by_node[n] = [i]
            else:
                idx.append(i)
    out = []
    for n, idx in by_node.items():
        name = names[n]
        i0 = idx[0]
        out.append(
            Shipment(
                name,
                tuple([Line(skus[i], name, qtys[i]) for i in idx]),
                km[i0],
                cost[i0],
                is_transfer,
            )
        )
    return out


def _node_id(s: Shipment) -> str:
    return s.node_id


def _finish(
    shipments: list[Shipment],
    unfulfilled: list[UnfulfilledLine],
    policy: SourcingPolicy,
    words: list[str],
) -> tuple[SourcingPlan, tuple[Line, ...]]:
    count = len(shipments)
    if count > 1:
        total = sum(s.cost for s in sorted(shipments, key=_node_id))
        total += policy.split_penalty * (count - 1)
        held = tuple([line for s in shipments for line in s.lines])
    elif count == 1:
        total = 0 + shipments[0].cost  # as sum() would
        held = shipments[0].lines
    else:
        total = 0
        held = ()
    return (
        SourcingPlan(tuple(shipments), count, total, tuple(unfulfilled), "; ".join(words)),
        held,
    )


def _search_words(
    ledger: Ledger,
    info: Sequence[int],
    n_lines: int,
    policy: SourcingPolicy,
    max_shipments: int,
    shipments: list[Shipment],
) -> list[str]:
    names = ledger._nodes.names
    words: list[str] = []
    covered = info[ks.I_COVERED]
    nearer = "nearer" if policy.priority_weight == 0 else "cheaper"
    if covered == 0:
        if info[ks.I_CANDIDATES] == 0:
            words.append("no eligible node covers any line")
        else:
            words.append(f"max_shipments={max_shipments} allows no shipment")
    elif len(shipments) == 1:
        node = shipments[0].node_id
        if covered == n_lines:
            words.append(f"single node {node} covers all {_plural(n_lines, 'line')}")
        else:
            words.append(f"node {node} covers {covered}/{n_lines} lines")
    else:
        best = info[ks.I_BEST_SINGLE_NODE]
        words.append(
            f"no eligible node covers all {n_lines} lines (best: {names[best]} covers "
            f"{info[ks.I_BEST_SINGLE]}/{n_lines}); {len(shipments)} shipments is the fewest "
            f"that fulfil {covered}/{n_lines}"
        )
    if info[ks.I_CHEAPER]:
        words.append(
            f"{_plural(info[ks.I_CHEAPER], nearer + ' node')} cover at most "
            f"{info[ks.I_CHEAPER_BEST]}/{n_lines}"
        )
    coverable = bin(info[ks.I_COVERABLE]).count("1")
    if covered < coverable:
        words.append(
            f"max_shipments={max_shipments} leaves {coverable - covered} coverable "
            f"{'line' if coverable - covered == 1 else 'lines'} unfulfilled"
        )
    if info[ks.I_BOUND_HIT]:
        words.append(
            f"search stopped at its bound of {SEARCH_WORK_MAX} branches: best plan found, "
            "not proven optimal"
        )
    return words


def _plan_ship(
    ledger: Ledger,
    skus: list[str],
    qtys: list[int],
    sku_ids: list[int],
    lat: float,
    lon: float,
    g: int,
    policy: SourcingPolicy,
    now: int,
) -> tuple[SourcingPlan, tuple[Line, ...]]:
    assign, km, cost, info = _run_kernel(
        ledger, sku_ids, qtys, lat, lon, -1, g, policy, policy.max_shipments, now
    )
    shipments = _shipments(ledger, skus, qtys, assign, km, cost, is_transfer=False)
    unfulfilled = (
        [
            UnfulfilledLine(skus[i], qtys[i], _unfulfilled_reason(ledger, s))
            for i, s in enumerate(sku_ids)
            if assign[i] < 0
        ]
        if -1 in assign
        else []
    )
    words = _search_words(ledger, info, len(skus), policy, policy.max_shipments, shipments)
    if unfulfilled:
        words.append(
            "cannot fulfil " + ", ".join(f"{u.sku} x{u.qty} ({u.reason.name})" for u in unfulfilled)
        )
    return _finish(shipments, unfulfilled, policy, words)


def _plan_pickup(
    ledger: Ledger,
    skus: list[str],
    qtys: list[int],
    sku_ids: list[int],
    pickup_node_id: str,
    g: int,
    policy: SourcingPolicy,
    now: int,
) -> tuple[SourcingPlan, tuple[Line, ...]]:
    n = ledger._nodes.ids.get(pickup_node_id, -1)
    node_i64 = ledger._a["node_i64"]
    if n < 0 or not node_i64[n, N_REGISTERED]:
        return _nothing(skus, qtys, LineStatus.UNKNOWN_NODE, f"{pickup_node_id} is not a node")
    if not node_i64[n, N_ENABLED] or not node_i64[n, N_PICKUP]:
        return _nothing(
            skus, qtys, LineStatus.NODE_DISABLED, f"{pickup_node_id} does not take pickups now"
        )
    member = g < 0 or bool(ledger._a["member"][g, n])
    n_lines = len(skus)
    local = 0
    inbound_l = [0] * n_lines
    avail_l = [0] * n_lines
    if member:
        sku_arr = np.array(sku_ids, np.int64)
        qty_arr = np.array(qtys, np.int64)
        avail = np.empty(n_lines, np.int64)
        inbound = np.empty(n_lines, np.int64)
        local = int(ks.local_cover(ledger._st, sku_arr, qty_arr, n, g, avail, inbound))
        inbound_l = inbound.tolist()
        avail_l = avail.tolist()
    prio_cost = 0.0 - policy.priority_weight * float(node_i64[n, N_PRIORITY]) + 0.0
    local_idx = [i for i in range(n_lines) if (local >> i) & 1]
    shipments: list[Shipment] = []
    if local_idx:
        shipments.append(
            Shipment(
                pickup_node_id,
                tuple(Line(skus[i], pickup_node_id, qtys[i]) for i in local_idx),
                0.0,
                prio_cost,
            )
        )
    words: list[str] = []
    if len(local_idx) == n_lines:
        words.append(f"pickup node {pickup_node_id} covers all {_plural(n_lines, 'line')}")
        return _finish(shipments, [], policy, words)
    missing = [i for i in range(n_lines) if not (local >> i) & 1]
    words.append(
        f"pickup node {pickup_node_id} covers {len(local_idx)}/{n_lines} lines; "
        f"{len(missing)} by transfer"
    )
    transfers_max = policy.max_shipments
    if transfers_max > 0 and local_idx:
        transfers_max -= 1
    assign_all = [-1] * n_lines
    km_all = [0.0] * n_lines
    cost_all = [0.0] * n_lines
    if policy.max_shipments == 0 or transfers_max > 0:
        lat, lon = ledger._a["node_f64"][n].tolist()
        sub_skus = [sku_ids[i] for i in missing]
        sub_qtys = [qtys[i] for i in missing]
        assign, km, cost, info = _run_kernel(
            ledger, sub_skus, sub_qtys, lat, lon, n, g, policy, transfers_max, now
        )
        for j, i in enumerate(missing):
            assign_all[i], km_all[i], cost_all[i] = assign[j], km[j], cost[j]
        transfers = _shipments(ledger, skus, qtys, assign_all, km_all, cost_all, is_transfer=True)
        # Lines are distinct SKUs here (duplicates were merged).
        ready = {
            skus[i]: _ready_at(ledger, skus[i], qtys[i], avail_l[i], pickup_node_id)
            for i in missing
            if inbound_l[i] > 0
        }
        if ready:
            transfers = [_with_ready_at(s, ready) for s in transfers]
        words += [
            "transfers: " + w
            for w in _search_words(ledger, info, len(missing), policy, transfers_max, transfers)
        ]
        shipments += transfers
    else:
        words.append(f"max_shipments={policy.max_shipments} leaves no room for a transfer")
    for i in missing:
        if inbound_l[i] > 0:
            when = _ready_at(ledger, skus[i], qtys[i], avail_l[i], pickup_node_id)
            words.append(
                f"{skus[i]}: {inbound_l[i]} units inbound to {pickup_node_id}"
                + (
                    f", enough there by {when} ms"
                    if when
                    else ", not enough with a known arrival time"
                )
            )
    unfulfilled = [
        UnfulfilledLine(skus[i], qtys[i], _unfulfilled_reason(ledger, sku_ids[i]))
        for i in missing
        if assign_all[i] < 0
    ]
    if unfulfilled:
        words.append(
            "cannot fulfil " + ", ".join(f"{u.sku} x{u.qty} ({u.reason.name})" for u in unfulfilled)
        )
    return _finish(shipments, unfulfilled, policy, words)


def _ready_at(ledger: Ledger, sku: str, qty: int, avail: int, node_id: str) -> int:
    """The earliest expected_at_ms by which `avail` reservable units at `node_id` plus its
    in-transit transfers of `sku` with a known arrival cover `qty`; 0 if they never do."""
    have = avail
    for expected_at_ms, units in ledger.dated_inbound(sku, node_id, 2**62):
        have += units
        if have >= qty:
            return expected_at_ms
    return 0


def _with_ready_at(s: Shipment, ready: dict[str, int]) -> Shipment:
    """A transfer leg is ready when its last line is; unknown (0) if any line's time is."""
    whens = [ready.get(line.sku, 0) for line in s.lines]
    return s if 0 in whens else msgspec.structs.replace(s, ready_at_ms=max(whens))


# --- source-and-reserve -----------------------------------------------------------------------

_encode = msgspec.msgpack.Encoder().encode
_plan_decoder = msgspec.msgpack.Decoder(SourcingPlan)


def source_reserve(ledger: Ledger, cmd: SourceReserve, now: int) -> object:
    """Apply one SourceReserve inside the ledger's batch: plan from the live state, then hold
    exactly the planned lines through the ordinary reserve path (so plan and hold agree).

    Idempotent like Reserve: the same reservation_id with the same content answers the stored
    plan and the reservation's current view, replayed; other content is ID_CONFLICT. A plan with
    nothing to hold creates no reservation and is remembered as REJECTED for the id window.
    """
    bad = _check_id(cmd.reservation_id, "reservation_id")
    if bad is not None:
        return bad
    if type(cmd.ttl_ms) is not int or not limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX:  # noqa: E721
        return _invalid("ttl_ms", f"must be in {limits.TTL_MS_MIN}..{limits.TTL_MS_MAX}")
    content = _encode(cmd)
    key = "SourceReserve:" + cmd.reservation_id
    seen = ledger._sourced.get(cmd.reservation_id) or ledger._requests.get(key)
    if seen is not None:
        if seen[0] != content:
            return id_conflict("reservation_id", cmd.reservation_id)
        plan_ = _plan_decoder.decode(seen[1])
        r = ledger._res_ids.get(cmd.reservation_id)
        view = ledger._view(r) if r is not None else _rejected_view(cmd, now)
        return SourcingResult(plan_, view, True)
    if cmd.reservation_id in ledger._res_ids:
        return id_conflict("reservation_id", cmd.reservation_id)
    result = plan(
        ledger,
        cmd.lines,
        mode=cmd.mode,
        lat=cmd.lat,
        lon=cmd.lon,
        pickup_node_id=cmd.pickup_node_id,
        policy=cmd.policy,
        now_ms=now,
    )
    if isinstance(result, Rejection):
        return result
    plan_, held = result
    if not held:
        ledger._remember_request(key, content, _encode(plan_), now)
        return SourcingResult(plan_, _rejected_view(cmd, now), False)
    reserve_cmd = Reserve(cmd.reservation_id, held, cmd.ttl_ms, False, cmd.policy.group_id)
    outcome = ledger._reserve_run([reserve_cmd], now)[0]
    if isinstance(outcome, Rejection):
        return outcome
    assert isinstance(outcome, ReservationResult)
    # The plan was computed from this very state, so the hold cannot fall short.
    assert outcome.reservation.state == ReservationState.HELD, outcome
    ledger._sourced[cmd.reservation_id] = (content, _encode(plan_))
    return SourcingResult(plan_, outcome.reservation, False)


def _rejected_view(cmd: SourceReserve, now: int) -> ReservationView:
    return ReservationView(
        reservation_id=cmd.reservation_id,
        state=ReservationState.REJECTED,
        lines=(),
        expires_at_ms=0,
        created_at_ms=now,
        group_id=cmd.policy.group_id,
    )
