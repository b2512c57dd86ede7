"""bench/h2wire.py: the load generator's bare HTTP/2 client, against a scripted server side
(frames built here, header blocks from hpack's own encoder) and against a real gRPC server."""

from __future__ import annotations

import struct
from typing import Any

import hpack
import pytest

from bench.h2wire import (
    CONNECTION_LOST,
    GOAWAY,
    NO_STATUS,
    PREFACE,
    REQUEST_BYTES_MAX,
    STREAM_RESET,
    Connection,
    header_block,
)

DATA, HEADERS, RST, SETTINGS, PING = 0, 1, 3, 4, 6
GOAWAY_FRAME, WINDOW_UPDATE, CONTINUATION = 7, 8, 9


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload) << 8 | kind)
        + bytes([flags])
        + (struct.pack(">I", stream_id))
        + payload
    )


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in `data` (the preface skipped)."""
    data = data.removeprefix(PREFACE)
    out = []
    while data:
        word, flags, stream_id = struct.unpack_from(">IBI", data)
        length = word >> 8
        out.append((word & 0xFF, flags, stream_id, data[9 : 9 + length]))
        data = data[9 + length :]
    return out


class Peer:
    """The server side: a Connection's output, its answers, and hpack-encoded replies."""

    def __init__(self, settings: bytes = b"") -> None:
        self.out = bytearray()
        self.done: list[tuple[Any, int]] = []
        self.encoder = hpack.Encoder()
        self.conn = Connection(
            self.out.extend, "127.0.0.1:1", ["/a.S/M", "/a.S/N"],
            lambda token, code: self.done.append((token, code)),
        )  # fmt: skip
        self.conn.start()
        self.conn.feed(frame(SETTINGS, 0, 0, settings))

    def sent(self) -> list[tuple[int, int, int, bytes]]:
        got = frames(bytes(self.out))
        self.out.clear()
        return got

    def answer(self, stream_id: int, status: int, body: bytes = b"\x00\x00\x00\x00\x00") -> None:
        head = self.encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
        trailers = self.encoder.encode([("grpc-status", str(status))])
        self.conn.feed(
            frame(HEADERS, 0x4, stream_id, head)
            + frame(DATA, 0, stream_id, body)
            + frame(HEADERS, 0x5, stream_id, trailers)
        )


def test_the_header_block_is_a_grpc_request() -> None:
    block = header_block("127.0.0.1:9", "/omnistock.v1.S/M", [("Authorization", "Bearer t")], 2.5)
    assert hpack.Decoder().decode(block) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/omnistock.v1.S/M"),
        (":authority", "127.0.0.1:9"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "2500m"),
        ("authorization", "Bearer t"),
    ]
    long_path = "/" + "p" * 300  # a length past the 7-bit prefix
    assert hpack.Decoder().decode(header_block("h:1", long_path))[2] == (":path", long_path)


def test_opening_settings_and_acks() -> None:
    peer = Peer()
    assert peer.conn.ready
    sent = peer.sent()
    assert sent[0][:3] == (SETTINGS, 0, 0)
    assert struct.unpack(">HIHI", sent[0][3]) == (2, 0, 4, 2**31 - 1)  # no push, big window
    assert sent[1] == (WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535))
    assert sent[2] == (SETTINGS, 1, 0, b"")  # the server's SETTINGS acknowledged
    peer.conn.feed(frame(PING, 0, 0, b"12345678"))
    assert peer.sent() == [(PING, 1, 0, b"12345678")]
    peer.conn.feed(frame(PING, 1, 0, b"12345678"))  # an ACK is not answered
    assert peer.sent() == []


def test_a_call_is_headers_then_data_and_ends_on_its_trailers() -> None:
    peer = Peer()
    peer.sent()
    peer.conn.call(1, b"\x08\x01", "t1")
    peer.conn.call(0, b"", "t2")
    (h1, d1, h2, d2) = peer.sent()
    assert h1[:3] == (HEADERS, 0x4, 1) and h2[:3] == (HEADERS, 0x4, 3)
    assert hpack.Decoder().decode(h1[3])[2] == (":path", "/a.S/N")
    assert d1 == (DATA, 0x1, 1, b"\x00\x00\x00\x00\x02\x08\x01")
    assert d2 == (DATA, 0x1, 3, b"\x00\x00\x00\x00\x00")
    assert peer.conn.in_flight == 2
    peer.answer(3, 5)  # answers may come in any order
    peer.answer(1, 0)  # the encoder now indexes its fields: the decoder must follow its table
    assert peer.done == [("t2", 5), ("t1", 0)]
    assert peer.conn.in_flight == 0


