"""AvailabilityService: reads straight from the ledger (no sequencer round trip).

Reads run on the event loop between batches, so each answer sees every batch applied before it.
Columnar requests become numpy id arrays (one dict lookup per line to intern the strings) and go
to the availability kernels in one call; a one-query GetAvailability skips the column set-up and
writes its answer's bytes directly, and its usual request (a SKU at a node) is read from its
bytes without parsing a message (server/wire.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from engine import limits
from engine.codes import LineStatus
from engine.errors import EngineError
from omnistock.v1 import availability_pb2, availability_pb2_grpc
from server.convert import (
    SEQ_MAX,
    abort_status,
    abort_with,
    check_count,
    check_id,
    check_ids,
    check_qty,
    check_same_length,
    quantities_pb,
    raise_invalid,
    streaming,
    unary,
)
from server.interceptors import parse_request
from server.wire import (
    QUERY_BYTES_MAX,
    encode_one_result,
    one_query_at_node,
    pre_encoded,
    raw_request,
    result_buffer,
)

__all__ = ["AvailabilityServicer", "journal_seq", "one_result_message"]

_ZERO = (0, 0, 0, 0, 0, 0, 0)
# Quantities columns as the kernels return them (the wire's order).
_ON_HAND, _RESERVED, _ALLOCATED, _SAFETY, _UNAVAILABLE, _INBOUND, _AVAILABLE = range(7)
_GROUP_NETWORK = -1
_OK = int(LineStatus.OK)
_PARSE_GET_AVAILABILITY = availability_pb2.GetAvailabilityRequest.FromString


def journal_seq(app: Any) -> int:
    seq = getattr(getattr(app, "sequencer", None), "journal_seq", 0)
    return int(seq) if isinstance(seq, int) else 0


def read_columns(
    ledger: Any, skus: list[str], node_ids: list[str], group_ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Statuses int8[n] and quantities int64[n, 7] for columnar queries. `node_ids` and
    `group_ids` are empty or as long as `skus`; "" at i = not this scope; neither = network."""
    n = len(skus)
    sku_ids = ledger.sku_ids(skus)
    if node_ids and all(node_ids) and not any(group_ids):  # the common shape: all at a node
        return _zero_unless_ok(*ledger.availability_ids(sku_ids, ledger.node_ids(node_ids)))
    has_node = np.fromiter(map(bool, node_ids), np.bool_, n) if node_ids else np.zeros(n, bool)
    has_group = np.fromiter(map(bool, group_ids), np.bool_, n) if group_ids else np.zeros(n, bool)
    both = has_node & has_group
    if both.any():
        i = int(np.flatnonzero(both)[0])
        raise_invalid(f"group_ids[{i}]", "a query has a node_id or a group_id, not both")
    statuses = np.empty(n, np.int8)
    qty = np.empty((n, 7), np.int64)
    if has_node.any():
        idx = np.flatnonzero(has_node)
        nodes = ledger.node_ids([node_ids[i] for i in idx.tolist()])
        statuses[idx], qty[idx] = ledger.availability_ids(sku_ids[idx], nodes)
    idx = np.flatnonzero(~has_node)
    if group_ids:
        groups = np.fromiter(
            (ledger.group_id(group_ids[i]) if group_ids[i] else _GROUP_NETWORK for i in idx),
            np.int64,
            idx.size,
        )
    else:
        groups = np.full(idx.size, _GROUP_NETWORK, np.int64)
    statuses[idx], qty[idx] = ledger.availability_group_ids(sku_ids[idx], groups)
    return _zero_unless_ok(statuses, qty)


