"""Commands (what a batch carries and the journal stores) and their results.

Every mutation is one of these frozen msgspec Structs. A batch is `(now_ms, [commands])`; applying
the same batches to an empty ledger always yields the same state, which is what makes the journal
replayable. Results are plain Structs too, so the server can map them to protobuf directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import msgspec
import numpy as np

from engine.codes import AdjustReason, LineStatus, MoveKind, NodeType, ReservationState
from engine.errors import Rejection

__all__ = [
    "Adjust",
    "Adjustment",
    "Batch",
    "Command",
    "Commit",
    "Extend",
    "Fulfil",
    "FulfilmentMode",
    "GroupSpec",
    "Line",
    "Move",
    "NearbyNode",
    "NearbyResult",
    "MoveLine",
    "NodeSpec",
    "Release",
    "Reserve",
    "ReservationResult",
    "ReservationView",
    "ReservedLine",
    "ReserveColumns",
    "ReserveColumnsResult",
    "SetBackorderLimit",
    "SetOnHand",
    "SetSafetyStock",
    "SetThresholds",
    "Setting",
    "Shipment",
    "SkuQty",
    "SourceReserve",
    "SourcingPlan",
    "SourcingPolicy",
    "SourcingResult",
    "StockCount",
    "SupplyResult",
    "Threshold",
    "TransferCancel",
    "TransferReceive",
    "TransferResult",
    "TransferShip",
    "UpsertGroups",
    "UnfulfilledLine",
    "UpsertNodes",
    "UpsertResult",
]


_I64 = np.dtype("<i8")
_encode = msgspec.msgpack.Encoder().encode


def _int_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes msgpack takes for each int64 (msgspec picks the smallest form)."""
    v = values.astype(np.int64)
    pos = np.select([v < 128, v < 256, v < 65536, v < 2**32], [1, 2, 3, 5], 9)
    neg = np.select([v >= -32, v >= -128, v >= -32768, v >= -(2**31)], [1, 2, 3, 5], 9)
    return np.where(v >= 0, pos, neg).astype(np.int64)


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    pass


class Line(_Struct, frozen=True):
    sku: str
    node_id: str
    qty: int


class Adjustment(_Struct, frozen=True):
    sku: str
    node_id: str
    delta: int
    reason: AdjustReason = AdjustReason.CORRECTION


class StockCount(_Struct, frozen=True):
    sku: str
    node_id: str
    on_hand: int
    source_seq: int


class Setting(_Struct, frozen=True):
    sku: str
    node_id: str
    value: int


class MoveLine(_Struct, frozen=True):
    sku: str
    node_id: str
    qty: int
    kind: MoveKind


class NodeSpec(_Struct, frozen=True):
    node_id: str
    type: NodeType = NodeType.STORE
    lat: float = 0.0
    lon: float = 0.0
    pickup: bool = False
    ship: bool = True
    enabled: bool = True
    priority: int = 0
    daily_capacity: int = 0  # units per day; 0 = unlimited
    name: str = ""


class FulfilmentMode(IntEnum):
    """Wire numbers of `omnistock.v1.FulfilmentMode`."""

    UNSPECIFIED = 0
    SHIP = 1
    PICKUP = 2


class SkuQty(_Struct, frozen=True):
    """A line whose node the engine chooses (sourcing, FindNearby)."""

    sku: str
    qty: int


class SourcingPolicy(_Struct, frozen=True):
    """How SourceOrder chooses nodes (docs/sourcing.md). max_shipments 0 = no limit."""

    max_shipments: int = 0
    node_types: tuple[NodeType, ...] = ()
    group_id: str = ""
    allow_ship_from_store: bool = True
    distance_weight: float = 1.0
    priority_weight: float = 0.0
    split_penalty: float = 0.0
    respect_capacity: bool = True


class GroupSpec(_Struct, frozen=True):
    group_id: str
    node_ids: tuple[str, ...] = ()
    buffer_units: int = 0
    buffer_pct: float = 0.0
    kind: str = "channel"


# --- commands ---------------------------------------------------------------------------------


class _Command(_Struct, frozen=True, tag=True):
    pass


class Reserve(_Command, frozen=True):
    reservation_id: str
    lines: tuple[Line, ...]
    ttl_ms: int
    allow_partial: bool = False
    group_id: str = ""


