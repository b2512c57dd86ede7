"""The public face of the engine: `Ledger` validates, interns ids, sizes arrays and calls kernels.

A `Ledger` applies batches of commands (`apply(now_ms, commands)`), in order, and answers reads.
It never reads the clock: every mutation takes the batch's `now_ms`, and the batch clock never
runs backwards (an older `now_ms` is treated as the latest one seen). Applying the same batches to
two empty ledgers gives byte-identical state (`export_state`).

Hot paths (reserve, commit, release, supply lines) are coalesced: consecutive commands of one kind
go to one kernel call, so numba's dispatch is paid per run of commands, not per line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import msgspec
import numpy as np

from engine import events, limits, sourcing
from engine.codes import (
    LINE_STATUS_PRECEDENCE,
    AdjustReason,
    Bucket,
    LineStatus,
    MoveKind,
    NodeType,
    ReservationState,
)
from engine.commands import (
    Adjust,
    Batch,
    Command,
    Commit,
    Extend,
    Fulfil,
    FulfilmentMode,
    GroupSpec,
    Line,
    Move,
    NearbyResult,
    NodeSpec,
    Release,
    ReservationResult,
    ReservationView,
    Reserve,
    ReserveColumns,
    ReserveColumnsResult,
    ReservedLine,
    SetBackorderLimit,
    SetOnHand,
    SetSafetyStock,
    SetThresholds,
    SkuQty,
    SourceReserve,
    SourcingPlan,
    SourcingPolicy,
    SourcingResult,
    SupplyResult,
    TransferCancel,
    TransferReceive,
    TransferResult,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
    UpsertResult,
)
from engine.errors import Code, EngineError, Rejection, id_conflict
from engine.ids import FinalIds, IdTable
from engine.kernels import atp, index, reserve, supply
from engine.state import (
    ADOPTABLE_FILL,
    C_HEAP_LEN,
    C_HELD,
    C_LINES_USED,
    C_NOW_MS,
    C_POSITIONS,
    EMPTY,
    G_BUFFER_BP,
    G_BUFFER_UNITS,
    G_DEFINED,
    L_FULFILLED,
    L_GRANTED,
    L_HELD,
    L_STATUS,
    N_CAPACITY_DAILY,
    N_ENABLED,
    N_PICKUP,
    N_PRIORITY,
    N_REGISTERED,
    N_SHIP,
    N_TYPE,
    R_CREATED_MS,
    R_EXPIRES_MS,
    R_LINE_COUNT,
    R_LINE_START,
    R_STATE,
    StateArrays,
    aligned_full,
    make_state,
    new_arrays,
    rows_with_room,
)

__all__ = ["Ledger", "Outcome", "BatchOutcome", "Quantities", "DatedQuantities"]

FORMAT_VERSION = 1
# Index passed to kernels for a group id that is not defined: out of range, so UNKNOWN_GROUP.
_GROUP_UNKNOWN = 2**31 - 1

Outcome = Any  # ReservationResult | SupplyResult | TransferResult | UpsertResult | Rejection | …


class Quantities(msgspec.Struct, frozen=True):
    on_hand: int
    reserved: int
    allocated: int
    safety_stock: int
    unavailable: int
    inbound: int
    available: int


class DatedQuantities(Quantities, frozen=True):
    """Quantities read with a date (`availability(..., at_ms=...)`): see `available_by_date`."""

    available_by_date: int


class BatchOutcome(msgspec.Struct, frozen=True):
    results: list[Outcome]  # one per command, in order
    expired: list[str]  # reservation ids that expired at the start of this batch, in order
    # Stock events of this batch (engine/events.py), None when nothing changed.
    events: events.EventBatch | None = None


class _Names:
    """Strings interned to dense int32 ids, in first-seen order."""

    __slots__ = ("ids", "names", "_table", "_table_len")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: list[str] = list(names)
        self.ids: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self._table = np.empty(0, dtype=object)  # names as an object array, for `share`
        self._table_len = 0

    def intern(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = len(self.names)
            self.ids[name] = i
            self.names.append(name)
        return i

    def __len__(self) -> int:
        return len(self.names)

    def share(self, column: list[str], ids: np.ndarray) -> None:
        """Put the interned str in place of each known name of `column` (`ids`: their interned
        ids, EMPTY for unknown): equal values, but a column kept with a held command then owns
        no string per line, and the request's copies are freed at once (memory reused by the
        next request instead of new pages)."""
        table = self._table
        have, n = self._table_len, len(self.names)
        if have < n:  # names are only ever appended: add the new ones (doubling the room)
            if table.shape[0] < n:
                table = np.empty(max(n, 2 * table.shape[0]), dtype=object)
                table[:have] = self._table[:have]
                self._table = table
            table[have:n] = self.names[have:n]
            self._table_len = n
        known = ids != EMPTY
        if known.all():
            column[:] = table[ids].tolist()
        else:
            at = np.flatnonzero(known)
            for j, name in zip(at.tolist(), table[ids[at]].tolist(), strict=True):
                column[j] = name


class _Transfer(msgspec.Struct):
    content: bytes
    sku: str
    from_node_id: str
    to_node_id: str
    qty_shipped: int
    qty_received: int
    expected_at_ms: int
    state: str  # IN_TRANSIT, RECEIVED, CANCELLED, FAILED
    status: LineStatus


class _Meta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Python-side half of a snapshot (the arrays are the other half)."""

    version: int
    skus: list[str]
    nodes: list[str]
    node_names: list[str]
    groups: list[str]
    group_specs: list[GroupSpec | None]
    res_names: list[str | None]
    res_content: list[bytes | None]
    res_free: list[int]
    final: list[tuple[int, str, str]]
    requests: dict[str, tuple[bytes, bytes]]
    transfers: dict[str, _Transfer]
    lines_live: int
    # reservation id -> (SourceReserve content, msgpack SourcingPlan), for replays
    sourced: dict[str, tuple[bytes, bytes]] = {}
    events: bytes = b""  # engine/events.py Tracker meta


# Comparing a numpy int64 with an IntEnum member takes ~6 µs (numpy's slow path for int
# subclasses), and calling an IntEnum ~0.7 µs: hot paths compare int() values and look
# members up by value instead.
_STATE_OF = {int(s): s for s in ReservationState}
_LINE_STATUS_OF = {int(s): s for s in LineStatus}

_encode = msgspec.msgpack.Encoder().encode
_reserve_decoder = msgspec.msgpack.Decoder(Reserve)
_rejection_decoder = msgspec.msgpack.Decoder(Rejection)


def _reject(code: Code, reason: str, message: str) -> Rejection:
    return Rejection(code, reason, message)


# The live-hold limit (`limits.RESERVATIONS_ACTIVE_MAX`) refusing one more reserve.
_TOO_MANY_HOLDS = Rejection(
    Code.RESOURCE_EXHAUSTED,
    "OVERLOADED",
    f"more than {limits.RESERVATIONS_ACTIVE_MAX} live holds",
)


def _invalid(field: str, message: str) -> Rejection:
    return Rejection(Code.INVALID_ARGUMENT, "FIELD_INVALID", f"{field}: {message}")


def _check_id(value: object, field: str, *, required: bool = True) -> Rejection | None:
    if not isinstance(value, str):
        return _invalid(field, f"expected a string, got {type(value).__name__}")
    if not value:
        return _invalid(field, "must not be empty") if required else None
    if len(value) > limits.ID_BYTES_MAX or (
        not value.isascii() and len(value.encode()) > limits.ID_BYTES_MAX
    ):
        return _invalid(field, f"longer than {limits.ID_BYTES_MAX} bytes")
    return None


def _check_qty(
    value: object, field: str, lo: int = 1, hi: int = limits.QTY_MAX
) -> Rejection | None:
    if type(value) is not int or not lo <= value <= hi:  # noqa: E721 (bool is not a quantity)
        return _invalid(field, f"must be an integer in {lo}..{hi}, got {value!r}")
    return None


def _check_lines_count(items: Sequence[object], field: str) -> Rejection | None:
    if not items:
        return _invalid(field, "must have at least one line")
    if len(items) > limits.REQUEST_LINES_MAX:
        return _invalid(field, f"more than {limits.REQUEST_LINES_MAX} lines ({len(items)})")
    return None


def _plain_reserve(cmd: Reserve) -> bool:
    """True when `Ledger._validate_reserve` certainly accepts `cmd` and every field has exactly the
    type decoding its content gives back, so `cmd` can stand in for its decoded content.

    The common case, checked without building field names; anything else takes the full path.
    """
    rid = cmd.reservation_id
    group_id = cmd.group_id
    ttl_ms = cmd.ttl_ms
    lines = cmd.lines
    if not (
        type(rid) is str
        and 0 < len(rid) <= _ID_CHARS_PLAIN_MAX
        and rid.isascii()
        and type(group_id) is str
        and len(group_id) <= _ID_CHARS_PLAIN_MAX
        and group_id.isascii()
        and type(ttl_ms) is int
        and limits.TTL_MS_MIN <= ttl_ms <= limits.TTL_MS_MAX
        and type(cmd.allow_partial) is bool
        and type(lines) is tuple
        and 0 < len(lines) <= limits.REQUEST_LINES_MAX
    ):
        return False
    for line in lines:
        if type(line) is not Line:
            return False
        sku = line.sku
        node_id = line.node_id
        qty = line.qty
        if not (
            type(sku) is str
            and 0 < len(sku) <= _ID_CHARS_PLAIN_MAX
            and sku.isascii()
            and type(node_id) is str
            and 0 < len(node_id) <= _ID_CHARS_PLAIN_MAX
            and node_id.isascii()
            and type(qty) is int
            and 1 <= qty <= limits.QTY_MAX
        ):
            return False
    return True


# An ASCII id is one byte a character.
_ID_CHARS_PLAIN_MAX = limits.ID_BYTES_MAX
# Reserve runs this small reuse preallocated request arrays (the one-line call's path).
_SMALL_RUN_LINES_MAX = 16


def _room_for(names: _Names, wanted: Iterable[str], count_max: int, what: str) -> Rejection | None:
    """The ids of one command may be interned only if all its new ones fit under the limit."""
    new = {name for name in wanted if name not in names.ids}
    if len(names) + len(new) > count_max:
        return _reject(Code.RESOURCE_EXHAUSTED, "LIMIT", f"more than {count_max} {what}")
    return None


def _supply_replay(stored: bytes) -> SupplyResult:
    """A supply request's remembered outcome (int8 statuses), answered again."""
    return SupplyResult(tuple(map(LineStatus, np.frombuffer(stored, np.int8).tolist())), True)


def _upsert_replay(stored: bytes) -> UpsertResult:
    """An upsert's remembered outcome (int64 created, updated; int8 statuses), answered again."""
    created, updated = np.frombuffer(stored, np.int64, 2).tolist()
    statuses = np.frombuffer(stored, np.int8, offset=16).tolist()
    return UpsertResult(tuple(map(LineStatus, statuses)), created, updated, True)


_HELD = int(ReservationState.HELD)
_OK = int(LineStatus.OK)
_UNKNOWN_NODE = int(LineStatus.UNKNOWN_NODE)
_REJECTED = int(ReservationState.REJECTED)


def _columns_fit(cmd: ReserveColumns) -> bool:
    """The columns of `cmd` fit together (else it has no Reserve equivalent)."""
    try:
        return (
            type(cmd.line_counts) is bytes
            and type(cmd.qtys) is bytes
            and type(cmd.reservation_ids) is list
            and type(cmd.skus) is list
            and type(cmd.node_ids) is list
            and cmd.consistent()
        )
    except (TypeError, ValueError):
        return False


def _ids_plain(column: list[str]) -> bool:
    """Every id of `column` is a str of 1..ID_BYTES_MAX ASCII characters (checked at C speed)."""
    try:
        joined = "".join(column)
    except TypeError:
        return False
    if not joined.isascii():
        return False
    if not column:
        return True
    lengths = np.fromiter(map(len, column), np.int64, len(column))
    return bool(lengths.min() >= 1 and lengths.max() <= _ID_CHARS_PLAIN_MAX)