def _zero_unless_ok(statuses: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantities of a query that is not OK (unknown SKU or node, ...) read as 0."""
    not_ok = statuses != LineStatus.OK
    if not_ok.any():
        qty[not_ok] = 0
    return statuses, qty


def columnar(app: Any, request: availability_pb2.GetAvailabilityColumnarRequest) -> Any:
    skus = list(request.skus)
    n = len(skus)
    check_count(n, "skus")
    check_ids(skus, "skus")
    node_ids = list(request.node_ids)
    group_ids = list(request.group_ids)
    if check_same_length(n, node_ids, "node_ids", optional=True):
        check_ids(node_ids, "node_ids", required=False)
    if check_same_length(n, group_ids, "group_ids", optional=True):
        check_ids(group_ids, "group_ids", required=False)
    statuses, qty = read_columns(app.ledger, skus, node_ids, group_ids)
    response = availability_pb2.GetAvailabilityColumnarResponse(
        status=statuses.tolist(),
        available=qty[:, _AVAILABLE].tolist(),
        batch_id=request.batch_id,
        journal_seq=journal_seq(app),
    )
    if request.include_buckets:
        response.on_hand.extend(qty[:, _ON_HAND].tolist())
        response.reserved.extend(qty[:, _RESERVED].tolist())
        response.allocated.extend(qty[:, _ALLOCATED].tolist())
        response.safety_stock.extend(qty[:, _SAFETY].tolist())
        response.unavailable.extend(qty[:, _UNAVAILABLE].tolist())
        response.inbound.extend(qty[:, _INBOUND].tolist())
    return response


def one_result_message(
    query: availability_pb2.AvailabilityQuery, status: int, row: Sequence[int]
) -> availability_pb2.GetAvailabilityResponse:
    """A one-query answer built as messages: the path of a query asking for `available_by_date`
    (or too long to echo as bytes), and the answer server/wire.py's bytes must equal. `row` is
    in the wire's Quantities order (zeros unless the status is OK)."""
    response = availability_pb2.GetAvailabilityResponse()
    result = response.results.add()
    result.query.CopyFrom(query)
    result.status = status  # type: ignore[assignment]
    q = result.quantities
    (q.on_hand, q.reserved, q.allocated, q.safety_stock, q.unavailable, q.inbound,
     q.available) = row  # fmt: skip
    return response


class AvailabilityServicer(availability_pb2_grpc.AvailabilityServiceServicer):
    def __init__(self, app: Any) -> None:
        self.app = app
        # The id columns of a one-query read and the quantities row a read at a node writes,
        # reused: reads run on the event loop, one at a time.
        self._sku_ids_1 = np.zeros(1, np.int64)
        self._scope_ids_1 = np.zeros(1, np.int64)
        self._qty_1 = np.zeros((1, 7), np.int64)
        self._wire_buf = result_buffer()

    @raw_request
    @pre_encoded
    @unary
    async def GetAvailability(
        self,
        request: availability_pb2.GetAvailabilityRequest | bytes,
        context: grpc.aio.ServicerContext,
    ) -> availability_pb2.GetAvailabilityResponse | bytes:
        if request.__class__ is bytes:  # from the server; a direct call passes a message
            one = one_query_at_node(request)  # type: ignore[arg-type]
            if one is not None:
                return self._one_at_node(*one)
            request = parse_request(_PARSE_GET_AVAILABILITY, request)
        assert not isinstance(request, bytes)
        queries = request.queries
        if len(queries) == 1:
            return self._one(queries[0])
        check_count(len(queries), "queries")
        skus: list[str] = []
        node_ids: list[str] = []
        group_ids: list[str] = []
        by_date: list[int] = []  # queries with a promise_by_ms
        for i, query in enumerate(queries):
            check_id(query.sku, f"queries[{i}].sku")
            scope = query.WhichOneof("scope")
            node_id = query.node_id if scope == "node_id" else ""
            group_id = query.group_id if scope == "group_id" else ""
            if scope is not None:
                check_id(node_id or group_id, f"queries[{i}].{scope}")
            if query.promise_by_ms:
                check_qty(query.promise_by_ms, f"queries[{i}].promise_by_ms", 1, SEQ_MAX)
                by_date.append(i)
            skus.append(query.sku)
            node_ids.append(node_id)
            group_ids.append(group_id)
        ledger = self.app.ledger
        statuses, qty = read_columns(ledger, skus, node_ids, group_ids)
        results = [
            availability_pb2.AvailabilityResult(
                query=query, status=status, quantities=quantities_pb(row)
            )
            for query, status, row in zip(queries, statuses.tolist(), qty.tolist(), strict=True)
        ]
        for i in by_date:
            results[i].available_by_date = ledger.available_by_date(
                skus[i],
                node_ids[i] or None,
                group_ids[i] or None,
                queries[i].promise_by_ms,
                results[i].status,
                qty[i].tolist(),
            )
        return availability_pb2.GetAvailabilityResponse(results=results)

    def _one_at_node(self, sku: str, node_id: str, echo: bytes) -> bytes:
        """`_one` of a query read from the request bytes (`one_query_at_node`: a SKU at a node,
        ids short enough to pass the checks), `echo` the query's bytes."""
        qty = self._qty_1
        status = self.app.ledger.availability_at(sku, node_id, qty)
        buf = self._wire_buf
        return buf[: encode_one_result(echo, status, qty, buf)].tobytes()

    def _one(self, query: availability_pb2.AvailabilityQuery) -> Any:
        """GetAvailability of one query (the storefront's usual call): the same checks, answers
        and errors as the columnar path, without building numpy columns per call, which cost
        more than the rest of the call. The answer is wire bytes (server/wire.py), or a message
        when the query asks for `available_by_date` or is too long to echo that way."""
        # Each Python call here costs several times its in-process price in the server (cold
        # caches; bench/README.md, "gRPC settings"), so the usual case makes as few as it can.
        sku = query.sku
        if not 0 < len(sku) <= limits.ID_CHARS_SURELY_OK:  # else check_id refuses or measures
            check_id(sku, "queries[0].sku")
        scope = query.WhichOneof("scope")
        node_id = query.node_id if scope == "node_id" else ""
        group_id = query.group_id if scope == "group_id" else ""
        if scope is not None:
            scope_id = node_id or group_id
            if not 0 < len(scope_id) <= limits.ID_CHARS_SURELY_OK:
                check_id(scope_id, f"queries[0].{scope}")
        promise_by_ms = query.promise_by_ms
        if promise_by_ms:
            check_qty(promise_by_ms, "queries[0].promise_by_ms", 1, SEQ_MAX)
        ledger = self.app.ledger
        if node_id:
            qty = self._qty_1
            status = ledger.availability_at(sku, node_id, qty)
        else:
            self._sku_ids_1[0] = ledger.sku_id(sku)
            self._scope_ids_1[0] = ledger.group_id(group_id) if group_id else _GROUP_NETWORK
            statuses, qty = ledger.availability_group_ids(self._sku_ids_1, self._scope_ids_1)
            status = int(statuses[0])
        if not promise_by_ms:
            echo = query.SerializeToString()
            if len(echo) <= QUERY_BYTES_MAX:
                buf = self._wire_buf
                return buf[: encode_one_result(echo, status, qty, buf)].tobytes()
        row = qty[0].tolist() if status == _OK else [0] * 7
        response = one_result_message(query, status, row)
        if promise_by_ms:
            response.results[0].available_by_date = ledger.available_by_date(
                sku, node_id or None, group_id or None, promise_by_ms, status, row
            )
        return response

    @unary
    async def GetAvailabilityColumnar(
        self,
        request: availability_pb2.GetAvailabilityColumnarRequest,
        context: grpc.aio.ServicerContext,
    ) -> availability_pb2.GetAvailabilityColumnarResponse:
        return columnar(self.app, request)

    @streaming
    async def StreamAvailability(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        async for request in request_iterator:
            yield columnar(self.app, request)

    @unary
    async def FindNearby(
        self, request: availability_pb2.FindNearbyRequest, context: grpc.aio.ServicerContext
    ) -> availability_pb2.FindNearbyResponse:
        from server.servicers.sourcing import find_nearby  # the sourcing issue's module

        return find_nearby(self.app, request)

    async def WatchAvailability(
        self, request: availability_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Stock events as they are published (server/events.py), after an optional resume."""
        from server.events import ResumeError, SubscriberClosed, SubscriberTooSlow

        try:
            for field in ("skus", "node_ids", "group_ids"):
                values = list(getattr(request, field))
                check_count(len(values), field, least=0)
                check_ids(values, field)
        except EngineError as exc:
            await abort_with(context, exc.rejection)
        hub = self.app.events
        try:
            sub = hub.subscribe(
                skus=request.skus,
                node_ids=request.node_ids,
                group_ids=request.group_ids,
                thresholds_only=request.thresholds_only,
                resume_after_seq=request.resume_after_seq,
            )
        except ResumeError as exc:
            await abort_status(context, grpc.StatusCode.OUT_OF_RANGE, exc.reason, str(exc))
        except OverflowError as exc:
            await abort_status(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", str(exc))
        # A write blocks while the client does not read: race it against the hub declaring this
        # subscriber too slow, so a stalled client is told and dropped instead of held forever.
        slow = asyncio.ensure_future(_until_too_slow(sub))
        try:
            # Headers now: the client's `wait_for_connection()` returns once it is subscribed,
            # not at the first event.
            await context.send_initial_metadata(())
            while True:
                await sub.wait()
                top = sub.hub_last_seq()
                for seq, msg in sub.pending():
                    write = asyncio.ensure_future(context.write(msg))
                    await asyncio.wait((write, slow), return_when=asyncio.FIRST_COMPLETED)
                    if not write.done():
                        write.cancel()
                        break
                    write.result()
                    sub.advance(seq)
                else:
                    sub.advance(top)
        except SubscriberTooSlow as exc:
            # Drop the subscription before telling: the status queues behind the stalled write
            # and leaves only once the client reads again (or its connection dies).
            sub.close()
            await abort_status(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW", str(exc)
            )
        except SubscriberClosed as exc:
            sub.close()
            await abort_status(context, grpc.StatusCode.UNAVAILABLE, "NOT_SERVING", str(exc))
        finally:
            slow.cancel()
            sub.close()


async def _until_too_slow(sub: Any) -> None:
    """Returns once the hub marks `sub` too slow or closes it (its own wake-up flag)."""
    while not sub.too_slow and not sub.closed:
        await sub.stopped.wait()


async def _unimplemented(context: grpc.aio.ServicerContext, method: str) -> None:
    await abort_status(
        context,
        grpc.StatusCode.UNIMPLEMENTED,
        "UNIMPLEMENTED",
        f"AvailabilityService.{method} is not served by this version",
    )
