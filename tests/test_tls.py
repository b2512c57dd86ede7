"""TLS and mutual TLS against a real server: a verified client is served, a plaintext client and a
client that does not trust the server's CA are refused, and with a client CA (mTLS) a client
without a certificate signed by it is refused. Certificates are made with the `openssl` CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from omnistock.v1 import availability_pb2, availability_pb2_grpc
from server.app import ConfigError, create_server, start_server
from server.config import ServerConfig

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not found")

HOST = "localhost"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    key, cert = root / f"{name}.key", root / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert), cwd=root,
    )  # fmt: skip
    return key, cert


def _signed(root: Path, name: str, ca: tuple[Path, Path], *, server: bool) -> tuple[Path, Path]:
    """A key and a certificate for `name` signed by `ca` (a server one carries SAN localhost)."""
    key, csr, cert = root / f"{name}.key", root / f"{name}.csr", root / f"{name}.pem"
    ext = root / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    san = f"subjectAltName=DNS:{HOST},IP:127.0.0.1\n" if server else ""
    ext.write_text(f"{san}extendedKeyUsage={usage}\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr), cwd=root,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=root,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("pki")
    ca = _ca(root, "ca")
    other_ca = _ca(root, "other-ca")
    return {
        "ca": ca,
        "other_ca": other_ca,
        "server": _signed(root, "server", ca, server=True),
        "client": _signed(root, "client", ca, server=False),
        "stranger": _signed(root, "stranger", other_ca, server=False),
    }


def _query() -> availability_pb2.GetAvailabilityRequest:
    return availability_pb2.GetAvailabilityRequest(
        queries=[availability_pb2.AvailabilityQuery(sku="tls-sku", node_id="tls-node")]
    )


async def _call(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of one GetAvailability over a channel with these credentials (None: plaintext)."""
    target = f"{HOST}:{port}"
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials)
    async with channel:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        try:
            reply = await stub.GetAvailability(_query(), timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        assert len(reply.results) == 1
        return grpc.StatusCode.OK


def _client_credentials(
    pki: dict[str, tuple[Path, Path]], trust: str = "ca", identity: str | None = None
) -> grpc.ChannelCredentials:
    roots = pki[trust][1].read_bytes()
    if identity is None:
        return grpc.ssl_channel_credentials(roots)
    key, cert = pki[identity]
    return grpc.ssl_channel_credentials(roots, key.read_bytes(), cert.read_bytes())


def _tls_config(
    tmp_path: Path, pki: dict[str, tuple[Path, Path]], *, client_ca: bool = False
) -> ServerConfig:
    """The server's certificate from `pki`; with `client_ca`, clients need one from the CA."""
    key, cert = pki["server"]
    return ServerConfig(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        durability="none",
        tls_cert=str(cert),
        tls_key=str(key),
        tls_client_ca=str(pki["ca"][1]) if client_ca else "",
    )


async def test_tls_serves_verified_clients_only(
    tmp_path: Path, pki: dict[str, tuple[Path, Path]]
) -> None:
    server, app, port = await start_server(_tls_config(tmp_path, pki))
    try:
        assert await _call(port, _client_credentials(pki)) == grpc.StatusCode.OK
        # Not trusting the server's CA, or speaking plaintext to a TLS port: no answer.
        assert await _call(port, _client_credentials(pki, trust="other_ca")) == (
            grpc.StatusCode.UNAVAILABLE
        )
        assert await _call(port, None) == grpc.StatusCode.UNAVAILABLE
    finally:
        await app.stop(server, 1.0)


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    tmp_path: Path, pki: dict[str, tuple[Path, Path]]
) -> None:
    server, app, port = await start_server(_tls_config(tmp_path, pki, client_ca=True))
    try:
        assert await _call(port, _client_credentials(pki, identity="client")) == (
            grpc.StatusCode.OK
        )
        assert await _call(port, _client_credentials(pki)) == grpc.StatusCode.UNAVAILABLE
        assert await _call(port, _client_credentials(pki, identity="stranger")) == (
            grpc.StatusCode.UNAVAILABLE
        )
    finally:
        await app.stop(server, 1.0)


async def test_tls_configuration_errors(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    key, cert = pki["server"]
    base = {"listen": "127.0.0.1:0", "data_dir": str(tmp_path / "data"), "durability": "none"}
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        await create_server(ServerConfig(**base, tls_cert=str(cert)))
    with pytest.raises(ConfigError, match="cannot read a TLS file"):
        await create_server(
            ServerConfig(**base, tls_cert=str(cert), tls_key=str(tmp_path / "missing.key"))
        )
