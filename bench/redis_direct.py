"""redis-direct: the peers' Lua reserve script called straight from a client, no gRPC front.

The per-core reference any user can reach with Redis alone. A private redis-server (or one given
by `--url`) is pinned to one CPU with `taskset`; client processes on the other CPU send
pre-encoded RESP `EVALSHA` commands over raw sockets, one at a time (`--depth 1`) or 16 deep
(`--depth 16`), and count replies with a minimal RESP parser (no redis-py objects per call).

Reported per mode: reserves/s achieved, and reserves per second of Redis CPU (`INFO cpu` before
and after): the second is "reserves/s per Redis core" and does not depend on whether the Python
client managed to keep Redis busy. If `redis-benchmark` is installed, the same EVALSHA is also
driven by it (a C client) as a cross-check.

Usage: `python -m bench.redis_direct [--url redis://127.0.0.1:PORT/0] [--requests 200000]
[--processes 2] [--json PATH]`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

from bench.loadgen import check_loopback
from bench.peers.redis_lua import RESERVE_LUA

__all__ = ["encode_command", "count_replies", "run", "main"]

REQUESTS_MAX = 5_000_000
PROCESSES_MAX = 16
DEPTH_MAX = 1_024
PREFIX = "rd:"
SKUS = 1_000
STOCK_PER_POSITION = 10**12  # never runs out: every reserve is a full, successful script run
TTL_MS = 600_000
RUN_TIMEOUT_S = 300
START_TIMEOUT_S = 30.0


def encode_command(*args: str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _skip(buf: bytes, i: int) -> int:
    """Index just past the RESP2 value at `i`, or -1 if the buffer ends first."""
    end = buf.find(b"\r\n", i)
    if end < 0:
        return -1
    kind = buf[i]
    if kind in b"+-:":
        return end + 2
    n = int(buf[i + 1 : end])
    if kind == ord("$"):
        if n < 0:
            return end + 2
        stop = end + 2 + n + 2
        return stop if stop <= len(buf) else -1
    if kind == ord("*"):
        j = end + 2
        for _ in range(max(n, 0)):
            j = _skip(buf, j)
            if j < 0:
                return -1
        return j
    raise ValueError(f"bad RESP type byte {kind!r}")


def count_replies(buf: bytes, i: int = 0) -> tuple[int, int, int]:
    """(complete replies, error replies, index after the last complete one)."""
    count = errors = 0
    while i < len(buf):
        j = _skip(buf, i)
        if j < 0:
            break
        if buf[i] == ord("-"):
            errors += 1
        count += 1
        i = j
    return count, errors, i


def _client(host: str, port: int, commands: list[bytes], depth: int, conn: Any) -> None:
    try:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        errors = 0
        buf = b""
        for a in range(0, len(commands), depth):
            batch = commands[a : a + depth]
            sock.sendall(b"".join(batch))
            want = len(batch)
            while want:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                buf += chunk
                n, e, used = count_replies(buf)
                want -= n
                errors += e
                buf = buf[used:]
        elapsed = time.perf_counter() - t0
        sock.close()
        conn.send(
            ("ok", {"elapsed_s": elapsed, "cpu_s": time.process_time() - cpu0, "errors": errors})
        )
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _prepare(r: redis.Redis) -> str:
    for key in r.scan_iter(match=PREFIX + "*", count=1000):
        r.unlink(key)
    pipe = r.pipeline(transaction=False)
    for s in range(SKUS):
        pipe.hset(f"{PREFIX}s:SKU-{s}", "N1", STOCK_PER_POSITION)
    pipe.execute()
    return str(r.script_load(RESERVE_LUA))


def _commands(sha: str, count: int, tag: str) -> list[bytes]:
    return [
        encode_command(
            "EVALSHA", sha, 0, PREFIX, 0, f"{tag}-{k}", TTL_MS, 1, f"SKU-{k % SKUS}", "N1", 1
        )
        for k in range(count)
    ]


def run_mode(
    url: str, requests: int, processes: int, depth: int, tag: str, cpu: int | None
) -> dict[str, Any]:
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    check_loopback(f"{host}:{port}")
    with redis.Redis.from_url(url) as r:
        sha = _prepare(r)
        per = requests // processes
        jobs = [_commands(sha, per, f"{tag}{w}") for w in range(processes)]
        ctx = mp.get_context("spawn")
        cpu0 = _redis_cpu_s(r)
        t0 = time.perf_counter()
        workers = []
        for w in range(processes):
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_client, args=(host, port, jobs[w], depth, child))
            proc.start()
            child.close()
            if cpu is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(proc.pid, {cpu})
            workers.append((proc, parent))
        reports = []
        for proc, parent in workers:
            if not parent.poll(RUN_TIMEOUT_S):
                proc.kill()
                raise RuntimeError("redis-direct client timed out")
            status, payload = parent.recv()
            proc.join()
            if status != "ok":
                raise RuntimeError(payload)
            reports.append(payload)
        wall = time.perf_counter() - t0
        redis_cpu = _redis_cpu_s(r) - cpu0
        held = r.zcard(PREFIX + "holds")
    done = per * processes
    return {
        "depth": depth,
        "processes": processes,
        "reserves": done,
        "errors": sum(x["errors"] for x in reports),
        "held_after": held,
        "wall_s": wall,
        "reserves_per_s": done / wall,
        "redis_cpu_s": redis_cpu,
        "redis_cpu_util": redis_cpu / wall,
        "reserves_per_redis_cpu_s": done / redis_cpu if redis_cpu > 0 else float("nan"),
        "client_cpu_s": [x["cpu_s"] for x in reports],
    }


def run_redis_benchmark(
    url: str, requests: int, depth: int, cpu: int | None, trivial: bool = False
) -> dict[str, Any]:
    """The same EVALSHA from `redis-benchmark` (C): every call a fresh random reservation id.
    `trivial`: `EVALSHA` of `return 1` instead, the floor any Lua design pays per call."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return {"skipped": "redis-benchmark not installed"}
    u = urlparse(url)
    with redis.Redis.from_url(url) as r:
        sha = _prepare(r)
        script_args = [PREFIX, "0", "rb-__rand_int__", str(TTL_MS), "1", "SKU-1", "N1", "1"]
        if trivial:
            sha, script_args = str(r.script_load("return 1")), []
        cpu0 = _redis_cpu_s(r)
        cmd = [
            tool, "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379),
            "-n", str(requests), "-c", "50", "-P", str(depth), "-r", "1000000000", "-q",
            "EVALSHA", sha, "0", *script_args,
        ]  # fmt: skip
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S).stdout
        wall = time.perf_counter() - t0
        redis_cpu = _redis_cpu_s(r) - cpu0
    m = re.findall(r"([\d.]+) requests per second", out)
    rate = float(m[-1]) if m else float("nan")
    return {
        "depth": depth,
        "reserves_per_s": rate,
        "redis_cpu_util": redis_cpu / wall,
        "reserves_per_redis_cpu_s": requests / redis_cpu if redis_cpu > 0 else float("nan"),
        "command": " ".join(cmd),
    }


