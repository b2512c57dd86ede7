"""Read replicas end to end: change visibility and read scaling (issue 6).

`python -m bench replicas --json PATH` starts a private `redis-server`, a primary
(`omnistock serve --redis`) and one replica (`--replica-of`), as processes on loopback.

- **Visibility**: one client adjusts one position on the primary (`SupplyService.Adjust`, +1) and,
  as soon as the write is acknowledged, polls `GetAvailability` on the replica until the new
  on-hand shows; the time from the acknowledgement to the first read that sees it, p50/p99.
- **Watcher delivery**: a `WatchAvailability` stream on the primary for that position; the time
  from each write's acknowledgement to the event carrying its on-hand, p50/p99 (0 when the event
  arrived before the acknowledgement).
- **Read throughput**: `--clients` client processes each call `GetAvailability` (`--queries`
  positions per call) in a closed loop for `--seconds`: first all against the primary alone, then
  half against the primary and half against the replica. Reads/s = calls/s summed over clients.
  The clients run on the same 2-core machine as both servers, so they compete for the cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Figure, finish

VISIBILITY_P99_MS = 10.0
READ_SCALING = 1.7
NODES = [f"n{i}" for i in range(10)]
SKUS = [f"s{i}" for i in range(200)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--writes", type=int, default=500, help="visibility samples")
    parser.add_argument("--clients", type=int, default=4, help="read client processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput phase")
    parser.add_argument("--verbose", action="store_true", help="print the server logs' tails")
    parser.add_argument("--queries", type=int, default=10, help="positions per GetAvailability")


def _stubs(target: str) -> Any:
    import grpc

    from omnistock.v1 import availability_pb2_grpc, supply_pb2_grpc

    channel = grpc.insecure_channel(target)
    return (
        channel,
        supply_pb2_grpc.SupplyServiceStub(channel),
        availability_pb2_grpc.AvailabilityServiceStub(channel),
    )


def _load(target: str) -> None:
    from omnistock.v1 import supply_pb2, types_pb2

    channel, supply, _ = _stubs(target)
    with channel:
        supply.UpsertNodes(
            supply_pb2.UpsertNodesRequest(
                request_id="nodes",
                nodes=[
                    types_pb2.Node(node_id=n, lat=48.0, lon=2.0, enabled=True, ship=True, type=2)
                    for n in NODES
                ],
            ),
            timeout=10,
        )
        counts = [
            supply_pb2.StockCount(sku=s, node_id=n, on_hand=100, source_seq=1)
            for s in SKUS
            for n in NODES
        ]
        supply.SetOnHand(supply_pb2.SetOnHandRequest(request_id="soh", counts=counts), timeout=10)


def _query(sku: str, node: str) -> Any:
    from omnistock.v1 import availability_pb2

    return availability_pb2.GetAvailabilityRequest(
        queries=[availability_pb2.AvailabilityQuery(sku=sku, node_id=node)]
    )


def _watch(avail: Any, seen: list[tuple[float, int]]) -> Any:
    """A WatchAvailability stream on s0@n0, read by a thread into `seen` (time, on_hand)."""
    import threading

    from omnistock.v1 import availability_pb2

    call = avail.WatchAvailability(
        availability_pb2.WatchRequest(skus=["s0"], node_ids=["n0"]), timeout=600
    )
    call.initial_metadata()  # the server sends its headers once the watcher is subscribed

    def read() -> None:
        try:
            for event in call:
                seen.append((time.perf_counter(), event.quantities.on_hand))
        except Exception:  # noqa: BLE001 (cancelled at the end of the run)
            return

    threading.Thread(target=read, daemon=True).start()
    return call


def _delivery(acks: list[tuple[float, int]], seen: list[tuple[float, int]]) -> list[float]:
    """For each acknowledged write (time, on_hand after it): ms until a watcher had an event
    with at least that on_hand (0 when the event arrived before the acknowledgement did)."""
    out = []
    j = 0
    for acked, on_hand in acks:
        while j < len(seen) and seen[j][1] < on_hand:
            j += 1
        if j == len(seen):
            raise RuntimeError(f"no event for on_hand {on_hand} reached the watcher")
        out.append(max(0.0, (seen[j][0] - acked) * 1000.0))
    return out


def _visibility(primary: str, replica: str, writes: int) -> tuple[list[float], list[float]]:
    """(ms until the replica shows a write, ms until a watcher on the primary gets its event)."""
    from omnistock.v1 import supply_pb2, types_pb2

    p_channel, supply, p_avail = _stubs(primary)
    r_channel, _, r_avail = _stubs(replica)
    request = _query("s0", "n0")
    samples = []
    acks: list[tuple[float, int]] = []
    events: list[tuple[float, int]] = []
    with p_channel, r_channel:
        watch = _watch(p_avail, events)
        on_hand = p_avail.GetAvailability(request, timeout=5).results[0].quantities.on_hand
        for i in range(writes):
            supply.Adjust(
                supply_pb2.AdjustRequest(
                    request_id=f"vis{i}",
                    adjustments=[
                        supply_pb2.Adjustment(
                            sku="s0",
                            node_id="n0",
                            delta=1,
                            reason=types_pb2.ADJUST_REASON_RECEIPT,
                        )
                    ],
                ),
                timeout=5,
            )
            acked = time.perf_counter()
            on_hand += 1
            acks.append((acked, on_hand))
            deadline = acked + 5.0
            while True:
                seen = r_avail.GetAvailability(request, timeout=5).results[0].quantities.on_hand
                if seen >= on_hand:
                    samples.append((time.perf_counter() - acked) * 1000.0)
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"write {i} not visible on the replica after 5 s (on_hand {seen})"
                    )
        deadline = time.perf_counter() + 5.0
        while (not events or events[-1][1] < on_hand) and time.perf_counter() < deadline:
            time.sleep(0.01)
        watch.cancel()
    return samples, _delivery(acks, list(events))


def _reader(target: str, seconds: float, queries: int, seed: int, out: Any) -> None:
    import random

    from omnistock.v1 import availability_pb2

    rng = random.Random(seed)
    channel, _, avail = _stubs(target)
    requests = [
        availability_pb2.GetAvailabilityRequest(
            queries=[
                availability_pb2.AvailabilityQuery(sku=rng.choice(SKUS), node_id=rng.choice(NODES))
                for _ in range(queries)
            ]
        )
        for _ in range(64)
    ]
    calls = 0
    with channel:
        for r in requests[:8]:
            avail.GetAvailability(r, timeout=5)  # warm the connection
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            avail.GetAvailability(requests[calls % 64], timeout=5)
            calls += 1
        elapsed = time.perf_counter() - start
    out.put(calls / elapsed)


def _throughput(targets: list[str], clients: int, seconds: float, queries: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_reader, args=(targets[i % len(targets)], seconds, queries, i, out))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    rates = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    return float(sum(rates))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    from tests.redis_server import RedisServer
    from tests.server_process import ServerProcess

    with tempfile.TemporaryDirectory(prefix="omnistock-bench-replicas-") as tmp:
        root = Path(tmp)
        (root / "redis").mkdir()
        with RedisServer(root / "redis") as redis_server:
            primary = ServerProcess(root / "primary", args=["--redis", redis_server.url])
            replica = ServerProcess(root / "replica", args=["--replica-of", redis_server.url])
            try:
                primary.start()
                _load(primary.target)
                replica.start()
                vis, delivered = _visibility(primary.target, replica.target, args.writes)
                alone = _throughput([primary.target], args.clients, args.seconds, args.queries)
                both = _throughput(
                    [primary.target, replica.target], args.clients, args.seconds, args.queries
                )
            finally:
                replica.kill()
                primary.kill()
                if args.verbose:
                    print(primary.log_tail(40), replica.log_tail(40), sep="\n")
    spread = (
        f"{args.clients} client processes, {args.queries} positions per call; "
        f"with the replica, clients alternate primary/replica"
    )
    figures = [
        Figure("visibility_ms_p50", _pct(vis, 50), "ms", note=f"{len(vis)} writes, sync"),
        Figure("visibility_ms_p99", _pct(vis, 99), "ms", VISIBILITY_P99_MS, at_least=False),
        Figure("watcher_delivery_ms_p50", _pct(delivered, 50), "ms", note="watcher on the primary"),
        Figure(
            "watcher_delivery_ms_p99", _pct(delivered, 99), "ms", VISIBILITY_P99_MS, at_least=False
        ),
        Figure("reads_per_s_primary_alone", alone, "calls/s", note=spread),
        Figure("reads_per_s_primary_plus_replica", both, "calls/s"),
        Figure("read_scaling", both / alone if alone else 0.0, "x", READ_SCALING),
    ]
    return finish("replicas", figures, args.json, args.plot, argv=argv)
