"""Answers built the fast way are byte for byte what the plain way builds: server/wire.py's
one-query availability answer, and `reservation_pb` (server/convert.py) writing a reservation
field by field into its response instead of from keyword arguments."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.codes import LineStatus, ReservationState
from engine.commands import Line, ReservationView, ReservedLine
from omnistock.v1 import availability_pb2, reservation_pb2, types_pb2
from server.convert import reservation_pb
from server.servicers.availability import one_result_message
from server.wire import (
    QUERY_BYTES_MAX,
    encode_one_result,
    one_query_at_node,
    pre_encoded,
    result_buffer,
)
from tests.nojit import pytest_without_jit

I64 = st.integers(-(2**63), 2**63 - 1)
# Mostly small stock figures, sometimes any int64 (a negative one is a 10-byte varint).
QTY = st.one_of(st.integers(0, 200), st.integers(-5, 5), st.integers(127, 20_000), I64)
ID = st.text(min_size=1, max_size=40) | st.text(alphabet="x", min_size=100, max_size=128)


@st.composite
def queries(draw: st.DrawFn) -> availability_pb2.AvailabilityQuery:
    query = availability_pb2.AvailabilityQuery(sku=draw(ID))
    scope = draw(st.sampled_from(["node_id", "group_id", None]))
    if scope is not None:
        setattr(query, scope, draw(ID))
    if draw(st.booleans()):
        query.promise_by_ms = draw(st.integers(0, 2**62))
    return query


def runtime_bytes(query: availability_pb2.AvailabilityQuery, status: int, row: list[int]) -> bytes:
    """The answer as the servicer's message path builds it."""
    zeros_unless_ok = row if status == LineStatus.OK else [0] * 7
    return one_result_message(query, status, zeros_unless_ok).SerializeToString()


@given(
    query=queries(),
    status=st.sampled_from([int(s) for s in LineStatus]),
    row=st.lists(QTY, min_size=7, max_size=7),
)
def test_same_bytes_as_the_runtime(
    query: availability_pb2.AvailabilityQuery, status: int, row: list[int]
) -> None:
    buf = result_buffer()
    qty = np.array([row], np.int64)
    n = encode_one_result(query.SerializeToString(), status, qty, buf)
    got = buf[:n].tobytes()
    assert got == runtime_bytes(query, status, row)
    parsed = availability_pb2.GetAvailabilityResponse.FromString(got)
    assert parsed.results[0].query == query
    assert parsed.results[0].HasField("quantities")


@given(query=queries(), extra=st.sampled_from([None, "query", "unknown field"]))
def test_one_query_at_node_reads_the_usual_request_from_its_bytes(
    query: availability_pb2.AvailabilityQuery, extra: str | None
) -> None:
    """The ids and the echo read from the bytes are what parsing gives; every other shape is
    left to the parser (None)."""
    request = availability_pb2.GetAvailabilityRequest(queries=[query])
    if extra == "query":
        request.queries.add(sku="another")
    data = request.SerializeToString()
    if extra == "unknown field":
        data += b"\x10\x01"  # field 2, varint: not in GetAvailabilityRequest
    got = one_query_at_node(data)
    usual = (
        extra is None
        and query.WhichOneof("scope") == "node_id"
        and query.promise_by_ms == 0
        and len(query.sku) > 0
        and len(query.node_id) > 0
        and len(query.sku.encode()) + len(query.node_id.encode()) <= 123  # one-byte lengths
    )
    if not usual:
        assert got is None
        return
    assert got == (query.sku, query.node_id, query.SerializeToString())
    parsed = availability_pb2.GetAvailabilityRequest.FromString(data)
    assert parsed.queries[0] == query


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"\n\x07\n\x01a\x12\x01b",  # one byte short of its length
        b"\n\x05\n\x01a\x12\x01bc",  # one byte over
        b"\n\x06\n\x00\x12\x02nn",  # empty sku, written
        b"\n\x05\n\x01a\x12\x00",  # empty node id, written
        b"\n\x05\n\x01a\x1a\x01g",  # a group (field 3), not a node
        b"\n\x05\x12\x01n\n\x01a",  # fields out of order (a serializer never writes this)
        b"\n\x06\n\x02\xff\xfe\x12\x00",  # not UTF-8, and an empty node id
        b"\n\x08\n\x02\xff\xfe\x12\x02n1",  # not UTF-8: the parser refuses it
    ],
)
def test_one_query_at_node_leaves_other_bytes_to_the_parser(data: bytes) -> None:
    assert one_query_at_node(data) is None


def test_one_query_at_node_ids_up_to_127_bytes() -> None:
    for sku_len, node_len in [(1, 1), (127, 1), (1, 121), (60, 61)]:
        query = availability_pb2.AvailabilityQuery(sku="s" * sku_len, node_id="n" * node_len)
        data = availability_pb2.GetAvailabilityRequest(queries=[query]).SerializeToString()
        fits = len(data) <= 129  # every length in one varint byte
        assert (one_query_at_node(data) is not None) == fits, (sku_len, node_len)


