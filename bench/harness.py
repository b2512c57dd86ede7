"""What the gRPC scenarios (grpc-floor, sweep, batch, peers, durability) share.

- `seed_data_dir(data_dir, spec)`: a generated network loaded into a ledger in-process and saved
  as a snapshot in `data_dir`, so a server started on that directory recovers it (seconds, no
  gRPC setup traffic).
- `ServerRun`: `python -m server serve` (or any command) in a subprocess pinned with `taskset`,
  on a free loopback port, stopped by its PID.
- `encode_op(op)`: the pre-encoded request bytes and method of a workload op.
- `step_rates(...)`: the open-loop step until p99 passes the bound.
- `add_client_argument` / `unary_open_loop(...)`: the latency client of a unary step, `--client
  python` (the `run_open_loop` workers on bare HTTP/2; the default) or `h2load` (C,
  `bench/loadgen.py` `run_h2load`).
- `points_table` / `plot_points`: the Markdown table and the PNG (latency percentiles vs offered
  rate, one line per system).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0

M_AVAIL = "/omnistock.v1.AvailabilityService/GetAvailability"
M_AVAIL_COL = "/omnistock.v1.AvailabilityService/GetAvailabilityColumnar"
M_AVAIL_STREAM = "/omnistock.v1.AvailabilityService/StreamAvailability"
M_NEARBY = "/omnistock.v1.AvailabilityService/FindNearby"
M_RESERVE = "/omnistock.v1.ReservationService/Reserve"
M_RESERVE_BATCH = "/omnistock.v1.ReservationService/ReserveBatch"
M_RESERVE_STREAM = "/omnistock.v1.ReservationService/StreamReserve"
M_COMMIT = "/omnistock.v1.ReservationService/Commit"
M_RELEASE = "/omnistock.v1.ReservationService/Release"


def cpus_available() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return [0]


def taskset(cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None or cpu not in cpus_available():
        return []
    return ["taskset", "-c", str(cpu)]


def client_cpus() -> list[int] | None:
    return [CLIENT_CPU] if CLIENT_CPU in cpus_available() else None


# --- state -------------------------------------------------------------------------------------


def build_ledger(spec: Any) -> tuple[Any, Any]:
    """(ledger, network) with the workload's nodes and stock applied."""
    from bench.workload import engine_setup_commands, generate_network
    from engine.ledger import Ledger

    net = generate_network(spec)
    n = net.positions_count
    ledger = Ledger(
        positions=max(1024, n + 16),
        skus=max(1024, len(net.skus) + 16),
        nodes=max(64, len(net.node_ids) + 4),
        reservations=1 << 16,
    )
    now = int(time.time() * 1000)
    for cmd in engine_setup_commands(net):
        ledger.apply(now, (cmd,))
    return ledger, net


def seed_data_dir(data_dir: str | os.PathLike[str], spec: Any) -> Any:
    """Snapshot the workload's state into `data_dir` (journal seq 0); the network."""
    from engine.persistence.snapshot import FileSnapshotStore

    ledger, net = build_ledger(spec)
    arrays, meta = ledger.export_state()
    store = FileSnapshotStore(Path(data_dir) / "snapshots")
    store.save(arrays, meta, 0, int(time.time() * 1000))
    return net


# --- server process ----------------------------------------------------------------------------


