"""Bench-only stock backends ("peers"): the designs retailers build instead of omnistock.

Each peer implements `StockBackend`, which speaks the engine's own commands and results, so the
server front (same servicers, same proto) can sit in front of a peer exactly as it sits in front
of the engine and the only difference in a comparison is the stock engine:

- `reserve(Reserve)` — multi-line, all-or-nothing (`allow_partial`/`group_id` are not supported by
  peers and are refused), held for `ttl_ms`; idempotent by `reservation_id` (same content →
  the original outcome with `replayed=True`; other content → `ALREADY_EXISTS ID_CONFLICT`; a
  rejected id stays rejected).
- `reserve_many([Reserve, ...])` — the same for many reservations at once, outcomes in order, in
  one round trip (redis-lua: one batch script; postgres: one transaction). Each reservation is
  all or nothing on its own; they are judged in order, so a later one sees what earlier ones
  took, and a repeated id replays (same content) or conflicts with the earlier one.
- `reserve_columns(ReserveColumns)` (optional) — `reserve_many(cmd.to_reserves())` answered as
  a `ReserveColumnsResult`, without a Python object per reservation; a backend without it gets
  `columns_result(await reserve_many(cmd.to_reserves()), cmd.counts())` from the front.
- `commit(Commit)` — HELD and not expired → COMMITTED; COMMITTED again → replay; anything else
  → `FAILED_PRECONDITION WRONG_STATE`. Unknown id → `NOT_FOUND RESERVATION_NOT_FOUND`.
- `release(Release)` — HELD or COMMITTED → RELEASED, units given back; a finished one → replay.
- `availability(sku, node_ids)` — available units per node (`None` for an unknown position).
- `load(positions)` — (sku, node_id, on_hand) rows; replaces any existing stock.

Results are `engine.commands.ReservationResult` or `engine.errors.Rejection`, as the ledger's.
Peers keep only `available` per position (on_hand − held); commit moves nothing between buckets.

Implementations: `bench.peers.redis_lua.RedisLuaBackend`, `bench.peers.postgres.PostgresBackend`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from engine import limits
from engine.codes import LineStatus, ReservationState
from engine.commands import (
    Commit,
    Line,
    Release,
    ReservationResult,
    ReservationView,
    Reserve,
    ReserveColumnsResult,
)
from engine.commands import ReservedLine as _ReservedLine
from engine.errors import Code, Rejection

__all__ = [
    "Outcome",
    "StockBackend",
    "Columns",
    "columns_result",
    "conflict",
    "make_result",
    "not_found",
    "validate_reserve",
    "wrong_state",
]

Outcome = ReservationResult | Rejection


@runtime_checkable
class StockBackend(Protocol):
    name: str

    async def load(self, positions: Iterable[tuple[str, str, int]]) -> int: ...

    async def reserve(self, cmd: Reserve, now_ms: int = 0) -> Outcome: ...

    async def reserve_many(self, cmds: Sequence[Reserve], now_ms: int = 0) -> list[Outcome]: ...

    async def commit(self, cmd: Commit, now_ms: int = 0) -> Outcome: ...

    async def release(self, cmd: Release, now_ms: int = 0) -> Outcome: ...

    async def availability(
        self, sku: str, node_ids: Sequence[str], now_ms: int = 0
    ) -> list[int | None]: ...

    async def close(self) -> None: ...


# `now_ms = 0` means "the backend's own clock" (Redis TIME, Postgres clock_timestamp()); tests
# pass an explicit clock to check expiry without sleeping.

_GRANTED_STATES = frozenset(
    {
        ReservationState.HELD,
        ReservationState.COMMITTED,
        ReservationState.RELEASED,
        ReservationState.EXPIRED,
        ReservationState.FULFILLED,
    }
)
_HOLDING_STATES = frozenset({ReservationState.HELD, ReservationState.COMMITTED})


def make_result(
    reservation_id: str,
    state: int,
    lines: Sequence[Line],
    statuses: Sequence[int],
    expires_at_ms: int,
    created_at_ms: int,
    replayed: bool,
) -> ReservationResult:
    st = ReservationState(state)
    granted = st in _GRANTED_STATES
    holding = st in _HOLDING_STATES
    view = ReservationView(
        reservation_id=reservation_id,
        state=st,
        lines=tuple(
            _ReservedLine(
                line=line,
                reserved_qty=line.qty if granted else 0,
                fulfilled_qty=0,
                status=LineStatus(s),
                held_qty=line.qty if holding else 0,
            )
            for line, s in zip(lines, statuses, strict=True)
        ),
        expires_at_ms=expires_at_ms if st == ReservationState.HELD else 0,
        created_at_ms=created_at_ms,
    )
    return ReservationResult(view, replayed)


class Columns:
    """The columns of a `ReserveColumnsResult`, filled item by item. Answered items append to
    the lists directly; `reject` adds a refused item (no lines held)."""

    def __init__(self) -> None:
        self.states: list[int] = []
        self.replayed: list[bool] = []
        self.expires_at_ms: list[int] = []
        self.held_qtys: list[int] = []
        self.line_statuses: list[int] = []
        self.rejections: dict[int, Rejection] = {}

    def reject(self, k: int, rejection: Rejection, lines: int) -> None:
        self.rejections[k] = rejection
        self.states.append(int(ReservationState.REJECTED))
        self.replayed.append(False)
        self.expires_at_ms.append(0)
        self.held_qtys += [0] * lines
        self.line_statuses += [0] * lines

    def result(self) -> ReserveColumnsResult:
        return ReserveColumnsResult(
            self.states,
            self.replayed,
            self.expires_at_ms,
            self.held_qtys,
            self.line_statuses,
            self.rejections,
        )


def columns_result(outcomes: Sequence[Outcome], counts: Any) -> ReserveColumnsResult:
    """`reserve_many` outcomes as the `ReserveColumnsResult` a `ReserveColumns` answers with."""
    cols = Columns()
    for k, (outcome, n) in enumerate(zip(outcomes, counts.tolist(), strict=True)):
        if isinstance(outcome, Rejection):
            cols.reject(k, outcome, n)
            continue
        view = outcome.reservation
        cols.states.append(int(view.state))
        cols.replayed.append(outcome.replayed)
        cols.expires_at_ms.append(view.expires_at_ms)
        for line in view.lines:
            cols.held_qtys.append(line.held_qty)
            cols.line_statuses.append(int(line.status))
    return cols.result()


def _invalid(message: str) -> Rejection:
    return Rejection(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", message)


def _bad_id(value: str, field: str) -> Rejection | None:
    if not value or len(value.encode()) > limits.ID_BYTES_MAX:
        return _invalid(f"{field}: must be 1..{limits.ID_BYTES_MAX} bytes")
    return None


def validate_reserve(cmd: Reserve) -> Rejection | None:
    bad = _bad_id(cmd.reservation_id, "reservation_id")
    if bad is not None:
        return bad
    if not 1 <= len(cmd.lines) <= limits.REQUEST_LINES_MAX:
        return _invalid(f"lines: must have 1..{limits.REQUEST_LINES_MAX} lines")
    if not limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX:
        return _invalid(f"ttl_ms: must be in {limits.TTL_MS_MIN}..{limits.TTL_MS_MAX}")
    if cmd.allow_partial or cmd.group_id:
        return _invalid("allow_partial and group_id are not supported by bench peers")
    for i, line in enumerate(cmd.lines):
        bad = _bad_id(line.sku, f"lines[{i}].sku") or _bad_id(line.node_id, f"lines[{i}].node_id")
        if bad is not None:
            return bad
        if not 1 <= line.qty <= limits.QTY_MAX:
            return _invalid(f"lines[{i}].qty: must be in 1..{limits.QTY_MAX}")
    return None


def conflict(reservation_id: str) -> Rejection:
    return Rejection(
        Code.ALREADY_EXISTS,
        "ID_CONFLICT",
        f"reservation_id {reservation_id!r} was used with other content",
    )


def not_found(reservation_id: str) -> Rejection:
    return Rejection(
        Code.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
        f"reservation_id {reservation_id!r}: no such reservation",
    )


def wrong_state(reservation_id: str, state: int, action: str) -> Rejection:
    return Rejection(
        Code.FAILED_PRECONDITION,
        "WRONG_STATE",
        f"reservation {reservation_id!r} is {ReservationState(state).name}; cannot be {action}",
    )
