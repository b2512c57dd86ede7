"""An open-loop gRPC load generator that is not the bottleneck.

Open loop: request k of the run is *due* at `t0 + k / rate`, whatever happened to the requests
before it, and its latency is measured from that intended time, not from when it was actually
sent. A stalled server therefore shows up as latency for every request that was due during the
stall (no coordinated omission), and a client that falls behind its schedule shows up too, as
`send_lag_max_us` and in the latencies, never as a silently lower rate.

Cheap per request: several worker processes (spawned, each with its own event loop and its own
`grpc.aio` channel), each taking every P-th slot of the schedule; requests are pre-encoded bytes
sent through a generic `channel.unary_unary(method)` with no serializer, so no protobuf object is
built or parsed while the load runs. Each worker records latencies in an HdrHistogram (1 µs ..
60 s, 3 significant digits); histograms are merged, and every worker reports its own CPU time
(`resource.getrusage`, all threads) so a reader can see whether the client was saturated.

Bounded: at most `RATE_PER_S_MAX`, `DURATION_S_MAX`, `REQUESTS_MAX`, `PROCESSES_MAX`, and
`IN_FLIGHT_MAX` outstanding calls per worker (beyond that a due request is counted as
`CLIENT_BACKLOG` and not sent, so memory stays bounded when a server stops answering).
Loopback only: a target that is not 127.0.0.0/8, ::1, localhost or a unix socket is refused.

CLI: `python -m bench.loadgen --target 127.0.0.1:50051 --method /pkg.Svc/Method \
--payloads FILE --rate 5000 --duration 10 --processes 1 [--json PATH]`, or `--self-test` to run
against a built-in empty handler on a private server (the cost of the generator and of gRPC).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
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
    "Result",
    "find_h2load",
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

    def summary(self) -> str:
        lat = self.latency_us
        errs = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        cpu = ", ".join(f"{u:.0%}" for u in self.client_cpu_util)
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


async def _worker_main(job: dict[str, Any]) -> dict[str, Any]:
    import grpc
    from hdrh.histogram import HdrHistogram

    worker, processes = job["worker"], job["processes"]
    interval = processes / job["rate_per_s"]  # this worker's slots are P apart
    count = len(range(worker, job["requests"], processes))
    payloads: list[bytes] = job["payloads"]
    metadata = tuple(job["metadata"]) if job["metadata"] else None
    hist = HdrHistogram(1, LATENCY_US_MAX, 3)
    errors: dict[str, int] = {}
    done = {"ok": 0, "answered": 0}
    in_flight = 0
    perf = time.perf_counter
    async with grpc.aio.insecure_channel(
        job["target"], options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        await asyncio.wait_for(channel.channel_ready(), DEADLINE_S)
        names: list[str] = job["method_names"]
        calls = [
            channel.unary_unary(m, request_serializer=None, response_deserializer=None)
            for m in names
        ]
        method_index: list[int] | None = job["method_index"]
        hists = [HdrHistogram(1, LATENCY_US_MAX, 3) for _ in names] if len(names) > 1 else None
        # Warm each call path so the first due request does not pay for it.
        for m, call in enumerate(calls):
            k = method_index.index(m) if method_index else worker % len(payloads)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call(payloads[k], metadata=metadata, timeout=DEADLINE_S)
        t0 = perf() + (job["start_wall"] - time.time()) + worker / job["rate_per_s"]
        all_done = asyncio.get_running_loop().create_future()

        async def one(payload: bytes, m: int, due: float) -> None:
            nonlocal in_flight
            try:
                await calls[m](payload, metadata=metadata, timeout=DEADLINE_S)
                done["ok"] += 1
            except grpc.aio.AioRpcError as exc:
                name = exc.code().name
                errors[name] = errors.get(name, 0) + 1
            latency_us = min(max(1, int((perf() - due) * 1e6)), LATENCY_US_MAX)
            hist.record_value(latency_us)
            if hists is not None:
                hists[m].record_value(latency_us)
            done["answered"] += 1
            in_flight -= 1
            if in_flight == 0 and sent_all and not all_done.done():
                all_done.set_result(None)

        sent_all = False
        delay = t0 - perf()
        if delay > 0.002:
            await asyncio.sleep(delay - 0.002)
        cpu0 = _cpu_s()
        wall0 = perf()
        n_payloads = len(payloads)
        tasks: set[asyncio.Task[None]] = set()
        state = {"k": 0, "sent": 0, "lag_max": 0.0}

        def send_due() -> bool:
            """Send every request due by now; True when the schedule is finished."""
            nonlocal in_flight
            now = perf()
            k = state["k"]
            while k < count:
                due = t0 + k * interval
                if due > now:
                    break
                state["lag_max"] = max(state["lag_max"], now - due)
                if in_flight >= IN_FLIGHT_MAX:
                    errors["CLIENT_BACKLOG"] = errors.get("CLIENT_BACKLOG", 0) + 1
                else:
                    in_flight += 1
                    state["sent"] += 1
                    i = (worker + k * processes) % n_payloads
                    task = asyncio.create_task(
                        one(payloads[i], method_index[i] if method_index else 0, due)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                k += 1
            state["k"] = k
            return k >= count

        await _run_schedule(send_due, t0, interval)
        sent = state["sent"]
        lag_max = state["lag_max"]
        sent_all = True
        send_end = perf()
        if in_flight:
            try:
                await asyncio.wait_for(asyncio.shield(all_done), DRAIN_S_MAX)
            except TimeoutError:
                errors["CLIENT_DRAIN_TIMEOUT"] = in_flight
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        end = perf()
        cpu = _cpu_s() - cpu0
    return {
        "sent": sent,
        "ok": done["ok"],
        "answered": done["answered"],
        "errors": errors,
        "wall0": wall0,
        "send_s": send_end - wall0,
        "elapsed_s": end - wall0,
        "lag_max_us": lag_max * 1e6,
        "cpu_s": cpu,
        "histogram": hist.encode().decode(),
        "histograms": [h.encode().decode() for h in hists] if hists else [],
    }


def _worker_entry(job: dict[str, Any], conn: Any) -> None:
    try:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover - uvloop is a dependency
            runner = asyncio.run
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
) -> Result:
    """Send `rate_per_s × duration_s` requests (at most `requests_max`) on a fixed schedule,
    spread over `processes` workers; payloads are used in order, wrapping around.
    `methods`: one method per payload (a mix in one schedule); then `method` is only a label and
    `Result.latency_us_by_method` has the percentiles of each method.
    `cpus`: pin the workers to these CPUs (`os.sched_setaffinity`), e.g. the core not running the
    server."""
    check_loopback(target)
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

H2LOAD_ENV = "OMNISTOCK_H2LOAD"  # path to an h2load binary when it is not on PATH


def find_h2load() -> str | None:
    return os.environ.get(H2LOAD_ENV) or shutil.which("h2load")


def run_h2load(
    target: str,
    method: str,
    payload: bytes,
    rate_per_s: float,
    duration_s: float,
    connections: int = 1,
    cpu: int | None = None,
    h2load: str | None = None,
) -> Result:
    """The same schedule driven by `h2load --rps` (one payload for every request; h2load sees
    HTTP statuses only, so gRPC errors, which travel in trailers, are invisible to it: use it for
    reads and the empty handler, not for checking outcomes). Latency comes from its per-request
    log, measured from the actual send; its CPU from `RUSAGE_CHILDREN`."""
    import tempfile

    from hdrh.histogram import HdrHistogram

    check_loopback(target)
    tool = h2load or find_h2load()
    if tool is None:
        raise FileNotFoundError(f"h2load not found (Debian: nghttp2-client; or set {H2LOAD_ENV})")
    if not 0 < rate_per_s <= RATE_PER_S_MAX or not 0 < duration_s <= DURATION_S_MAX:
        raise ValueError("rate_per_s or duration_s out of bounds")
    requests = min(int(rate_per_s * duration_s), REQUESTS_MAX)
    with tempfile.TemporaryDirectory(prefix="omnistock-h2load-") as tmp:
        data = Path(tmp) / "request.grpc"
        data.write_bytes(struct.pack(">BI", 0, len(payload)) + payload)
        log = Path(tmp) / "requests.log"
        cmd = [
            tool, "-n", str(requests), "-c", str(connections), "-m", str(IN_FLIGHT_MAX // 20),
            f"--rps={rate_per_s / connections:g}", "-d", str(data), f"--log-file={log}",
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://{target}{method}",
        ]  # fmt: skip
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, timeout=duration_s + DRAIN_S_MAX + 30)
        elapsed = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        hist = HdrHistogram(1, LATENCY_US_MAX, 3)
        errors: dict[str, int] = {}
        ok = 0
        for row in log.read_text().splitlines():
            _, status, latency_us = row.split("\t")[:3]
            hist.record_value(min(max(1, int(latency_us)), LATENCY_US_MAX))
            if status == "200":
                ok += 1
            else:
                errors[f"HTTP_{status}"] = errors.get(f"HTTP_{status}", 0) + 1
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Result(
        target=target,
        method=method,
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        processes=1,
        requests_scheduled=requests,
        sent=ok + sum(errors.values()),
        ok=ok,
        errors=errors,
        elapsed_s=elapsed,
        achieved_rate_per_s=(ok + sum(errors.values())) / max(elapsed, duration_s * 0.5),
        latency_us=_percentiles(hist),
        send_lag_max_us=float("nan"),
        client_cpu_s=[cpu_s],
        client_cpu_util=[cpu_s / max(elapsed, 1e-9)],
        histogram=hist.encode().decode(),
    )


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
    ap.add_argument("--cpus", default="", help="pin workers to these CPUs, e.g. 1 or 0,1")
    ap.add_argument("--metadata", action="append", default=[], help="key=value, repeatable")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--self-test", action="store_true", help="run against a private empty server")
    ap.add_argument("--server-cpu", type=int, default=None, help="pin the self-test server")
    ap.add_argument("--h2load", action="store_true", help="drive with h2load --rps instead")
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
                target, args.method, payloads[0], args.rate, args.duration, args.processes,
                cpu=cpus[0] if cpus else None,
            )  # fmt: skip
        else:
            result = run_open_loop(
                target, args.method, payloads, args.rate, args.duration, args.processes,
                metadata=metadata, cpus=cpus,
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
