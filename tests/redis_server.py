"""A private, throwaway ``redis-server`` for tests (never the shared one on 6379).

Use the context manager directly::

    with RedisServer(tmp_path) as server:
        client = redis.Redis.from_url(server.url)

or the function-scoped fixture ``redis_server`` by importing it into a test module::

    from tests.redis_server import redis_server_fixture  # noqa: F401

    def test_x(redis_server: RedisServer) -> None: ...

The server runs without persistence (``--save '' --appendonly no``), so ``restart()`` comes back
empty, which is what a Redis restarted without persistence does in production too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["REDIS_SERVER_BIN", "RedisServer", "redis_server_fixture"]

REDIS_SERVER_BIN = shutil.which("redis-server") or "redis-server"
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS_MAX = 3  # The free port may be taken between probing and binding.


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` subprocess on a free loopback port, stopped by its PID."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, port: int | None = None):
        if shutil.which(REDIS_SERVER_BIN) is None:
            pytest.skip("redis-server is not installed")
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="omnistock-redis-"))
        self.port = port or 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        assert not self.running, "redis-server already running"
        fixed_port = self.port != 0
        for _ in range(START_ATTEMPTS_MAX):
            if not fixed_port:
                self.port = _free_port()
            if self._spawn():
                return self
        raise RuntimeError(
            f"redis-server did not start on port {self.port}; see {self._log_path()}"
        )

    def _log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def _spawn(self) -> bool:
        args = [
            REDIS_SERVER_BIN,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        with open(self._log_path(), "ab") as log_file:
            self._process = subprocess.Popen(
                args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if _ping(self.port):
                return True
            time.sleep(0.01)
        self.kill()
        return False

    def _signal_and_wait(self, signum: int) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signum)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it to exit."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the server (a clean shutdown) and wait for it to exit."""
        self._signal_and_wait(signal.SIGTERM)

    def restart(self) -> RedisServer:
        """Kill if running, then start again on the same port (with an empty dataset)."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(name="redis_server")
def redis_server_fixture(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh private redis-server per test, killed at teardown."""
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(directory) as server:
        yield server