class ServerRun:
    """A server subprocess on a free loopback port (it writes the port to a file)."""

    def __init__(self, argv: Sequence[str], port_file: Path, log_path: Path, cpu: int | None):
        self.argv = list(argv)
        self.port_file = port_file
        self.log_path = log_path
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @classmethod
    def omnistock(
        cls,
        data_dir: Path,
        durability: str = "sync",
        cpu: int | None = SERVER_CPU,
        holds_capacity: int = 0,
    ) -> ServerRun:
        port_file = data_dir.parent / f"{data_dir.name}.port"
        argv = [
            sys.executable, "-m", "server", "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir), "--durability", durability,
            "--port-file", str(port_file), "--log-level", "WARNING",
            "--holds-capacity", str(holds_capacity),
        ]  # fmt: skip
        return cls(argv, port_file, data_dir.parent / f"{data_dir.name}.log", cpu)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) the server process has used so far, from
        /proc (`taskset` execs the server, so the child's pid is the server's)."""
        assert self.process is not None, "not started"
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()  # after the command name, which may have spaces
        utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def start(self, health: bool = True) -> ServerRun:
        self.port_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*taskset(self.cpu), *self.argv],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}): {self.tail()}")
            if self.port_file.exists() and self.port_file.read_text().strip():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server did not bind: {self.tail()}")
            time.sleep(0.02)
        self.port = int(self.port_file.read_text().strip())
        if health:
            self._wait_serving(deadline)
        return self

    def _wait_serving(self, deadline: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited while starting: {self.tail()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"server not SERVING: {self.tail()}")
                time.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()

    def __enter__(self) -> ServerRun:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def workdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"omnistock-{prefix}-")


# --- payloads ----------------------------------------------------------------------------------


def encode_op(op: Any) -> tuple[str, bytes]:
    """(method, request bytes) of one workload op."""
    from bench.workload import OpKind
    from omnistock.v1 import availability_pb2, reservation_pb2, types_pb2

    if op.kind == OpKind.AVAILABILITY:
        queries = [availability_pb2.AvailabilityQuery(sku=op.sku, node_id=n) for n in op.node_ids]
        if not queries:
            queries = [availability_pb2.AvailabilityQuery(sku=op.sku)]
        return M_AVAIL, availability_pb2.GetAvailabilityRequest(queries=queries).SerializeToString()
    if op.kind == OpKind.NEARBY:
        return M_NEARBY, availability_pb2.FindNearbyRequest(
            lat=op.lat,
            lon=op.lon,
            radius_km=op.radius_km,
            limit=10,
            lines=[types_pb2.Line(sku=op.sku, qty=1)],
        ).SerializeToString()
    if op.kind == OpKind.RESERVE:
        return M_RESERVE, reservation_pb2.ReserveRequest(
            reservation_id=op.reservation_id,
            lines=[types_pb2.Line(sku=ln.sku, node_id=ln.node_id, qty=ln.qty) for ln in op.lines],
            ttl_ms=op.ttl_ms,
        ).SerializeToString()
    if op.kind == OpKind.COMMIT:
        return M_COMMIT, reservation_pb2.CommitRequest(
            reservation_id=op.reservation_id
        ).SerializeToString()
    if op.kind == OpKind.RELEASE:
        return M_RELEASE, reservation_pb2.ReleaseRequest(
            reservation_id=op.reservation_id
        ).SerializeToString()
    raise ValueError(f"no gRPC encoding for {op.kind!r}")


def encode_ops(ops: Sequence[Any]) -> tuple[list[str], list[bytes]]:
    methods, payloads = [], []
    for op in ops:
        m, p = encode_op(op)
        methods.append(m)
        payloads.append(p)
    return methods, payloads


def only(net: Any, kind: Any, count: int, seed: int, prefix: str) -> list[Any]:
    """`count` ops of one kind from the workload's generator (its SKU and node draws)."""
    from bench.workload import Mix, generate_ops

    shares = {k: 0.0 for k in ("availability", "nearby", "reserve", "commit", "release")}
    shares[kind.name.lower()] = 1.0
    return generate_ops(net, count, Mix(**shares), seed=seed, prefix=prefix)


# --- the latency client ------------------------------------------------------------------------

CLIENTS = ("h2load", "python")


def add_client_argument(p: Any) -> None:
    p.add_argument(
        "--client", choices=CLIENTS, default=None,
        help="open-loop latency client for unary steps: python (the bench/loadgen.py workers on "
        "bare HTTP/2; the default) or h2load (C; found via OMNISTOCK_H2LOAD or PATH)",
    )  # fmt: skip


def latency_client(args: Any) -> str:
    """The client `args.client` asks for; without one, the Python workers. They hold one
    connection per worker for the whole step, connected and warmed before its schedule starts,
    where h2load starts ⌈rate / 100⌉ processes and connections inside it; with the bare HTTP/2
    transport they were as fast at p50 and steadier at p99.9 (bench/README.md)."""
    from bench.loadgen import H2LOAD_ENV, find_h2load

    client = getattr(args, "client", None) or "python"
    if client == "h2load" and find_h2load() is None:
        raise SystemExit(f"--client h2load: h2load not found (set {H2LOAD_ENV}; README)")
    return str(client)


def unary_open_loop(target: str, method: str, payloads: list[bytes], rate: float, args: Any) -> Any:
    """One open-loop step of a unary method with the chosen client, on CPU 1. h2load replays
    one pre-encoded request per client process (process i sends `payloads[i % len]`), so use
    it only where repeating a request is the workload (reads, the empty handler): a replayed
    Reserve is an idempotent replay, not a reservation."""
    from bench.loadgen import run_h2load, run_open_loop

    if latency_client(args) == "h2load":
        cpu = CLIENT_CPU if CLIENT_CPU in cpus_available() else None
        return run_h2load(target, method, payloads, rate, args.duration, cpu=cpu)
    return run_open_loop(
        target, method, payloads, rate, args.duration, args.processes, cpus=client_cpus()
    )


# --- the step ----------------------------------------------------------------------------------


