"""Unary gRPC calls over one bare HTTP/2 connection: the load generator's cheap transport.

The Python workers of `bench/loadgen.py` send pre-encoded request bytes and only need each
answer's gRPC status. Through `grpc.aio` every call crosses gRPC core's completion queue, its
poller thread and a Python coroutine, on the client as on the server: a few hundred µs of client
CPU and up to a millisecond of added latency per call on the project's 2-core VMs, which is then
charged to the server in the open-loop latencies. Here a call is two frames written to the
socket (HEADERS from a header block encoded once per method, DATA with the gRPC message prefix)
and an answer is read straight from the frames the server sends back, with no thread and no
coroutine per call. The class does no I/O: the worker owns the socket and its `select` loop.

What the connection does (RFC 9113, the parts a client of unary gRPC calls needs):
- opens with the preface and SETTINGS (no push; a stream window of 2³¹−1, so answers never wait
  for a per-stream WINDOW_UPDATE), and grows the connection window to 2³¹−1, topping it up when
  half of it has been received;
- acknowledges the server's SETTINGS and PINGs (gRPC core sends PINGs to size its windows);
- respects the server's MAX_CONCURRENT_STREAMS and connection send window: a call that does not
  fit yet waits in order and is sent when streams close or the window grows;
- decodes every header block with HPACK (`hpack`, needed because the server's encoder indexes
  `grpc-status: 0` in its dynamic table) and ends a call on the block that ends its stream:
  `grpc-status` is the answer; RST_STREAM, GOAWAY or a lost connection end it with a
  transport error (negative codes below).

Requests are at most one DATA frame (`REQUEST_BYTES_MAX`): enough for every latency step's
request; the batched scenarios keep using gRPC's own client.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CONNECTION_LOST",
    "GOAWAY",
    "NO_STATUS",
    "REQUEST_BYTES_MAX",
    "STREAM_RESET",
    "Connection",
    "header_block",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY_FRAME, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY = 0x20
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
WINDOW_MAX = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
REQUEST_BYTES_MAX = DEFAULT_FRAME_SIZE - 5  # one DATA frame at the smallest frame size
STREAM_ID_MAX = 2**31 - 1

# An ended call's code when no grpc-status came (negative: never a gRPC status number).
STREAM_RESET = -1  # the server reset the stream (RST_STREAM)
GOAWAY = -2  # the server is closing the connection and will not answer this stream
CONNECTION_LOST = -3  # the connection closed with the call outstanding
NO_STATUS = -4  # the stream ended without a grpc-status (not a gRPC answer)

_FRAME_HEAD = struct.Struct(">IBI")  # 24-bit length in the top bytes of the first word (below)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        (len(payload) << 8 | kind).to_bytes(4, "big")
        + bytes([flags])
        + (stream_id.to_bytes(4, "big"))
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """HPACK integer (RFC 7541 §5.1) with `first`'s high bits set on the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode("ascii")
    return _hpack_int(len(raw), 7) + raw  # no Huffman coding


def header_block(
    authority: str, path: str, metadata: Sequence[tuple[str, str]] = (), timeout_s: float = 5.0
) -> bytes:
    """A gRPC request's header block, HPACK-encoded as literals without indexing, so it is the
    same bytes on every request (the encoder's dynamic table stays empty)."""
    block = b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
    block += _hpack_int(4, 4) + _string(path)  # :path, name from static entry 4
    block += _hpack_int(1, 4) + _string(authority)  # :authority, static entry 1
    block += _hpack_int(31, 4) + _string("application/grpc")  # content-type, static entry 31
    fields = [("te", "trailers"), ("grpc-timeout", f"{max(1, int(timeout_s * 1000))}m")]
    for name, value in [*fields, *metadata]:
        block += b"\x00" + _string(name.lower()) + _string(value)
    return block


