"""SupplyService: stock changes from WMS, POS, ERP and bulk loads.

Each request becomes one engine command (`plan_*`), goes through the sequencer, and is answered
with a status per line and the position read back from the ledger after the write. Lines
succeed or fail one by one (a failed line changes nothing); a malformed request is
INVALID_ARGUMENT as a whole. `StreamSupply` applies a feed in order, submitting whatever messages
have arrived together in one sequencer batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from engine import limits
from engine.codes import AdjustReason, LineStatus, MoveKind
from engine.commands import (
    Adjust,
    Adjustment,
    Move,
    MoveLine,
    SetOnHand,
    SetSafetyStock,
    SetThresholds,
    Setting,
    StockCount,
    Threshold,
    TransferCancel,
    TransferReceive,
    TransferResult,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
)
from engine.errors import EngineError, Rejection
from omnistock.v1 import supply_pb2, supply_pb2_grpc, types_pb2
from server.convert import (
    SEQ_MAX,
    EdgeError,
    check_column,
    check_count,
    check_id,
    check_ids,
    check_qty,
    check_same_length,
    group_spec,
    node_spec,
    quantities_pb,
    raise_invalid,
    submit,
    submit_many,
    unary,
)
from server.servicers.availability import journal_seq

__all__ = ["SupplyServicer"]

_OK = int(LineStatus.OK)
_REASONS = frozenset(int(r) for r in AdjustReason if r != AdjustReason.UNSPECIFIED)
_MOVES = {
    (
        supply_pb2.STOCK_BUCKET_SELLABLE,
        supply_pb2.STOCK_BUCKET_UNAVAILABLE,
    ): MoveKind.TO_UNAVAILABLE,
    (supply_pb2.STOCK_BUCKET_UNAVAILABLE, supply_pb2.STOCK_BUCKET_SELLABLE): MoveKind.TO_SELLABLE,
}
# Not a group id the ledger knows (`Ledger.group_id` answers this for unknown ids).
# StreamSupply: messages (and lines) submitted together at most; the sequencer's batch bounds.
STREAM_MESSAGES_MAX = 64
STREAM_LINES_MAX = 4 * limits.REQUEST_LINES_MAX


class Plan:
    """A validated request: the command to submit and how to answer once it is applied.

    `statuses(outcome)` gives the per-line LineStatus numbers (for StreamSupply's summary);
    `response(outcome)` builds the RPC's response (reading positions back from the ledger).
    """

    __slots__ = ("command", "statuses", "response", "lines")

    def __init__(
        self,
        command: Any,
        statuses: Callable[[Any], list[int]],
        response: Callable[[Any], Any],
        lines: int,
    ) -> None:
        self.command = command
        self.statuses = statuses
        self.response = response
        self.lines = lines


def _supply_statuses(outcome: Any) -> list[int]:
    return [int(s) for s in outcome.statuses]


def _positions(ledger: Any, skus: Sequence[str], node_ids: Sequence[str]) -> np.ndarray:
    """Quantities int64[n, 7] of (sku, node) positions, as they are now."""
    statuses, qty = ledger.availability_ids(ledger.sku_ids(skus), ledger.node_ids(node_ids))
    qty[statuses != LineStatus.OK] = 0
    return qty


def _line_results(
    ledger: Any, skus: Sequence[str], node_ids: Sequence[str], statuses: Sequence[int]
) -> list[types_pb2.SupplyLineResult]:
    qty = _positions(ledger, skus, node_ids)
    return [
        types_pb2.SupplyLineResult(
            sku=sku, node_id=node_id, status=status, quantities=quantities_pb(row)
        )
        for sku, node_id, status, row in zip(skus, node_ids, statuses, qty.tolist(), strict=True)
    ]


def _lines_plan(
    app: Any,
    command: Any,
    skus: list[str],
    node_ids: list[str],
    response_type: Any,
) -> Plan:
    def response(outcome: Any) -> Any:
        results = _line_results(app.ledger, skus, node_ids, _supply_statuses(outcome))
        return response_type(results=results, replayed=outcome.replayed)

    return Plan(command, _supply_statuses, response, len(skus))


def _columnar_plan(
    app: Any, command: Any, skus: list[str], node_ids: list[str], response_type: Any
) -> Plan:
    def response(outcome: Any) -> Any:
        qty = _positions(app.ledger, skus, node_ids)
        return response_type(
            statuses=_supply_statuses(outcome),
            on_hand=qty[:, 0].tolist(),
            available=qty[:, 6].tolist(),
            replayed=outcome.replayed,
        )

    return Plan(command, _supply_statuses, response, len(skus))


# --- plans: one per request type --------------------------------------------------------------


def plan_adjust(app: Any, request: supply_pb2.AdjustRequest) -> Plan:
    check_id(request.request_id, "request_id")
    check_count(len(request.adjustments), "adjustments")
    items = []
    for i, a in enumerate(request.adjustments):
        f = f"adjustments[{i}]"
        check_id(a.sku, f"{f}.sku")
        check_id(a.node_id, f"{f}.node_id")
        check_qty(a.delta, f"{f}.delta", -limits.QTY_MAX, limits.QTY_MAX)
        if a.delta == 0:
            raise_invalid(f"{f}.delta", "must not be 0")
        if a.reason not in _REASONS:
            raise_invalid(f"{f}.reason", "must name an AdjustReason")
        items.append(Adjustment(a.sku, a.node_id, a.delta, AdjustReason(a.reason)))
    skus = [a.sku for a in request.adjustments]
    node_ids = [a.node_id for a in request.adjustments]
    command = Adjust(request.request_id, tuple(items))
    return _lines_plan(app, command, skus, node_ids, supply_pb2.AdjustResponse)


def plan_set_on_hand(app: Any, request: supply_pb2.SetOnHandRequest) -> Plan:
    check_id(request.request_id, "request_id")
    check_count(len(request.counts), "counts")
    items = []
    for i, c in enumerate(request.counts):
        f = f"counts[{i}]"
        check_id(c.sku, f"{f}.sku")
        check_id(c.node_id, f"{f}.node_id")
        check_qty(c.on_hand, f"{f}.on_hand", 0)
        check_qty(c.source_seq, f"{f}.source_seq", 1, SEQ_MAX)
        items.append(StockCount(c.sku, c.node_id, c.on_hand, c.source_seq))
    skus = [c.sku for c in request.counts]
    node_ids = [c.node_id for c in request.counts]
    command = SetOnHand(request.request_id, tuple(items))
    return _lines_plan(app, command, skus, node_ids, supply_pb2.SetOnHandResponse)


def plan_set_safety_stock(app: Any, request: supply_pb2.SetSafetyStockRequest) -> Plan:
    check_id(request.request_id, "request_id")
    check_count(len(request.safety_stocks), "safety_stocks")
    items = []
    for i, s in enumerate(request.safety_stocks):
        f = f"safety_stocks[{i}]"
        check_id(s.sku, f"{f}.sku")
        check_id(s.node_id, f"{f}.node_id")
        check_qty(s.safety_stock, f"{f}.safety_stock", 0)
        items.append(Setting(s.sku, s.node_id, s.safety_stock))
    skus = [s.sku for s in request.safety_stocks]
    node_ids = [s.node_id for s in request.safety_stocks]
    command = SetSafetyStock(request.request_id, tuple(items))
    return _lines_plan(app, command, skus, node_ids, supply_pb2.SetSafetyStockResponse)


def plan_move_stock(app: Any, request: supply_pb2.MoveStockRequest) -> Plan:
    check_id(request.request_id, "request_id")
    check_count(len(request.moves), "moves")
    items = []
    for i, m in enumerate(request.moves):
        f = f"moves[{i}]"
        check_id(m.sku, f"{f}.sku")
        check_id(m.node_id, f"{f}.node_id")
        check_qty(m.qty, f"{f}.qty")
        kind = _MOVES.get((m.from_bucket, m.to_bucket))
        if kind is None:
            raise_invalid(
                f"{f}.to_bucket",
                "a move goes SELLABLE -> UNAVAILABLE or UNAVAILABLE -> SELLABLE",
            )
        items.append(MoveLine(m.sku, m.node_id, m.qty, kind))
    skus = [m.sku for m in request.moves]
    node_ids = [m.node_id for m in request.moves]
    command = Move(request.request_id, tuple(items))
    return _lines_plan(app, command, skus, node_ids, supply_pb2.MoveStockResponse)


def plan_adjust_columnar(app: Any, request: supply_pb2.AdjustColumnarRequest) -> Plan:
    check_id(request.request_id, "request_id")
    skus = list(request.skus)
    n = len(skus)
    check_count(n, "skus")
    node_ids = list(request.node_ids)
    check_same_length(n, node_ids, "node_ids", optional=False)
    check_same_length(n, request.deltas, "deltas", optional=False)
    check_ids(skus, "skus")
    check_ids(node_ids, "node_ids")
    deltas = np.array(request.deltas, np.int64)
    check_column(deltas, "deltas", -limits.QTY_MAX, limits.QTY_MAX)
    if not deltas.all():
        raise_invalid(f"deltas[{int(np.flatnonzero(deltas == 0)[0])}]", "must not be 0")
    if check_same_length(n, request.reasons, "reasons", optional=True):
        reasons = np.array(request.reasons, np.int64)
        check_column(reasons, "reasons", min(_REASONS), max(_REASONS))
        reason_list = reasons.tolist()
    else:
        if request.reason not in _REASONS:
            raise_invalid("reason", "must name an AdjustReason (or give `reasons`)")
        reason_list = [request.reason] * n
    # Plain ints for reasons: they encode (and journal) exactly like AdjustReason values.
    items = tuple(map(Adjustment, skus, node_ids, deltas.tolist(), reason_list))
    command = Adjust(request.request_id, items)
    return _columnar_plan(app, command, skus, node_ids, supply_pb2.AdjustColumnarResponse)


def plan_set_on_hand_columnar(app: Any, request: supply_pb2.SetOnHandColumnarRequest) -> Plan:
    check_id(request.request_id, "request_id")
    skus = list(request.skus)
    n = len(skus)
    check_count(n, "skus")
    node_ids = list(request.node_ids)
    check_same_length(n, node_ids, "node_ids", optional=False)
    check_same_length(n, request.on_hand, "on_hand", optional=False)
    check_same_length(n, request.source_seqs, "source_seqs", optional=False)
    check_ids(skus, "skus")
    check_ids(node_ids, "node_ids")
    on_hand = np.array(request.on_hand, np.int64)
    seqs = np.array(request.source_seqs, np.int64)
    check_column(on_hand, "on_hand", 0, limits.QTY_MAX)
    check_column(seqs, "source_seqs", 1, SEQ_MAX)
    items = tuple(map(StockCount, skus, node_ids, on_hand.tolist(), seqs.tolist()))
    command = SetOnHand(request.request_id, items)
    return _columnar_plan(app, command, skus, node_ids, supply_pb2.SetOnHandColumnarResponse)


def plan_upsert_nodes(app: Any, request: supply_pb2.UpsertNodesRequest) -> Plan:
    check_id(request.request_id, "request_id", required=False)
    check_count(len(request.nodes), "nodes")
    specs = tuple(node_spec(node, f"nodes[{i}]") for i, node in enumerate(request.nodes))
    command = UpsertNodes(specs, request.request_id)
    return Plan(
        command, _supply_statuses, _upsert_response(supply_pb2.UpsertNodesResponse), len(specs)
    )


def plan_upsert_groups(app: Any, request: supply_pb2.UpsertGroupsRequest) -> Plan:
    """Groups naming a node that is not registered when the command applies are answered
    UNKNOWN_NODE and left out (the engine decides, so a node upserted just before, in the same
    batch or stream, counts); the rest are upserted together."""
    check_id(request.request_id, "request_id", required=False)
    check_count(len(request.groups), "groups")
    specs = tuple(group_spec(group, f"groups[{i}]") for i, group in enumerate(request.groups))
    command = UpsertGroups(specs, request.request_id)
    return Plan(
        command, _supply_statuses, _upsert_response(supply_pb2.UpsertGroupsResponse), len(specs)
    )


def _upsert_response(message: Any) -> Callable[[Any], Any]:
    def response(outcome: Any) -> Any:
        return message(
            statuses=_supply_statuses(outcome),
            created=outcome.created,
            updated=outcome.updated,
            replayed=outcome.replayed,
        )

    return response


def plan_transfer(app: Any, request: supply_pb2.TransferRequest) -> Plan:
    check_id(request.request_id, "request_id", required=False)
    check_id(request.transfer_id, "transfer_id")
    action = request.action
    command: Any
    if action == supply_pb2.TRANSFER_ACTION_SHIP:
        check_id(request.sku, "sku")
        check_id(request.from_node_id, "from_node_id")
        check_id(request.to_node_id, "to_node_id")
        if request.from_node_id == request.to_node_id:
            raise_invalid("to_node_id", "must differ from from_node_id")
        check_qty(request.qty, "qty")
        check_qty(request.expected_at_ms, "expected_at_ms", 0, SEQ_MAX)
        command = TransferShip(
            request.transfer_id,
            request.sku,
            request.from_node_id,
            request.to_node_id,
            request.qty,
            request.expected_at_ms,
        )
    elif action == supply_pb2.TRANSFER_ACTION_RECEIVE:
        check_qty(request.qty, "qty", 0)
        # As for a partial fulfil: receiving part (qty > 0) needs a request_id, so that a retry
        # replays instead of receiving the units again; qty 0 (everything still in transit) is
        # naturally idempotent.
        check_id(request.request_id, "request_id", required=request.qty > 0)
        command = TransferReceive(request.transfer_id, request.qty, request.request_id)
    elif action == supply_pb2.TRANSFER_ACTION_CANCEL:
        command = TransferCancel(request.transfer_id)
    else:
        raise_invalid("action", "must be SHIP, RECEIVE or CANCEL")

    def statuses(outcome: TransferResult) -> list[int]:
        return [int(outcome.status)]

    def response(outcome: TransferResult) -> Any:
        skus = [outcome.sku, outcome.sku]
        node_ids = [outcome.from_node_id, outcome.to_node_id]
        status = int(outcome.status)
        results = _line_results(app.ledger, skus, node_ids, [status, status])
        return supply_pb2.TransferResponse(results=results, replayed=outcome.replayed)

    return Plan(command, statuses, response, 1)


_STREAM_PLANS: dict[str, Callable[[Any, Any], Plan]] = {
    "adjust": plan_adjust,
    "set_on_hand": plan_set_on_hand,
    "adjust_columnar": plan_adjust_columnar,
    "set_on_hand_columnar": plan_set_on_hand_columnar,
    "upsert_nodes": plan_upsert_nodes,
    "upsert_groups": plan_upsert_groups,
    "set_safety_stock": plan_set_safety_stock,
    "transfer": plan_transfer,
    "move_stock": plan_move_stock,
}


def _prefixed(rejection: Rejection, prefix: str) -> Rejection:
    """The rejection of one message of a stream, its field path prefixed ("messages[3].adjust.")."""
    head, sep, _ = rejection.message.partition(": ")
    if sep and head and " " not in head:
        message = prefix + "." + rejection.message
    else:
        message = f"{prefix}: {rejection.message}"
    return Rejection(rejection.code, rejection.reason, message)


class SupplyServicer(supply_pb2_grpc.SupplyServiceServicer):
    def __init__(self, app: Any) -> None:
        self.app = app

    async def _run(self, plan: Plan, context: grpc.aio.ServicerContext, **metadata: str) -> Any:
        if plan.command is None:
            return plan.response(None)
        outcome = await submit(self.app, context, plan.command, **metadata)
        return plan.response(outcome)

    @unary
    async def Adjust(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_adjust(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def SetOnHand(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_set_on_hand(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def UpsertNodes(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_upsert_nodes(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def UpsertGroups(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_upsert_groups(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def SetSafetyStock(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_set_safety_stock(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def MoveStock(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_move_stock(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def Transfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_transfer(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def AdjustColumnar(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_adjust_columnar(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def SetOnHandColumnar(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        plan = plan_set_on_hand_columnar(self.app, request)
        return await self._run(plan, context, request_id=request.request_id)

    @unary
    async def SetThresholds(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_count(len(request.thresholds), "thresholds")
        command = SetThresholds(
            tuple(Threshold(t.sku, t.low_stock, t.node_id, t.group_id) for t in request.thresholds)
        )
        count = await submit(self.app, context, command)
        return supply_pb2.SetThresholdsResponse(count=count)

    @unary
    async def StreamSupply(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> supply_pb2.StreamSupplyResponse:
        """Apply the feed in order. Messages that arrived together share one sequencer batch.
        A malformed or rejected message ends the stream with its error (field paths start with
        `messages[i]`); the messages before it stay applied, and so do those that shared its
        batch after it (the error's message names them)."""
        inbox: asyncio.Queue[Any] = asyncio.Queue(STREAM_MESSAGES_MAX)
        done = object()

        async def read() -> None:
            try:
                async for message in request_iterator:
                    await inbox.put(message)
            except asyncio.CancelledError:
                raise  # cancelled by the loop below, which reads the inbox no more
            except BaseException:
                await inbox.put(done)  # the loop below ends, and `await reader` raises this
                raise
            await inbox.put(done)

        reader = asyncio.ensure_future(read())
        messages = replayed = lines = lines_ok = 0
        failures: Counter[int] = Counter()
        index = 0
        try:
            finished = False
            while not finished:
                batch = [await inbox.get()]
                while not inbox.empty() and len(batch) < STREAM_MESSAGES_MAX:
                    batch.append(inbox.get_nowait())
                if batch[-1] is done:
                    batch.pop()
                    finished = True
                plans: list[tuple[int, str, Plan]] = []
                tallies: list[tuple[list[int], bool]] = []
                batch_lines = 0
                for message in batch:
                    kind = message.WhichOneof("body")
                    prefix = f"messages[{index}].{kind}" if kind else f"messages[{index}]"
                    try:
                        if kind is None:
                            raise_invalid("body", "an empty SupplyMessage")
                        plan = _STREAM_PLANS[kind](self.app, getattr(message, kind))
                    except EngineError as exc:
                        raise EdgeError(_prefixed(exc.rejection, prefix)) from None
                    plans.append((index, prefix, plan))
                    batch_lines += plan.lines
                    index += 1
                    if batch_lines >= STREAM_LINES_MAX:
                        tallies += await self._stream_submit(plans, context)
                        plans, batch_lines = [], 0
                tallies += await self._stream_submit(plans, context)
                for statuses, was_replayed in tallies:
                    messages += 1
                    replayed += was_replayed
                    lines += len(statuses)
                    for s in statuses:
                        if s == _OK:
                            lines_ok += 1
                        else:
                            failures[s] += 1
            await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        return supply_pb2.StreamSupplyResponse(
            messages=messages,
            messages_replayed=replayed,
            lines=lines,
            lines_ok=lines_ok,
            failures=[
                supply_pb2.StatusCount(status=s, count=c) for s, c in sorted(failures.items())
            ],
            journal_seq=journal_seq(self.app),
        )

    async def _stream_submit(
        self, plans: list[tuple[int, str, Plan]], context: grpc.aio.ServicerContext
    ) -> list[tuple[list[int], bool]]:
        live = [(prefix, plan) for _, prefix, plan in plans if plan.command is not None]
        outcomes = iter(await submit_many(self.app, context, [p.command for _, p in live]))
        out = []
        for k, (_, prefix, plan) in enumerate(plans):
            if plan.command is None:
                out.append((plan.statuses(None), False))
                continue
            outcome = next(outcomes)
            if isinstance(outcome, Rejection):
                rejection = _prefixed(outcome, prefix)
                # The messages that arrived with it shared its batch: those after it were
                # applied too, and the error says so (their request ids replay on a retry).
                after = [i for i, _, p in plans[k + 1 :] if p.command is not None]
                if after:
                    rejection = Rejection(
                        rejection.code,
                        rejection.reason,
                        f"{rejection.message} (messages[{after[0]}..{after[-1]}], which arrived "
                        "with it, were applied)",
                    )
                raise EdgeError(rejection)
            out.append((plan.statuses(outcome), bool(getattr(outcome, "replayed", False))))
        return out