def _intern_column(ids: dict[str, int], column: Sequence[str]) -> np.ndarray:
    """Interned ids of a name column (EMPTY for an unknown name), as int64[n]."""
    try:
        return np.fromiter(map(ids.get, column, repeat(EMPTY)), np.int64, len(column))
    except TypeError:  # an unhashable "name": unknown, and its item is refused as invalid
        return np.fromiter(
            (ids.get(x, EMPTY) if isinstance(x, str) else EMPTY for x in column),
            np.int64,
            len(column),
        )


def _ids_plain_each(column: list[str]) -> np.ndarray:
    """`_ids_plain` per id, as bool[n] (False = maybe invalid: `_check_id` decides)."""
    return np.fromiter(
        (type(x) is str and 0 < len(x) <= _ID_CHARS_PLAIN_MAX and x.isascii() for x in column),
        np.bool_,
        len(column),
    )


class Ledger:
    """The in-memory stock ledger. Single-threaded: one writer applies batches in order."""

    def __init__(
        self,
        *,
        positions: int = 1024,
        skus: int = 1024,
        nodes: int = 64,
        reservations: int = 1024,
        ids_window_ms: int = limits.IDS_WINDOW_MS,
        ids_remembered_max: int = limits.IDS_REMEMBERED_MAX,
    ) -> None:
        self._ids_window_ms = ids_window_ms
        self._ids_remembered_max = ids_remembered_max
        self._set_arrays(
            new_arrays(
                positions=positions,
                skus=skus,
                nodes=nodes,
                reservations=reservations,
                lines=4 * reservations,
            )
        )
        self._skus = _Names()
        self._nodes = _Names()
        self._node_names: list[str] = []
        self._groups = _Names()
        self._group_specs: list[GroupSpec | None] = []
        self._res_names: list[str | None] = []
        self._res_ids = IdTable(self._res_names)  # reservation id -> index; names[index] is the id
        # A reservation's content is `_encode(Reserve(...))`; one made by a ReserveColumns keeps
        # the command until its bytes are first needed (`_content`), with its item index and first
        # line in `_res_item[r]` (an array: no Python object per reservation for the GC to scan).
        self._res_content: list[bytes | ReserveColumns | None] = []
        self._res_item = np.zeros((0, 2), np.int64)
        self._res_free: list[int] = []
        # Ids with a final outcome, oldest first: (final_at_ms, kind, id); kind r (reservation)
        # or t (transfer). Request ids (kind q: supply, fulfil, extend, transfer receive) have a
        # queue and a bound of their own, so a flood of refused reserves in a sold-out sale
        # cannot push a POS sale's or a partial fulfil's request id out of memory before its
        # retry comes (docs/ledger.md, "Idempotency").
        self._final = FinalIds()
        self._final_requests = FinalIds()
        self._requests: dict[str, tuple[bytes, bytes]] = {}
        self._transfers: dict[str, _Transfer] = {}
        # IN_TRANSIT transfers by sku, to_node_id, transfer_id: the inbound that availability by
        # date promises. Derived from `_transfers` (rebuilt by from_state, not in the snapshot).
        self._in_transit: dict[str, dict[str, dict[str, _Transfer]]] = {}
        self._lines_live = 0
        self._sourced: dict[str, tuple[bytes, bytes]] = {}
        # (content, decoded Reserve) of the last reservation viewed: a release or commit right
        # after its reserve skips decoding. Keyed by the bytes object itself (they are immutable).
        self._view_memo: tuple[bytes, Reserve] | None = None
        self._req1 = np.empty((1, reserve.REQ_COLS), np.int64)
        small = np.empty((_SMALL_RUN_LINES_MAX, 3), np.int64)
        self._lines_small = [small[:n] for n in range(_SMALL_RUN_LINES_MAX + 1)]
        self._events = events.Tracker()
        self._handlers: dict[type, Callable[[list[Any], int], list[Outcome]]] = {
            Reserve: self._reserve_run,
            ReserveColumns: self._reserve_columns_one,
            Commit: self._commit_run,
            Release: self._release_run,
            Extend: self._extend_one,
            Fulfil: self._fulfil_one,
            Adjust: self._adjust_one,
            Move: self._move_one,
            SetOnHand: self._set_on_hand_one,
            SetSafetyStock: self._set_safety_one,
            SetBackorderLimit: self._set_backorder_one,
            TransferShip: self._transfer_ship_one,
            TransferReceive: self._transfer_receive_one,
            TransferCancel: self._transfer_cancel_one,
            UpsertNodes: self._upsert_nodes_one,
            UpsertGroups: self._upsert_groups_one,
            SourceReserve: self._source_reserve_one,
            SetThresholds: self._set_thresholds_one,
        }

    # --- arrays and growth -----------------------------------------------------------------

    def _set_arrays(self, arrays: StateArrays) -> None:
        self._a = arrays
        self._ctr = arrays["ctr"]
        self._st = make_state(arrays)

    def _grow(self, name: str, rows: int, fill: int = 0) -> bool:
        """Give array `name` at least `rows` rows; True if it was replaced."""
        old = self._a[name]
        if old.shape[0] >= rows:
            return False
        new_rows = max(rows, 2 * old.shape[0])
        new = aligned_full((new_rows, *old.shape[1:]), fill, old.dtype)
        new[: old.shape[0]] = old
        self._a[name] = new
        return True

    def _ensure(
        self,
        *,
        positions: int = 0,
        skus: int = 0,
        nodes: int = 0,
        groups: int = 0,
        res: int = 0,
        lines: int = 0,
        heap: int = 0,
    ) -> None:
        """Make room for `positions` more positions, and so on, before a kernel call."""
        # Called before every kernel call that may need room, so the common case (no growth)
        # must stay cheap: no per-field bookkeeping, just the checks.
        a = self._a
        grew = False
        if positions:
            need = int(self._ctr[C_POSITIONS]) + positions
            grew |= self._grow("qty", need)
            grew |= self._grow("pos_key", need, EMPTY)
            grew |= self._grow("pos_next", need, EMPTY)
            if 2 * need > a["table"].shape[0]:
                size = 1 << (2 * need - 1).bit_length()
                table = aligned_full(size, EMPTY, np.int32)
                index.rebuild_table(table, a["pos_key"], int(self._ctr[C_POSITIONS]))
                a["table"] = table
                grew = True
        if skus:
            grew |= self._grow("sku_head", skus, EMPTY)
            grew |= self._grow("sku_known", skus)
        if nodes:
            grew |= self._grow("node_i64", nodes)
            grew |= self._grow("node_f64", nodes)
            if a["member"].shape[1] < a["node_i64"].shape[0]:
                member = np.zeros((a["member"].shape[0], a["node_i64"].shape[0]), np.uint8)
                member[:, : a["member"].shape[1]] = a["member"]
                a["member"] = member
                grew = True
        if groups:
            grew |= self._grow("grp_i64", groups)
            grew |= self._grow("member", groups)
        if res:
            grew |= self._grow("res", res)
        if lines:
            grew |= self._grow("ln", int(self._ctr[C_LINES_USED]) + lines)
        if heap:
            need = int(self._ctr[C_HEAP_LEN]) + heap
            grew |= self._grow("heap", need)
            grew |= self._grow("expired_out", need)
        if grew:
            self._set_arrays(a)

    def reserve_room(self, holds: int, lines_per_hold: int = 1) -> None:
        """Size the reservation arrays now for `holds` more live reservations of
        `lines_per_hold` lines each, so a peak of holds does not grow them while serving.

        Growing doubles an array: a fresh, pre-faulted allocation plus a copy, paid by the
        command that crosses the size (docs/ledger.md, "Capacity"). Changes no state."""
        if holds < 0 or lines_per_hold < 1:
            raise ValueError("holds must be >= 0 and lines_per_hold >= 1")
        if holds:
            self._ensure(res=len(self._res_names) + holds, lines=holds * lines_per_hold, heap=holds)
            self._fit_res_item(len(self._res_names) + holds)
            self._res_ids.reserve(holds)

    # --- batches ---------------------------------------------------------------------------

    def apply(self, now_ms: int, commands: Sequence[Command]) -> BatchOutcome:
        """Expire what is due at `now_ms`, then apply the commands in order."""
        now = self._advance_clock(now_ms)
        expired = self._expire(now)
        results: list[Outcome] = []
        i = 0
        n = len(commands)
        while i < n:
            kind = type(commands[i])
            handler = self._handlers.get(kind)
            if handler is None:
                raise TypeError(f"not a command: {kind.__name__}")
            j = i + 1
            if kind is Reserve or kind is Commit or kind is Release:
                while j < n and type(commands[j]) is kind:
                    j += 1
                results.extend(handler(list(commands[i:j]), now))
            else:
                results.extend(handler([commands[i]], now))
            i = j
        batch_events = self._events.after_batch(self, now, commands, expired)
        self._forget(now)
        self._compact()
        return BatchOutcome(results, expired, batch_events)

    def apply_batch(self, batch: Batch) -> BatchOutcome:
        return self.apply(batch.now_ms, batch.commands)

    def tick(self, now_ms: int) -> list[str]:
        """Advance the clock: expire due holds, forget ids past the window. Returns expired ids."""
        return self.apply(now_ms, ()).expired

    def next_expiry_ms(self) -> int | None:
        """Expiry time of the earliest hold (possibly stale: a tick then expires nothing)."""
        if self._ctr[C_HEAP_LEN] == 0:
            return None
        return int(self._a["heap"][0, 0])

    def _advance_clock(self, now_ms: int) -> int:
        if type(now_ms) is not int:  # noqa: E721
            now_ms = int(now_ms)
        now = max(now_ms, self._ctr.item(C_NOW_MS))
        self._ctr[C_NOW_MS] = now
        return now

    def _expire(self, now: int) -> list[str]:
        if self._ctr.item(C_HEAP_LEN) == 0 or self._a["heap"].item(0) > now:
            return []
        count = reserve.expire(self._st, now)
        names = self._res_names
        expired = [name for r in self._a["expired_out"][:count].tolist() if (name := names[r])]
        assert len(expired) == count  # a held reservation has its id
        self._final.append_run(now, "r", expired.copy())  # the caller gets `expired` itself
        return expired

    # --- reservations ----------------------------------------------------------------------

    def _validate_reserve(self, cmd: Reserve) -> Rejection | None:
        bad = _check_id(cmd.reservation_id, "reservation_id")
        if bad is None:
            bad = _check_lines_count(cmd.lines, "lines")
        if bad is None and not limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX:
            bad = _invalid("ttl_ms", f"must be in {limits.TTL_MS_MIN}..{limits.TTL_MS_MAX}")
        if bad is None:
            bad = _check_id(cmd.group_id, "group_id", required=False)
        if bad is None:
            for i, line in enumerate(cmd.lines):
                bad = (
                    _check_id(line.sku, f"lines[{i}].sku")
                    or _check_id(line.node_id, f"lines[{i}].node_id")
                    or _check_qty(line.qty, f"lines[{i}].qty")
                )
                if bad is not None:
                    break
        return bad

    def _new_res_index(self) -> int:
        if self._res_free:
            return self._res_free.pop()
        r = len(self._res_names)
        self._res_names.append(None)
        self._res_content.append(None)
        return r

    def _reserve_run(self, cmds: list[Reserve], now: int) -> list[Outcome]:
        if len(cmds) == 1 and _plain_reserve(cmds[0]):
            return [self._reserve_plain_one(cmds[0], now)]
        out: list[Outcome] = [None] * len(cmds)
        fresh: list[tuple[int, int, Reserve]] = []
        lines_total = 0
        held_before = self._ctr.item(C_HELD)
        plain: list[bool] = []
        for k, cmd in enumerate(cmds):
            is_plain = _plain_reserve(cmd)
            bad = None if is_plain else self._validate_reserve(cmd)
            if bad is not None:
                out[k] = bad
                continue
            content = _encode(cmd)
            r = self._res_ids.get(cmd.reservation_id)
            if r is not None:
                if self._content(r) != content:
                    out[k] = id_conflict("reservation_id", cmd.reservation_id)
                else:
                    out[k] = r  # a replay, answered after the kernel ran
                continue
            if held_before + len(fresh) >= limits.RESERVATIONS_ACTIVE_MAX:
                out[k] = _TOO_MANY_HOLDS
                continue
            r = self._new_res_index()
            self._res_ids[cmd.reservation_id] = r
            self._res_names[r] = cmd.reservation_id
            self._res_content[r] = content
            if is_plain:
                self._view_memo = (content, cmd)
            fresh.append((k, r, cmd))
            plain.append(is_plain)
            lines_total += len(cmd.lines)
        if fresh:
            # `_ensure` costs a microsecond and almost never grows anything: check first.
            a = self._a
            ctr = self._ctr
            heap_need = ctr.item(C_HEAP_LEN) + len(fresh)
            if (
                a["res"].shape[0] < len(self._res_names)
                or a["ln"].shape[0] < ctr.item(C_LINES_USED) + lines_total
                or a["heap"].shape[0] < heap_need
                or a["expired_out"].shape[0] < heap_need
            ):
                self._ensure(res=len(self._res_names), lines=lines_total, heap=len(fresh))
            if len(fresh) == 1 and lines_total <= _SMALL_RUN_LINES_MAX:
                req = self._req1
                lines = self._lines_small[lines_total]
            else:
                req = np.empty((len(fresh), reserve.REQ_COLS), np.int64)
                lines = np.empty((lines_total, 3), np.int64)
            skus = self._skus.ids
            nodes = self._nodes.ids
            j = 0
            for row, (_, r, cmd) in enumerate(fresh):
                g = -1
                if cmd.group_id:
                    g = self._groups.ids.get(cmd.group_id, _GROUP_UNKNOWN)
                req[row] = (r, now + cmd.ttl_ms, cmd.allow_partial, g, len(cmd.lines))
                for line in cmd.lines:
                    lines[j, 0] = skus.get(line.sku, EMPTY)
                    lines[j, 1] = nodes.get(line.node_id, EMPTY)
                    lines[j, 2] = line.qty
                    j += 1
            reserve.reserve(self._st, req, lines, now)
            self._lines_live += lines_total
            for (k, r, cmd), is_plain in zip(fresh, plain, strict=True):
                view = self._view(r, cmd if is_plain else None)
                if view.state is ReservationState.REJECTED:
                    self._final.append((now, "r", cmd.reservation_id))
                out[k] = ReservationResult(view, False)
        for k, item in enumerate(out):
            if type(item) is int:
                out[k] = ReservationResult(self._view(item), True)
        return out

    def _reserve_plain_one(self, cmd: Reserve, now: int) -> Outcome:
        """`_reserve_run` for a run of one plain command (the one-line call): the same steps in
        the same order, without the run's bookkeeping lists."""
        content = _encode(cmd)
        rid = cmd.reservation_id
        r = self._res_ids.get(rid)
        if r is not None:
            if self._content(r) != content:
                return id_conflict("reservation_id", rid)
            return ReservationResult(self._view(r), True)
        ctr = self._ctr
        if ctr.item(C_HELD) >= limits.RESERVATIONS_ACTIVE_MAX:
            return _TOO_MANY_HOLDS
        r = self._new_res_index()
        self._res_ids[rid] = r
        self._res_names[r] = rid
        self._res_content[r] = content
        self._view_memo = (content, cmd)
        cmd_lines = cmd.lines
        count = len(cmd_lines)
        a = self._a
        heap_need = ctr.item(C_HEAP_LEN) + 1
        if (
            a["res"].shape[0] < len(self._res_names)
            or a["ln"].shape[0] < ctr.item(C_LINES_USED) + count
            or a["heap"].shape[0] < heap_need
            or a["expired_out"].shape[0] < heap_need
        ):
            self._ensure(res=len(self._res_names), lines=count, heap=1)
        if count <= _SMALL_RUN_LINES_MAX:
            req = self._req1
            lines = self._lines_small[count]
        else:
            req = np.empty((1, reserve.REQ_COLS), np.int64)
            lines = np.empty((count, 3), np.int64)
        g = -1
        if cmd.group_id:
            g = self._groups.ids.get(cmd.group_id, _GROUP_UNKNOWN)
        req[0] = (r, now + cmd.ttl_ms, cmd.allow_partial, g, count)
        skus = self._skus.ids
        nodes = self._nodes.ids
        for j, line in enumerate(cmd_lines):
            lines[j, 0] = skus.get(line.sku, EMPTY)
            lines[j, 1] = nodes.get(line.node_id, EMPTY)
            lines[j, 2] = line.qty
        reserve.reserve(self._st, req, lines, now)
        self._lines_live += count
        view = self._view(r, cmd)
        if view.state is ReservationState.REJECTED:
            self._final.append((now, "r", rid))
        return ReservationResult(view, False)

    # --- columnar reserves (ReserveColumns) --------------------------------------------------

    def _content(self, r: int) -> bytes:
        """Reservation r's content, `_encode(Reserve(...))`, made now if a ReserveColumns left a
        reference (replays, conflicts and snapshots compare or store these bytes)."""
        content = self._res_content[r]
        if isinstance(content, ReserveColumns):
            k, l0 = self._res_item[r].tolist()
            content = _encode(content.reserve_at(k, l0))
            self._res_content[r] = content
        assert content is not None
        return content

    def _contents(self) -> list[bytes | None]:
        """Every content as bytes (for export_state, which must not depend on how ids came)."""
        contents = self._res_content
        lazy: dict[int, tuple[ReserveColumns, list[int]]] = {}
        for r in [r for r, c in enumerate(contents) if type(c) is ReserveColumns]:
            cmd = contents[r]
            entry = lazy.get(id(cmd))
            if entry is None:
                lazy[id(cmd)] = (cmd, [r])  # type: ignore[assignment]
            else:
                entry[1].append(r)
        for cmd, rs in lazy.values():  # all of one command's at once: see ReserveColumns.contents
            made = cmd.contents(self._res_item[rs, 0])
            for r, content in zip(rs, made, strict=True):
                contents[r] = content
        return contents  # type: ignore[return-value]

    def _reserve_of(self, r: int) -> Reserve:
        """Reservation r's content as a Reserve command."""
        content = self._res_content[r]
        assert content is not None
        if isinstance(content, ReserveColumns):
            k, l0 = self._res_item[r].tolist()
            return content.reserve_at(k, l0)
        memo = self._view_memo
        if memo is not None and memo[0] is content:
            return memo[1]
        cmd = _reserve_decoder.decode(content)
        self._view_memo = (content, cmd)
        return cmd

    def _reserve_columns_one(self, cmds: list[ReserveColumns], now: int) -> list[Outcome]:
        return [self._reserve_columns(cmds[0], now)]

    def _reserve_columns(self, cmd: ReserveColumns, now: int) -> Outcome:
        """Exactly `_reserve_run(cmd.to_reserves())`, with columns in and columns out: checks
        over whole columns, one id lookup per reservation, one kernel call, result columns read
        back from the arrays (docs/ledger.md, "ReserveColumns")."""
        if not _columns_fit(cmd):
            self._events.touch_columns(np.zeros(0, np.int64))
            return _invalid(
                "line_counts", "the columns do not fit together (one count per reservation id, "
                "sum(line_counts) lines in skus, node_ids and qtys)"
            )  # fmt: skip
        rids = cmd.reservation_ids
        n = len(rids)
        counts = cmd.counts()
        starts = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        # Names to ids first: a known name was checked when it was interned, so only unknown
        # names need the id checks.
        sku_ids = _intern_column(self._skus.ids, cmd.skus)
        node_ids = _intern_column(self._nodes.ids, cmd.node_ids)
        self._skus.share(cmd.skus, sku_ids)
        self._nodes.share(cmd.node_ids, node_ids)
        rejections = self._reserve_columns_invalid(cmd, counts, starts, sku_ids, node_ids)
        # Ids: one lookup each. The common case (all valid, all new, no id twice, room for every
        # hold) takes the ids in bulk; anything else goes item by item, as `_reserve_run` does.
        res_ids = self._res_ids
        item_r = np.full(n, -1, np.int64)
        replayed = np.zeros(n, np.bool_)
        held_before = self._ctr.item(C_HELD)
        ks: Sequence[int]
        if not rejections:
            ks = range(n)
            valid_rids = rids
        else:
            ks = [k for k in range(n) if k not in rejections]
            valid_rids = [rids[k] for k in ks]
        m = len(valid_rids)
        fresh_rs = None
        if held_before + m <= limits.RESERVATIONS_ACTIVE_MAX:
            fresh_rs = self._take_new_ids(valid_rids, cmd)
        if fresh_rs is not None:
            fresh = np.arange(n, dtype=np.int64) if m == n else np.asarray(ks, np.int64)
            item = self._fit_res_item()
            item[fresh_rs, 0] = fresh
            item[fresh_rs, 1] = starts[fresh]
        else:
            fresh_list: list[int] = []
            fresh_rs = []
            for k, rid in zip(ks, valid_rids, strict=True):
                r = res_ids.get(rid)
                if r is not None:
                    if self._content(r) != _encode(cmd.reserve_at(k, int(starts[k]))):
                        rejections[k] = id_conflict("reservation_id", rid)
                    else:
                        item_r[k] = r  # a replay, read back after the kernel ran
                        replayed[k] = True
                    continue
                if held_before + len(fresh_list) >= limits.RESERVATIONS_ACTIVE_MAX:
                    rejections[k] = _TOO_MANY_HOLDS
                    continue
                r = self._new_res_index()
                res_ids[rid] = r
                self._res_names[r] = rid
                self._res_content[r] = cmd
                self._fit_res_item()[r] = (k, starts[k])
                fresh_list.append(k)
                fresh_rs.append(r)
            fresh = np.asarray(fresh_list, np.int64)
            rejections = dict(sorted(rejections.items()))
        if fresh_rs:
            rs = np.asarray(fresh_rs, np.int64)
            item_r[fresh] = rs
            self._reserve_columns_kernel(cmd, now, rs, fresh, counts, sku_ids, node_ids)
            states = self._a["res"][rs, R_STATE]
            rejected = fresh[states == _REJECTED].tolist()
            if rejected:
                self._final.append_run(now, "r", [rids[k] for k in rejected])
        self._events.touch_columns(item_r)
        return self._reserve_columns_result(item_r, replayed, counts, starts, rejections)

    def _fit_res_item(self, rows: int = 0) -> np.ndarray:
        """`_res_item` with a row for every reservation index (and at least `rows` rows)."""
        item = self._res_item
        need = max(rows, len(self._res_names))
        if item.shape[0] < need:
            item = aligned_full((max(need, 2 * item.shape[0]), 2), 0, np.int64)
            item[: self._res_item.shape[0]] = self._res_item
            self._res_item = item
        return item

    def _take_new_ids(self, rids: list[str], cmd: ReserveColumns) -> list[int] | None:
        """Give every id of `rids` a new reservation index, as `_new_res_index` would one by one,
        if none of them is known and none repeats; else change nothing and return None.

        The id table checks and takes the whole column in two kernel calls (`IdTable.take_new`);
        a known or repeated id leaves it unchanged, and the caller goes id by id.
        """
        m = len(rids)
        names = self._res_names
        contents = self._res_content
        free = self._res_free
        names_before = len(names)
        if not free:  # all new indexes at the end: the lists grow once the ids are taken
            rs = np.arange(names_before, names_before + m, dtype=np.int64)
            if not self._res_ids.take_new(rids, rs):
                return None
            names.extend(rids)
            contents.extend(repeat(cmd, m))
            return rs.tolist()
        free_taken = min(len(free), m)
        rs_list = self._new_res_indexes(m)
        if not self._res_ids.take_new(rids, np.array(rs_list, np.int64)):
            del names[names_before:], contents[names_before:]
            free.extend(reversed(rs_list[:free_taken]))
            return None
        for r, rid in zip(rs_list, rids, strict=True):
            names[r] = rid
            contents[r] = cmd
        return rs_list

    def _new_res_indexes(self, count: int) -> list[int]:
        """`count` calls of `_new_res_index`, in bulk (the same indexes in the same order)."""
        free = self._res_free
        take = min(len(free), count)
        rs: list[int] = []
        if take:
            rs = free[len(free) - take :][::-1]
            del free[len(free) - take :]
        extra = count - take
        if extra:
            base = len(self._res_names)
            rs.extend(range(base, base + extra))
            self._res_names.extend([None] * extra)
            self._res_content.extend([None] * extra)
        return rs

    def _reserve_columns_invalid(
        self,
        cmd: ReserveColumns,
        counts: np.ndarray,
        starts: np.ndarray,
        sku_ids: np.ndarray,
        node_ids: np.ndarray,
    ) -> dict[int, Rejection]:
        """Each invalid item's Rejection, exactly as `_validate_reserve` words it for its Reserve.

        Whole columns are checked at once; only items that may be bad are built as a Reserve."""
        n = counts.shape[0]
        qtys = cmd.qty_column()
        scalars_ok = (
            type(cmd.ttl_ms) is int
            and limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX
            and _check_id(cmd.group_id, "group_id", required=False) is None
        )
        if scalars_ok:
            maybe = (counts < 1) | (counts > limits.REQUEST_LINES_MAX)
            line_bad = (qtys < 1) | (qtys > limits.QTY_MAX)
            for column, ids in ((cmd.skus, sku_ids), (cmd.node_ids, node_ids)):
                unknown = np.flatnonzero(ids == EMPTY)
                if unknown.size:
                    names = [column[j] for j in unknown.tolist()]
                    line_bad[unknown] |= ~_ids_plain_each(names)
            if line_bad.any():
                sums = np.zeros(line_bad.shape[0] + 1, np.int64)
                np.cumsum(line_bad, out=sums[1:])
                maybe |= sums[starts[1:]] > sums[starts[:-1]]
            if not _ids_plain(cmd.reservation_ids):
                maybe |= ~_ids_plain_each(cmd.reservation_ids)
            if not maybe.any():
                return {}
            candidates: Sequence[int] = np.flatnonzero(maybe).tolist()
        else:
            candidates = range(n)
        rejections = {}
        for k in candidates:
            bad = self._validate_reserve(cmd.reserve_at(k, int(starts[k])))
            if bad is not None:
                rejections[k] = bad
        return rejections

    def _reserve_columns_kernel(
        self,
        cmd: ReserveColumns,
        now: int,
        rs: np.ndarray,
        fresh: np.ndarray,
        counts: np.ndarray,
        sku_ids: np.ndarray,
        node_ids: np.ndarray,
    ) -> None:
        """One reserve kernel call for the fresh items (`fresh`, their indexes `rs`)."""
        m = rs.shape[0]
        n = counts.shape[0]
        fresh_counts = counts[fresh] if m < n else counts
        lines_total = int(fresh_counts.sum())
        a = self._a
        ctr = self._ctr
        heap_need = ctr.item(C_HEAP_LEN) + m
        if (
            a["res"].shape[0] < len(self._res_names)
            or a["ln"].shape[0] < ctr.item(C_LINES_USED) + lines_total
            or a["heap"].shape[0] < heap_need
            or a["expired_out"].shape[0] < heap_need
        ):
            self._ensure(res=len(self._res_names), lines=lines_total, heap=m)
        g = -1
        if cmd.group_id:
            g = self._groups.ids.get(cmd.group_id, _GROUP_UNKNOWN)
        req = np.empty((m, reserve.REQ_COLS), np.int64)
        req[:, reserve.Q_RES] = rs
        req[:, reserve.Q_EXPIRES_MS] = now + cmd.ttl_ms
        req[:, reserve.Q_ALLOW_PARTIAL] = bool(cmd.allow_partial)
        req[:, reserve.Q_GROUP] = g
        req[:, reserve.Q_LINE_COUNT] = fresh_counts
        qtys = cmd.qty_column()
        if m < n:
            take = np.repeat(np.isin(np.arange(n), fresh), counts)
            sku_ids = sku_ids[take]
            node_ids = node_ids[take]
            qtys = qtys[take]
        lines = np.empty((lines_total, 3), np.int64)
        lines[:, 0] = sku_ids
        lines[:, 1] = node_ids
        lines[:, 2] = qtys
        reserve.reserve(self._st, req, lines, now)
        self._lines_live += lines_total

    def _reserve_columns_result(
        self,
        item_r: np.ndarray,
        replayed: np.ndarray,
        counts: np.ndarray,
        starts: np.ndarray,
        rejections: dict[int, Rejection],
    ) -> ReserveColumnsResult:
        """Read every answered item back from the arrays (after the kernel: replays of an id
        first held in this very command see it held, as `_reserve_run`'s replays do)."""
        n = item_r.shape[0]
        lines_total = int(starts[-1])
        res = self._a["res"]
        ln = self._a["ln"]
        answered = item_r >= 0
        if answered.all():
            rows = res[item_r]
            held = None
            l0 = int(rows[0, R_LINE_START]) if n else 0
            if n and not replayed.any() and int(rows[-1, R_LINE_START]) == l0 + int(starts[-2]):
                # All fresh: their lines are one block of the arena, in item order.
                block = ln[l0 : l0 + lines_total]
                held = block[:, L_HELD]
                statuses = block[:, L_STATUS]
            states = rows[:, R_STATE]
            expires = np.where(states == _HELD, rows[:, R_EXPIRES_MS], 0)
        else:
            held = None
            rows = res[item_r[answered]]
            states = np.full(n, _REJECTED, np.int64)
            states[answered] = rows[:, R_STATE]
            expires = np.zeros(n, np.int64)
            expires[answered] = np.where(rows[:, R_STATE] == _HELD, rows[:, R_EXPIRES_MS], 0)
        if held is None:
            # Gather each answered item's lines from the arena into its place in the columns.
            item_counts = counts[answered]
            total = int(item_counts.sum())
            firsts = np.zeros(item_counts.shape[0], np.int64)
            np.cumsum(item_counts[:-1], out=firsts[1:]) if item_counts.shape[0] else None
            step = np.arange(total, dtype=np.int64)
            src = np.repeat(rows[:, R_LINE_START] - firsts, item_counts) + step
            dst = np.repeat(starts[:-1][answered] - firsts, item_counts) + step
            held = np.zeros(lines_total, np.int64)
            statuses = np.zeros(lines_total, np.int64)
            held[dst] = ln[src, L_HELD]
            statuses[dst] = ln[src, L_STATUS]
        return ReserveColumnsResult(
            states.tolist(),
            replayed.tolist(),
            expires.tolist(),
            held.tolist(),
            statuses.tolist(),
            rejections,
        )

    def _lookup_res(self, reservation_id: str) -> int | Rejection:
        bad = _check_id(reservation_id, "reservation_id")
        if bad is not None:
            return bad
        r = self._res_ids.get(reservation_id)
        if r is None:
            return _reject(
                Code.NOT_FOUND,
                "RESERVATION_NOT_FOUND",
                f"reservation_id {reservation_id!r}: no such reservation",
            )
        return r

    def _wrong_state(self, r: int, action: str, allowed: str) -> Rejection:
        state = ReservationState(int(self._a["res"][r, R_STATE])).name
        return _reject(
            Code.FAILED_PRECONDITION,
            "WRONG_STATE",
            f"reservation {self._res_names[r]!r} is {state}; only {allowed} can be {action}",
        )

    def _transition_run(
        self,
        cmds: Sequence[Commit | Release],
        now: int,
        kernel: Callable[..., None],
        action: str,
        allowed: str,
    ) -> list[Outcome]:
        out: list[Outcome] = [None] * len(cmds)
        ks: list[int] = []
        rs: list[int] = []
        for k, cmd in enumerate(cmds):
            r = self._lookup_res(cmd.reservation_id)
            if isinstance(r, Rejection):
                out[k] = r
            else:
                ks.append(k)
                rs.append(r)
        if rs:
            codes = np.empty(len(rs), np.int64)
            kernel(self._st, np.array(rs, np.int64), now, codes)
            res = self._a["res"]
            for k, r, code in zip(ks, rs, codes.tolist(), strict=True):
                if code == reserve.WRONG_STATE:
                    out[k] = self._wrong_state(r, action, allowed)
                    continue
                if code == reserve.DONE and int(res[r, R_STATE]) != ReservationState.COMMITTED:
                    self._final.append((now, "r", cmds[k].reservation_id))
                out[k] = ReservationResult(self._view(r), code == reserve.REPLAY)
        return out

    def _commit_run(self, cmds: list[Commit], now: int) -> list[Outcome]:
        return self._transition_run(cmds, now, reserve.commit, "committed", "a live HELD hold")

    def _release_run(self, cmds: list[Release], now: int) -> list[Outcome]:
        return self._transition_run(cmds, now, reserve.release, "released", "HELD or COMMITTED")

    def _extend_one(self, cmds: list[Extend], now: int) -> list[Outcome]:
        cmd = cmds[0]
        r = self._lookup_res(cmd.reservation_id)
        if isinstance(r, Rejection):
            return [r]
        if not limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX:
            return [_invalid("ttl_ms", f"must be in {limits.TTL_MS_MIN}..{limits.TTL_MS_MAX}")]
        return [self._once_per_request(r, cmd, "e:", now, self._extend_apply)]

    def _extend_apply(self, r: int, cmd: Extend, now: int) -> Outcome:
        self._ensure(heap=1)
        codes = np.empty(1, np.int64)
        reserve.extend(
            self._st, np.array([r], np.int64), np.array([now + cmd.ttl_ms], np.int64), now, codes
        )
        if codes[0] != reserve.DONE:
            return self._wrong_state(r, "extended", "a live HELD hold")
        return ReservationResult(self._view(r), False)

    def _fulfil_one(self, cmds: list[Fulfil], now: int) -> list[Outcome]:
        cmd = cmds[0]
        r = self._lookup_res(cmd.reservation_id)
        if isinstance(r, Rejection):
            return [r]
        return [self._once_per_request(r, cmd, "f:", now, self._fulfil_apply)]

    def _once_per_request(
        self,
        r: int,
        cmd: Fulfil | Extend,
        prefix: str,
        now: int,
        apply: Callable[[int, Any, int], Outcome],
    ) -> Outcome:
        """`apply(r, cmd, now)` for a command on reservation r whose optional `request_id`
        (remembered under `prefix`) makes a retry answer what the first call answered."""
        bad = _check_id(cmd.request_id, "request_id", required=False)
        if bad is not None:
            return bad
        if not cmd.request_id:
            return apply(r, cmd, now)
        key = prefix + cmd.request_id
        content = _encode(cmd)
        seen = self._requests.get(key)
        if seen is not None:
            return self._replay_on_reservation(r, cmd, content, seen)
        outcome = apply(r, cmd, now)
        stored = _encode(outcome) if isinstance(outcome, Rejection) else b""
        self._remember_request(key, content, stored, now)
        return outcome

    def _replay_on_reservation(
        self, r: int, cmd: Fulfil | Extend, content: bytes, seen: tuple[bytes, bytes]
    ) -> Outcome:
        """The answer to a retried fulfil or extend: its first refusal, or the reservation as it
        is now, replayed; ID_CONFLICT if the request id came with other content."""
        if seen[0] != content:
            return id_conflict("request_id", cmd.request_id)
        if seen[1]:
            return _rejection_decoder.decode(seen[1])
        return ReservationResult(self._view(r), True)

    def _fulfil_apply(self, r: int, cmd: Fulfil, now: int) -> Outcome:
        res = self._a["res"]
        ln = self._a["ln"]
        state = int(res[r, R_STATE])
        if state == ReservationState.FULFILLED and not cmd.lines:
            return ReservationResult(self._view(r), True)
        if state not in (ReservationState.HELD, ReservationState.COMMITTED):
            return self._wrong_state(r, "fulfilled", "HELD or COMMITTED")
        l0 = int(res[r, R_LINE_START])
        count = int(res[r, R_LINE_COUNT])
        take: dict[int, int] = {}
        if not cmd.lines:
            for a in range(l0, l0 + count):
                if ln[a, L_HELD] > 0:
                    take[a] = int(ln[a, L_HELD])
        else:
            # A fulfil line names reservation lines by (sku, node), whatever their ids became.
            names = [(x.sku, x.node_id) for x in self._reserve_of(r).lines]
            for i, line in enumerate(cmd.lines):
                bad = _check_qty(line.qty, f"lines[{i}].qty")
                if bad is not None:
                    return bad
                want = line.qty
                matched = False
                for a in range(l0, l0 + count):
                    if names[a - l0] != (line.sku, line.node_id):
                        continue
                    matched = True
                    free = int(ln[a, L_HELD]) - take.get(a, 0)
                    step = min(free, want)
                    if step > 0:
                        take[a] = take.get(a, 0) + step
                        want -= step
                if not matched:
                    return _reject(
                        Code.FAILED_PRECONDITION,
                        "LINE_NOT_IN_RESERVATION",
                        f"lines[{i}]: {line.sku!r} at {line.node_id!r} is not held by this "
                        "reservation",
                    )
                if want > 0:
                    return _reject(
                        Code.FAILED_PRECONDITION,
                        "OVER_FULFIL",
                        f"lines[{i}].qty: {line.qty} is more than the {line.qty - want} units "
                        "still held",
                    )
        if not take:
            return self._wrong_state(r, "fulfilled", "reservations still holding units")
        line_idxs = np.fromiter(take.keys(), np.int64, len(take))
        qtys = np.fromiter(take.values(), np.int64, len(take))
        codes = np.empty(1, np.int64)
        reserve.fulfil(
            self._st,
            np.array([r], np.int64),
            np.array([0, len(take)], np.int64),
            line_idxs,
            qtys,
            now,
            codes,
        )
        code = int(codes[0])
        if code == reserve.WRONG_STATE:
            return self._wrong_state(r, "fulfilled", "a live HELD hold or COMMITTED")
        if code == reserve.NO_STOCK:
            return _reject(
                Code.FAILED_PRECONDITION,
                "NOT_ON_HAND",
                "backordered units are not on hand yet; receive stock first",
            )
        assert code == reserve.DONE, code
        if int(res[r, R_STATE]) == ReservationState.FULFILLED:
            self._final.append((now, "r", cmd.reservation_id))
        return ReservationResult(self._view(r), False)

    def _view(self, r: int, cmd: Reserve | None = None) -> ReservationView:
        """The reservation at index r; `cmd` is its content when the caller holds it (plain)."""
        if cmd is None:
            cmd = self._reserve_of(r)
        row = self._a["res"][r].tolist()
        l0 = row[R_LINE_START]
        cmd_lines = cmd.lines
        state = _STATE_OF[row[R_STATE]]
        # Positional arguments: ReservedLine(line, reserved_qty, fulfilled_qty, status, held_qty)
        # and ReservationView(reservation_id, state, lines, expires_at_ms, created_at_ms,
        # group_id); keywords cost a third of this method.
        if len(cmd_lines) == 1:
            lr = self._a["ln"][l0].tolist()
            reserved_lines: tuple[ReservedLine, ...] = (
                ReservedLine(
                    cmd_lines[0],
                    lr[L_GRANTED],
                    lr[L_FULFILLED],
                    _LINE_STATUS_OF[lr[L_STATUS]],
                    lr[L_HELD],
                ),
            )
        else:
            lines = self._a["ln"][l0 : l0 + len(cmd_lines)].tolist()
            reserved_lines = tuple(
                [
                    ReservedLine(
                        line,
                        lr[L_GRANTED],
                        lr[L_FULFILLED],
                        _LINE_STATUS_OF[lr[L_STATUS]],
                        lr[L_HELD],
                    )
                    for line, lr in zip(cmd_lines, lines, strict=True)
                ]
            )
        return ReservationView(
            cmd.reservation_id,
            state,
            reserved_lines,
            row[R_EXPIRES_MS] if state is ReservationState.HELD else 0,
            row[R_CREATED_MS],
            cmd.group_id,
        )

    # --- supply ----------------------------------------------------------------------------

    def _request_seen(
        self, key: str, request_id: str, content: bytes, replay: Callable[[bytes], Outcome]
    ) -> Outcome | None:
        """None if `key` is new; else its replay (`replay` of the stored outcome bytes), or
        ID_CONFLICT when the remembered content differs."""
        seen = self._requests.get(key)
        if seen is None:
            return None
        if seen[0] != content:
            return id_conflict("request_id", request_id)
        return replay(seen[1])

    def _remember_request(self, key: str, content: bytes, outcome: bytes, now: int) -> None:
        self._requests[key] = (content, outcome)
        self._final_requests.append((now, "q", key))

    def _supply_request(
        self,
        cmd: Adjust | Move | SetOnHand | SetSafetyStock | SetBackorderLimit,
        items: Sequence[Any],
        now: int,
        check_item: Callable[[Any, int], Rejection | None],
        run: Callable[[np.ndarray, np.ndarray, list[Any]], np.ndarray],
    ) -> list[Outcome]:
        """The shared frame of every per-line supply command: validate, dedupe, intern, run."""
        bad = _check_id(cmd.request_id, "request_id") or _check_lines_count(items, "lines")
        if bad is None:
            for i, item in enumerate(items):
                bad = (
                    _check_id(item.sku, f"lines[{i}].sku")
                    or _check_id(item.node_id, f"lines[{i}].node_id")
                    or check_item(item, i)
                )
                if bad is not None:
                    break
        if bad is not None:
            return [bad]
        key = f"{type(cmd).__name__}:{cmd.request_id}"
        content = _encode(cmd)
        seen = self._request_seen(key, cmd.request_id, content, _supply_replay)
        if seen is not None:
            return [seen]
        n = len(items)
        sku_ids = np.fromiter((self._skus.intern(it.sku) for it in items), np.int64, n)
        node_ids = np.fromiter(
            (self._nodes.ids.get(it.node_id, EMPTY) for it in items), np.int64, n
        )
        self._ensure(positions=n, skus=len(self._skus))
        statuses = run(sku_ids, node_ids, list(items))
        self._events.touch_pairs(sku_ids, node_ids)
        self._remember_request(key, content, statuses.astype(np.int8).tobytes(), now)
        return [SupplyResult(tuple(LineStatus(s) for s in statuses.tolist()), False)]

    def _run_deltas(
        self, sku_ids: np.ndarray, node_ids: np.ndarray, deltas: np.ndarray
    ) -> np.ndarray:
        n = len(sku_ids)
        statuses = np.zeros(n, np.int8)
        supply.apply_deltas(
            self._st, np.arange(n + 1, dtype=np.int64), sku_ids, node_ids, deltas, statuses
        )
        return statuses

    def _adjust_one(self, cmds: list[Adjust], now: int) -> list[Outcome]:
        def check(item: Any, i: int) -> Rejection | None:
            if item.reason not in _ADJUST_DELTAS:
                return _invalid(f"lines[{i}].reason", "must name a reason")
            lo = -limits.QTY_MAX
            bad = _check_qty(item.delta, f"lines[{i}].delta", lo, limits.QTY_MAX)
            if bad is None and item.delta == 0:
                bad = _invalid(f"lines[{i}].delta", "must not be 0")
            return bad

        def run(sku_ids: np.ndarray, node_ids: np.ndarray, items: list[Any]) -> np.ndarray:
            deltas = np.array([_ADJUST_DELTAS[it.reason](it.delta) for it in items], np.int64)
            return self._run_deltas(sku_ids, node_ids, deltas.reshape(len(items), 3))

        return self._supply_request(cmds[0], cmds[0].adjustments, now, check, run)

    def _move_one(self, cmds: list[Move], now: int) -> list[Outcome]:
        def check(item: Any, i: int) -> Rejection | None:
            if item.kind not in _MOVE_DELTAS:
                return _invalid(f"lines[{i}].kind", "must name a move")
            return _check_qty(item.qty, f"lines[{i}].qty")

        def run(sku_ids: np.ndarray, node_ids: np.ndarray, items: list[Any]) -> np.ndarray:
            deltas = np.array([_MOVE_DELTAS[it.kind](it.qty) for it in items], np.int64)
            return self._run_deltas(sku_ids, node_ids, deltas.reshape(len(items), 3))

        return self._supply_request(cmds[0], cmds[0].moves, now, check, run)

    def _set_on_hand_one(self, cmds: list[SetOnHand], now: int) -> list[Outcome]:
        def check(item: Any, i: int) -> Rejection | None:
            return _check_qty(item.on_hand, f"lines[{i}].on_hand", 0) or _check_qty(
                item.source_seq, f"lines[{i}].source_seq", 0, 2**62
            )

        def run(sku_ids: np.ndarray, node_ids: np.ndarray, items: list[Any]) -> np.ndarray:
            counts = np.array([it.on_hand for it in items], np.int64)
            seqs = np.array([it.source_seq for it in items], np.int64)
            statuses = np.zeros(len(items), np.int8)
            supply.set_on_hand(self._st, sku_ids, node_ids, counts, seqs, statuses)
            return statuses

        return self._supply_request(cmds[0], cmds[0].counts, now, check, run)

    def _set_column_one(
        self, cmd: SetSafetyStock | SetBackorderLimit, column: int, now: int
    ) -> list[Outcome]:
        def check(item: Any, i: int) -> Rejection | None:
            return _check_qty(item.value, f"lines[{i}].value", 0)

        def run(sku_ids: np.ndarray, node_ids: np.ndarray, items: list[Any]) -> np.ndarray:
            values = np.array([it.value for it in items], np.int64)
            statuses = np.zeros(len(items), np.int8)
            supply.set_column(self._st, sku_ids, node_ids, values, column, statuses)
            return statuses

        return self._supply_request(cmd, cmd.settings, now, check, run)

    def _set_safety_one(self, cmds: list[SetSafetyStock], now: int) -> list[Outcome]:
        return self._set_column_one(cmds[0], int(Bucket.SAFETY_STOCK), now)

    def _set_backorder_one(self, cmds: list[SetBackorderLimit], now: int) -> list[Outcome]:
        return self._set_column_one(cmds[0], int(Bucket.BACKORDER_LIMIT), now)

    # --- transfers -------------------------------------------------------------------------

    def _transfer_result(self, transfer_id: str, t: _Transfer, replayed: bool) -> TransferResult:
        return TransferResult(
            transfer_id=transfer_id,
            state=t.state,
            sku=t.sku,
            from_node_id=t.from_node_id,
            to_node_id=t.to_node_id,
            qty_shipped=t.qty_shipped,
            qty_received=t.qty_received,
            expected_at_ms=t.expected_at_ms,
            status=t.status,
            replayed=replayed,
        )

    def _transfer_op(self, entries: list[tuple[str, str, int, int, int]]) -> LineStatus:
        """Apply one atomic operation of (sku, node, d_on_hand, d_unavailable, d_inbound)."""
        n = len(entries)
        sku_ids = np.array([self._skus.intern(e[0]) for e in entries], np.int64)
        node_ids = np.array([self._nodes.ids.get(e[1], EMPTY) for e in entries], np.int64)
        deltas = np.array([e[2:] for e in entries], np.int64)
        self._ensure(positions=n, skus=len(self._skus))
        statuses = np.zeros(n, np.int8)
        supply.apply_deltas(
            self._st, np.array([0, n], np.int64), sku_ids, node_ids, deltas, statuses
        )
        self._events.touch_pairs(sku_ids, node_ids)
        # The operation's status is its entries' first failing guard in precedence order.
        found = set(statuses.tolist())
        return next(s for s in LINE_STATUS_PRECEDENCE if s in found)

    def _transfer_lookup(self, transfer_id: str) -> _Transfer | Rejection:
        bad = _check_id(transfer_id, "transfer_id")
        if bad is not None:
            return bad
        t = self._transfers.get(transfer_id)
        if t is None:
            return _reject(
                Code.NOT_FOUND,
                "TRANSFER_NOT_FOUND",
                f"transfer_id {transfer_id!r}: no such transfer",
            )
        return t

    def _transfer_ship_one(self, cmds: list[TransferShip], now: int) -> list[Outcome]:
        cmd = cmds[0]
        bad = (
            _check_id(cmd.transfer_id, "transfer_id")
            or _check_id(cmd.sku, "sku")
            or _check_id(cmd.from_node_id, "from_node_id")
            or _check_id(cmd.to_node_id, "to_node_id")
            or _check_qty(cmd.qty, "qty")
            or _check_qty(cmd.expected_at_ms, "expected_at_ms", 0, 2**62)
        )
        if bad is None and cmd.from_node_id == cmd.to_node_id:
            bad = _invalid("to_node_id", "must differ from from_node_id")
        if bad is not None:
            return [bad]
        content = _encode(cmd)
        t = self._transfers.get(cmd.transfer_id)
        if t is not None:
            if t.content != content:
                return [id_conflict("transfer_id", cmd.transfer_id)]
            return [self._transfer_result(cmd.transfer_id, t, True)]
        status = self._transfer_op(
            [(cmd.sku, cmd.from_node_id, -cmd.qty, 0, 0), (cmd.sku, cmd.to_node_id, 0, 0, cmd.qty)]
        )
        ok = status == LineStatus.OK
        t = _Transfer(
            content=content,
            sku=cmd.sku,
            from_node_id=cmd.from_node_id,
            to_node_id=cmd.to_node_id,
            qty_shipped=cmd.qty if ok else 0,
            qty_received=0,
            expected_at_ms=cmd.expected_at_ms,
            state="IN_TRANSIT" if ok else "FAILED",
            status=status,
        )
        self._transfers[cmd.transfer_id] = t
        if ok:
            self._track_transfer(cmd.transfer_id, t)
        else:
            self._final.append((now, "t", cmd.transfer_id))
        return [self._transfer_result(cmd.transfer_id, t, False)]

    def _transfer_receive_one(self, cmds: list[TransferReceive], now: int) -> list[Outcome]:
        cmd = cmds[0]
        t = self._transfer_lookup(cmd.transfer_id)
        if isinstance(t, Rejection):
            return [t]
        bad = _check_qty(cmd.qty, "qty", 0) or _check_id(
            cmd.request_id, "request_id", required=False
        )
        if bad is not None:
            return [bad]
        content = _encode(cmd)
        key = "r:" + cmd.request_id
        if cmd.request_id:
            seen = self._requests.get(key)
            if seen is not None:
                if seen[0] != content:
                    return [id_conflict("request_id", cmd.request_id)]
                if seen[1]:
                    return [_rejection_decoder.decode(seen[1])]
                return [self._transfer_result(cmd.transfer_id, t, True)]
        outcome = self._transfer_receive_apply(cmd, t, now)
        if cmd.request_id:
            stored = _encode(outcome) if isinstance(outcome, Rejection) else b""
            self._remember_request(key, content, stored, now)
        return [outcome]

    def _transfer_receive_apply(self, cmd: TransferReceive, t: _Transfer, now: int) -> Outcome:
        if t.state == "RECEIVED" and cmd.qty == 0:
            return self._transfer_result(cmd.transfer_id, t, True)
        if t.state != "IN_TRANSIT":
            return _reject(
                Code.FAILED_PRECONDITION,
                "WRONG_STATE",
                f"transfer {cmd.transfer_id!r} is {t.state}; only IN_TRANSIT can be received",
            )
        remaining = t.qty_shipped - t.qty_received
        qty = cmd.qty or remaining
        if qty > remaining:
            return _reject(
                Code.FAILED_PRECONDITION,
                "OVER_RECEIVE",
                f"qty: {qty} is more than the {remaining} units in transit",
            )
        status = self._transfer_op([(t.sku, t.to_node_id, qty, 0, -qty)])
        if status == LineStatus.OK:
            t.qty_received += qty
            if t.qty_received == t.qty_shipped:
                t.state = "RECEIVED"
                self._untrack_transfer(cmd.transfer_id, t)
                self._final.append((now, "t", cmd.transfer_id))
        return self._transfer_result(cmd.transfer_id, t, False)

    def _transfer_cancel_one(self, cmds: list[TransferCancel], now: int) -> list[Outcome]:
        cmd = cmds[0]
        t = self._transfer_lookup(cmd.transfer_id)
        if isinstance(t, Rejection):
            return [t]
        if t.state == "CANCELLED":
            return [self._transfer_result(cmd.transfer_id, t, True)]
        if t.state != "IN_TRANSIT":
            return [
                _reject(
                    Code.FAILED_PRECONDITION,
                    "WRONG_STATE",
                    f"transfer {cmd.transfer_id!r} is {t.state}; only IN_TRANSIT can be cancelled",
                )
            ]
        remaining = t.qty_shipped - t.qty_received
        status = self._transfer_op(
            [(t.sku, t.to_node_id, 0, 0, -remaining), (t.sku, t.from_node_id, remaining, 0, 0)]
        )
        if status == LineStatus.OK:
            t.state = "CANCELLED"
            self._untrack_transfer(cmd.transfer_id, t)
            self._final.append((now, "t", cmd.transfer_id))
        return [self._transfer_result(cmd.transfer_id, t, False)]

    def _track_transfer(self, transfer_id: str, t: _Transfer) -> None:
        self._in_transit.setdefault(t.sku, {}).setdefault(t.to_node_id, {})[transfer_id] = t

    def _untrack_transfer(self, transfer_id: str, t: _Transfer) -> None:
        by_node = self._in_transit.get(t.sku)
        by_id = by_node.get(t.to_node_id) if by_node is not None else None
        if by_node is None or by_id is None:
            return
        by_id.pop(transfer_id, None)
        if not by_id:
            del by_node[t.to_node_id]
            if not by_node:
                del self._in_transit[t.sku]

    def dated_inbound(self, sku: str, node_id: str, at_ms: int) -> list[tuple[int, int]]:
        """(expected_at_ms, units still in transit) of the IN_TRANSIT transfers of `sku` to
        `node_id` with a known arrival (expected_at_ms > 0) at or before `at_ms`, earliest first."""
        by_id = self._in_transit.get(sku, {}).get(node_id)
        if not by_id:
            return []
        return sorted(
            (t.expected_at_ms, t.qty_shipped - t.qty_received)
            for t in by_id.values()
            if 0 < t.expected_at_ms <= at_ms
        )

    # --- sourcing (engine/sourcing.py has the rules) ---------------------------------------

    def _set_thresholds_one(self, cmds: list[SetThresholds], now: int) -> list[Outcome]:
        return [self._events.set_thresholds(self, cmds[0], now)]

    def _source_reserve_one(self, cmds: list[SourceReserve], now: int) -> list[Outcome]:
        return [sourcing.source_reserve(self, cmds[0], now)]

    # --- nodes and groups ------------------------------------------------------------------

    def _upsert_nodes_one(self, cmds: list[UpsertNodes], now: int) -> list[Outcome]:
        cmd = cmds[0]
        nodes = cmd.nodes
        bad = _check_id(cmd.request_id, "request_id", required=False)
        if bad is None and (not nodes or len(nodes) > limits.REQUEST_LINES_MAX):
            bad = _invalid("nodes", f"must have 1..{limits.REQUEST_LINES_MAX} nodes")
        for i, spec in enumerate(nodes):
            if bad is not None:
                break
            f = f"nodes[{i}]"
            bad = _check_id(spec.node_id, f"{f}.node_id")
            if bad is None and spec.type not in NodeType.__members__.values():
                bad = _invalid(f"{f}.type", "unknown node type")
            if bad is None and not -90.0 <= spec.lat <= 90.0:
                bad = _invalid(f"{f}.lat", "must be in -90..90")
            if bad is None and not -180.0 <= spec.lon <= 180.0:
                bad = _invalid(f"{f}.lon", "must be in -180..180")
            if bad is None:
                bad = _check_qty(spec.priority, f"{f}.priority", -(2**31), 2**31 - 1)
            if bad is None:
                bad = _check_qty(spec.daily_capacity, f"{f}.daily_capacity", 0, 2**62)
        if bad is not None:
            return [bad]
        key, content = self._upsert_key(cmd)
        seen = self._request_seen(key, cmd.request_id, content, _upsert_replay) if key else None
        if seen is not None:
            return [seen]
        bad = _room_for(self._nodes, (s.node_id for s in nodes), limits.NODES_MAX, "nodes")
        if bad is not None:
            return [bad]
        distinct = {spec.node_id for spec in nodes}
        created = len(distinct - self._nodes.ids.keys())
        ids = [self._nodes.intern(spec.node_id) for spec in nodes]
        self._ensure(nodes=len(self._nodes))
        while len(self._node_names) < len(self._nodes):
            self._node_names.append("")
        n64 = self._a["node_i64"]
        f64 = self._a["node_f64"]
        for n, spec in zip(ids, nodes, strict=True):
            n64[n, N_REGISTERED] = 1
            n64[n, N_ENABLED] = int(spec.enabled)
            n64[n, N_TYPE] = int(spec.type)
            n64[n, N_PICKUP] = int(spec.pickup)
            n64[n, N_SHIP] = int(spec.ship)
            n64[n, N_PRIORITY] = spec.priority
            n64[n, N_CAPACITY_DAILY] = spec.daily_capacity
            f64[n, 0] = spec.lat
            f64[n, 1] = spec.lon
            self._node_names[n] = spec.name
        statuses = [_OK] * len(nodes)
        return [self._upsert_result(key, content, statuses, created, len(distinct) - created, now)]

    def _upsert_groups_one(self, cmds: list[UpsertGroups], now: int) -> list[Outcome]:
        """Invalid fields refuse the whole command; a group naming a node that is not registered
        is answered UNKNOWN_NODE and left out (so a stream that registers nodes and then names
        them in groups works whichever batch each lands in)."""
        cmd = cmds[0]
        groups = cmd.groups
        bad = _check_id(cmd.request_id, "request_id", required=False)
        if bad is None and (not groups or len(groups) > limits.REQUEST_LINES_MAX):
            bad = _invalid("groups", f"must have 1..{limits.REQUEST_LINES_MAX} groups")
        for i, spec in enumerate(groups):
            if bad is not None:
                break
            f = f"groups[{i}]"
            bad = (
                _check_id(spec.group_id, f"{f}.group_id")
                or _check_qty(spec.buffer_units, f"{f}.buffer_units", 0)
                or (
                    None
                    if 0.0 <= spec.buffer_pct <= limits.BUFFER_PCT_MAX
                    else _invalid(f"{f}.buffer_pct", f"must be in 0..{limits.BUFFER_PCT_MAX}")
                )
            )
            for j, node_id in enumerate(spec.node_ids):
                if bad is not None:
                    break
                bad = _check_id(node_id, f"{f}.node_ids[{j}]")
        if bad is not None:
            return [bad]
        key, content = self._upsert_key(cmd)
        seen = self._request_seen(key, cmd.request_id, content, _upsert_replay) if key else None
        if seen is not None:
            return [seen]
        statuses = [
            _OK if all(map(self._node_registered, spec.node_ids)) else _UNKNOWN_NODE
            for spec in groups
        ]
        applied = [spec for spec, s in zip(groups, statuses, strict=True) if s == _OK]
        bad = _room_for(self._groups, (s.group_id for s in applied), limits.GROUPS_MAX, "groups")
        if bad is not None:
            return [bad]
        distinct = {spec.group_id for spec in applied}
        created = len(distinct - self._groups.ids.keys())
        ids = [self._groups.intern(spec.group_id) for spec in applied]
        self._ensure(groups=len(self._groups), nodes=len(self._nodes))
        while len(self._group_specs) < len(self._groups):
            self._group_specs.append(None)
        g64 = self._a["grp_i64"]
        member = self._a["member"]
        for g, spec in zip(ids, applied, strict=True):
            g64[g, G_DEFINED] = 1
            g64[g, G_BUFFER_UNITS] = spec.buffer_units
            g64[g, G_BUFFER_BP] = round(spec.buffer_pct * 100)
            member[g, :] = 0
            for node_id in spec.node_ids:
                member[g, self._nodes.ids[node_id]] = 1
            self._group_specs[g] = spec
        return [self._upsert_result(key, content, statuses, created, len(distinct) - created, now)]

    @staticmethod
    def _upsert_key(cmd: UpsertNodes | UpsertGroups) -> tuple[str, bytes]:
        """The idempotency key and content of an upsert with a request_id, else ("", b"")."""
        if not cmd.request_id:
            return "", b""
        return f"{type(cmd).__name__}:{cmd.request_id}", _encode(cmd)

    def _upsert_result(
        self, key: str, content: bytes, statuses: list[int], created: int, updated: int, now: int
    ) -> UpsertResult:
        if key:
            counts = np.array([created, updated], np.int64).tobytes()
            outcome = counts + np.array(statuses, np.int8).tobytes()
            self._remember_request(key, content, outcome, now)
        return UpsertResult(tuple(map(LineStatus, statuses)), created, updated, False)

    def _node_registered(self, node_id: str) -> bool:
        n = self._nodes.ids.get(node_id)
        return n is not None and self._a["node_i64"][n, N_REGISTERED] != 0

    # --- forgetting and compaction ---------------------------------------------------------

    def _forget(self, now: int) -> None:
        """Forget final ids past the idempotency window or beyond the remembered maximum (each
        of the two queues, reservations and transfers, and request ids, on its own)."""
        final = self._final
        cutoff = now - self._ids_window_ms
        while final and (final.first_ms() <= cutoff or len(final) > self._ids_remembered_max):
            _, kind, key = final.popleft()
            if kind == "r":
                r = self._res_ids.pop(key)
                self._sourced.pop(key, None)
                self._lines_live -= int(self._a["res"][r, R_LINE_COUNT])
                self._res_names[r] = None
                self._res_content[r] = None
                self._a["res"][r] = 0
                self._res_free.append(r)
            else:
                del self._transfers[key]
        requests = self._final_requests
        while requests and (
            requests.first_ms() <= cutoff or len(requests) > self._ids_remembered_max
        ):
            del self._requests[requests.popleft()[2]]

    def _compact(self) -> None:
        ctr = self._ctr
        if ctr.item(C_LINES_USED) > 2 * self._lines_live + 65_536:
            self._compact_lines()
        if ctr.item(C_HEAP_LEN) > 2 * ctr.item(C_HELD) + 65_536:
            reserve.heap_compact(self._st)

    def _compact_lines(self) -> None:
        """Move the lines of remembered reservations to the front of the arena, in order."""
        res = self._a["res"]
        live = np.sort(self._res_ids.values())
        if live.size:
            live = live[np.argsort(res[live, R_LINE_START], kind="stable")]
        starts = res[live, R_LINE_START]
        counts = res[live, R_LINE_COUNT]
        new_starts = np.zeros_like(counts)
        np.cumsum(counts[:-1], out=new_starts[1:]) if counts.size else None
        gather = np.repeat(starts - new_starts, counts) + np.arange(int(counts.sum()))
        ln = self._a["ln"]
        moved = ln[gather]
        ln[: moved.shape[0]] = moved
        ln[moved.shape[0] : int(self._ctr[C_LINES_USED])] = 0
        res[live, R_LINE_START] = new_starts
        self._ctr[C_LINES_USED] = moved.shape[0]

    # --- reads -----------------------------------------------------------------------------

    def sku_id(self, sku: str) -> int:
        return self._skus.ids.get(sku, EMPTY)

    def node_id(self, node_id: str) -> int:
        return self._nodes.ids.get(node_id, EMPTY)

    def group_id(self, group_id: str) -> int:
        return self._groups.ids.get(group_id, _GROUP_UNKNOWN)

    def sku_ids(self, skus: Sequence[str]) -> np.ndarray:
        """`sku_id` of each name of a column, as int64[n] (the lookups at C speed)."""
        return _intern_column(self._skus.ids, skus)

    def node_ids(self, node_ids: Sequence[str]) -> np.ndarray:
        """`node_id` of each name of a column, as int64[n] (the lookups at C speed)."""
        return _intern_column(self._nodes.ids, node_ids)

    def availability_ids(
        self, sku_ids: np.ndarray, node_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Columnar (sku_id, node_id) reads: statuses int8[n] and quantities int64[n, 7]."""
        n = sku_ids.shape[0]
        statuses = np.empty(n, np.int8)
        qty = np.empty((n, atp.OUT_COLS), np.int64)
        atp.availability_at_nodes(self._st, sku_ids, node_ids, statuses, qty)
        return statuses, qty

    def availability_one(self, sku_id: int, node_id: int, out: np.ndarray) -> int:
        """`availability_ids` of one query: its status, and its quantities in out[0] (int64[1, 7]).

        For one query per call: the kernel takes the state's arrays and two ints, which numba
        types in C, where the `State` handle costs a typing round trip through Python per call
        (engine/kernels/atp.py, `availability_one_at_node`)."""
        a = self._a
        return int(
            atp.availability_one_at_node(
                a["qty"], a["node_i64"], a["sku_known"], a["table"], a["pos_key"],
                sku_id, node_id, out,
            )
        )  # fmt: skip

    def availability_at(self, sku: str, node_id: str, out: np.ndarray) -> int:
        """`availability_one` of a SKU at a node, by name (unknown names answer their status):
        one Python call for the server's one-query read instead of three."""
        a = self._a
        return int(
            atp.availability_one_at_node(
                a["qty"], a["node_i64"], a["sku_known"], a["table"], a["pos_key"],
                self._skus.ids.get(sku, EMPTY), self._nodes.ids.get(node_id, EMPTY), out,
            )
        )  # fmt: skip

    def availability_group_ids(
        self, sku_ids: np.ndarray, group_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Columnar (sku_id, group_id) reads; group id -1 means the whole network."""
        n = sku_ids.shape[0]
        statuses = np.empty(n, np.int8)
        qty = np.empty((n, atp.OUT_COLS), np.int64)
        atp.availability_in_groups(self._st, sku_ids, group_ids, statuses, qty)
        return statuses, qty

    def available_by_date(
        self,
        sku: str,
        node_id: str | None,
        group_id: str | None,
        at_ms: int,
        status: int,
        row: Sequence[int],
    ) -> int:
        """`available` as of `at_ms` (docs/ledger.md, "Availability by date"): the read's
        `available` plus the units of IN_TRANSIT transfers to the scope's nodes with a known
        expected_at_ms ≤ at_ms, each position clamped at 0 as `available` is. `status` and `row`
        (wire order) are this query's read; 0 unless the status is OK."""
        if status != LineStatus.OK:
            return 0
        if node_id is not None:
            raw = row[0] - row[1] - row[2] - row[3] - row[4]
            return max(0, raw + sum(q for _, q in self.dated_inbound(sku, node_id, at_ms)))
        total = int(row[6])
        by_node = self._in_transit.get(sku)
        if not by_node:
            return total
        g = self.group_id(group_id) if group_id else -1
        units = bp = 0
        if g >= 0:
            units, bp = self._a["grp_i64"][g, [G_BUFFER_UNITS, G_BUFFER_BP]].tolist()
        node_i64 = self._a["node_i64"]
        member = self._a["member"]
        sku_ids = np.array([self.sku_id(sku)], np.int64)
        for name in sorted(by_node):
            n = self._nodes.ids[name]
            if node_i64[n, N_REGISTERED] == 0 or node_i64[n, N_ENABLED] == 0:
                continue
            if g >= 0 and member[g, n] == 0:
                continue
            dated = sum(q for _, q in self.dated_inbound(sku, name, at_ms))
            if dated == 0:
                continue
            _, qty = self.availability_ids(sku_ids, np.array([n], np.int64))
            on_hand, reserved, allocated, safety, unavailable = qty[0, :5].tolist()
            r = on_hand - reserved - allocated - safety - unavailable
            if bp > 0 and on_hand > 0:
                r -= (on_hand * bp + 9_999) // 10_000
            r -= units
            total += max(0, r + dated) - max(0, r)
        return total

    def availability(
        self,
        queries: Sequence[tuple[str, str | None, str | None]],
        *,
        at_ms: int | None = None,
    ) -> list[tuple[LineStatus, Quantities]]:
        """Friendly reads: (sku, node_id or None, group_id or None); neither = whole network.
        With `at_ms`, each result's `available_by_date` is set (see `available_by_date`)."""
        n = len(queries)
        skus = np.fromiter((self.sku_id(q[0]) for q in queries), np.int64, n)
        at_node = np.fromiter((q[1] is not None for q in queries), np.bool_, n)
        statuses = np.empty(n, np.int8)
        qty = np.empty((n, atp.OUT_COLS), np.int64)
        if at_node.any():
            idx = np.flatnonzero(at_node)
            nodes = np.array([self.node_id(queries[i][1] or "") for i in idx.tolist()], np.int64)
            statuses[idx], qty[idx] = self.availability_ids(skus[idx], nodes)
        if not at_node.all():
            idx = np.flatnonzero(~at_node)
            groups = np.array(
                [self.group_id(g) if (g := queries[i][2]) else -1 for i in idx.tolist()], np.int64
            )
            statuses[idx], qty[idx] = self.availability_group_ids(skus[idx], groups)
        if at_ms is None:
            return [
                (LineStatus(s), Quantities(*row))
                for s, row in zip(statuses.tolist(), qty.tolist(), strict=True)
            ]
        return [
            (
                LineStatus(s),
                # row is the Quantities columns: mypy can't size a *-splat followed by an argument.
                DatedQuantities(*row, self.available_by_date(q[0], q[1], q[2], at_ms, s, row)),  # type: ignore[call-arg]
            )
            for q, s, row in zip(queries, statuses.tolist(), qty.tolist(), strict=True)
        ]

    def get_reservation(self, reservation_id: str) -> ReservationView:
        r = self._lookup_res(reservation_id)
        if isinstance(r, Rejection):
            raise EngineError(r)
        return self._view(r)

    def transfer(self, transfer_id: str) -> TransferResult:
        t = self._transfer_lookup(transfer_id)
        if isinstance(t, Rejection):
            raise EngineError(t)
        return self._transfer_result(transfer_id, t, False)

    def stats(self) -> dict[str, int]:
        ctr = self._ctr
        return {
            "positions": int(ctr[C_POSITIONS]),
            "skus": len(self._skus),
            "nodes": len(self._nodes),
            "groups": len(self._groups),
            "reservations_held": int(ctr[C_HELD]),
            "reservations_remembered": len(self._res_ids),
            "requests_remembered": len(self._requests),
            "transfers_remembered": len(self._transfers),
            "lines_used": int(ctr[C_LINES_USED]),
            "heap_len": int(ctr[C_HEAP_LEN]),
            "now_ms": int(ctr[C_NOW_MS]),
            "array_bytes": sum(a.nbytes for a in self._a.values()),
        }

    @property
    def now_ms(self) -> int:
        return int(self._ctr[C_NOW_MS])

    @property
    def events_seq(self) -> int:
        """Sequence number of the last stock event (engine/events.py)."""
        return self._events.seq

    # --- friendly single-command API -------------------------------------------------------

    def _one(self, now_ms: int, command: Command) -> Any:
        result = self.apply(now_ms, (command,)).results[0]
        if isinstance(result, Rejection):
            raise EngineError(result)
        return result

    def reserve(
        self,
        reservation_id: str,
        lines: Sequence[Line | tuple[str, str, int]],
        ttl_ms: int,
        now_ms: int,
        *,
        allow_partial: bool = False,
        group_id: str = "",
    ) -> ReservationResult:
        lines_t = tuple([x if isinstance(x, Line) else Line(*x) for x in lines])
        return self._one(now_ms, Reserve(reservation_id, lines_t, ttl_ms, allow_partial, group_id))

    def commit(self, reservation_id: str, now_ms: int) -> ReservationResult:
        return self._one(now_ms, Commit(reservation_id))

    def release(self, reservation_id: str, now_ms: int) -> ReservationResult:
        return self._one(now_ms, Release(reservation_id))

    def extend(
        self, reservation_id: str, ttl_ms: int, now_ms: int, request_id: str = ""
    ) -> ReservationResult:
        return self._one(now_ms, Extend(reservation_id, ttl_ms, request_id))

    def fulfil(
        self,
        reservation_id: str,
        now_ms: int,
        lines: Sequence[Line | tuple[str, str, int]] = (),
        request_id: str = "",
    ) -> ReservationResult:
        lines_t = tuple(x if isinstance(x, Line) else Line(*x) for x in lines)
        return self._one(now_ms, Fulfil(reservation_id, lines_t, request_id))

    def find_nearby(
        self,
        lat: float,
        lon: float,
        radius_km: float,
        lines: Sequence[SkuQty | tuple[str, int]] = (),
        **options: Any,
    ) -> NearbyResult:
        """Nearest eligible nodes with per-line reservable units (engine/sourcing.py)."""
        result = sourcing.find_nearby(self, lat, lon, radius_km, lines, **options)
        if isinstance(result, Rejection):
            raise EngineError(result)
        return result

    def source_order(
        self,
        lines: Sequence[SkuQty | tuple[str, int]],
        *,
        mode: FulfilmentMode = FulfilmentMode.SHIP,
        lat: float = 0.0,
        lon: float = 0.0,
        pickup_node_id: str = "",
        policy: SourcingPolicy | None = None,
    ) -> SourcingPlan:
        """A plan from live stock; holds nothing (see `source_reserve`)."""
        result = sourcing.plan(
            self, lines, mode=mode, lat=lat, lon=lon, pickup_node_id=pickup_node_id, policy=policy
        )
        if isinstance(result, Rejection):
            raise EngineError(result)
        return result[0]

    def source_reserve(
        self,
        reservation_id: str,
        lines: Sequence[SkuQty | tuple[str, int]],
        ttl_ms: int,
        now_ms: int,
        *,
        mode: FulfilmentMode = FulfilmentMode.SHIP,
        lat: float = 0.0,
        lon: float = 0.0,
        pickup_node_id: str = "",
        policy: SourcingPolicy | None = None,
    ) -> SourcingResult:
        lines_t = tuple(x if isinstance(x, SkuQty) else SkuQty(*x) for x in lines)
        cmd = SourceReserve(
            reservation_id,
            ttl_ms,
            lines_t,
            mode,
            lat,
            lon,
            pickup_node_id,
            policy or SourcingPolicy(),
        )
        return self._one(now_ms, cmd)

    def upsert_nodes(
        self, nodes: Sequence[NodeSpec], now_ms: int = 0, *, request_id: str = ""
    ) -> UpsertResult:
        return self._one(now_ms, UpsertNodes(tuple(nodes), request_id))

    def upsert_groups(
        self, groups: Sequence[GroupSpec], now_ms: int = 0, *, request_id: str = ""
    ) -> UpsertResult:
        return self._one(now_ms, UpsertGroups(tuple(groups), request_id))

    # --- state export / import -------------------------------------------------------------

    def export_state(self) -> tuple[dict[str, np.ndarray], bytes]:
        """The whole state as trimmed arrays plus a msgpack meta blob (for snapshots)."""
        self._events._fit(self)
        a = self._a
        ctr = self._ctr
        positions = int(ctr[C_POSITIONS])
        n_skus = len(self._skus)
        n_nodes = len(self._nodes)
        n_groups = len(self._groups)
        arrays = {
            "qty": a["qty"][:positions],
            "pos_key": a["pos_key"][:positions],
            "pos_next": a["pos_next"][:positions],
            "table": a["table"],
            "sku_head": a["sku_head"][:n_skus],
            "sku_known": a["sku_known"][:n_skus],
            "node_i64": a["node_i64"][:n_nodes],
            "node_f64": a["node_f64"][:n_nodes],
            "grp_i64": a["grp_i64"][:n_groups],
            "member": a["member"][:n_groups, :n_nodes],
            "res": a["res"][: len(self._res_names)],
            "ln": a["ln"][: int(ctr[C_LINES_USED])],
            "heap": a["heap"][: int(ctr[C_HEAP_LEN])],
            "ctr": ctr,
            "ev_low": a["ev_low"][:positions],
        }
        meta = _Meta(
            version=FORMAT_VERSION,
            skus=self._skus.names,
            nodes=self._nodes.names,
            node_names=self._node_names,
            groups=self._groups.names,
            group_specs=self._group_specs,
            res_names=self._res_names,
            res_content=self._contents(),
            res_free=self._res_free,
            # One list, reservation and transfer ids first, then request ids (from_state
            # splits it by kind; a snapshot from before the split had them interleaved).
            final=[*self._final, *self._final_requests],
            requests=self._requests,
            transfers=self._transfers,
            lines_live=self._lines_live,
            sourced=self._sourced,
            events=self._events.export_meta(),
        )
        return arrays, msgspec.msgpack.encode(meta)

    @classmethod
    def from_state(
        cls,
        arrays: dict[str, np.ndarray],
        meta_bytes: bytes,
        *,
        ids_window_ms: int = limits.IDS_WINDOW_MS,
        ids_remembered_max: int = limits.IDS_REMEMBERED_MAX,
        room: Mapping[str, np.ndarray] | None = None,
    ) -> Ledger:
        """The ledger `export_state` described. The arrays are copied, except that with `room`
        (the `arrays` of the `ArraysWithRoom` the snapshot was read with) the position arrays and
        the hash table are adopted: the caller hands them over and must not use them again."""
        meta = msgspec.msgpack.decode(meta_bytes, type=_Meta)
        if meta.version != FORMAT_VERSION:
            raise ValueError(f"state format {meta.version} is not {FORMAT_VERSION}")
        positions = arrays["qty"].shape[0]
        capacity = rows_with_room(positions)
        adopted = _adoptable(arrays, room or {}, capacity)
        ledger = cls(
            # Adopted position arrays replace the constructor's, so those start minimal.
            positions=1024 if adopted else capacity,
            skus=max(1024, len(meta.skus) + len(meta.skus) // 4),
            nodes=max(64, len(meta.nodes) + 1),
            reservations=max(1024, len(meta.res_names) + 1),
            ids_window_ms=ids_window_ms,
            ids_remembered_max=ids_remembered_max,
        )
        a = ledger._a
        a.update(adopted)
        # Otherwise copied: the caller may keep using its arrays (export_state hands out the live
        # table). Into the new ledger's own table when the sizes agree.
        src_table = arrays["table"]
        if "table" not in adopted:
            if a["table"].shape != src_table.shape:
                a["table"] = aligned_full(src_table.shape, 0, np.int32)
            a["table"][:] = src_table
        ledger._ensure(
            groups=max(8, arrays["grp_i64"].shape[0]),
            lines=arrays["ln"].shape[0],
            heap=arrays["heap"].shape[0],
        )
        for name in (
            "qty",
            "pos_key",
            "pos_next",
            "sku_head",
            "sku_known",
            "node_i64",
            "node_f64",
            "grp_i64",
            "res",
            "ln",
            "heap",
            "ctr",
        ):
            if name in adopted:
                continue
            src = arrays[name]
            assert a[name].shape[0] >= src.shape[0], name
            a[name][: src.shape[0]] = src
        m = arrays["member"]
        a["member"][: m.shape[0], : m.shape[1]] = m
        ledger._set_arrays(a)
        ledger._skus = _Names(meta.skus)
        ledger._nodes = _Names(meta.nodes)
        ledger._node_names = list(meta.node_names)
        ledger._groups = _Names(meta.groups)
        ledger._group_specs = list(meta.group_specs)
        ledger._res_names = list(meta.res_names)
        ledger._res_content = list(meta.res_content)
        ledger._res_ids = IdTable(ledger._res_names)
        ledger._res_free = list(meta.res_free)
        ledger._final = FinalIds((x[0], x[1], x[2]) for x in meta.final if x[1] != "q")
        ledger._final_requests = FinalIds((x[0], x[1], x[2]) for x in meta.final if x[1] == "q")
        ledger._requests = {k: (v[0], v[1]) for k, v in meta.requests.items()}
        ledger._transfers = dict(meta.transfers)
        for transfer_id, t in ledger._transfers.items():
            if t.state == "IN_TRANSIT":
                ledger._track_transfer(transfer_id, t)
        ledger._lines_live = meta.lines_live
        ledger._sourced = {k: (v[0], v[1]) for k, v in meta.sourced.items()}
        ledger._events.restore(ledger, meta.events, arrays.get("ev_low"))
        return ledger


def _adoptable(
    arrays: Mapping[str, np.ndarray], room: Mapping[str, np.ndarray], capacity: int
) -> dict[str, np.ndarray]:
    """The arrays of `room` a restored ledger takes as its own (see `ArraysWithRoom`): all of
    `ADOPTABLE_FILL`'s or none. Each must hold the snapshot's array as its first rows (same
    memory), with `capacity` rows for a position array and the same size for the table."""
    adopted = {}
    for name in ADOPTABLE_FILL:
        full, src = room.get(name), arrays[name]
        rows = src.shape[0] if name == "table" else capacity
        if not (
            full is not None
            and full.dtype == src.dtype
            and full.shape == (rows, *src.shape[1:])
            and full.ctypes.data == src.ctypes.data
            and full.flags.c_contiguous
            and full.flags.writeable
        ):
            return {}
        adopted[name] = full
    return adopted


def _magnitude(sign_on_hand: int, sign_unavailable: int) -> Callable[[int], tuple[int, int, int]]:
    return lambda d: (sign_on_hand * abs(d), sign_unavailable * abs(d), 0)


# (d_on_hand, d_unavailable, d_inbound) for each reason, from the request's delta.
_ADJUST_DELTAS: dict[int, Callable[[int], tuple[int, int, int]]] = {
    AdjustReason.RECEIPT: _magnitude(1, 0),
    AdjustReason.SALE: _magnitude(-1, 0),
    AdjustReason.RETURN: _magnitude(1, 0),
    AdjustReason.DAMAGE: _magnitude(0, 1),
    AdjustReason.CORRECTION: lambda d: (d, 0, 0),
    AdjustReason.RETURN_TO_INSPECTION: _magnitude(1, 1),
}
_MOVE_DELTAS: dict[int, Callable[[int], tuple[int, int, int]]] = {
    MoveKind.TO_UNAVAILABLE: _magnitude(0, 1),
    MoveKind.TO_SELLABLE: _magnitude(0, -1),
    MoveKind.WRITE_OFF: _magnitude(-1, -1),
}