def result_point(system: str, r: Any) -> dict[str, Any]:
    lat = r.latency_us
    return {
        "system": system,
        "offered_per_s": r.rate_per_s,
        "achieved_per_s": round(r.achieved_rate_per_s, 1),
        "ok": r.ok,
        "ok_per_s": round(r.ok / max(r.elapsed_s, r.duration_s, 1e-9), 1),
        "errors": dict(r.errors),
        "p50_us": lat["p50"],
        "p90_us": lat["p90"],
        "p99_us": lat["p99"],
        "p999_us": lat["p99.9"],
        "max_us": lat["max"],
        "client": getattr(r, "client", "python"),
        "client_cpu_util": [round(u, 3) for u in r.client_cpu_util],
        # h2load only: its own latency (from its actual send) and how far sends trailed the plan
        "p99_from_send_us": getattr(r, "latency_us_from_send", {}).get("p99"),
        "send_lag_p99_us": getattr(r, "send_lag_us", {}).get("p99"),
        "by_method_p99_us": {
            m.rsplit("/", 1)[-1]: v["p99"] for m, v in r.latency_us_by_method.items()
        },
    }


# Statuses that mean the system did not serve the call (business answers such as NOT_FOUND or
# FAILED_PRECONDITION for a commit of an expired hold are answers, not failures).
FAILURE_CODES = frozenset(
    {"CLIENT_BACKLOG", "CLIENT_DRAIN_TIMEOUT", "UNAVAILABLE", "DEADLINE_EXCEEDED",
     "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN", "CANCELLED", "UNIMPLEMENTED"}
)  # fmt: skip


def failures(point: dict[str, Any]) -> int:
    return sum(
        v
        for k, v in point["errors"].items()
        if k in FAILURE_CODES or k.startswith(("HTTP_", "H2LOAD_"))
    )


def holds(point: dict[str, Any], p99_us_max: float) -> bool:
    errs = failures(point)
    return (
        point["p99_us"] < p99_us_max
        and errs <= 0.001 * max(1, point["ok"])
        and point["achieved_per_s"] >= 0.95 * point["offered_per_s"]
    )


def saturated(point: dict[str, Any]) -> bool:
    return (
        failures(point) > 0.001 * max(1, point["ok"])
        or point["achieved_per_s"] < 0.95 * point["offered_per_s"]
    )


def step_rates(
    run_one: Callable[[float], Any],
    system: str,
    rates: Sequence[float],
    p99_us_max: float = 1_000.0,
    keep_going: int = 1,
    log: Callable[[str], None] = print,
    p99_stop_us: float | None = None,
    warm_up: bool = True,
    server_cpu_s: Callable[[], float] | None = None,
) -> list[dict[str, Any]]:
    """Run `run_one(rate)` for increasing rates. Past the first step that misses p99 <
    `p99_us_max`, keep stepping (to draw the curve up to saturation) until a step is saturated
    (< 95 % answered, or failures) or p99 passes `p99_stop_us` (default 50× the bound), then
    `keep_going` more.

    With `warm_up`, one step at the first rate runs first and is not counted: the first
    seconds after a server starts (connections, first-touch memory, cold code paths) are
    slower than any later step, on the empty handler as much as on the engine.

    `server_cpu_s` (`ServerRun.cpu_s`): each point also gets `server_cpu_us_per_call`, the
    server process's CPU (every thread) over the step per call answered."""
    stop_us = 50 * p99_us_max if p99_stop_us is None else p99_stop_us
    points: list[dict[str, Any]] = []
    over = 0
    if warm_up and rates:
        log(f"  {system}: warm-up, not counted: {run_one(rates[0]).summary()}")
    for rate in rates:
        cpu_before = server_cpu_s() if server_cpu_s is not None else 0.0
        r = run_one(rate)
        point = result_point(system, r)
        if server_cpu_s is not None:
            answered = r.ok + sum(r.errors.values())
            point["server_cpu_us_per_call"] = round(
                (server_cpu_s() - cpu_before) / max(1, answered) * 1e6, 1
            )
        points.append(point)
        cpu = point.get("server_cpu_us_per_call")
        log(
            f"  {system}: {r.summary()}"
            + ("" if cpu is None else f"; server CPU {cpu:,.0f} µs/call")
        )
        if saturated(point) or point["p99_us"] > stop_us:
            over += 1
            if over > keep_going:
                break
    return points


def best_rate(points: Sequence[dict[str, Any]], p99_us_max: float = 1_000.0) -> float:
    """The highest offered rate up to which every step held: a miss ends it, even where a
    later, faster step holds again (stepping itself goes on to saturation, to draw the curve)."""
    best = 0.0
    for p in points:
        if not holds(p, p99_us_max):
            break
        best = max(best, p["offered_per_s"])
    return best


def peak_achieved(points: Sequence[dict[str, Any]]) -> float:
    """The most successful answers per second any step got (the open-loop saturation)."""
    return max((p["ok_per_s"] for p in points), default=0.0)


