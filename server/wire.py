"""Answers written straight to protobuf's wire format, for the one call where building messages
is most of the handler's cost: a GetAvailability of one query (the storefront's "in stock?").

Building its answer with the protobuf runtime (a response, a result, the echoed query, seven
quantity fields, then serializing and freeing that tree) took ~1.3 µs of the handler's ~3 µs
in-process, and several times that in the server, where each call finds the caches cold.
`encode_one_result` writes the same bytes in one numba call. `pre_encoded` marks a servicer
method that may answer such bytes; `RpcHandlers` (server/interceptors.py) then registers it
without a response serializer, so gRPC sends the bytes as they are, and serializes a message
answer in its wrapper.

The bytes are exactly what the runtime would write for the same message (tests/test_wire.py
compares them over statuses, negative quantities and long ids): fields in number order, zero
scalars left out, the query echoed as serialized, and `quantities` always present (empty when
the status is not OK), as the message path sets it.

The request side: `one_query_at_node` reads the usual request — one query, a SKU at a node, as
every protobuf runtime writes it — straight from its bytes, so the call skips parsing a message
tree, reading its fields and serializing the query again for the echo (~1.9 µs of ~4.4 µs
in-process). Any other shape (several queries, a group, `promise_by_ms`, unknown fields, ids of
more than 123 bytes together, invalid UTF-8) answers None and takes the parsed path.
`raw_request` marks a servicer method that takes the request bytes and parses them itself when
that answers None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numba import njit

__all__ = [
    "QUERY_BYTES_MAX",
    "encode_one_result",
    "one_query_at_node",
    "pre_encoded",
    "raw_request",
    "result_buffer",
]

F = TypeVar("F", bound=Callable[..., Any])

_STATUS_OK = 1  # LineStatus.OK: only then are the quantities non-zero
# The longest echoed query answered as wire bytes. A query whose ids passed the checks is < 300
# bytes (a sku and a node or group id of ≤ ID_BYTES_MAX each, with tags and lengths, and
# promise_by_ms); a longer one carries unknown fields and takes the message path.
QUERY_BYTES_MAX = 4 * 1024
# Response, result and quantities headers (tag + length ≤ 3 + 3 + 3 bytes each), the status, and
# seven quantities of at most 11 bytes each.
_FIXED_BYTES_MAX = 3 * (1 + 5) + 11 + 7 * 11


def pre_encoded(method: F) -> F:
    """Mark a unary servicer method whose answer may be wire bytes: `RpcHandlers` registers it
    without a response serializer and serializes its message answers itself."""
    method.pre_encoded = True  # type: ignore[attr-defined]
    return method


def raw_request(method: F) -> F:
    """Mark a unary servicer method that takes its request as bytes (and parses it itself when
    it must): `RpcHandlers` then registers it without parsing the request."""
    method.raw_request = True  # type: ignore[attr-defined]
    return method


def one_query_at_node(data: bytes) -> tuple[str, str, bytes] | None:
    """(sku, node_id, the query's bytes) of a GetAvailabilityRequest holding exactly one
    AvailabilityQuery{sku = 1, node_id = 2}, both set, in field order with nothing else, and
    short enough that every length is one varint byte (at most 129 bytes in all: ids of up to
    123 bytes together, far beyond the usual); None for any other bytes (the caller parses
    those). The query's bytes are then exactly what serializing the parsed query gives: the
    answer's echo. Ids that short always pass the id checks (1..ID_BYTES_MAX bytes)."""
    n = len(data)
    # 0x0A: queries (1, length-delimited), the whole rest; 0x0A: sku (1, length-delimited);
    # 0x12: node_id (2, length-delimited), to the end. Every length fits one varint byte.
    if n > 129 or n < 6 or data[0] != 0x0A or data[1] != n - 2 or data[2] != 0x0A:
        return None
    sku_end = 4 + data[3]
    if (
        sku_end == 4
        or sku_end + 2 >= n
        or data[sku_end] != 0x12
        or data[sku_end + 1] != n - 2 - sku_end
    ):
        return None
    try:
        return data[4:sku_end].decode(), data[sku_end + 2 :].decode(), data[2:]
    except UnicodeDecodeError:
        return None  # the parser refuses it, with its own message


def result_buffer() -> np.ndarray:
    """A scratch buffer large enough for any one-result answer."""
    return np.empty(QUERY_BYTES_MAX + _FIXED_BYTES_MAX, np.uint8)


@njit(cache=True)
def _varint_size(u: np.uint64) -> int:  # pragma: no cover - compiled
    n = 1
    while u >= 0x80:
        u >>= np.uint64(7)
        n += 1
    return n


@njit(cache=True)
def _put_varint(buf: np.ndarray, n: int, u: np.uint64) -> int:  # pragma: no cover - compiled
    while u >= 0x80:
        buf[n] = np.uint8((u & np.uint64(0x7F)) | np.uint64(0x80))
        n += 1
        u >>= np.uint64(7)
    buf[n] = np.uint8(u)
    return n + 1


@njit(cache=True)
def encode_one_result(
    query: bytes, status: int, qty: np.ndarray, buf: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Write `GetAvailabilityResponse{results: [{query, status, quantities: qty[0]}]}` into
    `buf`; the number of bytes written. `query` is the serialized AvailabilityQuery (at most
    QUERY_BYTES_MAX bytes), `qty` int64[1, 7] in the wire's Quantities order (ignored unless
    `status` is OK: the quantities are then zero)."""
    row = qty[0]
    ok = status == _STATUS_OK
    q_len = 0
    if ok:
        for f in range(7):
            if row[f] != 0:
                q_len += 1 + _varint_size(np.uint64(row[f]))  # int64 < 0: 10 bytes, as protobuf
    n_query = len(query)
    r_len = 1 + _varint_size(np.uint64(n_query)) + n_query
    if status != 0:
        r_len += 1 + _varint_size(np.uint64(status))
    r_len += 1 + _varint_size(np.uint64(q_len)) + q_len
    n = 0
    buf[n] = 0x0A  # GetAvailabilityResponse.results (1, length-delimited)
    n = _put_varint(buf, n + 1, np.uint64(r_len))
    buf[n] = 0x0A  # AvailabilityResult.query (1, length-delimited)
    n = _put_varint(buf, n + 1, np.uint64(n_query))
    for i in range(n_query):
        buf[n + i] = query[i]
    n += n_query
    if status != 0:
        buf[n] = 0x10  # AvailabilityResult.status (2, varint)
        n = _put_varint(buf, n + 1, np.uint64(status))
    buf[n] = 0x1A  # AvailabilityResult.quantities (3, length-delimited)
    n = _put_varint(buf, n + 1, np.uint64(q_len))
    if ok:
        for f in range(7):
            if row[f] != 0:
                buf[n] = np.uint8((f + 1) << 3)  # Quantities field f + 1, varint
                n = _put_varint(buf, n + 1, np.uint64(row[f]))
    return n