def test_the_longest_query_fits_the_buffer() -> None:
    """A query of the longest ids with every field set, and one of QUERY_BYTES_MAX bytes."""
    long_id = "é" * 64  # 128 bytes
    query = availability_pb2.AvailabilityQuery(sku=long_id, group_id=long_id, promise_by_ms=2**62)
    row = [-1] * 7
    buf = result_buffer()
    n = encode_one_result(query.SerializeToString(), int(LineStatus.OK), np.array([row]), buf)
    assert buf[:n].tobytes() == runtime_bytes(query, int(LineStatus.OK), row)
    # QUERY_BYTES_MAX bytes: a query with an unknown field (15, length-delimited), kept by the
    # runtime and echoed by both paths.
    sku = availability_pb2.AvailabilityQuery(sku="a").SerializeToString()
    size = QUERY_BYTES_MAX - len(sku) - 3  # tag (1 byte) and a 2-byte length
    echo = sku + bytes([0x7A, 0x80 | (size & 0x7F), size >> 7]) + b"u" * size
    assert len(echo) == QUERY_BYTES_MAX
    query = availability_pb2.AvailabilityQuery.FromString(echo)
    assert query.SerializeToString() == echo
    n = encode_one_result(echo, int(LineStatus.OK), np.array([row]), buf)
    assert buf[:n].tobytes() == runtime_bytes(query, int(LineStatus.OK), row)


async def test_pre_encoded_answers_bytes_as_they_are_and_serializes_messages() -> None:
    """`RpcHandlers` registers a `pre_encoded` unary method without a response serializer: bytes
    go out as they are, a message answer is serialized by the wrapper, and a `unary` method's
    EngineError still answers its status (the wrapper calls it undecorated)."""
    from engine.errors import Code, EngineError, Rejection
    from server.convert import unary
    from server.interceptors import RpcHandlers
    from server.metrics import Metrics

    message = availability_pb2.GetAvailabilityResponse(
        results=[availability_pb2.AvailabilityResult(status=LineStatus.OK)]
    )
    answers: dict[bytes, Any] = {b"bytes": b"\x0a\x00", b"message": message}

    class Servicer:
        @pre_encoded
        @unary
        async def Get(self, request: bytes, context: Any) -> Any:
            if request == b"refuse":
                raise EngineError(Rejection(Code.NOT_FOUND, "SKU_UNKNOWN", "no such sku"))
            return answers[request]

    assert Servicer.Get.pre_encoded is True  # type: ignore[attr-defined]
    handler = grpc.unary_unary_rpc_method_handler(
        Servicer().Get,
        request_deserializer=bytes,
        response_serializer=availability_pb2.GetAvailabilityResponse.SerializeToString,
    )
    table = RpcHandlers(Metrics())
    table.add_registered_method_handlers("t.S", {"Get": handler})
    wrapped = table.wrapped["/t.S/Get"]
    assert wrapped.response_serializer is None

    class Context:
        aborted: tuple[Any, ...] | None = None

        def time_remaining(self) -> None:
            return None

        def code(self) -> Any:
            return None if self.aborted is None else self.aborted[0]

        async def abort_with_status(self, status: Any) -> None:
            self.aborted = (status.code, status.details)
            raise grpc.aio.AbortError()

    assert await wrapped.unary_unary(b"bytes", Context()) == b"\x0a\x00"
    assert await wrapped.unary_unary(b"message", Context()) == message.SerializeToString()
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await wrapped.unary_unary(b"refuse", context)
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.NOT_FOUND


def test_kernels_without_jit() -> None:
    """The same checks with the encoder run as Python (coverage sees its lines)."""
    out = pytest_without_jit(f"{__file__}::test_same_bytes_as_the_runtime")
    assert "1 passed" in out


def reservation_kwargs(view: ReservationView) -> reservation_pb2.Reservation:
    """The reservation as `reservation_pb` built it until 2 Dec 2026 (keyword arguments)."""
    return reservation_pb2.Reservation(
        reservation_id=view.reservation_id,
        state=int(view.state),
        lines=[
            reservation_pb2.ReservedLine(
                line=types_pb2.Line(sku=rl.line.sku, node_id=rl.line.node_id, qty=rl.line.qty),
                reserved_qty=rl.held_qty,
                fulfilled_qty=rl.fulfilled_qty,
                status=int(rl.status),
            )
            for rl in view.lines
        ],
        expires_at_ms=view.expires_at_ms,
        created_at_ms=view.created_at_ms,
        group_id=view.group_id,
    )


NAME = st.text(max_size=12)
reserved_lines = st.builds(
    ReservedLine,
    st.builds(Line, NAME, NAME, QTY),
    QTY,
    QTY,
    st.sampled_from(list(LineStatus)),
    QTY,
)
views = st.builds(
    ReservationView,
    NAME,
    st.sampled_from(list(ReservationState)),
    st.lists(reserved_lines, max_size=4).map(tuple),
    QTY,
    QTY,
    NAME,
)


@given(view=views, replayed=st.booleans())
def test_reservation_written_into_its_response(view: ReservationView, replayed: bool) -> None:
    expected = reservation_pb2.ReserveResponse(
        reservation=reservation_kwargs(view), replayed=replayed
    ).SerializeToString()
    response = reservation_pb2.ReserveResponse(replayed=replayed)
    assert reservation_pb(view, response.reservation) is response.reservation
    assert response.SerializeToString() == expected
    assert reservation_pb(view).SerializeToString() == reservation_kwargs(view).SerializeToString()
