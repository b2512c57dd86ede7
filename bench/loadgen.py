"""An open-loop gRPC load generator that is not the bottleneck.

Open loop: request k of the run is *due* at `t0 + k / rate`, whatever happened to the requests
before it, and its latency is measured from that intended time, not from when it was actually
sent. A stalled server therefore shows up as latency for every request that was due during the
stall (no coordinated omission), and a client that falls behind its schedule shows up too, as
`send_lag_max_us` and in the latencies, never as a silently lower rate.

Cheap per request: several worker processes, each taking every P-th slot of the schedule, with
pre-encoded request bytes, so no protobuf object is built or parsed while the load runs. Each
worker records latencies in an HdrHistogram (1 µs .. 60 s, 3 significant digits); histograms are
merged, and every worker reports its own CPU time (`resource.getrusage`) so a reader can see
whether the client was saturated. Two transports (`transport=`):

- `h2` (the default): each call is two frames on one bare HTTP/2 connection per worker
  (`bench/h2wire.py`), driven by a plain `select` loop that sleeps until the next due request or
  answer with µs timeouts and a 1 ns timer slack. On the project's 2-core VM (empty handler,
  1,000/s, 3 s): p50 290–308 µs and ~110 µs of client CPU per call, against h2load's 251 µs;
- `grpcio`: a `grpc.aio` channel and a generic `unary_unary(method)` with no serializer, on a
  uvloop loop woken by a timerfd: p50 697–707 µs and ~210 µs of CPU per call in the same runs
  (gRPC core's poller thread and a coroutine per call, and a timerfd that fired ~0.3 ms late
  on that VM where `select` overslept ~50 µs).

Bounded: at most `RATE_PER_S_MAX`, `DURATION_S_MAX`, `REQUESTS_MAX`, `PROCESSES_MAX`, and
`IN_FLIGHT_MAX` outstanding calls per worker (beyond that a due request is counted as
`CLIENT_BACKLOG` and not sent, so memory stays bounded when a server stops answering).
Loopback only: a target that is not 127.0.0.0/8, ::1, localhost or a unix socket is refused.

A cheaper client for unary requests that may repeat: `run_h2load`, nghttp2's h2load replaying
pre-encoded gRPC frames open loop, one client per h2load process at <= 100/s, latency from the
intended send time recovered from its per-request log (see the h2load section below for why
h2load's own figure is not open loop, and how gRPC errors are counted).

CLI: `python -m bench.loadgen --target 127.0.0.1:50051 --method /pkg.Svc/Method \
--payloads FILE --rate 5000 --duration 10 --processes 1 [--h2load] [--json PATH]`, or
`--self-test` to run against a built-in empty handler on a private server (the cost of the
generator and of gRPC).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "H2loadLog",
    "Result",
    "check_grpc_ok",
    "find_h2load",
    "h2load_plan",
    "parse_h2load_log",
    "parse_h2load_stdout",
    "run_h2load",
    "check_loopback",
    "read_payloads",
    "run_open_loop",
    "sweep_open_loop",
    "write_payloads",
]

RATE_PER_S_MAX = 2_000_000
DURATION_S_MAX = 600.0
REQUESTS_MAX = 50_000_000
PROCESSES_MAX = 64
IN_FLIGHT_MAX = 20_000
DEADLINE_S = 5.0
DRAIN_S_MAX = DEADLINE_S + 1.0
START_DELAY_S = 1.0  # workers connect, then all start on one wall-clock instant
LATENCY_US_MAX = 60_000_000


@dataclass
class Result:
    target: str
    method: str
    rate_per_s: float  # offered
    duration_s: float  # scheduled length of the send phase
    processes: int
    requests_scheduled: int
    sent: int
    ok: int
    errors: dict[str, int]
    elapsed_s: float  # first due send to last answer
    achieved_rate_per_s: float  # answered (ok + errors) per second, first due send to last answer
    latency_us: dict[str, float]  # p50 p90 p99 p99.9 max mean, from the intended send time
    send_lag_max_us: float  # how far the client fell behind its own schedule
    client_cpu_s: list[float]  # user + system, per worker, during the run
    client_cpu_util: list[float]  # CPU seconds / wall seconds, per worker (1.0 = one core busy)
    histogram: str = field(repr=False, default="")  # HdrHistogram, base64 (mergeable)
    latency_us_by_method: dict[str, dict[str, float]] = field(default_factory=dict)
    client: str = "python"  # "python" (run_open_loop) or "h2load" (run_h2load)
    latency_us_from_send: dict[str, float] = field(default_factory=dict)  # h2load's own figure
    send_lag_us: dict[str, float] = field(default_factory=dict)  # h2load: send - intended send

    def summary(self) -> str:
        lat = self.latency_us
        errs = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        cpu = ", ".join(f"{u:.0%}" for u in self.client_cpu_util)
        if self.client == "h2load":
            sent = self.latency_us_from_send
            lag = self.send_lag_us
            return (
                f"{self.method} @ {self.rate_per_s:,.0f}/s offered → "
                f"{self.achieved_rate_per_s:,.0f}/s answered (h2load, {self.processes} clients); "
                f"from the intended send: p50 {lat['p50']:.0f} µs, p90 {lat['p90']:.0f} µs, "
                f"p99 {lat['p99']:.0f} µs, p99.9 {lat['p99.9']:.0f} µs, max {lat['max']:.0f} µs;"
                f" from h2load's send: p50 {sent['p50']:.0f} µs, p99 {sent['p99']:.0f} µs; send "
                f"lag p50 {lag['p50']:.0f} µs, p99 {lag['p99']:.0f} µs, max {lag['max']:.0f} µs;"
                f" errors: {errs}; h2load CPU {cpu} of one core"
            )
        return (
            f"{self.method} @ {self.rate_per_s:,.0f}/s offered → {self.achieved_rate_per_s:,.0f}/s "
            f"answered; p50 {lat['p50']:.0f} µs, p90 {lat['p90']:.0f} µs, p99 {lat['p99']:.0f} µs,"
            f" p99.9 {lat['p99.9']:.0f} µs, max {lat['max']:.0f} µs; errors: {errs}; "
            f"send lag max {self.send_lag_max_us:.0f} µs; client CPU per worker: {cpu}"
        )


def check_loopback(target: str) -> None:
    """Raise ValueError unless `target` is a loopback address or a unix socket."""
    if target.startswith(("unix:", "unix-abstract:")):
        return
    host = target.removeprefix("ipv4:").removeprefix("ipv6:").removeprefix("dns:")
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"load targets must be loopback (127.0.0.0/8, ::1, localhost): {target!r}")


# --- payload files: gRPC length-prefixed messages (flag byte + 4-byte big-endian length) -------


def write_payloads(path: str | os.PathLike[str], payloads: Sequence[bytes]) -> None:
    with open(path, "wb") as f:
        for p in payloads:
            f.write(struct.pack(">BI", 0, len(p)))
            f.write(p)


def read_payloads(path: str | os.PathLike[str]) -> list[bytes]:
    data = Path(path).read_bytes()
    out: list[bytes] = []
    i = 0
    while i < len(data):
        flag, size = struct.unpack_from(">BI", data, i)
        if flag != 0 or i + 5 + size > len(data):
            raise ValueError(f"{path}: bad gRPC message frame at byte {i}")
        out.append(data[i + 5 : i + 5 + size])
        i += 5 + size
    return out


# --- the worker --------------------------------------------------------------------------------


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


TICK_S_MIN = 100e-6  # the sender wakes at most every 100 µs: the bound on its own send lag


class _TimerFd:
    """A periodic Linux timerfd: wakes the event loop with µs precision, where asyncio's sleeps
    round to whole milliseconds (which would add up to 1 ms of send lag to every latency)."""

    def __init__(self, first_s: float, period_s: float) -> None:
        import ctypes

        class _Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class _Itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]

        libc = ctypes.CDLL(None, use_errno=True)
        clock_monotonic = 1
        self.fd = libc.timerfd_create(clock_monotonic, os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

        def ts(x: float) -> _Timespec:
            ns = max(1_000, int(x * 1e9))
            return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)

        spec = _Itimerspec(ts(period_s), ts(first_s))
        if libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None) != 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


async def _run_schedule(send_due: Any, t0: float, interval: float) -> None:
    """Call `send_due()` on every tick until it returns True."""
    loop = asyncio.get_running_loop()
    period = max(interval, TICK_S_MIN)
    try:
        timer = _TimerFd(max(t0 - time.perf_counter(), 1e-6), period)
    except (OSError, AttributeError):  # not Linux: millisecond sleeps, documented lag
        while not send_due():
            await asyncio.sleep(period)
        return
    finished = loop.create_future()

    def on_tick() -> None:
        timer.drain()
        if send_due() and not finished.done():
            finished.set_result(None)

    loop.add_reader(timer.fd, on_tick)
    try:
        await finished
    finally:
        loop.remove_reader(timer.fd)
        timer.close()


TRANSPORTS = ("h2", "grpcio")


class _Recorder:
    """A worker's answers: counts, errors by name, latency histograms from the due time; and
    the report it sends the parent."""

    def __init__(self, methods: int) -> None:
        from hdrh.histogram import HdrHistogram

        self.hist = HdrHistogram(1, LATENCY_US_MAX, 3)
        self.hists = [HdrHistogram(1, LATENCY_US_MAX, 3) for _ in range(methods)]
        self.errors: dict[str, int] = {}
        self.ok = self.answered = 0

    def error(self, name: str, count: int = 1) -> None:
        self.errors[name] = self.errors.get(name, 0) + count

    def answer(self, due: float, m: int, error: str | None) -> None:
        if error is None:
            self.ok += 1
        else:
            self.error(error)
        latency_us = min(max(1, int((time.perf_counter() - due) * 1e6)), LATENCY_US_MAX)
        self.hist.record_value(latency_us)
        if len(self.hists) > 1:
            self.hists[m].record_value(latency_us)
        self.answered += 1

    def report(
        self, sent: int, wall0: float, send_end: float, end: float, lag_max_s: float, cpu_s: float
    ) -> dict[str, Any]:
        return {
            "sent": sent,
            "ok": self.ok,
            "answered": self.answered,
            "errors": self.errors,
            "wall0": wall0,
            "send_s": send_end - wall0,
            "elapsed_s": end - wall0,
            "lag_max_us": lag_max_s * 1e6,
            "cpu_s": cpu_s,
            "histogram": self.hist.encode().decode(),
            "histograms": [h.encode().decode() for h in self.hists] if len(self.hists) > 1 else [],
        }


def _status_names() -> dict[int, str]:
    import grpc

    from bench import h2wire

    names = {code.value[0]: code.name for code in grpc.StatusCode}
    names.update({
        h2wire.STREAM_RESET: "STREAM_RESET", h2wire.GOAWAY: "GOAWAY",
        h2wire.CONNECTION_LOST: "CONNECTION_LOST", h2wire.NO_STATUS: "NO_GRPC_STATUS",
    })  # fmt: skip
    return names


PR_SET_TIMERSLACK = 29


def _tight_timer_slack() -> None:
    """Sleep at most ~1 ns past a timeout (Linux's default slack is 50 µs), best effort."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


class _Socket:
    """A non-blocking socket with an output buffer: `write` never blocks the schedule."""

    def __init__(self, target: str) -> None:
        import socket

        if target.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(target.removeprefix("unix:").removeprefix("//"))
        else:
            host, _, port = target.removeprefix("ipv4:").removeprefix("ipv6:").rpartition(":")
            self.sock = socket.create_connection((host.strip("[]"), int(port)), DEADLINE_S)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.out = bytearray()
        self.eof = False

    def write(self, data: bytes) -> None:
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            data = data[sent:]
        self.out += data

    def pump(self, timeout_s: float, on_data: Any) -> None:
        """Wait up to `timeout_s` for the socket; read what came (to `on_data`), write what is
        buffered."""
        import select

        if self.eof:  # nothing more will come: just wait
            time.sleep(max(0.0, timeout_s))
            return
        wlist = [self.sock] if self.out else []
        readable, writable, _ = select.select([self.sock], wlist, [], max(0.0, timeout_s))
        if writable and self.out:
            with contextlib.suppress(BlockingIOError):
                del self.out[: self.sock.send(self.out)]
        if readable:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            if data:
                on_data(data)
            else:
                self.eof = True

    def close(self) -> None:
        self.sock.close()


class _Share:
    """A worker's share of the schedule: slots worker, worker + P, worker + 2P, … of the run,
    each with its payload (in order, wrapping around) and method."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.worker, self.processes = job["worker"], job["processes"]
        self.interval = self.processes / job["rate_per_s"]  # this worker's slots are P apart
        self.count = len(range(self.worker, job["requests"], self.processes))
        self.payloads: list[bytes] = job["payloads"]
        self.names: list[str] = job["method_names"]
        self.method_index: list[int] | None = job["method_index"]
        # The worker's first due time, on its own perf_counter clock.
        self.t0 = (
            time.perf_counter() + (job["start_wall"] - time.time())
            + self.worker / job["rate_per_s"]
        )  # fmt: skip

    def slot(self, k: int) -> tuple[bytes, int]:
        """The payload and method index of this worker's k-th request."""
        i = (self.worker + k * self.processes) % len(self.payloads)
        return self.payloads[i], self.method_index[i] if self.method_index else 0

    def warm_up(self) -> list[tuple[bytes, int]]:
        """One request of each method, to send before the schedule starts."""
        out = []
        for m in range(len(self.names)):
            k = self.method_index.index(m) if self.method_index else self.worker
            out.append((self.payloads[k % len(self.payloads)], m))
        return out


def _h2_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The worker on a bare HTTP/2 connection (`bench/h2wire.py`), driven by one `select` loop:
    it sleeps until the next due request or an answer, with µs timeouts (asyncio's loops round
    sleeps to milliseconds, and a timerfd woke 0.3 ms late on the project's VMs)."""
    from bench import h2wire

    _tight_timer_slack()
    share = _Share(job)
    names = share.names
    rec = _Recorder(len(names))
    status_names = _status_names()
    perf = time.perf_counter
    warm = {"answered": 0}

    def on_done(token: Any, code: int) -> None:
        if token is None:  # a warm-up call
            warm["answered"] += 1
            return
        due, m = token
        rec.answer(due, m, None if code == 0 else status_names.get(code, f"STATUS_{code}"))

    sock = _Socket(job["target"])
    conn = h2wire.Connection(sock.write, job["target"], names, on_done, job["metadata"], DEADLINE_S)

    def pump(timeout_s: float) -> None:
        sock.pump(timeout_s, conn.feed)
        if sock.eof and conn.closed is None:
            conn.lost()

    try:
        conn.start()
        deadline = perf() + DEADLINE_S
        # Connect and warm each call path so the first due request does not pay for it.
        for n, (payload, m) in enumerate(share.warm_up(), 1):
            conn.call(m, payload, None)
            while warm["answered"] < n and conn.closed is None and perf() < deadline:
                pump(deadline - perf())
        if warm["answered"] < len(names):
            raise ConnectionError(f"{job['target']}: no answer to the warm-up calls")
        t0, interval, count = share.t0, share.interval, share.count
        while (left := t0 - perf()) > 0:
            pump(left)
        cpu0 = _cpu_s()
        wall0 = perf()
        k = sent = 0
        lag_max = 0.0
        while k < count:
            now = perf()
            due = t0 + k * interval
            while due <= now and k < count:
                lag_max = max(lag_max, now - due)
                if conn.in_flight >= IN_FLIGHT_MAX:
                    rec.error("CLIENT_BACKLOG")
                else:
                    sent += 1
                    payload, m = share.slot(k)
                    conn.call(m, payload, (due, m))
                k += 1
                due = t0 + k * interval
            if k < count:
                pump(due - perf())
        send_end = perf()
        drain_end = send_end + DRAIN_S_MAX
        while conn.in_flight and not sock.eof and (left := drain_end - perf()) > 0:
            pump(left)
        if conn.in_flight:
            rec.error("CLIENT_DRAIN_TIMEOUT", conn.in_flight)
        end = perf()
        cpu = _cpu_s() - cpu0
    finally:
        sock.close()
    return rec.report(sent, wall0, send_end, end, lag_max, cpu)


async def _worker_main(job: dict[str, Any]) -> dict[str, Any]:
    """The worker on a `grpc.aio` channel (gRPC's own client), woken by a timerfd."""
    import grpc

    share = _Share(job)
    rec = _Recorder(len(share.names))
    perf = time.perf_counter
    metadata = tuple(job["metadata"]) if job["metadata"] else None
    tasks: set[asyncio.Task[None]] = set()
    state = {"k": 0, "sent": 0, "in_flight": 0, "lag_max": 0.0, "sent_all": False}
    all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    async with grpc.aio.insecure_channel(
        job["target"], options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        await asyncio.wait_for(channel.channel_ready(), DEADLINE_S)
        calls = [
            channel.unary_unary(m, request_serializer=None, response_deserializer=None)
            for m in share.names
        ]
        # Warm each call path so the first due request does not pay for it.
        for payload, m in share.warm_up():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await calls[m](payload, metadata=metadata, timeout=DEADLINE_S)

        async def one(payload: bytes, m: int, due: float) -> None:
            try:
                await calls[m](payload, metadata=metadata, timeout=DEADLINE_S)
                error = None
            except grpc.aio.AioRpcError as exc:
                error = exc.code().name
            rec.answer(due, m, error)
            state["in_flight"] -= 1
            if state["in_flight"] == 0 and state["sent_all"] and not all_done.done():
                all_done.set_result(None)

        t0, interval, count = share.t0, share.interval, share.count
        delay = t0 - perf()
        if delay > 0.002:
            await asyncio.sleep(delay - 0.002)
        cpu0 = _cpu_s()
        wall0 = perf()

        def send_due() -> bool:
            """Send every request due by now; True when the schedule is finished."""
            now = perf()
            k = state["k"]
            while k < count:
                due = t0 + k * interval
                if due > now:
                    break
                state["lag_max"] = max(state["lag_max"], now - due)
                if state["in_flight"] >= IN_FLIGHT_MAX:
                    rec.error("CLIENT_BACKLOG")
                else:
                    state["in_flight"] += 1
                    state["sent"] += 1
                    payload, m = share.slot(k)
                    task = asyncio.create_task(one(payload, m, due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                k += 1
            state["k"] = k
            return k >= count

        await _run_schedule(send_due, t0, interval)
        state["sent_all"] = True
        send_end = perf()
        if state["in_flight"]:
            try:
                await asyncio.wait_for(asyncio.shield(all_done), DRAIN_S_MAX)
            except TimeoutError:
                rec.error("CLIENT_DRAIN_TIMEOUT", state["in_flight"])
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        end = perf()
        cpu = _cpu_s() - cpu0
    return rec.report(state["sent"], wall0, send_end, end, state["lag_max"], cpu)


def _worker_entry(job: dict[str, Any], conn: Any) -> None:
    try:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is a dependency
            runner = asyncio.run
        if job["transport"] == "h2":
            conn.send(("ok", _h2_worker(job)))
        else:
            conn.send(("ok", runner(_worker_main(job))))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_open_loop(
    target: str,
    method: str,
    payloads: list[bytes],
    rate_per_s: float,
    duration_s: float,
    processes: int = 1,
    metadata: Sequence[tuple[str, str]] | None = None,
    requests_max: int = REQUESTS_MAX,
    cpus: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    transport: str = "h2",
) -> Result:
    """Send `rate_per_s × duration_s` requests (at most `requests_max`) on a fixed schedule,
    spread over `processes` workers; payloads are used in order, wrapping around.
    `methods`: one method per payload (a mix in one schedule); then `method` is only a label and
    `Result.latency_us_by_method` has the percentiles of each method.
    `cpus`: pin the workers to these CPUs (`os.sched_setaffinity`), e.g. the core not running the
    server.
    `transport`: "h2" (each call two frames on a bare HTTP/2 connection, `bench/h2wire.py`) or
    "grpcio" (a `grpc.aio` channel)."""
    check_loopback(target)
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}")
    if not payloads:
        raise ValueError("payloads: need at least one pre-encoded request")
    if not 0 < rate_per_s <= RATE_PER_S_MAX:
        raise ValueError(f"rate_per_s must be in (0, {RATE_PER_S_MAX}]")
    if not 0 < duration_s <= DURATION_S_MAX:
        raise ValueError(f"duration_s must be in (0, {DURATION_S_MAX}]")
    if not 1 <= processes <= PROCESSES_MAX:
        raise ValueError(f"processes must be in 1..{PROCESSES_MAX}")
    if methods is not None and len(methods) != len(payloads):
        raise ValueError("methods: need one method per payload")
    names = sorted(set(methods)) if methods is not None else [method]
    name_index = {m: i for i, m in enumerate(names)}
    method_index = [name_index[m] for m in methods] if methods is not None else None
    requests = min(int(rate_per_s * duration_s), requests_max, REQUESTS_MAX)
    if requests < processes:
        raise ValueError("fewer requests than processes; raise the rate or the duration")
    from hdrh.histogram import HdrHistogram

    ctx = mp.get_context("spawn")
    start_wall = time.time() + START_DELAY_S + 0.3 * processes
    workers = []
    for w in range(processes):
        job = {
            "worker": w,
            "processes": processes,
            "target": target,
            "method_names": names,
            "method_index": method_index,
            "payloads": payloads,
            "rate_per_s": rate_per_s,
            "requests": requests,
            "metadata": list(metadata or ()),
            "start_wall": start_wall,
            "transport": transport,
        }
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_entry, args=(job, child), daemon=True)
        proc.start()
        child.close()
        if cpus:
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setaffinity(proc.pid, {cpus[w % len(cpus)]})
        workers.append((proc, parent))
    reports: list[dict[str, Any]] = []
    failures: list[str] = []
    budget_s = START_DELAY_S + 0.3 * processes + duration_s + DRAIN_S_MAX + 30
    deadline = time.monotonic() + budget_s
    for proc, parent in workers:
        remaining = max(0.1, deadline - time.monotonic())
        if parent.poll(remaining):
            status, payload = parent.recv()
            (reports if status == "ok" else failures).append(payload)
        else:
            failures.append(f"worker {proc.pid} did not report within {budget_s:.0f} s")
        parent.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if failures:
        raise RuntimeError("load generator worker failed: " + "; ".join(failures))
    hist = HdrHistogram(1, LATENCY_US_MAX, 3)
    by_method = [HdrHistogram(1, LATENCY_US_MAX, 3) for _ in names] if len(names) > 1 else []
    errors: dict[str, int] = {}
    for r in reports:
        hist.add(HdrHistogram.decode(r["histogram"]))
        for h, encoded in zip(by_method, r["histograms"], strict=True):
            h.add(HdrHistogram.decode(encoded))
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    answered = sum(r["answered"] for r in reports)
    send_s = max(r["send_s"] for r in reports) or 1e-9
    elapsed = max(r["elapsed_s"] for r in reports)
    return Result(
        target=target,
        method=method,
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        processes=processes,
        requests_scheduled=requests,
        sent=sum(r["sent"] for r in reports),
        ok=sum(r["ok"] for r in reports),
        errors=errors,
        elapsed_s=elapsed,
        achieved_rate_per_s=answered / max(elapsed, send_s, 1e-9),
        latency_us=_percentiles(hist),
        send_lag_max_us=max(r["lag_max_us"] for r in reports),
        client_cpu_s=[r["cpu_s"] for r in reports],
        client_cpu_util=[r["cpu_s"] / max(r["elapsed_s"], 1e-9) for r in reports],
        histogram=hist.encode().decode(),
        latency_us_by_method={
            m: _percentiles(h) for m, h in zip(names, by_method, strict=False) if h.total_count
        },
    )


def _percentiles(hist: Any) -> dict[str, float]:
    return {
        "p50": hist.get_value_at_percentile(50),
        "p90": hist.get_value_at_percentile(90),
        "p99": hist.get_value_at_percentile(99),
        "p99.9": hist.get_value_at_percentile(99.9),
        "max": hist.get_max_value(),
        "mean": hist.get_mean_value(),
    }


def sweep_open_loop(
    target: str,
    method: str,
    payloads: list[bytes],
    rates_per_s: Sequence[float],
    duration_s: float,
    processes: int = 1,
    p99_us_max: float = 1_000.0,
    **kwargs: Any,
) -> list[Result]:
    """Step the offered rate; stop after the first step whose p99 exceeds `p99_us_max`, which
    had errors, or which answered less than 95 % of what it offered. The highest rate that
    holds is the last result with `latency_us["p99"] <= p99_us_max` before the stop."""
    results: list[Result] = []
    for rate in rates_per_s:
        r = run_open_loop(target, method, payloads, rate, duration_s, processes, **kwargs)
        results.append(r)
        if r.latency_us["p99"] > p99_us_max or r.errors or r.achieved_rate_per_s < 0.95 * rate:
            break
    return results


# --- h2load (nghttp2-client): a C client, several times cheaper per request -------------------
#
# Open loop with h2load: `--rps R` schedules a client's requests on an absolute clock (request k
# of a connection is due R⁻¹·k after its first; nghttp2's `rps_cb` counts the requests due since
# the start, so a late tick sends the overdue ones at once and the schedule does not drift), and
# h2load logs each request's actual send time and its duration from that send. Two things keep
# that from being the open-loop latency on its own, and the code below handles both:
#
# - The rps timer ticks at most every 10 ms (`rps_watcher.repeat = max(0.01, 1 / rps)`), and
#   each tick sends every request due: above 100/s a client sends bursts. So each h2load
#   process runs ONE client at <= `H2LOAD_CLIENT_RPS_MAX`/s (one request per tick), and a rate
#   is offered by ceil(rate / 100) processes started a fraction of a period apart.
# - A tick can fire late (libev's epoll backend rounds waits up to whole milliseconds; a busy
#   core delays it more), and a request held back because `-m` streams are in flight is sent
#   when one closes: latency "from the send" then hides the wait (coordinated omission). One
#   client per process makes the schedule known: request k (in order of send) was due at
#   t_first + k / rps, so its latency from the intended time is end_k - due_k, and its send lag
#   start_k - due_k. Both are reported; `latency_us` is the one from the intended time.
#   `LIBEV_FLAGS=1` (libev's select backend, µs timer waits) keeps the lag small.

H2LOAD_ENV = "OMNISTOCK_H2LOAD"  # path to an h2load binary when it is not on PATH
H2LOAD_CLIENT_RPS_MAX = 100.0  # one request per rps tick (h2load ticks at most every 10 ms)
H2LOAD_PROCESSES_MAX = 400  # 40,000/s at 100/s each
H2LOAD_STREAMS = 64  # -m: in flight per client before h2load holds requests back (charged)
H2LOAD_LIBEV_FLAGS = "1"  # EVBACKEND_SELECT: timer waits in µs, not rounded up to 1 ms
H2LOAD_HEADERS = ("content-type: application/grpc", "te: trailers")


def find_h2load() -> str | None:
    return os.environ.get(H2LOAD_ENV) or shutil.which("h2load")


@dataclass
class H2loadLog:
    """One h2load client's `--log-file`, set against its `--rps` schedule."""

    ok: int  # HTTP 200 (gRPC answers travel as 200 + grpc-status trailers: see check_grpc_ok)
    errors: dict[str, int]
    first_start_us: int  # wall clock, µs since the epoch
    last_end_us: int
    from_due_us: list[int]  # latency from the intended send time (open loop)
    from_send_us: list[int]  # latency as h2load measures it, from its actual send
    lag_us: list[int]  # actual send - intended send (negative: sent early)

    @property
    def rows(self) -> int:
        return len(self.from_send_us)


def parse_h2load_log(text: str, rps: float) -> H2loadLog:
    """Rows `start_µs<TAB>status<TAB>duration_µs` of ONE client sending at `rps` per second.
    Request k in order of send was due at `first_start + k / rps`; its open-loop latency is
    `max(duration, end - due)` (a request sent early is not credited with negative wait)."""
    if not rps > 0:
        raise ValueError("rps must be positive")
    rows: list[tuple[int, int, int]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 3:
            raise ValueError(f"h2load log line {n}: expected 3 tab-separated columns: {line!r}")
        rows.append((int(cols[0]), int(cols[1]), int(cols[2])))
    rows.sort()
    out = H2loadLog(0, {}, 0, 0, [], [], [])
    if not rows:
        return out
    period_us = 1e6 / rps
    t0 = rows[0][0]
    out.first_start_us = t0
    for k, (start, status, duration) in enumerate(rows):
        due = t0 + round(k * period_us)
        end = start + duration
        out.last_end_us = max(out.last_end_us, end)
        out.from_send_us.append(duration)
        out.from_due_us.append(max(duration, end - due))
        out.lag_us.append(start - due)
        if status == 200:
            out.ok += 1
        else:
            key = "H2LOAD_STREAM_FAILED" if status < 0 else f"HTTP_{status}"
            out.errors[key] = out.errors.get(key, 0) + 1
    return out


def parse_h2load_stdout(text: str) -> dict[str, int]:
    """h2load's summary counts: total, started, done, succeeded, failed, errored, timeout, 2xx,
    and data_bytes (DATA payload received: a gRPC error answer is trailers-only, no DATA)."""
    import re

    out: dict[str, int] = {}
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        for name, value in zip(
            ("total", "started", "done", "succeeded", "failed", "errored", "timeout"),
            m.groups(),
            strict=True,
        ):
            out[name] = int(value)
    s = re.search(r"status codes: (\d+) 2xx", text)
    if s:
        out["2xx"] = int(s.group(1))
    t = re.search(r"traffic: .*\((\d+)\) data", text)
    if t:
        out["data_bytes"] = int(t.group(1))
    return out


def h2load_plan(
    rate_per_s: float, duration_s: float, processes: int | None = None
) -> list[tuple[float, int]]:
    """(rps, requests) per h2load process: `rate × duration` requests over ceil(rate / 100)
    one-client processes (or `processes`), each at rate / processes per second."""
    requests = min(int(rate_per_s * duration_s), REQUESTS_MAX)
    if processes is None:
        processes = math.ceil(rate_per_s / H2LOAD_CLIENT_RPS_MAX)
    processes = max(1, min(processes, H2LOAD_PROCESSES_MAX, max(1, requests)))
    base, extra = divmod(requests, processes)
    rps = rate_per_s / processes
    return [(rps, base + (1 if i < extra else 0)) for i in range(processes)]


_GRPC_CHECKED: dict[tuple[str, str, bytes, tuple[tuple[str, str], ...]], int] = {}


def check_grpc_ok(
    target: str, method: str, payload: bytes, metadata: Sequence[tuple[str, str]] = ()
) -> int:
    """Send `payload` once through a real gRPC client; raise unless the answer is OK. The
    answer's size in bytes (cached per target, method, payload and metadata).
    h2load sees HTTP statuses only, and gRPC errors come as HTTP 200 with a `grpc-status`
    trailer: this is how a replayed request is known to be served, not refused."""
    import grpc

    key = (target, method, payload, tuple(metadata))
    if key in _GRPC_CHECKED:
        return _GRPC_CHECKED[key]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            answer = call(payload, metadata=tuple(metadata) or None, timeout=DEADLINE_S)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "?"
            raise RuntimeError(
                f"{method} at {target}: the request h2load would replay answers {code}"
            ) from exc
    _GRPC_CHECKED[key] = len(answer)
    return len(answer)


def run_h2load(
    target: str,
    method: str,
    payload: bytes | Sequence[bytes],
    rate_per_s: float,
    duration_s: float,
    connections: int | None = None,
    cpu: int | None = None,
    h2load: str | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    validate: bool = True,
) -> Result:
    """Offer `rate_per_s` for `duration_s` (`rate × duration` requests) open loop with h2load:
    `connections` one-client h2load processes (default ceil(rate / 100)), process i replaying
    `payload[i % len]` (pre-encoded gRPC frame in a `-d` file), all pinned to `cpu`. Latency is
    from each request's intended send time (see above); `latency_us_from_send` is h2load's own
    figure and `send_lag_us` how far its sends trailed the schedule. CPU: every h2load
    process's rusage (`os.wait4`). `validate`: send each payload once through a real gRPC
    client first and refuse to run unless it answers OK (h2load cannot see gRPC statuses)."""
    from hdrh.histogram import HdrHistogram

    check_loopback(target)
    tool = h2load or find_h2load()
    if tool is None:
        raise FileNotFoundError(f"h2load not found (Debian: nghttp2-client; or set {H2LOAD_ENV})")
    if not 0 < rate_per_s <= RATE_PER_S_MAX:
        raise ValueError(f"rate_per_s must be in (0, {RATE_PER_S_MAX}]")
    if not 0 < duration_s <= DURATION_S_MAX:
        raise ValueError(f"duration_s must be in (0, {DURATION_S_MAX}]")
    payloads = [payload] if isinstance(payload, bytes | bytearray) else list(payload)
    if not payloads:
        raise ValueError("payload: need at least one pre-encoded request")
    plan = [(rps, n) for rps, n in h2load_plan(rate_per_s, duration_s, connections) if n > 0]
    if not plan:
        raise ValueError("no requests: raise the rate or the duration")
    # Bytes of DATA one OK answer to each payload carries (5-byte gRPC prefix + message).
    body_bytes: list[int | None] = [None] * len(payloads)
    if validate:
        for i, p in enumerate(payloads[: len(plan)]):
            body_bytes[i] = 5 + check_grpc_ok(target, method, p, metadata)
    pin = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
    headers = [*H2LOAD_HEADERS, *(f"{k}: {v}" for k, v in metadata)]
    env = {**os.environ, "LIBEV_FLAGS": H2LOAD_LIBEV_FLAGS}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="omnistock-h2load-") as tmp:
        for i, p in enumerate(payloads[: len(plan)]):
            (Path(tmp) / f"request{i}.grpc").write_bytes(struct.pack(">BI", 0, len(p)) + p)
        procs: list[subprocess.Popen[bytes]] = []
        outs = []
        # Start the clients a fraction of a period apart so their ticks interleave evenly.
        spacing_s = 1.0 / plan[0][0] / len(plan)
        spawn0 = time.perf_counter()
        budget_s = duration_s + DRAIN_S_MAX + 30
        try:
            for i, (rps, n) in enumerate(plan):
                cmd = [
                    *pin, tool, "-n", str(n), "-c", "1", "-m", str(H2LOAD_STREAMS),
                    f"--rps={rps:.6f}", "-d", str(Path(tmp) / f"request{i % len(payloads)}.grpc"),
                    f"--log-file={Path(tmp) / f'log{i}.tsv'}",
                    *(a for h in headers for a in ("-H", h)), f"http://{target}{method}",
                ]  # fmt: skip
                delay = spawn0 + i * spacing_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                out = open(Path(tmp) / f"out{i}.txt", "wb")  # noqa: SIM115 - closed below
                outs.append(out)
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
            cpu_s, statuses = _wait_all(procs, time.monotonic() + budget_s)
        except BaseException:  # interrupted or a spawn failed: leave no h2load behind
            _wait_all(procs, time.monotonic())
            raise
        finally:
            for out in outs:
                out.close()
        wall_s = time.perf_counter() - spawn0
        hist = HdrHistogram(1, LATENCY_US_MAX, 3)
        hist_send = HdrHistogram(1, LATENCY_US_MAX, 3)
        hist_lag = HdrHistogram(1, LATENCY_US_MAX, 3)
        errors: dict[str, int] = {}
        ok = answered = ok_2xx = 0
        lag_max = lag_min = 0
        achieved = 0.0
        first = last = 0
        for i, (rps, n) in enumerate(plan):
            log_path = Path(tmp) / f"log{i}.tsv"
            log = parse_h2load_log(log_path.read_text() if log_path.exists() else "", rps)
            summary = parse_h2load_stdout((Path(tmp) / f"out{i}.txt").read_text(errors="replace"))
            ok_2xx += summary.get("2xx", 0)
            for v in log.from_due_us:
                hist.record_value(min(max(1, v), LATENCY_US_MAX))
            for v in log.from_send_us:
                hist_send.record_value(min(max(1, v), LATENCY_US_MAX))
            for v in log.lag_us:
                hist_lag.record_value(min(max(1, v), LATENCY_US_MAX))
            if log.lag_us:
                lag_max = max(lag_max, max(log.lag_us))
                lag_min = min(lag_min, min(log.lag_us))
            answered += log.rows
            for k, v in log.errors.items():
                errors[k] = errors.get(k, 0) + v
            if log.rows < n:
                errors["H2LOAD_UNANSWERED"] = errors.get("H2LOAD_UNANSWERED", 0) + n - log.rows
            if statuses[i] != 0 and log.rows == 0:
                errors["H2LOAD_EXIT"] = errors.get("H2LOAD_EXIT", 0) + 1
            # gRPC errors (RESOURCE_EXHAUSTED under overload, say) are HTTP 200 with no DATA:
            # the answers missing from the DATA received are gRPC errors. Unvalidated, an OK
            # answer has at least its 5-byte prefix: that finds errors, never invents them.
            body = body_bytes[i % len(payloads)] or 5
            if "data_bytes" in summary:
                no_body = log.ok - round(summary["data_bytes"] / body)
                if no_body > 0:
                    errors["H2LOAD_GRPC_ERROR"] = errors.get("H2LOAD_GRPC_ERROR", 0) + no_body
                    ok_2xx -= no_body
                    log.ok -= no_body
            ok += log.ok
            if log.rows:
                # Each client's own rate over its own span: processes start a little apart, so
                # the sum is the aggregate rate while they overlap, not diluted by the ramp.
                span_s = max((log.last_end_us - log.first_start_us) / 1e6, n / rps)
                achieved += log.rows / span_s
                first = min(first, log.first_start_us) if first else log.first_start_us
                last = max(last, log.last_end_us)
    if ok_2xx != ok:  # the summary and the log disagree: trust neither
        errors["H2LOAD_COUNT_MISMATCH"] = abs(ok_2xx - ok)
        ok = min(ok, ok_2xx)
    requests = sum(n for _, n in plan)
    elapsed = max((last - first) / 1e6, 1e-9) if answered else wall_s
    return Result(
        target=target,
        method=method,
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        processes=len(plan),
        requests_scheduled=requests,
        sent=answered + errors.get("H2LOAD_UNANSWERED", 0),
        ok=ok,
        errors=errors,
        elapsed_s=elapsed,
        achieved_rate_per_s=achieved,
        latency_us=_percentiles(hist),
        send_lag_max_us=float(lag_max),
        client_cpu_s=[cpu_s],
        client_cpu_util=[cpu_s / max(wall_s, 1e-9)],
        histogram=hist.encode().decode(),
        client="h2load",
        latency_us_from_send=_percentiles(hist_send),
        send_lag_us={**_percentiles(hist_lag), "min": float(lag_min)},
    )


def _wait_all(procs: Sequence[subprocess.Popen[bytes]], deadline: float) -> tuple[float, list]:
    """Reap every process with `os.wait4` (its own rusage, unlike RUSAGE_CHILDREN, which also
    counts any other child that exits meanwhile); kill what is still running at `deadline`.
    (CPU seconds of all of them, exit statuses)."""
    cpu_s = 0.0
    statuses: list[int | None] = [None] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            try:
                pid, status, ru = os.wait4(procs[i].pid, os.WNOHANG)
            except ChildProcessError:  # already reaped (a second call after an interruption)
                pending.discard(i)
                continue
            if pid:
                statuses[i] = procs[i].returncode = os.waitstatus_to_exitcode(status)
                cpu_s += ru.ru_utime + ru.ru_stime
                pending.discard(i)
        if pending and time.monotonic() > deadline:
            for i in pending:
                with contextlib.suppress(ProcessLookupError):
                    procs[i].kill()
            deadline = float("inf")
        if pending:
            time.sleep(0.02)
    return cpu_s, statuses


# --- self-test server: an empty handler, the floor of gRPC in Python ---------------------------

EMPTY_METHOD = "/omnistock.bench.Empty/Call"


async def _serve_empty(port_file: str, seconds: float) -> None:
    import grpc

    async def handler(request: bytes, context: Any) -> bytes:
        return b""

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "omnistock.bench.Empty",
                {
                    "Call": grpc.unary_unary_rpc_method_handler(
                        handler, request_deserializer=None, response_serializer=None
                    )
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(port_file).write_text(str(port))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_for_termination(), seconds)
    await server.stop(0.5)


def start_empty_server(seconds: float, cpu: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start the empty-handler server in a subprocess (pinned to `cpu` with taskset if given);
    returns the process and its `127.0.0.1:port` target. It exits by itself after `seconds`."""
    import tempfile

    fd, port_file = tempfile.mkstemp(prefix="omnistock-empty-", suffix=".port")
    os.close(fd)
    os.unlink(port_file)
    cmd = [sys.executable, "-m", "bench.loadgen", "--serve-empty", port_file, "--duration"]
    cmd.append(str(seconds))
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 20
    while not os.path.exists(port_file) or not Path(port_file).read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("the empty-handler server did not start")
        time.sleep(0.02)
    time.sleep(0.05)
    port = Path(port_file).read_text()
    os.unlink(port_file)
    return proc, f"127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="")
    ap.add_argument("--method", default=EMPTY_METHOD)
    ap.add_argument("--payloads", help="file of gRPC length-prefixed messages")
    ap.add_argument("--rate", type=float, default=1_000.0, help="offered requests per second")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of sending")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--transport", choices=TRANSPORTS, default="h2",
                    help="the Python workers' client: bare HTTP/2 frames or grpc.aio")  # fmt: skip
    ap.add_argument("--cpus", default="", help="pin workers to these CPUs, e.g. 1 or 0,1")
    ap.add_argument("--metadata", action="append", default=[], help="key=value, repeatable")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--self-test", action="store_true", help="run against a private empty server")
    ap.add_argument("--server-cpu", type=int, default=None, help="pin the self-test server")
    ap.add_argument("--h2load", action="store_true", help="drive with h2load --rps instead")
    ap.add_argument("--h2load-clients", type=int, default=0,
                    help="h2load processes (one client each); default rate / 100")  # fmt: skip
    ap.add_argument("--serve-empty", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_empty:
        asyncio.run(_serve_empty(args.serve_empty, args.duration + 60))
        return 0
    cpus = [int(c) for c in args.cpus.split(",") if c] or None
    metadata = [tuple(m.split("=", 1)) for m in args.metadata]
    payloads = read_payloads(args.payloads) if args.payloads else [b""]
    server = None
    target = args.target
    if args.self_test:
        server, target = start_empty_server(args.duration + 60, args.server_cpu)
        args.method = EMPTY_METHOD
    try:
        if not target:
            ap.error("--target is required (or --self-test)")
        if args.h2load:
            result = run_h2load(
                target, args.method, payloads, args.rate, args.duration,
                args.h2load_clients or None, cpu=cpus[0] if cpus else None, metadata=metadata,
            )  # fmt: skip
        else:
            result = run_open_loop(
                target, args.method, payloads, args.rate, args.duration, args.processes,
                metadata=metadata, cpus=cpus, transport=args.transport,
            )  # fmt: skip
    finally:
        if server is not None:
            stop(server)
    print(result.summary())
    print("command: python -m bench.loadgen " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
