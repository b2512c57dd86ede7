"""Bearer tokens and roles against a real server: missing, unknown and under-privileged tokens,
methods nobody may call, open health checks, and the loopback-only rule when auth is off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from omnistock.v1 import (
    admin_pb2,
    availability_pb2,
    reservation_pb2,
    supply_pb2,
    types_pb2,
)
from server.app import ConfigError, create_server, start_server
from server.auth import Tokens, TokensFileError, bearer_token
from server.config import ServerConfig
from tests.test_rpc import Stubs, error_info, line, make_stubs

pytestmark = pytest.mark.asyncio(loop_scope="module")

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
TOKENS_FILE = f"""\
# storefronts
{READ} read

{WRITE}   write
{ADMIN}\tadmin
"""


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, Stubs]]:
    root = tmp_path_factory.mktemp("auth")
    tokens = root / "tokens"
    tokens.write_text(TOKENS_FILE)
    config = ServerConfig(
        listen="127.0.0.1:0",
        data_dir=str(root / "data"),
        durability="none",
        tokens_file=str(tokens),
    )
    server, app, port = await start_server(config)
    stubs = make_stubs(port)
    yield app, stubs
    await stubs.channel.close()
    await app.stop(server, 1.0)


@pytest.fixture
def stubs(secured: tuple[Any, Stubs]) -> Stubs:
    return secured[1]


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), error_info(raised.value).reason


def _reserve_request() -> reservation_pb2.ReserveRequest:
    return reservation_pb2.ReserveRequest(
        reservation_id="auth-r1", lines=[line("auth-sku", "auth-node", 1)], ttl_ms=60_000
    )


def _availability_request() -> availability_pb2.GetAvailabilityRequest:
    query = availability_pb2.AvailabilityQuery(sku="auth-sku", node_id="auth-node")
    return availability_pb2.GetAvailabilityRequest(queries=[query])


async def test_missing_and_unknown_tokens_are_unauthenticated(stubs: Stubs) -> None:
    unauthenticated = (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert await _code(stubs.availability.GetAvailability(_availability_request())) == (
        unauthenticated
    )
    assert await _code(stubs.reservation.Reserve(_reserve_request())) == unauthenticated
    bad = auth("not-a-token-0123456789abcdef")
    assert await _code(stubs.reservation.Reserve(_reserve_request(), metadata=bad)) == (
        unauthenticated
    )
    wrong_scheme = (("authorization", f"Basic {ADMIN}"),)
    assert await _code(
        stubs.availability.GetAvailability(_availability_request(), metadata=wrong_scheme)
    ) == (unauthenticated)


async def test_read_token_reads_but_may_not_write(stubs: Stubs) -> None:
    await stubs.supply.UpsertNodes(
        supply_pb2.UpsertNodesRequest(nodes=[types_pb2.Node(node_id="auth-node", enabled=True)]),
        metadata=auth(WRITE),
    )
    await stubs.supply.Adjust(
        supply_pb2.AdjustRequest(
            request_id="auth-adj",
            adjustments=[
                supply_pb2.Adjustment(sku="auth-sku", node_id="auth-node", delta=5, reason=1)
            ],
        ),
        metadata=auth(WRITE),
    )
    read = auth(READ)
    response = await stubs.availability.GetAvailability(_availability_request(), metadata=read)
    assert response.results[0].quantities.available == 5
    columnar = await stubs.availability.GetAvailabilityColumnar(
        availability_pb2.GetAvailabilityColumnarRequest(skus=["auth-sku"]), metadata=read
    )
    assert list(columnar.available) == [5]

    denied = (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert await _code(stubs.reservation.Reserve(_reserve_request(), metadata=read)) == denied
    assert await _code(
        stubs.supply.SetOnHand(supply_pb2.SetOnHandRequest(request_id="x"), metadata=read)
    ) == (denied)
    assert await _code(stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=read)) == denied
    assert await _code(stubs.admin.Snapshot(admin_pb2.SnapshotRequest(), metadata=auth(WRITE))) == (
        denied
    )

    async def one_batch() -> AsyncIterator[reservation_pb2.ReserveBatchRequest]:
        yield reservation_pb2.ReserveBatchRequest()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stubs.reservation.StreamReserve(one_batch(), metadata=read):
            pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Nothing was reserved by the refused call; GetReservation is a read.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.reservation.GetReservation(
            reservation_pb2.GetReservationRequest(reservation_id="auth-r1"), metadata=read
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    response = await stubs.availability.GetAvailability(_availability_request(), metadata=read)
    assert response.results[0].quantities.reserved == 0


async def test_roles_nest(stubs: Stubs) -> None:
    for token in (WRITE, ADMIN):
        answer = await stubs.availability.GetAvailability(
            _availability_request(), metadata=auth(token)
        )
        assert len(answer.results) == 1
    stats = await stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=auth(ADMIN))
    assert stats.durability == "none"
    held = await stubs.reservation.Reserve(
        reservation_pb2.ReserveRequest(
            reservation_id="auth-admin-r",
            lines=[line("auth-sku", "auth-node", 1)],
            ttl_ms=60_000,
        ),
        metadata=auth(ADMIN),
    )
    assert held.reservation.state == types_pb2.RESERVATION_STATE_HELD


async def test_unknown_methods_are_denied_to_every_role(stubs: Stubs) -> None:
    # A method the server's table does not list is denied to every role, even to admin.
    made_up = stubs.channel.unary_unary("/omnistock.v1.ReservationService/DropEverything")
    for token in (READ, WRITE, ADMIN):
        assert await _code(made_up(b"", metadata=auth(token))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
    assert await _code(made_up(b"")) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    streaming = stubs.channel.stream_stream("/omnistock.v1.Nope/Stream")
    call = streaming(metadata=auth(ADMIN))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_is_open_and_reflection_needs_a_token(stubs: Stubs) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)

    async def list_services() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="*")

    responses = [
        r async for r in reflection.ServerReflectionInfo(list_services(), metadata=auth(READ))
    ]
    names = {s.name for s in responses[0].list_services_response.service}
    assert "omnistock.v1.ReservationService" in names
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in reflection.ServerReflectionInfo(list_services()):
            pass
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_denials_are_counted(secured: tuple[Any, Stubs]) -> None:
    app, stubs = secured
    await _code(stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=auth(READ)))
    sample = app.metrics.registry.get_sample_value
    labels = {"method": "/omnistock.v1.AdminService/GetStats", "code": "PERMISSION_DENIED"}
    assert sample("omnistock_rpc_duration_seconds_count", labels) >= 1
    unknown = {"method": "unknown", "code": "PERMISSION_DENIED"}
    assert sample("omnistock_rpc_duration_seconds_count", unknown) >= 1


async def test_auth_off_binds_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        await create_server(ServerConfig(listen="0.0.0.0:0", data_dir=str(tmp_path)))
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS_FILE)
    server, app, port = await create_server(
        ServerConfig(listen="0.0.0.0:0", data_dir=str(tmp_path), tokens_file=str(tokens))
    )
    assert port > 0
    await server.stop(None)
    tokens.write_text("too-short read\n")
    with pytest.raises(ConfigError, match="ASCII characters"):
        await create_server(
            ServerConfig(listen="127.0.0.1:0", data_dir=str(tmp_path), tokens_file=str(tokens))
        )


async def test_tokens_file_format() -> None:
    tokens = Tokens.parse(TOKENS_FILE)
    assert len(tokens) == 3
    assert tokens.rank(READ) == 1 and tokens.rank(WRITE) == 2 and tokens.rank(ADMIN) == 3
    assert tokens.rank("nope") is None
    for text, message in [
        ("", "no tokens"),
        ("# only a comment\n", "no tokens"),
        (f"{READ} superuser\n", "role 'superuser'"),
        ("short read\n", "ASCII characters"),
        (f"{READ}\n", "expected `TOKEN ROLE`"),
        (f"{READ} read extra\n", "expected `TOKEN ROLE`"),
        (f"{READ} read\n{READ} admin\n", "listed twice"),
    ]:
        with pytest.raises(TokensFileError, match=message):
            Tokens.parse(text, "tokens.txt")
    with pytest.raises(TokensFileError, match="cannot read"):
        Tokens.load("/nonexistent/tokens")


async def test_bearer_header_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("x-other", "1"), ("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None
