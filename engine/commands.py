"""Commands (what a batch carries and the journal stores) and their results.

Every mutation is one of these frozen msgspec Structs. A batch is `(now_ms, [commands])`; applying
the same batches to an empty ledger always yields the same state, which is what makes the journal
replayable. Results are plain Structs too, so the server can map them to protobuf directly.
"""

from __future__ import annotations

import msgspec

from engine.codes import AdjustReason, LineStatus, MoveKind, NodeType, ReservationState

__all__ = [
    "Adjust",
    "Adjustment",
    "Batch",
    "Command",
    "Commit",
    "Extend",
    "Fulfil",
    "GroupSpec",
    "Line",
    "Move",
    "MoveLine",
    "NodeSpec",
    "Release",
    "Reserve",
    "ReservationResult",
    "ReservationView",
    "ReservedLine",
    "SetBackorderLimit",
    "SetOnHand",
    "SetSafetyStock",
    "Setting",
    "StockCount",
    "SupplyResult",
    "TransferCancel",
    "TransferReceive",
    "TransferResult",
    "TransferShip",
    "UpsertGroups",
    "UpsertNodes",
]


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    pass


class Line(_Struct):
    sku: str
    node_id: str
    qty: int


class Adjustment(_Struct):
    sku: str
    node_id: str
    delta: int
    reason: AdjustReason = AdjustReason.CORRECTION


class StockCount(_Struct):
    sku: str
    node_id: str
    on_hand: int
    source_seq: int


class Setting(_Struct):
    sku: str
    node_id: str
    value: int


class MoveLine(_Struct):
    sku: str
    node_id: str
    qty: int
    kind: MoveKind


class NodeSpec(_Struct):
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


class GroupSpec(_Struct):
    group_id: str
    node_ids: tuple[str, ...] = ()
    buffer_units: int = 0
    buffer_pct: float = 0.0
    kind: str = "channel"


# --- commands ---------------------------------------------------------------------------------


class _Command(_Struct, tag=True):
    pass


class Reserve(_Command):
    reservation_id: str
    lines: tuple[Line, ...]
    ttl_ms: int
    allow_partial: bool = False
    group_id: str = ""


class Commit(_Command):
    reservation_id: str


class Release(_Command):
    reservation_id: str


class Extend(_Command):
    reservation_id: str
    ttl_ms: int


class Fulfil(_Command):
    """Hand over units; no lines = everything still allocated. `request_id` makes a partial
    fulfilment safe to retry."""

    reservation_id: str
    lines: tuple[Line, ...] = ()
    request_id: str = ""


class Adjust(_Command):
    request_id: str
    adjustments: tuple[Adjustment, ...]


class SetOnHand(_Command):
    request_id: str
    counts: tuple[StockCount, ...]


class SetSafetyStock(_Command):
    request_id: str
    settings: tuple[Setting, ...]


class SetBackorderLimit(_Command):
    request_id: str
    settings: tuple[Setting, ...]


class Move(_Command):
    request_id: str
    moves: tuple[MoveLine, ...]


class TransferShip(_Command):
    transfer_id: str
    sku: str
    from_node_id: str
    to_node_id: str
    qty: int
    expected_at_ms: int = 0


class TransferReceive(_Command):
    """Receive `qty` units of a transfer in transit (0 = all still in transit)."""

    transfer_id: str
    qty: int = 0
    request_id: str = ""


class TransferCancel(_Command):
    transfer_id: str


class UpsertNodes(_Command):
    nodes: tuple[NodeSpec, ...]


class UpsertGroups(_Command):
    groups: tuple[GroupSpec, ...]


Command = (
    Reserve
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
)


class Batch(_Struct):
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


class SupplyResult(msgspec.Struct, frozen=True):
    statuses: tuple[LineStatus, ...]
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
