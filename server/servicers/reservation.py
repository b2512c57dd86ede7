"""ReservationService: holds, commits, releases, fulfilments — one command each, or many at once.

Every mutation goes through the sequencer. `ReserveBatch` and `StreamReserve` submit one columnar
`ReserveColumns` command per message (no Python object per reservation or line);
`CommitBatch` and `ReleaseBatch` submit their commands with one `submit_many`. Either way a
message shares one engine batch and one journal write. Inside a batch one bad item does not fail
the others: it is listed in `errors` and its state is REJECTED (or unchanged).
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
# ... and at most this share of the sequencer's queue bound in reservations in flight per stream.
STREAM_QUEUE_SHARE = 4

T = TypeVar("T")
R = TypeVar("R")

_REJECTED = int(ReservationState.REJECTED)


async def pipelined(
    requests: AsyncIterator[T],
    handle: Callable[[T], Awaitable[R]],
    depth: int,
    weight: Callable[[T], int] | None = None,
    budget: int = 0,
) -> AsyncIterator[R]:
    """Handle up to `depth` requests concurrently (started in arrival order), yield answers in
    request order. A failed request fails the stream; the rest are cancelled.

    With `weight`: a request starts only while the weight of those started and not yet done
    stays within `budget` (or none is in flight), so one stream cannot fill the sequencer's
    queue by itself (16 messages of 10,000 reservations are more than its 65,536)."""
    window: asyncio.Queue[asyncio.Task[R] | None] = asyncio.Queue(depth)
    in_flight = 0
    room = asyncio.Event()

    def finished(w: int) -> Callable[[asyncio.Task[R]], None]:
        def callback(_: asyncio.Task[R]) -> None:
            nonlocal in_flight
            in_flight -= w
            room.set()

        return callback

    async def read() -> None:
        nonlocal in_flight
        try:
            async for request in requests:
                w = 0 if weight is None else weight(request)
                while in_flight and in_flight + w > budget:
                    room.clear()
                    await room.wait()
                task = asyncio.ensure_future(handle(request))
                if w:
                    in_flight += w
                    task.add_done_callback(finished(w))
                try:
                    await window.put(task)
                except asyncio.CancelledError:
                    task.cancel()  # the stream failed: nobody would answer it
                    raise
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


def _reservations(request: reservation_pb2.ReserveBatchRequest) -> int:
    return len(request.reservation_ids)


def _item_error(index: int, rejection: Rejection) -> types_pb2.BatchItemError:
    return types_pb2.BatchItemError(
        index=index,
        code=code_number(rejection.code),
        reason=rejection.reason,
        message=rejection.message,
    )


def _column_error(
    r: int,
    ids: list[str],
    starts: np.ndarray,
    skus: list[str],
    node_ids: list[str],
    qtys: np.ndarray,
) -> Rejection | None:
    """Item r's error worded for the columns (`qtys[7]`, not the engine's `lines[0].qty`): its
    first bad field, in the order id, line count, quantities, then names line by line."""
    l0 = int(starts[r])
    l1 = int(starts[r + 1])
    try:
        check_id(ids[r], f"reservation_ids[{r}]")
        if l0 == l1:
            raise_invalid(f"line_counts[{r}]", "must be at least 1")
        qty_bad = (qtys[l0:l1] < 1) | (qtys[l0:l1] > limits.QTY_MAX)
        if qty_bad.any():
            j = l0 + int(np.flatnonzero(qty_bad)[0])
            check_qty(int(qtys[j]), f"qtys[{j}]")
        for j in range(l0, l1):
            check_id(skus[j], f"skus[{j}]")
            check_id(node_ids[j], f"node_ids[{j}]")
    except EngineError as exc:
        return exc.rejection
    return None


def _answer(response_type: Any, result: ReservationResult) -> Any:
    """A unary reservation answer: `replayed` and the reservation, written into the response."""
    response = response_type(replayed=result.replayed)
    reservation_pb(result.reservation, response.reservation)
    return response


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
        return _answer(reservation_pb2.ReserveResponse, result)

    @unary
    async def Commit(
        self, request: reservation_pb2.CommitRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.CommitResponse:
        result = await self._transition(CommitCommand, request.reservation_id, context)
        return _answer(reservation_pb2.CommitResponse, result)

    @unary
    async def Release(
        self, request: reservation_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReleaseResponse:
        result = await self._transition(ReleaseCommand, request.reservation_id, context)
        return _answer(reservation_pb2.ReleaseResponse, result)

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
        command = ExtendCommand(request.reservation_id, request.ttl_ms, request.request_id)
        result = await self._with_request_id(command, context)
        return _answer(reservation_pb2.ExtendResponse, result)

    @unary
    async def GetReservation(
        self, request: reservation_pb2.GetReservationRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.GetReservationResponse:
        check_id(request.reservation_id, "reservation_id")
        try:
            view = self.app.ledger.get_reservation(request.reservation_id)
        except EngineError as exc:
            raise EdgeError(exc.rejection, {"reservation_id": request.reservation_id}) from None
        response = reservation_pb2.GetReservationResponse()
        reservation_pb(view, response.reservation)
        return response

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
        result = await self._with_request_id(command, context)
        return _answer(reservation_pb2.FulfillResponse, result)

    async def _with_request_id(
        self, command: ExtendCommand | Fulfil, context: Any
    ) -> ReservationResult:
        """Submit a retry-safe command on one reservation; a refusal names both ids."""
        return await submit(
            self.app,
            context,
            command,
            reservation_id=command.reservation_id,
            request_id=command.request_id,
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

        budget = self.app.config.queue_commands_max // STREAM_QUEUE_SHARE
        async for response in pipelined(request_iterator, handle, STREAM_DEPTH_MAX,
                                        _reservations, budget):  # fmt: skip
            yield response

    async def _reserve_batch(
        self, request: reservation_pb2.ReserveBatchRequest, context: grpc.aio.ServicerContext
    ) -> reservation_pb2.ReserveBatchResponse:
        # Malformed columns refuse the whole call (INVALID_ARGUMENT, nothing applied); the rest is
        # one ReserveColumns command, in which a bad item is an entry in `errors` (REJECTED).
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
        # Every item goes to the engine, which checks each as its Reserve would be checked; an
        # invalid item's error is then worded for the columns.
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
        if errors:
            starts = np.zeros(count + 1, np.int64)
            np.cumsum(line_counts, out=starts[1:])
            for r, rejection in errors.items():
                if rejection.code == Code.INVALID_ARGUMENT:
                    worded = _column_error(r, ids, starts, skus, node_ids, qtys)
                    errors[r] = worded if worded is not None else rejection
        return reservation_pb2.ReserveBatchResponse(
            states=result.states,
            replayed=result.replayed,
            expires_at_ms=result.expires_at_ms,
            reserved_qtys=result.held_qtys,
            line_statuses=result.line_statuses,
            errors=[_item_error(r, errors[r]) for r in sorted(errors)] if errors else (),
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
