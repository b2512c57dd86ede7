"""A throwaway PostgreSQL cluster for the peers bench, pinned to one CPU like the other systems.

The machine's shared PostgreSQL runs on every core. In `peers` it would then use the load
generator's core as well as the server core, and get twice the CPU of omnistock and redis-lua,
which are pinned to one (on the 2 Dec 2026 VM, pinning the shared server's processes to CPU 0 for
one run took its batched reserves from 15,036–19,917/s to 9,797/s). So `peers` starts its own
cluster: `initdb` into a temporary directory, `postgres` started under `taskset` (its backends
are forked from it and keep its CPU), on a free loopback port, with PostgreSQL's defaults
(`fsync` on; `synchronous_commit` is set per session by the backend for `--durability`). The
cluster is stopped (fast shutdown) and deleted on `close()`.

As root, initdb and postgres run as the `postgres` user (`setpriv`, which execs: the process
started is the postmaster itself), which owns the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PrivatePostgres", "pg_bindir"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def pg_bindir() -> Path | None:
    """Where initdb and postgres are: `pg_config --bindir`, else Debian's newest
    /usr/lib/postgresql/N/bin, else the PATH; None when there is no server to start."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    candidates += [Path(p) for p in reversed(debian)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb") or "").parent)
    for d in candidates:
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """`initdb` + `postgres` in a temporary directory on a free loopback port, pinned to `cpu`.
    `admin` is a libpq conninfo for its `postgres` database."""

    def __init__(self, cpu: int | None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, postgres) on this machine")
        self.dir = Path(tempfile.mkdtemp(prefix="omnistock-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = open(self.dir / "postgres.log", "wb")  # noqa: SIM115 - closed in close()
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as `postgres`
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.dir / "postgres.log", "postgres")
            as_user = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups",
                       "--"]  # fmt: skip
        data = self.dir / "data"
        try:
            subprocess.run(
                [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                 "-U", "postgres", "-E", "UTF8", "--no-sync"],
                stdout=self._log, stderr=subprocess.STDOUT, check=True, timeout=START_TIMEOUT_S,
            )  # fmt: skip
            self.port = _free_port()
            pin = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
            self.proc = subprocess.Popen(
                [*pin, *as_user, str(bindir / "postgres"), "-D", str(data),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                 "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=on"],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            self.admin = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.admin, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert self.proc is not None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "postgres.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"private postgres did not start:\n{log}") from None
                time.sleep(0.05)

    def pids(self) -> list[int]:
        """The postmaster's PID and its children's (its backends and workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        children = [int(p) for p in out.stdout.split()]
        return [self.proc.pid, *children]

    def close(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            # The postmaster itself (taskset and setpriv exec): SIGINT is its fast shutdown.
            p.send_signal(signal.SIGINT)
            try:
                p.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    for pid in self.pids():
                        os.kill(pid, signal.SIGKILL)
                p.kill()
                p.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