def test_a_header_block_split_into_continuation_frames() -> None:
    peer = Peer()
    peer.conn.call(0, b"", "t")
    block = peer.encoder.encode([("grpc-status", "7"), ("grpc-message", "no" * 50)])
    peer.conn.feed(frame(HEADERS, 0x1, 1, block[:5]) + frame(CONTINUATION, 0, 1, block[5:20]))
    assert peer.done == []
    peer.conn.feed(frame(CONTINUATION, 0x4, 1, block[20:]))
    assert peer.done == [("t", 7)]


def test_frames_may_arrive_in_pieces() -> None:
    peer = Peer()
    peer.conn.call(0, b"", "t")
    head = peer.encoder.encode([("grpc-status", "0")])
    wire = frame(HEADERS, 0x5, 1, head)
    for i in range(len(wire)):
        peer.conn.feed(wire[i : i + 1])
    assert peer.done == [("t", 0)]


def test_transport_endings() -> None:
    peer = Peer()
    for token in "abcd":
        peer.conn.call(0, b"", token)
    peer.conn.feed(frame(RST, 0, 1, struct.pack(">I", 8)))
    peer.conn.feed(frame(DATA, 0x1, 3, b"\x00\x00\x00\x00\x00"))  # ended without trailers
    peer.conn.feed(frame(GOAWAY_FRAME, 0, 0, struct.pack(">II", 5, 0)))  # stream 5 still answers
    assert peer.done == [("a", STREAM_RESET), ("b", NO_STATUS), ("d", GOAWAY)]
    peer.conn.call(0, b"", "e")  # refused at once after GOAWAY
    assert peer.done[-1] == ("e", GOAWAY)
    peer.answer(5, 0)
    assert peer.done[-1] == ("c", 0)


def test_a_lost_connection_ends_every_call() -> None:
    peer = Peer()
    peer.conn.call(0, b"", "a")
    peer.conn.lost()
    peer.conn.call(0, b"", "b")
    assert peer.done == [("a", CONNECTION_LOST), ("b", CONNECTION_LOST)]


def test_calls_wait_for_streams_and_window() -> None:
    # The server allows one stream at a time, and a stream window of 100 bytes.
    peer = Peer(struct.pack(">HIHI", 3, 1, 4, 100))
    peer.sent()
    peer.conn.call(0, b"x", "a")
    peer.conn.call(0, b"y", "b")
    assert [f[2] for f in peer.sent()] == [1, 1]  # only the first went out
    assert peer.conn.in_flight == 2
    peer.answer(1, 0)
    assert [f[2] for f in peer.sent()] == [3, 3]  # the second followed when the first ended
    with pytest.raises(ValueError, match="at most"):
        peer.conn.call(0, bytes(REQUEST_BYTES_MAX + 1), "c")
    peer.conn.feed(frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 10)))
    peer.sent()
    peer.conn.call(0, bytes(200), "big")  # over the 100-byte stream window: waits
    assert peer.sent() == []
    peer.conn.feed(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65_535)))
    assert [f[0] for f in peer.sent()] == [SETTINGS, HEADERS, DATA]


def test_the_connection_window_is_spent_and_refilled() -> None:
    peer = Peer()
    sent_bytes = 0
    n = 0
    while sent_bytes + 1005 <= 65_535:  # the initial connection send window
        peer.conn.call(0, bytes(1000), n)
        sent_bytes += 1005
        n += 1
    peer.sent()
    peer.conn.call(0, bytes(1000), "over")
    assert peer.sent() == []
    peer.conn.feed(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1005)))
    assert [f[0] for f in peer.sent()] == [HEADERS, DATA]


def test_received_data_refills_the_servers_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Connection, "refill_bytes", 32)  # instead of 1 GiB
    peer = Peer()
    peer.sent()
    peer.conn.call(0, b"", "a")
    peer.sent()
    peer.conn.feed(frame(DATA, 0, 1, bytes(20)))
    assert peer.sent() == []
    peer.conn.feed(frame(DATA, 0, 1, bytes(20)))
    assert peer.sent() == [(WINDOW_UPDATE, 0, 0, struct.pack(">I", 40))]