def geometric_rates(start: float, stop: float, factor: float) -> list[float]:
    out = []
    r = start
    while r <= stop * 1.0001 and len(out) < 40:
        out.append(round(r))
        r *= factor
    return out


# --- output ------------------------------------------------------------------------------------


def points_table(points: Sequence[dict[str, Any]]) -> str:
    head = (
        "| system | offered/s | achieved/s | p50 µs | p90 µs | p99 µs | p99.9 µs | errors "
        "| client CPU | server CPU µs/call |\n|---|---:|---:|---:|---:|---:|---:|---|---|---:|"
    )
    rows = [head]
    for p in points:
        errs = ", ".join(f"{k}={v}" for k, v in sorted(p["errors"].items())) or "—"
        cpu = " ".join(f"{u:.0%}" for u in p["client_cpu_util"])
        if p.get("client") == "h2load":
            cpu = f"h2load {cpu}"
        server_cpu = p.get("server_cpu_us_per_call")
        server_cpu = "—" if server_cpu is None else f"{server_cpu:,.0f}"
        rows.append(
            f"| {p['system']} | {p['offered_per_s']:,.0f} | {p['achieved_per_s']:,.0f} "
            f"| {p['p50_us']:,.0f} | {p['p90_us']:,.0f} | {p['p99_us']:,.0f} "
            f"| {p['p999_us']:,.0f} | {errs} | {cpu} | {server_cpu} |"
        )
    return "\n".join(rows)


def plot_points(path: str, title: str, points: Sequence[dict[str, Any]]) -> None:
    """Latency percentiles (p50 dashed, p99 solid, p99.9 dotted) vs offered rate, a colour per
    system; the 1 ms line for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        systems.setdefault(p["system"], []).append(p)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (system, pts) in enumerate(systems.items()):
        pts = sorted(pts, key=lambda p: p["offered_per_s"])
        x = [p["offered_per_s"] for p in pts]
        color = f"C{i % 10}"
        ax.plot(x, [p["p99_us"] for p in pts], "-o", color=color, label=f"{system} p99")
        ax.plot(x, [p["p50_us"] for p in pts], "--", color=color, label=f"{system} p50")
        ax.plot(x, [p["p999_us"] for p in pts], ":", color=color, label=f"{system} p99.9")
    ax.axhline(1_000, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel("latency (µs, from the intended send time)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_to_json(json_path: str, fields: dict[str, Any], markdown: str) -> None:
    """Add `fields` to the JSON already written by `finish`, and write `markdown` beside it
    (same name, `.md`)."""
    import json

    path = Path(json_path)
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown)


def write_outputs(
    payload: dict[str, Any], points: Sequence[dict[str, Any]], args: Any, title: str
) -> str:
    """Add the points and their Markdown table to the JSON already written by `finish`, write
    the table next to it (`.md`), and draw the plot. The table."""

    table = points_table(points)
    print(table)
    if args.json:
        add_to_json(
            args.json,
            {"points": list(points), "table_md": table},
            f"# {title}\n\n`{payload['command']}`\n\n{table}\n",
        )
    if args.plot:
        plot_points(args.plot, f"{title} — {payload['command']}", points)
        print(f"  wrote {args.plot}")
    return table


# --- h2load closed loop: the saturation rate -----------------------------------------------


def h2load_closed(
    target: str,
    method: str,
    payload: bytes,
    requests: int,
    streams: int = 32,
    connections: int = 1,
    cpu: int | None = CLIENT_CPU,
) -> dict[str, Any] | None:
    """`h2load` with `streams` requests in flight per connection (closed loop): the server's
    saturation rate. None when h2load is not available. gRPC errors (HTTP 200 + grpc-status in
    trailers) are invisible to h2load: only use it on calls known to succeed."""
    import re
    import resource
    import struct

    from bench.loadgen import check_loopback, find_h2load

    check_loopback(target)
    tool = find_h2load()
    if tool is None:
        return None
    requests = max(1, min(int(requests), 5_000_000))
    with tempfile.TemporaryDirectory(prefix="omnistock-h2c-") as tmp:
        data = Path(tmp) / "request.grpc"
        data.write_bytes(struct.pack(">BI", 0, len(payload)) + payload)
        cmd = [
            *taskset(cpu), tool, "-n", str(requests), "-c", str(connections),
            "-m", str(streams), "-d", str(data),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://{target}{method}",
        ]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.stdout
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    s = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", text
    )
    if m is None or s is None:
        raise RuntimeError(f"h2load output not understood:\n{text[-2000:]}\n{out.stderr[-1000:]}")
    seconds = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "client": "h2load",
        "requests": requests,
        "streams": streams * connections,
        "seconds": seconds,
        "rate_per_s": float(m.group(3)),
        "succeeded": int(s.group(2)),
        "failed": int(s.group(3)),
        "client_cpu_util": cpu_s / max(seconds, 1e-9),
    }
