"""batch: lines/s through gRPC with batched calls and bidirectional streams, one server process.

The real server (`taskset -c 0`, durability `sync`) on a data directory seeded with the bench
workload. A closed-loop client (spawned Python processes on CPU 1, uvloop, pre-encoded request
bytes, generic calls: nothing parsed) keeps a fixed number of calls in flight and counts answered
lines per second for:

- `GetAvailabilityColumnar` with 10, 100 and 1,000 (sku, node) lines per call, and the same
  messages over `StreamAvailability` (one bidi stream per in-flight slot, 16 messages
  outstanding);
- `ReserveBatch` with 10, 100 and 1,000 one-unit reservations per call (fresh ids: every line is
  a real reserve, uniformly random positions of the workload, some of them sold out =
  INSUFFICIENT, which the engine still judges), and the same over `StreamReserve` (16 messages
  outstanding per stream, or fewer so that at most 2,000 lines are: 2 of 1,000 lines).

Every reserve line is journaled and fsynced before its answer (sync durability). Targets per
server process: ≥ 1,000,000 availability lines/s and ≥ 400,000 reserve lines/s.

    python -m bench batch --json batch.json --plot batch.png
    python -m bench batch --quick --json /tmp/b.json      # seconds (tests)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Figure, finish
from bench.harness import (
    M_AVAIL_COL,
    M_AVAIL_STREAM,
    M_RESERVE_BATCH,
    M_RESERVE_STREAM,
    ServerRun,
    add_to_json,
    client_cpus,
    seed_data_dir,
    workdir,
)

AVAIL_LINES_TARGET = 1_000_000.0
RESERVE_LINES_TARGET = 400_000.0
STREAM_WINDOW = 16  # messages outstanding per stream
RESERVE_WINDOW_LINES = 2_000  # reserve streams: at most this many lines outstanding (≥ 1 message)
SECONDS_MAX = 120.0
DEADLINE_S = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny workload, short runs (tests)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement")
    p.add_argument("--in-flight", type=int, default=8, help="calls (or streams) per process")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--sizes", default="10,100,1000", help="lines per call")
    p.add_argument("--skus", type=int, default=10_000)
    p.add_argument("--stores", type=int, default=200)
    p.add_argument("--durability", default="sync", choices=("sync", "async", "none"))
    p.add_argument("--reserve-lines-max", type=int, default=2_000_000,
                   help="pre-encoded reserve lines per run (fresh ids; bounds memory)")  # fmt: skip
    p.add_argument("--holds-capacity", type=int, default=None,
                   help="the server's --holds-capacity: reservation arrays sized at start for "
                        "this many live holds, as for a sale (default: the most the run can "
                        "make, 2 x sizes x --reserve-lines-max; 0 = grow on demand)")  # fmt: skip


# --- payloads ----------------------------------------------------------------------------------


def availability_payloads(net: Any, lines: int, count: int, seed: int) -> list[bytes]:
    from omnistock.v1 import availability_pb2

    rng = np.random.default_rng(seed)
    pos = rng.integers(0, net.positions_count, size=(count, lines))
    skus, nodes = net.skus, net.node_ids
    ps, pn = net.pos_sku, net.pos_node
    out = []
    for row in pos:
        out.append(
            availability_pb2.GetAvailabilityColumnarRequest(
                skus=[skus[i] for i in ps[row].tolist()],
                node_ids=[nodes[i] for i in pn[row].tolist()],
            ).SerializeToString()
        )
    return out


def reserve_payloads(net: Any, lines: int, count: int, seed: int, tag: str) -> list[bytes]:
    from omnistock.v1 import reservation_pb2

    rng = np.random.default_rng(seed)
    pos = rng.integers(0, net.positions_count, size=(count, lines))
    skus, nodes = net.skus, net.node_ids
    ps, pn = net.pos_sku, net.pos_node
    ones = [1] * lines
    out = []
    for c, row in enumerate(pos):
        out.append(
            reservation_pb2.ReserveBatchRequest(
                reservation_ids=[f"{tag}-{c}-{k}" for k in range(lines)],
                line_counts=ones,
                skus=[skus[i] for i in ps[row].tolist()],
                node_ids=[nodes[i] for i in pn[row].tolist()],
                qtys=ones,
                ttl_ms=900_000,
            ).SerializeToString()
        )
    return out


# --- the closed-loop client --------------------------------------------------------------------


async def _worker(job: dict[str, Any]) -> dict[str, Any]:
    import grpc

    payloads: list[bytes] = job["payloads"]
    n = len(payloads)
    state = {"next": 0, "answered": 0, "errors": 0}
    codes: dict[str, int] = {}  # errors by gRPC status name

    def failed(exc: grpc.aio.AioRpcError) -> None:
        state["errors"] += 1
        codes[exc.code().name] = codes.get(exc.code().name, 0) + 1

    deadline_at = time.perf_counter() + job["seconds"]
    reuse = job["reuse"]

    def take() -> bytes | None:
        i = state["next"]
        if time.perf_counter() >= deadline_at or (not reuse and i >= n):
            return None
        state["next"] = i + 1
        return payloads[i % n]

    async with grpc.aio.insecure_channel(job["target"]) as channel:
        await asyncio.wait_for(channel.channel_ready(), DEADLINE_S)
        if job["stream"]:
            call = channel.stream_stream(job["method"], request_serializer=None,
                                         response_deserializer=None)  # fmt: skip
        else:
            call = channel.unary_unary(job["method"], request_serializer=None,
                                       response_deserializer=None)  # fmt: skip

        async def unary_slot() -> None:
            while (p := take()) is not None:
                try:
                    await call(p, timeout=DEADLINE_S)
                    state["answered"] += 1
                except grpc.aio.AioRpcError as exc:
                    failed(exc)

        async def stream_slot() -> None:
            window = asyncio.Semaphore(job["window"])

            async def requests() -> Any:
                while True:
                    await window.acquire()
                    p = take()
                    if p is None:
                        return
                    yield p

            try:
                async for _ in call(requests(), timeout=job["seconds"] + DEADLINE_S):
                    state["answered"] += 1
                    window.release()
            except grpc.aio.AioRpcError as exc:  # ends this stream
                failed(exc)

        slot = stream_slot if job["stream"] else unary_slot
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(job["in_flight"])))
        elapsed = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"answered": state["answered"], "errors": state["errors"], "codes": codes,
            "elapsed": elapsed, "cpu": cpu}  # fmt: skip


def _entry(job: dict[str, Any], conn: Any) -> None:
    try:
        import uvloop

        conn.send(("ok", uvloop.run(_worker(job))))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def closed_loop(
    target: str,
    method: str,
    payloads: list[bytes],
    lines_per_call: int,
    seconds: float,
    in_flight: int,
    processes: int,
    stream: bool,
    reuse: bool,
    window: int = STREAM_WINDOW,
) -> dict[str, Any]:
    """Lines/s answered with `in_flight` calls (or streams) per process, for `seconds`."""
    from bench.loadgen import check_loopback

    check_loopback(target)
    seconds = min(seconds, SECONDS_MAX)
    ctx = mp.get_context("spawn")
    procs = []
    cpus = client_cpus()
    for w in range(processes):
        job = {
            "target": target,
            "method": method,
            "payloads": payloads[w::processes],
            "seconds": seconds,
            "in_flight": in_flight,
            "stream": stream,
            "reuse": reuse,
            "window": window,
        }
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_entry, args=(job, child), daemon=True)
        proc.start()
        child.close()
        if cpus:
            os.sched_setaffinity(proc.pid, set(cpus))
        procs.append((proc, parent))
    reports, failures = [], []
    deadline = time.monotonic() + seconds + 60
    for proc, parent in procs:
        if parent.poll(max(0.1, deadline - time.monotonic())):
            status, payload = parent.recv()
            (reports if status == "ok" else failures).append(payload)
        else:
            failures.append("worker did not report")
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if failures:
        raise RuntimeError("; ".join(failures))
    calls = sum(r["answered"] for r in reports)
    elapsed = max(r["elapsed"] for r in reports)
    return {
        "calls": calls,
        "errors": sum(r["errors"] for r in reports),
        "error_codes": _merged(r["codes"] for r in reports),
        "seconds": elapsed,
        "calls_per_s": calls / elapsed,
        "lines_per_s": calls * lines_per_call / elapsed,
        "client_cpu_util": sum(r["cpu"] for r in reports) / elapsed,
    }


def reserve_window(lines_per_call: int) -> int:
    """Reserve messages a stream keeps outstanding: 16, or fewer for big messages. 16 streams
    of 16 1,000-line reserves queued 256,000 reservations, 4× the server's write-queue bound
    (`queue_commands_max`, counted in reservations), and streams failed RESOURCE_EXHAUSTED."""
    return max(1, min(STREAM_WINDOW, RESERVE_WINDOW_LINES // max(1, lines_per_call)))


def _best(rows: list[dict[str, Any]], kind: str) -> float:
    """The most lines/s of `kind` in a row without errors (a row with errors had the server
    refusing calls, e.g. RESOURCE_EXHAUSTED from the write queue; 0 if every row had some)."""
    return max((r["lines_per_s"] for r in rows if r["kind"] == kind and not r["errors"]),
               default=0.0)  # fmt: skip


def _codes_cell(row: dict[str, Any]) -> str:
    codes = row.get("error_codes") or {}
    if not codes:
        return str(row["errors"])
    return ", ".join(f"{k}={v}" for k, v in sorted(codes.items()))


def _merged(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def holds_bound(sizes: list[int], reserve_lines_max: int) -> int:
    """The most holds a run can leave live: every reserve run (unary and stream per size) sends
    at most `reserve_lines_max` fresh one-line reservations, and none expires within the run.
    The server is sized for all of them at start, so no run is timed while the reservation
    arrays double into fresh memory (a 4,000,000 default was overrun on a fast VM: the 1,000-line
    stream, run last, fell from 554,615 to 193,409 lines/s as the arrays grew)."""
    return 2 * len(sizes) * reserve_lines_max


# --- the scenario ------------------------------------------------------------------------------


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    from bench.workload import WorkloadSpec

    if args.quick:
        args.seconds, args.processes, args.in_flight = 1.0, 1, 2
        args.skus, args.stores, args.reserve_lines_max = 500, 20, 20_000
        if args.holds_capacity is None or args.holds_capacity > 100_000:
            args.holds_capacity = 100_000
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.holds_capacity is None:
        args.holds_capacity = holds_bound(sizes, args.reserve_lines_max)
    rows: list[dict[str, Any]] = []
    figures: list[Figure] = []
    with workdir("batch") as tmp:
        data = Path(tmp) / "data"
        net = seed_data_dir(data, WorkloadSpec(skus_count=args.skus, stores_count=args.stores))
        with ServerRun.omnistock(
            data, args.durability, holds_capacity=args.holds_capacity
        ) as server:
            for size in sizes:
                avail = availability_payloads(net, size, max(64, 4_000 // size), seed=size)
                for stream, method in ((False, M_AVAIL_COL), (True, M_AVAIL_STREAM)):
                    r = closed_loop(
                        server.target,
                        method,
                        avail,
                        size,
                        args.seconds,
                        args.in_flight,
                        args.processes,
                        stream,
                        reuse=True,
                    )
                    rows.append(
                        {
                            "kind": "availability",
                            "lines_per_call": size,
                            "via": "stream" if stream else "unary",
                            **r,
                        }
                    )
                    print(
                        f"  availability x{size} {'stream' if stream else 'unary'}: "
                        f"{r['lines_per_s']:,.0f} lines/s, client CPU "
                        f"{r['client_cpu_util']:.0%}, errors {_codes_cell(r)}"
                    )
                for stream, method in ((False, M_RESERVE_BATCH), (True, M_RESERVE_STREAM)):
                    count = max(args.processes, args.reserve_lines_max // size)
                    tag = f"b{size}{'s' if stream else 'u'}"
                    payloads = reserve_payloads(net, size, count, seed=size + stream, tag=tag)
                    r = closed_loop(
                        server.target,
                        method,
                        payloads,
                        size,
                        args.seconds,
                        args.in_flight,
                        args.processes,
                        stream,
                        reuse=False,
                        window=reserve_window(size),
                    )
                    rows.append(
                        {
                            "kind": "reserve",
                            "lines_per_call": size,
                            "via": "stream" if stream else "unary",
                            **r,
                        }
                    )
                    print(f"  reserve x{size} {'stream' if stream else 'unary'}: "
                          f"{r['lines_per_s']:,.0f} lines/s, client CPU "
                          f"{r['client_cpu_util']:.0%}, errors {_codes_cell(r)}"
                          + ("  (ran out of pre-encoded payloads)"
                             if r["seconds"] < 0.9 * args.seconds else ""))  # fmt: skip
    for row in rows:
        key = f"{row['kind']}_lines_per_s_{row['lines_per_call']}_{row['via']}"
        figures.append(
            Figure(key, row["lines_per_s"], "lines/s", note=f"{row['calls_per_s']:,.0f} calls/s")
        )
    best_avail = _best(rows, "availability")
    best_res = _best(rows, "reserve")
    figures += [
        Figure("availability_lines_per_s", best_avail, "lines/s", target=AVAIL_LINES_TARGET,
               note="best of the batch sizes and call shapes without errors"),
        Figure("reserve_lines_per_s", best_res, "lines/s", target=RESERVE_LINES_TARGET,
               note=f"durability {args.durability}; best of the sizes and shapes without errors"),
    ]  # fmt: skip
    extra = {"rows": rows, "durability": args.durability, "positions": net.positions_count}
    payload = finish("batch", figures, args.json, None, extra=extra, argv=argv)
    table = [
        "| kind | lines/call | via | lines/s | calls/s | client CPU | errors |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['kind']} | {r['lines_per_call']} | {r['via']} | "
            f"{r['lines_per_s']:,.0f} | {r['calls_per_s']:,.0f} | "
            f"{r['client_cpu_util']:.0%} | {_codes_cell(r)} |"
        )
    md = "\n".join(table)
    print(md)
    if args.json:
        add_to_json(args.json, {"table_md": md}, f"# batch\n\n`{payload['command']}`\n\n{md}\n")
    if args.plot:
        _plot(args.plot, payload["command"], rows)
    return payload


def _plot(path: str, title: str, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for i, (kind, via) in enumerate(
        [(k, v) for k in ("availability", "reserve") for v in ("unary", "stream")]
    ):
        pts = sorted(
            (r for r in rows if r["kind"] == kind and r["via"] == via),
            key=lambda r: r["lines_per_call"],
        )
        ax.plot(
            [r["lines_per_call"] for r in pts],
            [r["lines_per_s"] for r in pts],
            "-o",
            color=f"C{i}",
            label=f"{kind} {via}",
        )
    ax.axhline(AVAIL_LINES_TARGET, color="C0", linewidth=0.8, linestyle=":")
    ax.axhline(RESERVE_LINES_TARGET, color="C2", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lines per call (or per stream message)")
    ax.set_ylabel("lines/s answered (closed loop)")
    ax.set_title(f"batch — {title}", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
