"""RPC and sequencer metrics kept as plain numbers (server.metrics) must expose exactly what
prometheus_client's Histogram and Gauge would for the same calls; and the handler table of
server.interceptors serves, counts and refuses calls once installed as the server's only
handler."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from server.interceptors import RpcHandlers
from server.metrics import (
    _BATCH_COMMANDS_BUCKETS,
    _FSYNC_SECONDS_BUCKETS,
    _RPC_SECONDS_BUCKETS,
    Metrics,
)

CALLS = [
    ("/a.B/C", "OK", 0.00003),
    ("/a.B/C", "OK", 0.00005),  # on a bucket's bound: counted in that bucket (le)
    ("/a.B/C", "OK", 0.0002),
    ("/a.B/C", "NOT_FOUND", 0.004),
    ("unknown", "PERMISSION_DENIED", 20.0),  # past the last bound: +Inf only
    ("/a.B/D", "OK", 0.00005),
]


def _exposition(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    text = re.sub(r"(?m)^(omnistock_\w+_created(\{.*\})?) \S+$", r"\1 T", text)
    # Not the snapshot families: those are prometheus_client's own in both.
    return "\n".join(line for line in text.splitlines() if "snapshot" not in line)


def test_metrics_expose_as_prometheus_client_would() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    seconds = Histogram(
        "omnistock_rpc_duration_seconds",
        "RPC latency from the first byte handled to the final status, by method and code.",
        ["method", "code"],
        buckets=_RPC_SECONDS_BUCKETS,
        registry=reference,
    )
    in_flight = Gauge(
        "omnistock_rpc_in_flight", "RPCs being handled now.", ["method"], registry=reference
    )
    for method, code, s in CALLS:
        metrics.rpc_started(method)
        metrics.rpc_finished(method, code, s)
        in_flight.labels(method).inc()
        in_flight.labels(method).dec()
        seconds.labels(method, code).observe(s)
    metrics.rpc_started("/a.B/E")  # still running
    in_flight.labels("/a.B/E").inc()
    batch = Histogram(
        "omnistock_batch_commands",
        "Commands per sequencer batch.",
        buckets=_BATCH_COMMANDS_BUCKETS,
        registry=reference,
    )
    batch_seconds = Histogram(
        "omnistock_batch_duration_seconds",
        "Time to apply one sequencer batch through the engine and the journal.",
        buckets=_RPC_SECONDS_BUCKETS,
        registry=reference,
    )
    fsync = Histogram(
        "omnistock_journal_fsync_duration_seconds",
        "Latency of one journal fsync.",
        buckets=_FSYNC_SECONDS_BUCKETS,
        registry=reference,
    )
    for commands, s in ((1, 0.0003), (64, 0.002), (100_000, 12.0)):
        metrics.observe_batch(commands, s)
        metrics.observe_fsync(s / 2)
        batch.observe(commands)
        batch_seconds.observe(s)
        fsync.observe(s / 2)
    assert _exposition(metrics.registry) == _exposition(reference)
    sample = metrics.registry.get_sample_value
    labels = {"method": "/a.B/C", "code": "OK"}
    assert sample("omnistock_rpc_duration_seconds_count", labels) == 3
    assert sample("omnistock_rpc_duration_seconds_bucket", {**labels, "le": "5e-05"}) == 2
    assert sample("omnistock_rpc_in_flight", {"method": "/a.B/E"}) == 1
    assert sample("omnistock_batch_commands_bucket", {"le": "64.0"}) == 2
    assert sample("omnistock_journal_fsync_duration_seconds_count") == 3


async def _empty(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"ok:" + request


async def _aborts(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
    raise AssertionError("abort returned")


async def test_handler_table_serves_counts_and_falls_back() -> None:
    metrics = Metrics()
    table = RpcHandlers(metrics)
    registered = {
        "GetStats": grpc.unary_unary_rpc_method_handler(_empty),
        "Snapshot": grpc.unary_unary_rpc_method_handler(_aborts),
    }
    table.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("omnistock.v1.AdminService", registered)]
    )
    table.add_registered_method_handlers("omnistock.v1.AdminService", registered)
    # A service only added as a generic handler is still served (looked up per call).
    table.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("x.Only", {"Generic": registered["GetStats"]})]
    )
    server = grpc.aio.server()
    table.install(server)
    with pytest.raises(RuntimeError):
        table.add_registered_method_handlers("late.Service", registered)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

            async def call(method: str) -> Any:
                return await channel.unary_unary(method)(b"x", timeout=10)

            assert await call("/omnistock.v1.AdminService/GetStats") == b"ok:x"
            assert await call("/x.Only/Generic") == b"ok:x"
            for method, code in (
                ("/omnistock.v1.AdminService/Snapshot", grpc.StatusCode.NOT_FOUND),
                ("/omnistock.v1.Nope/Call", grpc.StatusCode.UNIMPLEMENTED),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call(method)
                assert raised.value.code() == code
    finally:
        await server.stop(None)
    sample = metrics.registry.get_sample_value
    count = "omnistock_rpc_duration_seconds_count"
    known = "/omnistock.v1.AdminService/"
    assert sample(count, {"method": known + "GetStats", "code": "OK"}) == 1
    assert sample(count, {"method": known + "Snapshot", "code": "NOT_FOUND"}) == 1
    assert sample(count, {"method": "unknown", "code": "OK"}) == 1  # not in server.auth's table
    assert sample("omnistock_rpc_in_flight", {"method": known + "GetStats"}) == 0
