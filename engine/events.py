"""Stock events: after each batch, the positions and tracked groups whose availability changed.

Every event is one of (the wire's `EventKind` numbers):

- `OUT_OF_STOCK`: available went from > 0 to 0;
- `BACK_IN_STOCK`: available went from 0 to > 0;
- `LOW_STOCK`: available fell to or below the low-stock threshold from above it (still > 0);
- `CHANGED`: available changed without crossing anything.

There is at most one event per position (and per tracked (sku, group)) per batch, carrying the
quantities after the batch: changes inside a batch are coalesced, and a crossing wins over a
plain change. Events are a pure function of the batches applied: each carries a sequence number
counted by the ledger (contiguous from 1, kept in snapshots), so a replica or a restarted server
numbers the same event the same way.

How a batch finds its events without looking at unchanged positions: the ledger tells the
`Tracker` what the batch touched (the reservations of reserve / commit / release / fulfil /
source-reserve commands and of expired holds, whose lines name their positions; the
(sku, node) pairs of supply lines and transfers; nodes whose enabled flag may have changed), and
one kernel compares each touched position's available with the last one published (an int32 per
position, `ev_last`, clamped at 2^31 - 1: a change among availabilities above two billion units
is not reported). Groups are tracked once a threshold names them: for each SKU touched in the
batch, the kernel recomputes the SKU's available in each tracked group (one walk of the SKU's
chain) and compares it with the last one published (an int64 per tracked group and SKU).

Thresholds come from the `SetThresholds` command (journaled like every mutation): per position
(`node_id`), per (sku, group) (`group_id`), or a group's default (`group_id` with `sku` ""). A
threshold of 0 means no LOW_STOCK events. Per-position thresholds are an int32 per position
(`ev_low`, in snapshots); group thresholds are in the snapshot's meta. The last-published arrays
are not in snapshots: after every batch they equal the current availability, so a restore
recomputes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from engine import limits
from engine.commands import (
    Commit,
    Fulfil,
    Release,
    Reserve,
    ReserveColumns,
    SetThresholds,
    SourceReserve,
    UpsertGroups,
    UpsertNodes,
)
from engine.errors import Code, Rejection
from engine.kernels import events as kernel
from engine.state import C_POSITIONS, EMPTY, R_LINE_COUNT

if TYPE_CHECKING:
    from engine.ledger import Ledger

__all__ = [
    "EventBatch",
    "EventKind",
    "StockEvent",
    "Tracker",
    "KIND_CHANGED",
    "KIND_OUT_OF_STOCK",
    "KIND_LOW_STOCK",
    "KIND_BACK_IN_STOCK",
    "CROSSINGS",
]

KIND_CHANGED = kernel.KIND_CHANGED
KIND_OUT_OF_STOCK = kernel.KIND_OUT_OF_STOCK
KIND_LOW_STOCK = kernel.KIND_LOW_STOCK
KIND_BACK_IN_STOCK = kernel.KIND_BACK_IN_STOCK
CROSSINGS = frozenset((KIND_OUT_OF_STOCK, KIND_LOW_STOCK, KIND_BACK_IN_STOCK))
EventKind = int

_RES_COMMANDS = (Reserve, Commit, Release, Fulfil, SourceReserve)
_EMPTY_I64 = np.zeros(0, np.int64)
_EMPTY_U8 = np.zeros(0, np.uint8)


class StockEvent(msgspec.Struct, frozen=True):
    seq: int
    sku: str
    node_id: str  # "" for a group event
    group_id: str  # "" for a position event
    kind: int  # KIND_*
    quantities: tuple[int, int, int, int, int, int, int]  # the wire's Quantities order
    at_ms: int


class EventBatch:
    """The events of one batch, columnar (`rows` is int64[n, kernels.events.EVENT_COLS]).

    Sequence numbers are `seq_first .. seq_first + n - 1`, in row order. Names are resolved
    lazily from the ledger's interned lists (append-only, so old ids stay valid).
    """

    __slots__ = ("seq_first", "at_ms", "rows", "_skus", "_nodes", "_groups")

    def __init__(
        self,
        seq_first: int,
        at_ms: int,
        rows: np.ndarray,
        skus: list[str],
        nodes: list[str],
        groups: list[str],
    ) -> None:
        self.seq_first = seq_first
        self.at_ms = at_ms
        self.rows = rows
        self._skus = skus
        self._nodes = nodes
        self._groups = groups

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def seq_last(self) -> int:
        return self.seq_first + len(self) - 1

    def to_list(self) -> list[StockEvent]:
        skus = self._skus
        nodes = self._nodes
        groups = self._groups
        out = []
        seq = self.seq_first
        for row in self.rows.tolist():
            out.append(
                StockEvent(
                    seq=seq,
                    sku=skus[row[kernel.E_SKU]],
                    node_id=nodes[row[kernel.E_NODE]] if row[kernel.E_NODE] >= 0 else "",
                    group_id=groups[row[kernel.E_GROUP]] if row[kernel.E_GROUP] >= 0 else "",
                    kind=row[kernel.E_KIND],
                    quantities=tuple(row[kernel.E_QTY : kernel.E_QTY + 7]),  # type: ignore[arg-type]
                    at_ms=self.at_ms,
                )
            )
            seq += 1
        return out


class _Meta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The tracker's half of a snapshot's meta."""

    seq: int
    groups: list[int]  # tracked group indexes, in the order they were first named
    group_low_default: list[int]
    group_low: list[list[tuple[int, int]]]  # per tracked group: (sku_id, threshold) overrides