class ReserveColumns(_Command, frozen=True):
    """Many reservations in one command, as columns (the batch RPCs' shape).

    Reservation k holds lines `starts[k] .. starts[k + 1] - 1` of the line columns, where starts
    are the running sums of `line_counts`; `ttl_ms`, `allow_partial` and `group_id` apply to every
    reservation. Applying it is exactly applying `to_reserves()` as one run of Reserve commands
    (docs/ledger.md, "ReserveColumns"). Integer columns are little-endian int64 bytes: msgspec
    copies them as one blob and numpy reads them without a copy.
    """

    reservation_ids: list[str]
    line_counts: bytes  # int64 per reservation
    skus: list[str]
    node_ids: list[str]
    qtys: bytes  # int64 per line
    ttl_ms: int
    allow_partial: bool = False
    group_id: str = ""

    @classmethod
    def build(
        cls,
        reservation_ids: Sequence[str],
        line_counts: Sequence[int] | np.ndarray,
        skus: Sequence[str],
        node_ids: Sequence[str],
        qtys: Sequence[int] | np.ndarray,
        ttl_ms: int,
        allow_partial: bool = False,
        group_id: str = "",
    ) -> ReserveColumns:
        return cls(
            list(reservation_ids),
            np.asarray(line_counts, _I64).tobytes(),
            list(skus),
            list(node_ids),
            np.asarray(qtys, _I64).tobytes(),
            ttl_ms,
            allow_partial,
            group_id,
        )

    def counts(self) -> np.ndarray:
        """`line_counts` as int64[n] (a read-only view)."""
        return np.frombuffer(self.line_counts, _I64)

    def qty_column(self) -> np.ndarray:
        """`qtys` as int64[lines] (a read-only view)."""
        return np.frombuffer(self.qtys, _I64)

    def consistent(self) -> bool:
        """The columns fit together: one count per id, and as many lines as the counts say."""
        if len(self.line_counts) % 8 or len(self.qtys) % 8:
            return False
        counts = self.counts()
        n_lines = len(self.skus)
        return (
            counts.shape[0] == len(self.reservation_ids)
            # Each count at most the lines there are, so the int64 sum cannot wrap around.
            and bool(((counts >= 0) & (counts <= n_lines)).all())
            and int(counts.sum()) == n_lines
            and len(self.node_ids) == n_lines
            and len(self.qtys) == 8 * n_lines
        )

    def reserve_at(self, k: int, l0: int | None = None) -> Reserve:
        """Reservation k as a plain Reserve (`l0`: its first line, when the caller knows it)."""
        counts = self.counts()
        if l0 is None:
            l0 = int(counts[:k].sum())
        l1 = l0 + int(counts[k])
        qtys = self.qty_column()[l0:l1].tolist()
        lines = tuple(map(Line, self.skus[l0:l1], self.node_ids[l0:l1], qtys))
        return Reserve(
            self.reservation_ids[k], lines, self.ttl_ms, self.allow_partial, self.group_id
        )

    def contents(self, ks: np.ndarray) -> list[bytes]:
        """`[msgpack(self.reserve_at(k)) for k in ks]`, the idempotency contents of items `ks`,
        built for all of them at once: every piece of a Reserve's msgpack is either a constant of
        the command or one element of an encoded column, so the bytes are gathered by offsets."""
        ks = np.asarray(ks, np.int64)
        m = ks.shape[0]
        if m == 0:
            return []
        columns = (self.reservation_ids, self.skus, self.node_ids)
        if not all(type(c) is list and "".join(c).isascii() for c in columns):
            return [_encode(self.reserve_at(int(k))) for k in ks.tolist()]  # sizes below are ASCII
        counts = self.counts()
        starts = np.zeros(counts.shape[0] + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        qtys = self.qty_column()
        # Sources: one buffer of constants, line headers and encoded columns (array header cut).
        head = b"\x96\xa7Reserve"  # [tag, reservation_id, lines, ttl_ms, allow_partial, group_id]
        tail = _encode(self.ttl_ms) + _encode(self.allow_partial) + _encode(self.group_id)
        sel_counts = counts[ks]
        lhdr = np.zeros((m, 3), np.uint8)
        small = sel_counts < 16
        lhdr[:, 0] = np.where(small, 0x90 | (sel_counts & 15), 0xDC)
        lhdr[:, 1] = (sel_counts >> 8) & 255
        lhdr[:, 2] = sel_counts & 255
        lhdr_len = np.where(small, 1, 3)
        pieces = [head, tail, b"\x93", lhdr.tobytes()]
        elem_offs = []
        elem_sizes = []
        base = sum(len(x) for x in pieces)
        for column, values in (*zip(("ids", "skus", "nodes"), columns, strict=True),
                               ("qtys", qtys.tolist())):  # fmt: skip
            blob = _encode(values)
            if column == "qtys":
                sizes = _int_sizes(qtys)
            else:
                lengths = np.fromiter(map(len, values), np.int64, len(values))
                sizes = lengths + np.select(
                    [lengths < 32, lengths < 256, lengths < 65536], [1, 2, 3], 5
                )
            skip = len(blob) - int(sizes.sum())
            assert skip in (1, 3, 5), (column, skip)  # the array header
            offs = np.empty_like(sizes)
            offs[0:1] = base + skip
            np.cumsum(sizes[:-1], out=offs[1:]) if sizes.shape[0] > 1 else None
            offs[1:] += base + skip
            elem_offs.append(offs)
            elem_sizes.append(sizes)
            pieces.append(blob)
            base += len(blob)
        src = np.frombuffer(b"".join(pieces), np.uint8)
        (id_off, sku_off, node_off, qty_off) = elem_offs
        (id_size, sku_size, node_size, qty_size) = elem_sizes
        # Segments in output order: per item head, id, line header, 4 per line, tail.
        total_lines = int(sel_counts.sum())
        lines_before = np.zeros(m, np.int64)
        np.cumsum(sel_counts[:-1], out=lines_before[1:]) if m > 1 else None
        line_idx = np.repeat(starts[ks] - lines_before, sel_counts) + np.arange(total_lines)
        item_of_line = np.repeat(np.arange(m), sel_counts)
        first = 4 * np.arange(m) + 4 * lines_before
        seg_off = np.empty(4 * m + 4 * total_lines, np.int64)
        seg_len = np.empty_like(seg_off)
        seg_off[first] = 0
        seg_len[first] = len(head)
        seg_off[first + 1] = id_off[ks]
        seg_len[first + 1] = id_size[ks]
        lhdr_at = len(head) + len(tail) + 1
        seg_off[first + 2] = lhdr_at + 3 * np.arange(m)
        seg_len[first + 2] = lhdr_len
        at = 4 * item_of_line + 4 * np.arange(total_lines) + 3
        seg_off[at] = len(head) + len(tail)
        seg_len[at] = 1
        seg_off[at + 1] = sku_off[line_idx]
        seg_len[at + 1] = sku_size[line_idx]
        seg_off[at + 2] = node_off[line_idx]
        seg_len[at + 2] = node_size[line_idx]
        seg_off[at + 3] = qty_off[line_idx]
        seg_len[at + 3] = qty_size[line_idx]
        last = first + 3 + 4 * sel_counts
        seg_off[last] = len(head)
        seg_len[last] = len(tail)
        ends = np.cumsum(seg_len)
        seg_first = ends - seg_len
        out = src[np.repeat(seg_off - seg_first, seg_len) + np.arange(int(ends[-1]))]
        blob = out.tobytes()
        bounds = np.append(seg_first[first], ends[-1]).tolist()
        return [blob[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def to_reserves(self) -> list[Reserve]:
        """The exact equivalent as plain Reserve commands, in order."""
        if not self.consistent():
            raise ValueError("ReserveColumns: the columns do not fit together")
        out = []
        l0 = 0
        for k, count in enumerate(self.counts().tolist()):
            out.append(self.reserve_at(k, l0))
            l0 += count
        return out


class Commit(_Command, frozen=True):
    reservation_id: str


class Release(_Command, frozen=True):
    reservation_id: str


class Extend(_Command, frozen=True):
    """A live hold now expires at `now + ttl_ms`. `request_id` makes it safe to retry: the
    retry answers the reservation as it is (replayed) instead of moving the deadline again."""

    reservation_id: str
    ttl_ms: int
    request_id: str = ""


class Fulfil(_Command, frozen=True):
    """Hand over units; no lines = everything still allocated. `request_id` makes a partial
    fulfilment safe to retry."""

    reservation_id: str
    lines: tuple[Line, ...] = ()
    request_id: str = ""


class Adjust(_Command, frozen=True):
    request_id: str
    adjustments: tuple[Adjustment, ...]


class SetOnHand(_Command, frozen=True):
    request_id: str
    counts: tuple[StockCount, ...]


class SetSafetyStock(_Command, frozen=True):
    request_id: str
    settings: tuple[Setting, ...]


class SetBackorderLimit(_Command, frozen=True):
    request_id: str
    settings: tuple[Setting, ...]


class Move(_Command, frozen=True):
    request_id: str
    moves: tuple[MoveLine, ...]


class TransferShip(_Command, frozen=True):
    transfer_id: str
    sku: str
    from_node_id: str
    to_node_id: str
    qty: int
    expected_at_ms: int = 0


class TransferReceive(_Command, frozen=True):
    """Receive `qty` units of a transfer in transit (0 = all still in transit)."""

    transfer_id: str
    qty: int = 0
    request_id: str = ""


class TransferCancel(_Command, frozen=True):
    transfer_id: str


class SourceReserve(_Command, frozen=True):
    """Plan an order from live stock and hold exactly the plan's lines, in one step."""

    reservation_id: str
    ttl_ms: int
    lines: tuple[SkuQty, ...]
    mode: FulfilmentMode = FulfilmentMode.SHIP
    lat: float = 0.0
    lon: float = 0.0
    pickup_node_id: str = ""
    policy: SourcingPolicy = SourcingPolicy()


class UpsertNodes(_Command, frozen=True):
    """Register or replace nodes. `request_id` (optional) makes a retry answer as the first did
    instead of applying again: a late retry of "disable N1" must not undo a later "enable N1"."""

    nodes: tuple[NodeSpec, ...]
    request_id: str = ""


class UpsertGroups(_Command, frozen=True):
    """Define or replace groups. A group naming a node that is not registered (when this command
    applies) is answered UNKNOWN_NODE and left out; the others are upserted. `request_id` as in
    UpsertNodes."""

    groups: tuple[GroupSpec, ...]
    request_id: str = ""


class Threshold(_Struct, frozen=True):
    """A low-stock threshold: at a position (`node_id`), for a SKU in a group (`group_id`), or a
    group's default for every SKU (`group_id` with `sku` ""). 0 = no LOW_STOCK events."""

    sku: str
    low_stock: int
    node_id: str = ""
    group_id: str = ""


class SetThresholds(_Command, frozen=True):
    """Set low-stock thresholds (engine/events.py); naming a group starts tracking it."""

    thresholds: tuple[Threshold, ...]


Command = (
    Reserve
    | ReserveColumns
    | Commit
    | Release
    | Extend
    | Fulfil
    | Adjust
    | SetOnHand
    | SetSafetyStock
    | SetBackorderLimit
    | Move
    | TransferShip
    | TransferReceive
    | TransferCancel
    | UpsertNodes
    | UpsertGroups
    | SourceReserve
    | SetThresholds
)


class Batch(_Struct, frozen=True):
    """What the journal stores: the batch clock and the commands, in the order applied."""

    now_ms: int
    commands: tuple[Command, ...]


# --- results ----------------------------------------------------------------------------------


class ReservedLine(msgspec.Struct, frozen=True):
    line: Line
    reserved_qty: int  # units the reserve granted
    fulfilled_qty: int
    status: LineStatus
    held_qty: int  # units still held (reserved or allocated) now


class ReservationView(msgspec.Struct, frozen=True):
    reservation_id: str
    state: ReservationState
    lines: tuple[ReservedLine, ...]
    expires_at_ms: int  # 0 unless HELD
    created_at_ms: int
    group_id: str = ""


class ReservationResult(msgspec.Struct, frozen=True):
    reservation: ReservationView
    replayed: bool


class ReserveColumnsResult(msgspec.Struct, frozen=True):
    """The outcome of a ReserveColumns, as columns: per reservation `states` (REJECTED for an item
    in `rejections`), `replayed` and `expires_at_ms` (0 unless HELD); per line `held_qtys` (units
    still held) and `line_statuses` (0 for the lines of an item in `rejections`). `rejections`
    maps an item's index to the Rejection its Reserve would have got."""

    states: list[int]
    replayed: list[bool]
    expires_at_ms: list[int]
    held_qtys: list[int]
    line_statuses: list[int]
    rejections: dict[int, Rejection]


class SupplyResult(msgspec.Struct, frozen=True):
    statuses: tuple[LineStatus, ...]
    replayed: bool


class UpsertResult(msgspec.Struct, frozen=True):
    """The outcome of an UpsertNodes or UpsertGroups: per spec, in order, OK or UNKNOWN_NODE (a
    group left out); `created` and `updated` count the distinct ids upserted that were new and
    that already existed."""

    statuses: tuple[LineStatus, ...]
    created: int
    updated: int
    replayed: bool


class TransferResult(msgspec.Struct, frozen=True):
    transfer_id: str
    state: str  # IN_TRANSIT, RECEIVED, CANCELLED
    sku: str
    from_node_id: str
    to_node_id: str
    qty_shipped: int
    qty_received: int
    expected_at_ms: int
    status: LineStatus
    replayed: bool


class Shipment(msgspec.Struct, frozen=True):
    node_id: str
    lines: tuple[Line, ...]
    distance_km: float
    cost: float
    is_transfer: bool = False
    ready_at_ms: int = 0  # 0 = now (stock on hand) or unknown


class UnfulfilledLine(msgspec.Struct, frozen=True):
    sku: str
    qty: int
    reason: LineStatus


class SourcingPlan(msgspec.Struct, frozen=True):
    shipments: tuple[Shipment, ...]
    shipment_count: int
    total_cost: float
    unfulfilled: tuple[UnfulfilledLine, ...]
    explanation: str


class SourcingResult(msgspec.Struct, frozen=True):
    plan: SourcingPlan
    reservation: ReservationView | None = None  # set for source-and-reserve
    replayed: bool = False


class NearbyNode(msgspec.Struct, frozen=True):
    node_id: str
    distance_km: float
    available: tuple[int, ...]  # per request line
    covers_all: bool


class NearbyResult(msgspec.Struct, frozen=True):
    nodes: tuple[NearbyNode, ...]
    line_statuses: tuple[LineStatus, ...]
