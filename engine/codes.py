"""Status codes, states and enums shared by kernels, wrappers and the wire.

Numbers match the `omnistock.v1` proto enums one to one, so the server converts with a plain
integer copy. Kernels work on the integer values (numba sees plain int8/int64 constants).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AdjustReason",
    "Bucket",
    "LineStatus",
    "LINE_STATUS_PRECEDENCE",
    "MoveKind",
    "NodeType",
    "ReservationState",
    "TERMINAL_STATES",
]


class LineStatus(IntEnum):
    """Outcome of one line. Numbers are the wire numbers (`omnistock.v1.LineStatus`)."""

    UNSPECIFIED = 0
    OK = 1
    INSUFFICIENT = 2
    UNKNOWN_SKU = 3
    UNKNOWN_NODE = 4
    STALE = 5
    UNKNOWN_GROUP = 6
    NODE_DISABLED = 7
    INVALID_QTY = 8
    NEGATIVE_STOCK = 9  # the change would make a bucket negative or break the invariant
    PARTIAL = 10  # allow_partial: fewer units held than asked


# The order in which kernels check a line: the first failing guard is the line's status.
LINE_STATUS_PRECEDENCE: tuple[LineStatus, ...] = (
    LineStatus.INVALID_QTY,
    LineStatus.UNKNOWN_GROUP,
    LineStatus.UNKNOWN_NODE,
    LineStatus.UNKNOWN_SKU,
    LineStatus.NODE_DISABLED,
    LineStatus.STALE,
    LineStatus.NEGATIVE_STOCK,
    LineStatus.INSUFFICIENT,
    LineStatus.PARTIAL,
    LineStatus.OK,
)


class ReservationState(IntEnum):
    UNSPECIFIED = 0
    HELD = 1
    COMMITTED = 2
    FULFILLED = 3
    RELEASED = 4
    EXPIRED = 5
    REJECTED = 6


TERMINAL_STATES = frozenset(
    {
        ReservationState.FULFILLED,
        ReservationState.RELEASED,
        ReservationState.EXPIRED,
        ReservationState.REJECTED,
    }
)


class AdjustReason(IntEnum):
    """Why stock changed. Every reason but CORRECTION has a direction of its own and uses |delta|;
    CORRECTION is a signed change of on_hand. A zero delta is INVALID_QTY."""

    UNSPECIFIED = 0
    RECEIPT = 1  # on_hand += |delta|
    SALE = 2  # on_hand -= |delta| (sold outside a reservation, e.g. at the POS)
    RETURN = 3  # on_hand += |delta|, sellable at once
    DAMAGE = 4  # unavailable += |delta| (the units stay on hand, not sellable)
    CORRECTION = 5  # on_hand += delta (cycle-count difference, write-off)
    RETURN_TO_INSPECTION = 6  # on_hand += |delta| and unavailable += |delta|


class MoveKind(IntEnum):
    """Moves between the sellable part of on-hand and `unavailable`."""

    UNSPECIFIED = 0
    TO_UNAVAILABLE = 1  # unavailable += qty
    TO_SELLABLE = 2  # unavailable -= qty (inspection passed)
    WRITE_OFF = 3  # unavailable -= qty and on_hand -= qty (scrapped)


class NodeType(IntEnum):
    UNSPECIFIED = 0
    DC = 1
    STORE = 2
    DARK_STORE = 3
    THIRD_PARTY = 4
    MARKETPLACE = 5


class Bucket(IntEnum):
    """Columns of the per-position quantity row (`qty[slot, bucket]`, int64, 64 bytes a row)."""

    ON_HAND = 0
    RESERVED = 1
    ALLOCATED = 2
    SAFETY_STOCK = 3
    UNAVAILABLE = 4
    INBOUND = 5
    BACKORDER_LIMIT = 6
    SOURCE_SEQ = 7
