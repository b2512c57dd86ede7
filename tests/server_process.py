"""`omnistock serve` as a subprocess on a free loopback port, for end-to-end, crash and bench runs.

    with ServerProcess(tmp_path / "data") as server:      # starts, waits for health SERVING
        channel = grpc.insecure_channel(server.target)
        ...
        server.kill()                                     # SIGKILL (a crash)
        server.start()                                    # same data dir, new port

The server binds 127.0.0.1:0 and writes its port to a file; `start()` then polls gRPC health
until SERVING (or the process exits, or the timeout passes, with the log tail in the error).
Stopped by PID only. stderr (JSON logs) goes to `log_path`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["ServerProcess", "server_process_fixture", "wait_serving"]

START_TIMEOUT_S = 60.0  # a cold numba cache compiles every kernel first
STOP_TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parent.parent


def wait_serving(
    target: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll gRPC health ("" service) at `target` until SERVING."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode} while starting")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server at {target} not SERVING after {timeout_s} s")
            time.sleep(0.02)


class ServerProcess:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        durability: str = "sync",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.env = dict(env or {})
        self.durability = durability
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._port_file = self.data_dir.parent / f"{self.data_dir.name}-port"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "server", "serve",
            "--listen", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--durability", self.durability,
            "--port-file", str(self._port_file),
            *self.args,
        ]  # fmt: skip

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting (for tests of failed starts)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self._port_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONPATH", str(REPO))
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ServerProcess:
        process = self.spawn()
        deadline = time.monotonic() + timeout_s
        try:
            while not self._port_file.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with code {process.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not bind")
                time.sleep(0.01)
            self.port = int(self._port_file.read_text())
            wait_serving(self.target, max(0.1, deadline - time.monotonic()), process)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"{exc}; log tail:\n{self.log_tail()}") from None
        return self

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        self._signal(signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM (graceful: drain, final snapshot) and wait; the exit code."""
        return self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signum)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


@pytest.fixture(name="server_process")
def server_process_fixture(tmp_path: Path) -> Iterator[ServerProcess]:
    """A started `omnistock serve` with a fresh data dir, killed at teardown."""
    with ServerProcess(tmp_path / "data") as server:
        yield server
