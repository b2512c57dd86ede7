"""ReservationService: holds, commits, releases, fulfilments — one command each, or many at once.

Every mutation goes through the sequencer. The batch forms (`ReserveBatch`, `StreamReserve`,
`CommitBatch`, `ReleaseBatch`) submit their commands with one `submit_many`, so a message shares
one engine batch and one journal write. Inside a batch one bad item does not fail the others: it
is listed in `errors` and its state is REJECTED (or unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from engine import limits
from engine.codes import ReservationState
from engine.commands import Commit as CommitCommand
from engine.commands import Extend as ExtendCommand
from engine.commands import Fulfil, ReservationResult, ReserveColumns
from engine.commands import Release as ReleaseCommand
from engine.commands import Reserve as ReserveCommand
from engine.errors import Code, EngineError, Rejection
from omnistock.v1 import reservation_pb2, reservation_pb2_grpc, types_pb2
from server.convert import (
    EdgeError,
    check_count,
    check_id,
    check_qty,
    check_ttl,
    code_number,
    line_tuple,
    raise_invalid,
    reservation_pb,
    streaming,
    submit,
    submit_many,
    unary,
)

__all__ = ["ReservationServicer", "pipelined"]

# StreamReserve: messages read ahead and submitted while earlier ones are still being applied, so
# consecutive messages of one stream can share a sequencer batch. Answers stay in request order.
STREAM_DEPTH_MAX = 16

T = TypeVar("T")
R = TypeVar("R")

_REJECTED = int(ReservationState.REJECTED)


async def pipelined(
    requests: AsyncIterator[T], handle: Callable[[T], Awaitable[R]], depth: int
) -> AsyncIterator[R]:
    """Handle up to `depth` requests concurrently (started in arrival order), yield answers in
    request order. A failed request fails the stream; the rest are cancelled."""
    window: asyncio.Queue[asyncio.Task[R] | None] = asyncio.Queue(depth)

    async def read() -> None:
        try:
            async for request in requests:
                task = asyncio.ensure_future(handle(request))
                await window.put(task)
        finally:
            await window.put(None)

    reader = asyncio.ensure_future(read())
    try:
        while (task := await window.get()) is not None:
            yield await task
        await reader  # re-raises a failure of the request stream itself
    finally:
        reader.cancel()
        while not window.empty():
            task = window.get_nowait()
            if task is not None:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def _item_error(index: int, rejection: Rejection) -> types_pb2.BatchItemError:
    return types_pb2.BatchItemError(
        index=index,
        code=code_number(rejection.code),
        reason=rejection.reason,
        message=rejection.message,
    )


def _plain_ids(column: list[str]) -> bool:
    """Every id is 1..ID_BYTES_MAX ASCII characters (at C speed; `check_id` finds culprits)."""
    if not "".join(column).isascii():
        return False
    lengths = np.fromiter(map(len, column), np.int64, len(column))
    return bool(lengths.min() >= 1 and lengths.max() <= limits.ID_BYTES_MAX)


def _item_errors(
    ids: list[str],
    line_counts: np.ndarray,
    starts: np.ndarray,
    skus: list[str],
    node_ids: list[str],
    qtys: np.ndarray,
) -> dict[int, Rejection]:
    """Each bad item's error: the checks run over whole columns, and only an item they flag is
    looked at one field at a time (which words the error: first bad field of the item)."""
    qty_bad = (qtys < 1) | (qtys > limits.QTY_MAX)
    line_bad = qty_bad.copy()
    for column in (skus, node_ids):
        if not _plain_ids(column):
            line_bad |= ~np.fromiter(
                (0 < len(x) <= limits.ID_BYTES_MAX and x.isascii() for x in column),
                np.bool_,
                len(column),
            )
    maybe = line_counts == 0
    if line_bad.any():
        sums = np.zeros(line_bad.shape[0] + 1, np.int64)
        np.cumsum(line_bad, out=sums[1:])
        maybe |= sums[starts[1:]] > sums[starts[:-1]]
    if not _plain_ids(ids):
        maybe |= ~np.fromiter(
            (0 < len(x) <= limits.ID_BYTES_MAX and x.isascii() for x in ids), np.bool_, len(ids)
        )
    errors: dict[int, Rejection] = {}
    for r in np.flatnonzero(maybe).tolist():
        l0 = int(starts[r])
        l1 = int(starts[r + 1])
        try:
            check_id(ids[r], f"reservation_ids[{r}]")
            if l0 == l1:
                raise_invalid(f"line_counts[{r}]", "must be at least 1")
            if qty_bad[l0:l1].any():
                j = l0 + int(np.flatnonzero(qty_bad[l0:l1])[0])
                check_qty(int(qtys[j]), f"qtys[{j}]")
            for j in range(l0, l1):
                check_id(skus[j], f"skus[{j}]")
                check_id(node_ids[j], f"node_ids[{j}]")
        except EngineError as exc:
            errors[r] = exc.rejection
    return errors


class ReservationServicer(reservation_pb2_grpc.ReservationServiceServicer):
    def __init__(self, app: Any) -> None:
        self.app = app

    # --- one reservation -------------------------------------------------------------------

    @unary
    async def Reserve(
        self, request: reservation_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReserveResponse:
        check_id(request.reservation_id, "reservation_id")
        lines = line_tuple(request.lines)
        check_ttl(request.ttl_ms)
        check_id(request.group_id, "group_id", required=False)
        command = ReserveCommand(
            request.reservation_id, lines, request.ttl_ms, request.allow_partial, request.group_id
        )
        result = await submit(self.app, context, command, reservation_id=request.reservation_id)
        return reservation_pb2.ReserveResponse(
            reservation=reservation_pb(result.reservation), replayed=result.replayed
        )

    @unary
    async def Commit(
        self, request: reservation_pb2.CommitRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.CommitResponse:
        result = await self._transition(CommitCommand, request.reservation_id, context)
        return reservation_pb2.CommitResponse(
            reservation=reservation_pb(result.reservation), replayed=result.replayed
        )

    @unary
    async def Release(
        self, request: reservation_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReleaseResponse:
        result = await self._transition(ReleaseCommand, request.reservation_id, context)
        return reservation_pb2.ReleaseResponse(
            reservation=reservation_pb(result.reservation), replayed=result.replayed
        )

    async def _transition(
        self, kind: type[CommitCommand] | type[ReleaseCommand], reservation_id: str, context: Any
    ) -> ReservationResult:
        check_id(reservation_id, "reservation_id")
        return await submit(self.app, context, kind(reservation_id), reservation_id=reservation_id)

    @unary
    async def Extend(
        self, request: reservation_pb2.ExtendRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ExtendResponse:
        check_id(request.reservation_id, "reservation_id")
        check_ttl(request.ttl_ms)
        check_id(request.request_id, "request_id", required=False)
        command = ExtendCommand(request.reservation_id, request.ttl_ms)
        result = await submit(self.app, context, command, reservation_id=request.reservation_id)
        return reservation_pb2.ExtendResponse(
            reservation=reservation_pb(result.reservation), replayed=result.replayed
        )

    @unary
    async def GetReservation(
        self, request: reservation_pb2.GetReservationRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.GetReservationResponse:
        check_id(request.reservation_id, "reservation_id")
        try:
            view = self.app.ledger.get_reservation(request.reservation_id)
        except EngineError as exc:
            raise EdgeError(exc.rejection, {"reservation_id": request.reservation_id}) from None
        return reservation_pb2.GetReservationResponse(reservation=reservation_pb(view))

    @unary
    async def Fulfill(
        self, request: reservation_pb2.FulfillRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.FulfillResponse:
        check_id(request.reservation_id, "reservation_id")
        # No lines = hand over everything still held, which is naturally idempotent; a partial
        # fulfilment needs a request_id so that a retry does not ship twice.
        lines = line_tuple(request.lines) if request.lines else ()
        check_id(request.request_id, "request_id", required=bool(lines))
        command = Fulfil(request.reservation_id, lines, request.request_id)
        result = await submit(
            self.app,
            context,
            command,
            reservation_id=request.reservation_id,
            request_id=request.request_id,
        )
        return reservation_pb2.FulfillResponse(
            reservation=reservation_pb(result.reservation), replayed=result.replayed
        )

    # --- many reservations -----------------------------------------------------------------

    @unary
    async def ReserveBatch(
        self, request: reservation_pb2.ReserveBatchRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReserveBatchResponse:
        return await self._reserve_batch(request, context)

    @streaming
    async def StreamReserve(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async def handle(request: reservation_pb2.ReserveBatchRequest) -> Any:
            return await self._reserve_batch(request, context)

        async for response in pipelined(request_iterator, handle, STREAM_DEPTH_MAX):
            yield response

    async def _reserve_batch(
        self, request: reservation_pb2.ReserveBatchRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReserveBatchResponse:
        # Malformed columns refuse the whole call (INVALID_ARGUMENT, nothing applied); a bad item
        # is an entry in `errors` and is left out of the one ReserveColumns command.
        ids = list(request.reservation_ids)
        count = len(ids)
        check_count(count, "reservation_ids")
        if len(request.line_counts) != count:
            raise_invalid("line_counts", f"has {len(request.line_counts)} items, expected {count}")
        line_counts = np.array(request.line_counts, np.int64)
        lines_total = int(line_counts.sum())
        check_count(lines_total, "skus")
        for column in ("skus", "node_ids", "qtys"):
            if len(getattr(request, column)) != lines_total:
                raise_invalid(
                    column,
                    f"has {len(getattr(request, column))} items, expected sum(line_counts) = "
                    f"{lines_total}",
                )
        check_ttl(request.ttl_ms)
        check_id(request.group_id, "group_id", required=False)
        skus = list(request.skus)
        node_ids = list(request.node_ids)
        qtys = np.array(request.qtys, np.int64)
        starts = np.zeros(count + 1, np.int64)
        np.cumsum(line_counts, out=starts[1:])
        errors = _item_errors(ids, line_counts, starts, skus, node_ids, qtys)
        if not errors:
            command = ReserveColumns(
                ids,
                line_counts.tobytes(),
                skus,
                node_ids,
                qtys.tobytes(),
                request.ttl_ms,
                request.allow_partial,
                request.group_id,
            )
            result = await submit(self.app, context, command)
            errors = result.rejections
            return reservation_pb2.ReserveBatchResponse(
                states=result.states,
                replayed=result.replayed,
                expires_at_ms=result.expires_at_ms,
                reserved_qtys=result.held_qtys,
                line_statuses=result.line_statuses,
                errors=[_item_error(r, errors[r]) for r in sorted(errors)] if errors else (),
                batch_id=request.batch_id,
            )
        keep = np.ones(count, np.bool_)
        keep[list(errors)] = False
        states = np.full(count, _REJECTED, np.int64)
        replayed = np.zeros(count, np.bool_)
        expires_at_ms = np.zeros(count, np.int64)
        held_qtys = np.zeros(lines_total, np.int64)
        line_statuses = np.zeros(lines_total, np.int64)
        if keep.any():
            submitted = np.flatnonzero(keep)
            line_keep = np.repeat(keep, line_counts)
            line_idx = np.flatnonzero(line_keep).tolist()
            command = ReserveColumns(
                [ids[r] for r in submitted.tolist()],
                line_counts[keep].tobytes(),
                [skus[j] for j in line_idx],
                [node_ids[j] for j in line_idx],
                qtys[line_keep].tobytes(),
                request.ttl_ms,
                request.allow_partial,
                request.group_id,
            )
            result = await submit(self.app, context, command)
            for k, rejection in result.rejections.items():
                errors[int(submitted[k])] = rejection
            states[submitted] = result.states
            replayed[submitted] = result.replayed
            expires_at_ms[submitted] = result.expires_at_ms
            held_qtys[line_keep] = result.held_qtys
            line_statuses[line_keep] = result.line_statuses
        return reservation_pb2.ReserveBatchResponse(
            states=states.tolist(),
            replayed=replayed.tolist(),
            expires_at_ms=expires_at_ms.tolist(),
            reserved_qtys=held_qtys.tolist(),
            line_statuses=line_statuses.tolist(),
            errors=[_item_error(r, errors[r]) for r in sorted(errors)],
            batch_id=request.batch_id,
        )

    @unary
    async def CommitBatch(
        self, request: reservation_pb2.ReservationIdsBatch, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReservationStatesBatch:
        return await self._transition_batch(CommitCommand, request, context)

    @unary
    async def ReleaseBatch(
        self, request: reservation_pb2.ReservationIdsBatch, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReservationStatesBatch:
        return await self._transition_batch(ReleaseCommand, request, context)

    async def _transition_batch(
        self,
        kind: type[CommitCommand] | type[ReleaseCommand],
        request: reservation_pb2.ReservationIdsBatch,
        context: grpc.aio.ServicerContext,
    ) -> reservation_pb2.ReservationStatesBatch:
        ids = list(request.reservation_ids)
        count = len(ids)
        check_count(count, "reservation_ids")
        errors: dict[int, Rejection] = {}
        commands = []
        submitted = []
        for i, reservation_id in enumerate(ids):
            try:
                check_id(reservation_id, f"reservation_ids[{i}]")
            except EngineError as exc:
                errors[i] = exc.rejection
                continue
            commands.append(kind(reservation_id))
            submitted.append(i)
        outcomes = await submit_many(self.app, context, commands)
        states = [0] * count
        replayed = [False] * count
        for i, outcome in zip(submitted, outcomes, strict=True):
            if isinstance(outcome, ReservationResult):
                states[i] = int(outcome.reservation.state)
                replayed[i] = outcome.replayed
                continue
            errors[i] = outcome
            if outcome.code != Code.NOT_FOUND:
                with contextlib.suppress(EngineError):
                    states[i] = int(self.app.ledger.get_reservation(ids[i]).state)
        return reservation_pb2.ReservationStatesBatch(
            states=states,
            replayed=replayed,
            errors=[_item_error(i, errors[i]) for i in sorted(errors)],
            batch_id=request.batch_id,
        )
