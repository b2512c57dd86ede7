"""A client in another language discovers the real server's API: `node tests/node/reflect.js`
lists every service by gRPC server reflection and fetches each omnistock service's descriptors,
once with auth off and once with a read token."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from server.app import start_server
from server.config import ServerConfig
from server.servicers import SERVICE_NAMES

NODE_DIR = Path(__file__).resolve().parent / "node"
NPM_INSTALL_TIMEOUT_S = 300
REFLECT_TIMEOUT_S = 60
READ_TOKEN = "node-read-token-0123456789abcdef"
EXPECTED = {*SERVICE_NAMES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def _run(*args: str, cwd: Path, timeout_s: float, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(args)}: no answer within {timeout_s} s")
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed for the cross-language check")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is needed to install tests/node dependencies")
        code, output = await _run(
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            cwd=NODE_DIR,
            timeout_s=NPM_INSTALL_TIMEOUT_S,
            env=dict(os.environ),
        )
        assert code == 0, output
    return node


@pytest.mark.parametrize("with_auth", [False, True], ids=["auth-off", "read-token"])
async def test_node_client_lists_every_service(tmp_path: Path, with_auth: bool) -> None:
    node = await _node()
    tokens_file = ""
    if with_auth:
        tokens = tmp_path / "tokens"
        tokens.write_text(f"{READ_TOKEN} read\n")
        tokens_file = str(tokens)
    config = ServerConfig(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        durability="none",
        tokens_file=tokens_file,
    )
    server, app, port = await start_server(config)
    try:
        env = {**os.environ, "OMNISTOCK_TOKEN": READ_TOKEN if with_auth else ""}
        code, output = await _run(
            node,
            "reflect.js",
            f"127.0.0.1:{port}",
            cwd=NODE_DIR,
            timeout_s=REFLECT_TIMEOUT_S,
            env=env,
        )
        if with_auth:
            # Without the token the same client is refused.
            env_none = {**os.environ, "OMNISTOCK_TOKEN": ""}
            refused, refused_output = await _run(
                node,
                "reflect.js",
                f"127.0.0.1:{port}",
                cwd=NODE_DIR,
                timeout_s=REFLECT_TIMEOUT_S,
                env=env_none,
            )
            assert refused == 1 and "16" in refused_output, refused_output  # UNAUTHENTICATED
    finally:
        await app.stop(server, 1.0)
    assert code == 0, output
    listed = set(output.split())
    assert listed >= EXPECTED, sorted(EXPECTED - listed)