class Tracker:
    """The ledger's event state and the per-batch collection of touched positions."""

    def __init__(self) -> None:
        self.seq = 0  # the last sequence number handed out
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        # Per ReserveColumns of the batch, in order: each item's reservation index (-1: none).
        self._columns: list[np.ndarray] = []
        self._groups: list[int] = []  # tracked group indexes
        self._group_k: dict[int, int] = {}
        self._group_low_default: list[int] = []
        self._grp_last = np.zeros((0, 0), np.int64)
        self._grp_low = np.zeros((0, 0), np.int32)
        self._groups_arr = _EMPTY_I64
        self._low_default_arr = _EMPTY_I64
        self._sku_mark = _EMPTY_U8
        self._skus_out = _EMPTY_I64

    # --- what the ledger calls ------------------------------------------------------------

    def touch_pairs(self, sku_ids: np.ndarray, node_ids: np.ndarray) -> None:
        """Supply lines and transfer entries of the current batch (ids, -1 = unknown)."""
        self._pairs.append((sku_ids, node_ids))

    def touch_columns(self, item_res: np.ndarray) -> None:
        """A ReserveColumns of the current batch: its items' reservation indexes (-1 = refused,
        looked up by id after the batch like a Reserve's)."""
        self._columns.append(item_res)

    def after_batch(
        self, ledger: Ledger, now: int, commands: Sequence[Any], expired: list[str]
    ) -> EventBatch | None:
        """The batch's events (None if there are none); called before ids are forgotten."""
        pairs = self._pairs
        self._pairs = []
        columns = iter(self._columns)
        self._columns = []
        res_ids = ledger._res_ids
        rs: list[int] = []
        # Reservation indexes in command order: `rs` runs, and a ReserveColumns' array as is.
        rs_chunks: list[np.ndarray] = []
        scan: list[int] = []
        all_skus = False
        for name in expired:
            rs.append(res_ids[name])
        for cmd in commands:
            if isinstance(cmd, _RES_COMMANDS):
                r = res_ids.get(cmd.reservation_id)
                if r is not None:
                    rs.append(r)
            elif type(cmd) is ReserveColumns:
                # The positions of its reservations, as its Reserve commands would give them.
                item_res = next(columns)
                missing = np.flatnonzero(item_res < 0).tolist()
                if missing:  # refused items: their ids as a Reserve's would be looked up
                    ids = cmd.reservation_ids
                    item_res = item_res.copy()
                    for k in missing:
                        item_res[k] = res_ids.get(ids[k], -1)
                    item_res = item_res[item_res >= 0]
                if rs:
                    rs_chunks.append(np.array(rs, np.int64))
                    rs = []
                rs_chunks.append(item_res)
            elif isinstance(cmd, UpsertNodes):
                nodes = ledger._nodes.ids
                scan.extend(nodes[spec.node_id] for spec in cmd.nodes if spec.node_id in nodes)
            elif isinstance(cmd, UpsertGroups) and self._groups:
                groups = ledger._groups.ids
                all_skus |= any(
                    groups.get(spec.group_id, -1) in self._group_k for spec in cmd.groups
                )
        if rs_chunks:
            if rs:
                rs_chunks.append(np.array(rs, np.int64))
            res_idx = np.concatenate(rs_chunks) if len(rs_chunks) > 1 else rs_chunks[0]
        else:
            res_idx = np.array(rs, np.int64) if rs else _EMPTY_I64
        if not res_idx.shape[0] and not pairs and not scan and not all_skus:
            return None
        a = ledger._a
        positions = int(a["qty"].shape[0])
        self._fit(ledger)
        if len(pairs) == 1:
            sku_ids, node_ids = pairs[0]
        elif pairs:
            sku_ids = np.concatenate([p[0] for p in pairs])
            node_ids = np.concatenate([p[1] for p in pairs])
        else:
            sku_ids = node_ids = _EMPTY_I64
        scan_arr = np.array(scan, np.int64) if scan else _EMPTY_I64
        bound = sku_ids.shape[0]
        if rs_chunks:
            bound += int(a["res"][res_idx, R_LINE_COUNT].sum())
        elif rs:  # a few reservation commands: item reads, not a fancy-indexed copy (1.5 µs)
            line_count = a["res"].item
            for r in rs:
                bound += line_count(r, R_LINE_COUNT)
        if scan:
            bound += positions
        tracked = len(self._groups)
        if tracked:
            bound = bound * (1 + tracked) if not all_skus else bound + tracked * len(ledger._skus)
        out = np.empty((bound, kernel.EVENT_COLS), np.int64)
        st = ledger._st
        count, n_skus = kernel.position_events(
            st,
            res_idx,
            sku_ids,
            node_ids,
            scan_arr,
            a["ev_last"],
            a["ev_low"],
            self._sku_mark if tracked else _EMPTY_U8,
            out,
            self._skus_out,
        )
        if tracked:
            skus = self._skus_out
            if all_skus:
                skus = np.arange(len(ledger._skus), dtype=np.int64)
                n_skus = skus.shape[0]
            count = kernel.group_events(
                st,
                skus,
                n_skus,
                self._groups_arr,
                self._grp_last,
                self._grp_low,
                self._low_default_arr,
                out,
                count,
            )
        if count == 0:
            return None
        batch = EventBatch(
            self.seq + 1,
            now,
            out[:count],
            ledger._skus.names,
            ledger._nodes.names,
            ledger._groups.names,
        )
        self.seq += count
        return batch

    def _fit(self, ledger: Ledger) -> None:
        """Size the per-position and per-SKU arrays to the ledger's (growth is rare)."""
        a = ledger._a
        cap = int(a["pos_key"].shape[0])
        if "ev_last" not in a or a["ev_last"].shape[0] < cap:
            for name in ("ev_last", "ev_low"):
                old = a.get(name)
                new = np.zeros(cap, np.int32)
                if old is not None:
                    new[: old.shape[0]] = old
                a[name] = new
        sku_cap = int(a["sku_head"].shape[0])
        if self._skus_out.shape[0] < sku_cap:
            self._sku_mark = np.zeros(sku_cap, np.uint8)
            self._skus_out = np.zeros(sku_cap, np.int64)
        if self._grp_last.shape[1] < sku_cap:
            last = np.zeros((self._grp_last.shape[0], sku_cap), np.int64)
            last[:, : self._grp_last.shape[1]] = self._grp_last
            low = np.full((self._grp_low.shape[0], sku_cap), -1, np.int32)
            low[:, : self._grp_low.shape[1]] = self._grp_low
            self._grp_last = last
            self._grp_low = low

    # --- SetThresholds -----------------------------------------------------------------------

    def set_thresholds(self, ledger: Ledger, cmd: SetThresholds, now: int) -> Any:
        items = cmd.thresholds
        bad = None
        if not items or len(items) > limits.REQUEST_LINES_MAX:
            bad = _invalid("thresholds", f"must have 1..{limits.REQUEST_LINES_MAX} entries")
        for i, t in enumerate(items):
            if bad is not None:
                break
            f = f"thresholds[{i}]"
            if type(t.low_stock) is not int or not 0 <= t.low_stock <= limits.QTY_MAX:  # noqa: E721
                bad = _invalid(f"{f}.low_stock", f"must be an integer in 0..{limits.QTY_MAX}")
            elif bool(t.node_id) == bool(t.group_id):
                bad = _invalid(f, "names a node_id or a group_id (exactly one)")
            elif t.node_id and not t.sku:
                bad = _invalid(f"{f}.sku", "must not be empty for a position threshold")
            elif t.node_id and not ledger._node_registered(t.node_id):
                bad = Rejection(
                    Code.FAILED_PRECONDITION,
                    "UNKNOWN_NODE",
                    f"{f}.node_id: node {t.node_id!r} is not registered",
                )
            elif t.group_id and t.group_id not in ledger._groups.ids:
                bad = Rejection(
                    Code.FAILED_PRECONDITION,
                    "UNKNOWN_GROUP",
                    f"{f}.group_id: group {t.group_id!r} is not defined",
                )
            else:
                for field in ("sku", "node_id", "group_id"):
                    value = getattr(t, field)
                    if len(value.encode()) > limits.ID_BYTES_MAX:
                        bad = _invalid(f"{f}.{field}", f"longer than {limits.ID_BYTES_MAX} bytes")
                        break
        if bad is None:
            new_skus = {t.sku for t in items if t.sku and t.sku not in ledger._skus.ids}
            if len(ledger._skus) + len(new_skus) > limits.SKUS_MAX:
                bad = Rejection(
                    Code.RESOURCE_EXHAUSTED, "LIMIT", f"more than {limits.SKUS_MAX} skus"
                )
        if bad is not None:
            return bad
        at_node = [t for t in items if t.node_id]
        for t in items:
            if t.sku:
                ledger._skus.intern(t.sku)
        ledger._ensure(positions=len(at_node), skus=len(ledger._skus))
        # ev_low must cover the positions this may create, and the groups' per-SKU rows the
        # SKUs it may have added (a tracked group's row is written below without a `_fit`).
        self._fit(ledger)
        if at_node:
            n = len(at_node)
            sku_ids = np.fromiter((ledger._skus.ids[t.sku] for t in at_node), np.int64, n)
            node_ids = np.fromiter((ledger._nodes.ids[t.node_id] for t in at_node), np.int64, n)
            values = np.fromiter((t.low_stock for t in at_node), np.int64, n)
            slots = np.empty(n, np.int64)
            kernel.set_position_thresholds(
                ledger._st, sku_ids, node_ids, values, ledger._a["ev_low"], slots
            )
        for t in items:
            if not t.group_id:
                continue
            k = self._track(ledger, ledger._groups.ids[t.group_id])
            if t.sku:
                self._grp_low[k, ledger._skus.ids[t.sku]] = t.low_stock
            else:
                self._group_low_default[k] = t.low_stock
                self._low_default_arr = np.array(self._group_low_default, np.int64)
        return len(items)

    def _track(self, ledger: Ledger, g: int) -> int:
        k = self._group_k.get(g)
        if k is not None:
            return k
        self._fit(ledger)
        k = len(self._groups)
        self._groups.append(g)
        self._group_k[g] = k
        self._group_low_default.append(0)
        self._groups_arr = np.array(self._groups, np.int64)
        self._low_default_arr = np.array(self._group_low_default, np.int64)
        sku_cap = max(self._grp_last.shape[1], int(ledger._a["sku_head"].shape[0]))
        last = np.zeros((k + 1, sku_cap), np.int64)
        last[:k, : self._grp_last.shape[1]] = self._grp_last
        low = np.full((k + 1, sku_cap), -1, np.int32)
        low[:k, : self._grp_low.shape[1]] = self._grp_low
        kernel.baseline_group(ledger._st, g, len(ledger._skus), last[k])
        self._grp_last = last
        self._grp_low = low
        return k

    # --- snapshots ------------------------------------------------------------------------

    def export_meta(self) -> bytes:
        low = []
        for k in range(len(self._groups)):
            row = self._grp_low[k]
            idx = np.flatnonzero(row >= 0)
            low.append(list(zip(idx.tolist(), row[idx].tolist(), strict=True)))
        return msgspec.msgpack.encode(
            _Meta(self.seq, list(self._groups), list(self._group_low_default), low)
        )

    def restore(self, ledger: Ledger, meta: bytes, ev_low: np.ndarray | None) -> None:
        """Rebuild from a snapshot: thresholds as saved, last-published values from the state."""
        self._fit(ledger)
        a = ledger._a
        if ev_low is not None:
            a["ev_low"][: ev_low.shape[0]] = ev_low
        kernel.baseline_positions(ledger._st, a["ev_last"], int(ledger._ctr[C_POSITIONS]))
        if not meta:
            return
        m = msgspec.msgpack.decode(meta, type=_Meta)
        self.seq = m.seq
        for k, g in enumerate(m.groups):
            assert self._track(ledger, g) == k
            self._group_low_default[k] = m.group_low_default[k]
            for s, low in m.group_low[k]:
                self._grp_low[k, s] = low
        self._low_default_arr = np.array(self._group_low_default, np.int64)


def _invalid(field: str, message: str) -> Rejection:
    return Rejection(Code.INVALID_ARGUMENT, "FIELD_INVALID", f"{field}: {message}")


assert EMPTY == -1