class Connection:
    """One client HTTP/2 connection over any byte stream. `start()` writes the preface;
    `feed(data)` takes what the server sent; `call(path_index, message, token)` starts a unary
    call, and `on_done(token, code)` is called once per call with its grpc-status (0 = OK) or one
    of the negative transport codes. Bytes to send go to `write(data)`. No I/O of its own and no
    event loop: the load generator's worker drives it from its own `select` loop."""

    refill_bytes = WINDOW_MAX // 2  # received DATA that triggers a connection WINDOW_UPDATE

    def __init__(
        self,
        write: Callable[[bytes], None],
        authority: str,
        paths: Sequence[str],
        on_done: Callable[[Any, int], None],
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float = 5.0,
    ) -> None:
        import hpack

        self._write = write
        self._blocks = [header_block(authority, p, metadata, timeout_s) for p in paths]
        self._decoder = hpack.Decoder()
        self.on_done = on_done
        self._buf = bytearray()
        self._next_id = 1
        self._calls: dict[int, Any] = {}  # stream id -> token
        self._waiting: deque[tuple[int, bytes, Any]] = deque()
        self._send_window = DEFAULT_WINDOW  # connection level, what the server lets us send
        self._stream_window = DEFAULT_WINDOW  # each new stream's, from the server's SETTINGS
        self._streams_max = STREAM_ID_MAX
        self._received = 0  # DATA bytes received since the last connection WINDOW_UPDATE
        self._header_stream = 0  # a header block continued in CONTINUATION frames
        self._header_end_stream = False
        self._header_parts: list[bytes] = []
        self.closed: int | None = None  # the code outstanding and later calls end with
        self.ready = False  # the server's SETTINGS came

    def start(self) -> None:
        settings = struct.pack(
            ">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_MAX
        )
        grow = (WINDOW_MAX - DEFAULT_WINDOW).to_bytes(4, "big")
        self._write(PREFACE + _frame(SETTINGS, 0, 0, settings) + _frame(WINDOW_UPDATE, 0, 0, grow))

    def lost(self) -> None:
        """The byte stream closed: every outstanding and later call ends with CONNECTION_LOST."""
        self._close(CONNECTION_LOST, 0)

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        at = 0
        end = len(buf)
        while end - at >= 9:
            word, flags, stream_id = _FRAME_HEAD.unpack_from(buf, at)
            length = word >> 8
            if end - at - 9 < length:
                break
            payload = bytes(buf[at + 9 : at + 9 + length])
            at += 9 + length
            self._frame_received(word & 0xFF, flags, stream_id & STREAM_ID_MAX, payload)
        del buf[:at]

    # --- calls ---------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls sent or waiting that have not ended."""
        return len(self._calls) + len(self._waiting)

    def call(self, path_index: int, message: bytes, token: Any) -> None:
        if len(message) > REQUEST_BYTES_MAX:
            raise ValueError(f"a request of at most {REQUEST_BYTES_MAX} bytes (one DATA frame)")
        if self.closed is not None:
            self.on_done(token, self.closed)
            return
        self._waiting.append((path_index, message, token))
        self._send_waiting()

    def _send_waiting(self) -> None:
        waiting = self._waiting
        out = []
        while waiting and len(self._calls) < self._streams_max:
            path_index, message, token = waiting[0]
            size = len(message) + 5
            if size > self._send_window or size > self._stream_window:
                break  # a WINDOW_UPDATE or SETTINGS will send it
            if self._next_id > STREAM_ID_MAX:
                self._close(GOAWAY, 0)  # out of stream ids: this connection is done
                return
            waiting.popleft()
            stream_id = self._next_id
            self._next_id += 2
            self._send_window -= size
            self._calls[stream_id] = token
            out.append(_frame(HEADERS, END_HEADERS, stream_id, self._blocks[path_index]))
            out.append(
                _frame(DATA, END_STREAM, stream_id, struct.pack(">BI", 0, len(message)) + message)
            )
        if out:
            self._write(b"".join(out))

    def _end(self, stream_id: int, code: int) -> None:
        if stream_id in self._calls:
            self.on_done(self._calls.pop(stream_id), code)

    def _close(self, code: int, last_stream_id: int) -> None:
        """End every call after `last_stream_id` and all waiting ones with `code`; refuse more."""
        if self.closed is None:
            self.closed = code
        for stream_id in [s for s in self._calls if s > last_stream_id]:
            self._end(stream_id, code)
        while self._waiting:
            self.on_done(self._waiting.popleft()[2], code)

    # --- frames --------------------------------------------------------------------------------

    def _frame_received(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            self._header_stream = stream_id
            self._header_end_stream = bool(flags & END_STREAM)
            self._header_parts = [payload]
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == CONTINUATION:
            self._header_parts.append(payload)
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if not flags & ACK:
                self._write(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            if stream_id == 0:
                self._send_window += int.from_bytes(payload[:4], "big") & STREAM_ID_MAX
                self._send_waiting()
        elif kind == RST_STREAM:
            self._end(stream_id, STREAM_RESET)
            self._send_waiting()
        elif kind == GOAWAY_FRAME:
            last = int.from_bytes(payload[:4], "big") & STREAM_ID_MAX
            self._close(GOAWAY, last)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._received += len(payload)
        if self._received >= self.refill_bytes:
            grow = self._received.to_bytes(4, "big")
            self._received = 0
            self._write(_frame(WINDOW_UPDATE, 0, 0, grow))
        if flags & END_STREAM:  # gRPC answers end with trailers, never with DATA
            self._end(stream_id, NO_STATUS)
            self._send_waiting()

    def _headers_done(self) -> None:
        block = b"".join(self._header_parts)
        self._header_parts = []
        # Every block is decoded, answered call or not: the decoder's dynamic table must follow
        # the server's encoder.
        fields = self._decoder.decode(block, raw=True)
        if not self._header_end_stream:
            return
        status = NO_STATUS
        for name, value in fields:
            if name == b"grpc-status":
                status = int(value)
                break
        self._end(self._header_stream, status)
        self._send_waiting()

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self._streams_max = value
            elif key == SETTINGS_INITIAL_WINDOW_SIZE:
                self._stream_window = value
        self._write(_frame(SETTINGS, ACK, 0))
        self.ready = True
        self._send_waiting()
