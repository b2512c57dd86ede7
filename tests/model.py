"""A plain-Python reference ledger, written from the rules (docs/ledger.md), not from the kernels.

It answers every command of `engine/commands.py` and every availability read the way the engine
must: same statuses, states, quantities, replay flags and rejection codes/reasons (messages are
not compared). Property tests drive it side by side with `engine.ledger.Ledger`.

Everything is dicts, lists and `bisect`; nothing here is fast, and nothing here is shared with the
engine except the result Structs and the enums, which are just data.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from engine import limits
from engine.codes import AdjustReason, LineStatus, MoveKind, NodeType, ReservationState
from engine.commands import (
    Adjust,
    Commit,
    Extend,
    Fulfil,
    GroupSpec,
    Move,
    Release,
    ReservationResult,
    ReservationView,
    Reserve,
    ReserveColumns,
    ReservedLine,
    SetBackorderLimit,
    SetOnHand,
    SetSafetyStock,
    SupplyResult,
    TransferCancel,
    TransferReceive,
    TransferResult,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
    UpsertResult,
)

__all__ = ["Model", "Pos", "Rej"]

S = ReservationState


@dataclass(frozen=True)
class Rej:
    """A whole command refused: the model names the code and reason, not the message."""

    code: str
    reason: str


def _invalid() -> Rej:
    return Rej("INVALID_ARGUMENT", "FIELD_INVALID")


@dataclass
class Pos:
    on_hand: int = 0
    reserved: int = 0
    allocated: int = 0
    safety: int = 0
    unavailable: int = 0
    inbound: int = 0
    backorder: int = 0
    seq: int = 0

    def row(self) -> tuple[int, ...]:
        return (
            self.on_hand,
            self.reserved,
            self.allocated,
            self.safety,
            self.unavailable,
            self.inbound,
            self.backorder,
            self.seq,
        )

    def available(self) -> int:
        return max(0, self.raw())

    def raw(self) -> int:
        return self.on_hand - self.reserved - self.allocated - self.safety - self.unavailable


def _valid(on_hand: int, unavailable: int, inbound: int, promised: int, backorder: int) -> bool:
    """No bucket negative, damaged units are on hand, promises covered (DESIGN §1)."""
    return (
        on_hand >= 0
        and unavailable >= 0
        and inbound >= 0
        and unavailable <= on_hand
        and promised <= on_hand - unavailable + backorder
    )


@dataclass
class MLine:
    sku: str
    node: str
    qty: int
    status: LineStatus = LineStatus.OK
    granted: int = 0
    held: int = 0
    fulfilled: int = 0


@dataclass
class MRes:
    cmd: Reserve
    state: ReservationState
    lines: list[MLine]
    expires_at_ms: int
    created_at_ms: int


@dataclass
class MTransfer:
    cmd: TransferShip
    state: str
    qty_shipped: int
    qty_received: int
    status: LineStatus


@dataclass
class MGroup:
    nodes: frozenset[str]
    buffer_units: int
    buffer_pct: Fraction


@dataclass
class Model:
    ids_window_ms: int = limits.IDS_WINDOW_MS
    ids_remembered_max: int = limits.IDS_REMEMBERED_MAX
    now_ms: int = 0
    nodes: dict[str, bool] = field(default_factory=dict)  # node id -> enabled
    groups: dict[str, MGroup] = field(default_factory=dict)
    positions: dict[tuple[str, str], Pos] = field(default_factory=dict)
    reservations: dict[str, MRes] = field(default_factory=dict)
    # (expires_at_ms, hold number, reservation id); entries go stale when a hold changes.
    expiry: list[tuple[int, int, str]] = field(default_factory=list)
    holds_placed: int = 0
    requests: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (cmd, outcome)
    transfers: dict[str, MTransfer] = field(default_factory=dict)
    # Final outcomes, oldest first: reservations and transfers in one queue, request ids in
    # another, each bounded by ids_remembered_max on its own.
    final: deque[tuple[int, str, str]] = field(default_factory=deque)
    final_requests: deque[tuple[int, str, str]] = field(default_factory=deque)

    # --- batches ------------------------------------------------------------------------------

    def apply(self, now_ms: int, commands: list[Any]) -> tuple[list[Any], list[str]]:
        self.now_ms = max(self.now_ms, now_ms)
        expired = self._expire()
        results = [self._one(cmd) for cmd in commands]
        self._forget()
        return results, expired

    def _one(self, cmd: Any) -> Any:
        handler = {
            Reserve: self.reserve,
            ReserveColumns: self.reserve_columns,
            Commit: self.commit,
            Release: self.release,
            Extend: self.extend,
            Fulfil: self.fulfil,
            Adjust: self.adjust,
            Move: self.move,
            SetOnHand: self.set_on_hand,
            SetSafetyStock: self.set_safety_stock,
            SetBackorderLimit: self.set_backorder_limit,
            TransferShip: self.transfer_ship,
            TransferReceive: self.transfer_receive,
            TransferCancel: self.transfer_cancel,
            UpsertNodes: self.upsert_nodes,
            UpsertGroups: self.upsert_groups,
        }[type(cmd)]
        return handler(cmd)

    def _finalize(self, kind: str, key: str) -> None:
        queue = self.final_requests if kind == "q" else self.final
        queue.append((self.now_ms, kind, key))

    def _forget(self) -> None:
        cutoff = self.now_ms - self.ids_window_ms
        for queue in (self.final, self.final_requests):
            while queue and (queue[0][0] <= cutoff or len(queue) > self.ids_remembered_max):
                _, kind, key = queue.popleft()
                if kind == "r":
                    del self.reservations[key]
                elif kind == "q":
                    del self.requests[key]
                else:
                    del self.transfers[key]

    def expiry_of(self, reservation_id: str) -> int:
        """When a hold that just expired was due (for checking the engine's order)."""
        return self._expired_at[reservation_id]

    def _expire(self) -> list[str]:
        self._expired_at: dict[str, int] = {}
        out = []
        while self.expiry and self.expiry[0][0] <= self.now_ms:
            due, _, rid = self.expiry.pop(0)
            res = self.reservations.get(rid)
            if res is None or res.state != S.HELD or res.expires_at_ms != due:
                continue  # stale entry
            for line in res.lines:
                if line.held:
                    self.positions[(line.sku, line.node)].reserved -= line.held
                    line.held = 0
            res.state = S.EXPIRED
            self._finalize("r", rid)
            self._expired_at[rid] = due
            out.append(rid)
        return out

    def _schedule(self, rid: str, due: int) -> None:
        self.holds_placed += 1
        bisect.insort(self.expiry, (due, self.holds_placed, rid))

    # --- ids ----------------------------------------------------------------------------------

    @staticmethod
    def _bad_id(value: Any, required: bool = True) -> bool:
        if not isinstance(value, str):
            return True
        if not value:
            return required
        return len(value.encode()) > limits.ID_BYTES_MAX

    @staticmethod
    def _bad_qty(value: Any, lo: int = 1, hi: int = limits.QTY_MAX) -> bool:
        return type(value) is not int or not lo <= value <= hi  # noqa: E721

    @staticmethod
    def _bad_count(items: Any) -> bool:
        return not items or len(items) > limits.REQUEST_LINES_MAX

    # --- reads --------------------------------------------------------------------------------

    def sku_known(self, sku: str) -> bool:
        return any(s == sku for s, _ in self.positions)

    def availability_at(self, sku: str, node: str) -> tuple[LineStatus, tuple[int, ...]]:
        if node not in self.nodes:
            return LineStatus.UNKNOWN_NODE, (0,) * 7
        if not self.sku_known(sku):
            return LineStatus.UNKNOWN_SKU, (0,) * 7
        p = self.positions.get((sku, node), Pos())
        if not self.nodes[node]:
            return LineStatus.NODE_DISABLED, p.row()[:6] + (0,)
        return LineStatus.OK, p.row()[:6] + (p.available(),)

    def availability_in(self, sku: str, group: str | None) -> tuple[LineStatus, tuple[int, ...]]:
        """A SKU over a group's enabled nodes after its buffer, or (None) the whole network."""
        if group is not None and group not in self.groups:
            return LineStatus.UNKNOWN_GROUP, (0,) * 7
        if not self.sku_known(sku):
            return LineStatus.UNKNOWN_SKU, (0,) * 7
        sums = [0] * 7
        for (s, node), p in self.positions.items():
            if s != sku or not self.nodes.get(node, False):
                continue
            if group is not None and node not in self.groups[group].nodes:
                continue
            for c, v in enumerate(p.row()[:6]):
                sums[c] += v
            sums[6] += max(0, p.raw() - self.buffer(group, p))
        return LineStatus.OK, tuple(sums)

    def buffer(self, group: str | None, p: Pos) -> int:
        """Units a group holds back at a position: its units plus pct of on_hand, rounded up."""
        if group is None:
            return 0
        g = self.groups[group]
        share = -((-g.buffer_pct * max(0, p.on_hand)) // 100)  # ceil
        return g.buffer_units + int(share)

    def view(self, rid: str) -> ReservationView:
        res = self.reservations[rid]
        return ReservationView(
            reservation_id=rid,
            state=res.state,
            lines=tuple(
                ReservedLine(
                    line,
                    reserved_qty=ml.granted,
                    fulfilled_qty=ml.fulfilled,
                    status=ml.status,
                    held_qty=ml.held,
                )
                for line, ml in zip(res.cmd.lines, res.lines, strict=True)
            ),
            expires_at_ms=res.expires_at_ms if res.state == S.HELD else 0,
            created_at_ms=res.created_at_ms,
            group_id=res.cmd.group_id,
        )

    def get_reservation(self, rid: str) -> ReservationView | Rej:
        r = self._lookup(rid)
        return r if isinstance(r, Rej) else self.view(rid)

    def transfer(self, tid: str) -> TransferResult | Rej:
        t = self._lookup_transfer(tid)
        return t if isinstance(t, Rej) else self._transfer_result(tid, t, False)

    # --- reservations -------------------------------------------------------------------------

    def _reservable(self, key: tuple[str, str], group: str | None) -> int:
        p = self.positions[key]
        return p.raw() + p.backorder - self.buffer(group, p)

    def _guard(self, line: Any, group: str | None) -> LineStatus:
        if group is not None and group not in self.groups:
            return LineStatus.UNKNOWN_GROUP
        if line.node_id not in self.nodes:
            return LineStatus.UNKNOWN_NODE
        if not self.sku_known(line.sku):
            return LineStatus.UNKNOWN_SKU
        if not self.nodes[line.node_id]:
            return LineStatus.NODE_DISABLED
        if group is not None and line.node_id not in self.groups[group].nodes:
            return LineStatus.INSUFFICIENT
        if (line.sku, line.node_id) not in self.positions:
            return LineStatus.INSUFFICIENT
        return LineStatus.OK

    def reserve(self, cmd: Reserve) -> Any:
        if (
            self._bad_id(cmd.reservation_id)
            or self._bad_count(cmd.lines)
            or not limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX
            or self._bad_id(cmd.group_id, required=False)
            or any(
                self._bad_id(x.sku) or self._bad_id(x.node_id) or self._bad_qty(x.qty)
                for x in cmd.lines
            )
        ):
            return _invalid()
        old = self.reservations.get(cmd.reservation_id)
        if old is not None:
            if old.cmd != cmd:
                return Rej("ALREADY_EXISTS", "ID_CONFLICT")
            return ReservationResult(self.view(cmd.reservation_id), True)
        group = cmd.group_id or None
        lines = [MLine(x.sku, x.node_id, x.qty, self._guard(x, group)) for x in cmd.lines]
        ok = [ml for ml in lines if ml.status == LineStatus.OK]
        if cmd.allow_partial:
            for ml in ok:
                key = (ml.sku, ml.node)
                grant = min(ml.qty, max(0, self._reservable(key, group)))
                self.positions[key].reserved += grant
                ml.granted = ml.held = grant
                if grant == 0:
                    ml.status = LineStatus.INSUFFICIENT
                elif grant < ml.qty:
                    ml.status = LineStatus.PARTIAL
        else:
            # Lines for one position are judged on their sum.
            asked: dict[tuple[str, str], int] = {}
            for ml in ok:
                asked[(ml.sku, ml.node)] = asked.get((ml.sku, ml.node), 0) + ml.qty
            for ml in ok:
                key = (ml.sku, ml.node)
                if asked[key] > self._reservable(key, group):
                    ml.status = LineStatus.INSUFFICIENT
            if all(ml.status == LineStatus.OK for ml in lines):
                for ml in lines:
                    self.positions[(ml.sku, ml.node)].reserved += ml.qty
                    ml.granted = ml.held = ml.qty
        held = sum(ml.held for ml in lines)
        res = MRes(cmd, S.HELD if held else S.REJECTED, lines, 0, self.now_ms)
        self.reservations[cmd.reservation_id] = res
        if held:
            res.expires_at_ms = self.now_ms + cmd.ttl_ms
            self._schedule(cmd.reservation_id, res.expires_at_ms)
        else:
            self._finalize("r", cmd.reservation_id)
        return ReservationResult(self.view(cmd.reservation_id), False)

    def reserve_columns(self, cmd: ReserveColumns) -> list[Any]:
        """A ReserveColumns is its Reserve commands, one after the other: one outcome each."""
        return [self.reserve(r) for r in cmd.to_reserves()]

    def _lookup(self, rid: Any) -> MRes | Rej:
        if self._bad_id(rid):
            return _invalid()
        res = self.reservations.get(rid)
        if res is None:
            return Rej("NOT_FOUND", "RESERVATION_NOT_FOUND")
        return res

    def _drop_held(self, res: MRes, bucket: str) -> None:
        for ml in res.lines:
            if ml.held:
                p = self.positions[(ml.sku, ml.node)]
                setattr(p, bucket, getattr(p, bucket) - ml.held)
                ml.held = 0

    def _commit_hold(self, res: MRes) -> None:
        for ml in res.lines:
            if ml.held:
                p = self.positions[(ml.sku, ml.node)]
                p.reserved -= ml.held
                p.allocated += ml.held
        res.state = S.COMMITTED
        res.expires_at_ms = 0

    def commit(self, cmd: Commit) -> Any:
        res = self._lookup(cmd.reservation_id)
        if isinstance(res, Rej):
            return res
        if res.state in (S.COMMITTED, S.FULFILLED):
            return ReservationResult(self.view(cmd.reservation_id), True)
        if res.state != S.HELD:
            return Rej("FAILED_PRECONDITION", "WRONG_STATE")
        self._commit_hold(res)
        return ReservationResult(self.view(cmd.reservation_id), False)

    def release(self, cmd: Release) -> Any:
        res = self._lookup(cmd.reservation_id)
        if isinstance(res, Rej):
            return res
        if res.state == S.HELD:
            self._drop_held(res, "reserved")
            res.state = S.RELEASED
            res.expires_at_ms = 0
        elif res.state == S.COMMITTED:
            self._drop_held(res, "allocated")
            fulfilled = any(ml.fulfilled for ml in res.lines)
            res.state = S.FULFILLED if fulfilled else S.RELEASED
        else:
            return ReservationResult(self.view(cmd.reservation_id), True)
        self._finalize("r", cmd.reservation_id)
        return ReservationResult(self.view(cmd.reservation_id), False)

    def extend(self, cmd: Extend) -> Any:
        res = self._lookup(cmd.reservation_id)
        if isinstance(res, Rej):
            return res
        if not limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX:
            return _invalid()
        return self._once_per_request("e:", cmd, res, self._extend_apply)

    def _once_per_request(self, prefix: str, cmd: Any, res: MRes, apply: Any) -> Any:
        """A fulfil or extend whose optional request_id makes a retry answer as the first did:
        its refusal, or the reservation as it is now, replayed."""
        if self._bad_id(cmd.request_id, required=False):
            return _invalid()
        key = prefix + cmd.request_id
        if cmd.request_id and key in self.requests:
            seen_cmd, seen_outcome = self.requests[key]
            if seen_cmd != cmd:
                return Rej("ALREADY_EXISTS", "ID_CONFLICT")
            if isinstance(seen_outcome, Rej):
                return seen_outcome
            return ReservationResult(self.view(cmd.reservation_id), True)
        outcome = apply(cmd, res)
        if cmd.request_id:
            self.requests[key] = (cmd, outcome)
            self._finalize("q", key)
        return outcome

    def _extend_apply(self, cmd: Extend, res: MRes) -> Any:
        if res.state != S.HELD:
            return Rej("FAILED_PRECONDITION", "WRONG_STATE")
        res.expires_at_ms = self.now_ms + cmd.ttl_ms
        self._schedule(cmd.reservation_id, res.expires_at_ms)
        return ReservationResult(self.view(cmd.reservation_id), False)

    def fulfil(self, cmd: Fulfil) -> Any:
        res = self._lookup(cmd.reservation_id)
        if isinstance(res, Rej):
            return res
        return self._once_per_request("f:", cmd, res, self._fulfil_apply)

    def _fulfil_apply(self, cmd: Fulfil, res: MRes) -> Any:
        if res.state == S.FULFILLED and not cmd.lines:
            return ReservationResult(self.view(cmd.reservation_id), True)
        if res.state not in (S.HELD, S.COMMITTED):
            return Rej("FAILED_PRECONDITION", "WRONG_STATE")
        take = [0] * len(res.lines)
        if not cmd.lines:
            take = [ml.held for ml in res.lines]
        for x in cmd.lines:
            if self._bad_qty(x.qty):
                return _invalid()
            want = x.qty
            mine = [i for i, ml in enumerate(res.lines) if (ml.sku, ml.node) == (x.sku, x.node_id)]
            if not mine:
                return Rej("FAILED_PRECONDITION", "LINE_NOT_IN_RESERVATION")
            for i in mine:  # fill the reservation's lines in order
                step = min(res.lines[i].held - take[i], want)
                take[i] += step
                want -= step
            if want:
                return Rej("FAILED_PRECONDITION", "OVER_FULFIL")
        # Units handed over must be sellable units on hand (backordered ones are not yet).
        per_pos: dict[tuple[str, str], int] = {}
        for ml, q in zip(res.lines, take, strict=True):
            if q:
                per_pos[(ml.sku, ml.node)] = per_pos.get((ml.sku, ml.node), 0) + q
        for key, q in per_pos.items():
            p = self.positions[key]
            if q > p.on_hand - p.unavailable:
                return Rej("FAILED_PRECONDITION", "NOT_ON_HAND")
        if res.state == S.HELD:
            self._commit_hold(res)
        for ml, q in zip(res.lines, take, strict=True):
            if q:
                p = self.positions[(ml.sku, ml.node)]
                p.allocated -= q
                p.on_hand -= q
                ml.held -= q
                ml.fulfilled += q
        if not any(ml.held for ml in res.lines):
            res.state = S.FULFILLED
            self._finalize("r", cmd.reservation_id)
        return ReservationResult(self.view(cmd.reservation_id), False)

    # --- supply -------------------------------------------------------------------------------

    def _supply(self, cmd: Any, items: Any, bad_item: Any, apply_item: Any) -> Any:
        if (
            self._bad_id(cmd.request_id)
            or self._bad_count(items)
            or any(self._bad_id(x.sku) or self._bad_id(x.node_id) or bad_item(x) for x in items)
        ):
            return _invalid()
        key = f"{type(cmd).__name__}:{cmd.request_id}"
        if key in self.requests:
            seen_cmd, statuses = self.requests[key]
            if seen_cmd != cmd:
                return Rej("ALREADY_EXISTS", "ID_CONFLICT")
            return SupplyResult(statuses, True)
        statuses = tuple(
            LineStatus.UNKNOWN_NODE if x.node_id not in self.nodes else apply_item(x) for x in items
        )
        self.requests[key] = (cmd, statuses)
        self._finalize("q", key)
        return SupplyResult(statuses, False)

    def _change(self, sku: str, node: str, d_on_hand: int, d_unav: int, d_inbound: int) -> bool:
        """Apply one bucket change if the position stays valid; creates the position."""
        p = self.positions.get((sku, node), Pos())
        on_hand = p.on_hand + d_on_hand
        unav = p.unavailable + d_unav
        inbound = p.inbound + d_inbound
        if not _valid(on_hand, unav, inbound, p.reserved + p.allocated, p.backorder):
            return False
        p.on_hand, p.unavailable, p.inbound = on_hand, unav, inbound
        self.positions[(sku, node)] = p
        return True

    def _status(self, ok: bool) -> LineStatus:
        return LineStatus.OK if ok else LineStatus.NEGATIVE_STOCK

    def adjust(self, cmd: Adjust) -> Any:
        def bad(x: Any) -> bool:
            return (
                x.reason not in set(AdjustReason) - {AdjustReason.UNSPECIFIED}
                or self._bad_qty(x.delta, -limits.QTY_MAX)
                or x.delta == 0
            )

        def one(x: Any) -> LineStatus:
            d = abs(x.delta)
            effect = {
                AdjustReason.RECEIPT: (d, 0),
                AdjustReason.SALE: (-d, 0),
                AdjustReason.RETURN: (d, 0),
                AdjustReason.DAMAGE: (0, d),
                AdjustReason.CORRECTION: (x.delta, 0),
                AdjustReason.RETURN_TO_INSPECTION: (d, d),
            }[x.reason]
            return self._status(self._change(x.sku, x.node_id, *effect, 0))

        return self._supply(cmd, cmd.adjustments, bad, one)

    def move(self, cmd: Move) -> Any:
        def bad(x: Any) -> bool:
            return x.kind not in set(MoveKind) - {MoveKind.UNSPECIFIED} or self._bad_qty(x.qty)

        def one(x: Any) -> LineStatus:
            q = x.qty
            effect = {
                MoveKind.TO_UNAVAILABLE: (0, q),
                MoveKind.TO_SELLABLE: (0, -q),
                MoveKind.WRITE_OFF: (-q, -q),
            }[x.kind]
            return self._status(self._change(x.sku, x.node_id, *effect, 0))

        return self._supply(cmd, cmd.moves, bad, one)

    def set_on_hand(self, cmd: SetOnHand) -> Any:
        def bad(x: Any) -> bool:
            return self._bad_qty(x.on_hand, 0) or self._bad_qty(x.source_seq, 0, 2**62)

        def one(x: Any) -> LineStatus:
            key = (x.sku, x.node_id)
            p = self.positions.get(key, Pos())
            if x.source_seq <= p.seq:  # an older or equal count
                return LineStatus.STALE
            promised = p.reserved + p.allocated
            if not _valid(x.on_hand, p.unavailable, p.inbound, promised, p.backorder):
                return LineStatus.NEGATIVE_STOCK
            p.on_hand, p.seq = x.on_hand, x.source_seq
            self.positions[key] = p
            return LineStatus.OK

        return self._supply(cmd, cmd.counts, bad, one)

    def set_safety_stock(self, cmd: SetSafetyStock) -> Any:
        def one(x: Any) -> LineStatus:
            self.positions.setdefault((x.sku, x.node_id), Pos()).safety = x.value
            return LineStatus.OK

        return self._supply(cmd, cmd.settings, lambda x: self._bad_qty(x.value, 0), one)

    def set_backorder_limit(self, cmd: SetBackorderLimit) -> Any:
        def one(x: Any) -> LineStatus:
            key = (x.sku, x.node_id)
            p = self.positions.get(key, Pos())
            if not _valid(p.on_hand, p.unavailable, p.inbound, p.reserved + p.allocated, x.value):
                return LineStatus.NEGATIVE_STOCK
            p.backorder = x.value
            self.positions[key] = p
            return LineStatus.OK

        return self._supply(cmd, cmd.settings, lambda x: self._bad_qty(x.value, 0), one)

    # --- transfers ----------------------------------------------------------------------------

    def _transfer_result(self, tid: str, t: MTransfer, replayed: bool) -> TransferResult:
        return TransferResult(
            transfer_id=tid,
            state=t.state,
            sku=t.cmd.sku,
            from_node_id=t.cmd.from_node_id,
            to_node_id=t.cmd.to_node_id,
            qty_shipped=t.qty_shipped,
            qty_received=t.qty_received,
            expected_at_ms=t.cmd.expected_at_ms,
            status=t.status,
            replayed=replayed,
        )

    def _lookup_transfer(self, tid: Any) -> MTransfer | Rej:
        if self._bad_id(tid):
            return _invalid()
        t = self.transfers.get(tid)
        return Rej("NOT_FOUND", "TRANSFER_NOT_FOUND") if t is None else t

    def _two_sided(self, sku: str, changes: list[tuple[str, int, int]]) -> LineStatus:
        """(node, d_on_hand, d_inbound) changes that all apply or none; worst status first."""
        statuses = []
        for node, d_on_hand, d_inbound in changes:
            if node not in self.nodes:
                statuses.append(LineStatus.UNKNOWN_NODE)
                continue
            p = self.positions.get((sku, node), Pos())
            ok = _valid(
                p.on_hand + d_on_hand,
                p.unavailable,
                p.inbound + d_inbound,
                p.reserved + p.allocated,
                p.backorder,
            )
            statuses.append(LineStatus.OK if ok else LineStatus.NEGATIVE_STOCK)
        for status in (LineStatus.UNKNOWN_NODE, LineStatus.NEGATIVE_STOCK):
            if status in statuses:
                return status
        for node, d_on_hand, d_inbound in changes:
            assert self._change(sku, node, d_on_hand, 0, d_inbound)
        return LineStatus.OK

    def transfer_ship(self, cmd: TransferShip) -> Any:
        if (
            self._bad_id(cmd.transfer_id)
            or self._bad_id(cmd.sku)
            or self._bad_id(cmd.from_node_id)
            or self._bad_id(cmd.to_node_id)
            or self._bad_qty(cmd.qty)
            or self._bad_qty(cmd.expected_at_ms, 0, 2**62)
            or cmd.from_node_id == cmd.to_node_id
        ):
            return _invalid()
        t = self.transfers.get(cmd.transfer_id)
        if t is not None:
            if t.cmd != cmd:
                return Rej("ALREADY_EXISTS", "ID_CONFLICT")
            return self._transfer_result(cmd.transfer_id, t, True)
        status = self._two_sided(
            cmd.sku, [(cmd.from_node_id, -cmd.qty, 0), (cmd.to_node_id, 0, cmd.qty)]
        )
        ok = status == LineStatus.OK
        t = MTransfer(cmd, "IN_TRANSIT" if ok else "FAILED", cmd.qty if ok else 0, 0, status)
        self.transfers[cmd.transfer_id] = t
        if not ok:
            self._finalize("t", cmd.transfer_id)
        return self._transfer_result(cmd.transfer_id, t, False)

    def transfer_receive(self, cmd: TransferReceive) -> Any:
        t = self._lookup_transfer(cmd.transfer_id)
        if isinstance(t, Rej):
            return t
        if self._bad_qty(cmd.qty, 0) or self._bad_id(cmd.request_id, required=False):
            return _invalid()
        key = "r:" + cmd.request_id
        if cmd.request_id and key in self.requests:
            seen_cmd, seen_outcome = self.requests[key]
            if seen_cmd != cmd:
                return Rej("ALREADY_EXISTS", "ID_CONFLICT")
            if isinstance(seen_outcome, Rej):
                return seen_outcome
            return self._transfer_result(cmd.transfer_id, t, True)
        outcome = self._receive_apply(cmd, t)
        if cmd.request_id:
            self.requests[key] = (cmd, outcome)
            self._finalize("q", key)
        return outcome

    def _receive_apply(self, cmd: TransferReceive, t: MTransfer) -> Any:
        if t.state == "RECEIVED" and cmd.qty == 0:
            return self._transfer_result(cmd.transfer_id, t, True)
        if t.state != "IN_TRANSIT":
            return Rej("FAILED_PRECONDITION", "WRONG_STATE")
        remaining = t.qty_shipped - t.qty_received
        qty = cmd.qty or remaining
        if qty > remaining:
            return Rej("FAILED_PRECONDITION", "OVER_RECEIVE")
        assert self._two_sided(t.cmd.sku, [(t.cmd.to_node_id, qty, -qty)]) == LineStatus.OK
        t.qty_received += qty
        if t.qty_received == t.qty_shipped:
            t.state = "RECEIVED"
            self._finalize("t", cmd.transfer_id)
        return self._transfer_result(cmd.transfer_id, t, False)

    def transfer_cancel(self, cmd: TransferCancel) -> Any:
        t = self._lookup_transfer(cmd.transfer_id)
        if isinstance(t, Rej):
            return t
        if t.state == "CANCELLED":
            return self._transfer_result(cmd.transfer_id, t, True)
        if t.state != "IN_TRANSIT":
            return Rej("FAILED_PRECONDITION", "WRONG_STATE")
        remaining = t.qty_shipped - t.qty_received
        status = self._two_sided(
            t.cmd.sku, [(t.cmd.to_node_id, 0, -remaining), (t.cmd.from_node_id, remaining, 0)]
        )
        assert status == LineStatus.OK
        t.state = "CANCELLED"
        self._finalize("t", cmd.transfer_id)
        return self._transfer_result(cmd.transfer_id, t, False)

    # --- nodes and groups ---------------------------------------------------------------------

    def upsert_nodes(self, cmd: UpsertNodes) -> Any:
        if self._bad_id(cmd.request_id, required=False) or self._bad_count(cmd.nodes):
            return _invalid()
        for spec in cmd.nodes:
            if (
                self._bad_id(spec.node_id)
                or spec.type not in set(NodeType)
                or not -90.0 <= spec.lat <= 90.0
                or not -180.0 <= spec.lon <= 180.0
                or self._bad_qty(spec.priority, -(2**31), 2**31 - 1)
                or self._bad_qty(spec.daily_capacity, 0, 2**62)
            ):
                return _invalid()
        if (seen := self._upsert_seen(cmd)) is not None:
            return seen
        distinct = {spec.node_id for spec in cmd.nodes}
        created = len(distinct - self.nodes.keys())
        for spec in cmd.nodes:
            self.nodes[spec.node_id] = spec.enabled
        statuses = (LineStatus.OK,) * len(cmd.nodes)
        return self._upsert_done(cmd, statuses, created, len(distinct) - created)

    def upsert_groups(self, cmd: UpsertGroups) -> Any:
        """Bad fields refuse the command; a group naming an unregistered node is left out."""
        if self._bad_id(cmd.request_id, required=False) or self._bad_count(cmd.groups):
            return _invalid()
        for spec in cmd.groups:
            if (
                self._bad_id(spec.group_id)
                or self._bad_qty(spec.buffer_units, 0)
                or not 0.0 <= spec.buffer_pct <= limits.BUFFER_PCT_MAX
                or any(self._bad_id(node) for node in spec.node_ids)
            ):
                return _invalid()
        if (seen := self._upsert_seen(cmd)) is not None:
            return seen
        statuses = tuple(
            LineStatus.OK
            if all(n in self.nodes for n in spec.node_ids)
            else LineStatus.UNKNOWN_NODE
            for spec in cmd.groups
        )
        applied = [s for s, ok in zip(cmd.groups, statuses, strict=True) if ok == LineStatus.OK]
        distinct = {spec.group_id for spec in applied}
        created = len(distinct - self.groups.keys())
        for spec in applied:
            self.groups[spec.group_id] = _group(spec)
        return self._upsert_done(cmd, statuses, created, len(distinct) - created)

    def _upsert_seen(self, cmd: UpsertNodes | UpsertGroups) -> Any:
        key = f"{type(cmd).__name__}:{cmd.request_id}"
        if not cmd.request_id or key not in self.requests:
            return None
        seen_cmd, seen = self.requests[key]
        if seen_cmd != cmd:
            return Rej("ALREADY_EXISTS", "ID_CONFLICT")
        return UpsertResult(seen.statuses, seen.created, seen.updated, True)

    def _upsert_done(
        self,
        cmd: UpsertNodes | UpsertGroups,
        statuses: tuple[LineStatus, ...],
        created: int,
        updated: int,
    ) -> UpsertResult:
        out = UpsertResult(statuses, created, updated, False)
        if cmd.request_id:
            key = f"{type(cmd).__name__}:{cmd.request_id}"
            self.requests[key] = (cmd, out)
            self._finalize("q", key)
        return out


def _group(spec: GroupSpec) -> MGroup:
    # The buffer share is whole basis points of on_hand (1 % = 100 bp).
    pct = Fraction(round(spec.buffer_pct * 100), 100)
    return MGroup(frozenset(spec.node_ids), spec.buffer_units, pct)