# Durability as omnistock names it -> redis-server persistence: `sync` fsyncs the append-only
# file before answering each write (`appendfsync always`), `async` once a second (`everysec`),
# `none` keeps no file at all (RDB snapshots are off in every mode).
REDIS_PERSISTENCE = {
    "sync": ("--appendonly", "yes", "--appendfsync", "always"),
    "async": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "none": ("--appendonly", "no"),
}


class _PrivateRedis:
    """A throwaway redis-server on a free loopback port, pinned to `cpu` when taskset exists,
    with the persistence of `durability` (REDIS_PERSISTENCE; its files in a temporary dir)."""

    def __init__(self, cpu: int | None, durability: str = "none") -> None:
        self.dir = tempfile.mkdtemp(prefix="omnistock-redis-direct-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            *REDIS_PERSISTENCE[durability], "--dir", self.dir,
        ]  # fmt: skip
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        log = open(Path(self.dir) / "redis.log", "wb")  # noqa: SIM115 - closed in close()
        self._log = log
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with redis.Redis.from_url(self.url) as r:
                    r.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.02)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(
    url: str | None, requests: int, processes: int, server_cpu: int, client_cpu: int
) -> dict[str, Any]:
    if not 1 <= requests <= REQUESTS_MAX or not 1 <= processes <= PROCESSES_MAX:
        raise ValueError(f"requests in 1..{REQUESTS_MAX}, processes in 1..{PROCESSES_MAX}")
    cpus = os.cpu_count() or 1
    pin_server = server_cpu if cpus > 1 and url is None else None
    pin_client = client_cpu if cpus > 1 else None
    private = _PrivateRedis(pin_server) if url is None else None
    target = url or private.url  # type: ignore[union-attr]
    try:
        out: dict[str, Any] = {"url": "private" if private else target, "server_cpu": pin_server}
        out["python_depth_1"] = run_mode(target, requests, processes, 1, "p1-", pin_client)
        out["python_depth_16"] = run_mode(target, requests, processes, 16, "p16-", pin_client)
        out["redis_benchmark_depth_1"] = run_redis_benchmark(target, requests, 1, pin_client)
        out["redis_benchmark_depth_16"] = run_redis_benchmark(target, requests, 16, pin_client)
        out["trivial_evalsha_depth_1"] = run_redis_benchmark(target, requests, 1, pin_client, True)
        out["trivial_evalsha_depth_16"] = run_redis_benchmark(
            target, requests, 16, pin_client, True
        )
        with redis.Redis.from_url(target) as r:
            out["redis_version"] = r.info("server")["redis_version"]
            for key in r.scan_iter(match=PREFIX + "*", count=1000):
                r.unlink(key)
        return out
    finally:
        if private is not None:
            private.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.redis_direct")
    ap.add_argument("--url", help="an existing loopback Redis (default: a private one)")
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    result = run(args.url, args.requests, args.processes, args.server_cpu, args.client_cpu)
    for key in ("python_depth_1", "python_depth_16", "redis_benchmark_depth_1",
                "redis_benchmark_depth_16", "trivial_evalsha_depth_1",
                "trivial_evalsha_depth_16"):  # fmt: skip
        m = result[key]
        if "skipped" in m:
            print(f"{key:<26} skipped: {m['skipped']}")
            continue
        print(
            f"{key:<26} {m['reserves_per_s']:>12,.0f} reserves/s   "
            f"{m['reserves_per_redis_cpu_s']:>12,.0f} reserves per Redis CPU-second   "
            f"(Redis CPU {m['redis_cpu_util']:.0%})"
        )
    print(
        "command: python -m bench.redis_direct " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
