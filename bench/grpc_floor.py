"""grpc-floor: the cost of gRPC itself in Python on this machine.

An empty-handler server — grpc.aio on uvloop, the real server's options (message limits,
`so_reuseport` 0, `maximum_concurrent_rpcs`), a generic handler that takes the request bytes and
answers an empty message, no interceptors — pinned to one core (`taskset -c 0`). Driven by
(a) the open-loop Python workers on the other core, stepping the rate until p99 passes 1 ms, and
(b) `h2load` when available (`OMNISTOCK_H2LOAD` or PATH): a closed loop with 32 streams in flight,
whose rate is the saturation rate of the server (h2load costs ~40-60 µs of client CPU per
call, the Python workers ~120 µs, so h2load is the one to saturate a Python server from one
core).

The request is a real one-query GetAvailability payload, so the bytes on the wire match the
`sweep` scenario's; `sweep` compares its GetAvailability saturation to this rate.

    python -m bench grpc-floor --json floor.json --plot floor.png
    python -m bench grpc-floor --quick --json /tmp/f.json       # seconds (tests)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from bench.common import Figure, finish
from bench.harness import (
    CLIENT_CPU,
    SERVER_CPU,
    ServerRun,
    add_client_argument,
    best_rate,
    geometric_rates,
    h2load_closed,
    peak_achieved,
    step_rates,
    unary_open_loop,
    workdir,
    write_outputs,
)
from server import GRPC_EXPERIMENTS_DEFAULT  # noqa: F401  (the server's gRPC settings)

EMPTY_METHOD = "/omnistock.bench.Empty/Call"
# A one-query GetAvailability request, as `sweep` sends (SKU-000042 at ST-NYC-0001).
PAYLOAD = b"\n\x19\n\nSKU-000042\x12\x0bST-NYC-0001"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny rates, about ten seconds (tests)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per step")
    p.add_argument("--rate-start", type=float, default=1_000.0)
    p.add_argument("--rate-max", type=float, default=20_000.0)
    p.add_argument("--processes", type=int, default=2, help="Python load processes")
    add_client_argument(p)
    p.add_argument("--h2load-requests", type=int, default=200_000)
    p.add_argument("--no-h2load", action="store_true")


def start_floor_server(directory: Path, cpu: int | None = SERVER_CPU) -> ServerRun:
    port_file = directory / "floor.port"
    argv = [sys.executable, "-m", "bench.grpc_floor", "--serve", str(port_file)]
    return ServerRun(argv, port_file, directory / "floor.log", cpu).start(health=False)


def measure(
    server: ServerRun,
    args: argparse.Namespace,
    label: str,
    method: str,
    payload: bytes,
    rates: list[float],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Open-loop steps with the `--client` (the Python workers unless `--client h2load`), then
    the h2load closed-loop saturation."""

    target = server.target

    def one(rate: float) -> Any:
        return unary_open_loop(target, method, [payload], rate, args)

    points = step_rates(one, label, rates, warm_up=not args.quick, server_cpu_s=server.cpu_s)
    closed = None
    if not args.no_h2load:
        closed = h2load_closed(target, method, payload, args.h2load_requests, cpu=CLIENT_CPU)
        if closed is not None:
            print(
                f"  {label}: h2load closed loop {closed['rate_per_s']:,.0f}/s "
                f"({closed['failed']} failed, client CPU {closed['client_cpu_util']:.0%})"
            )
    return points, closed


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    if args.quick:
        args.duration, args.rate_start, args.rate_max = 1.0, 200.0, 400.0
        args.h2load_requests = 2_000
        args.processes = 1
    rates = geometric_rates(args.rate_start, args.rate_max, 1.5)
    with workdir("floor") as tmp, start_floor_server(Path(tmp)) as server:
        points, closed = measure(server, args, "grpc-floor", EMPTY_METHOD, PAYLOAD, rates)
    sat_py = peak_achieved(points)
    figures = [
        Figure("floor_p99_under_1ms_per_s", best_rate(points), "req/s",
               note="highest offered rate with p99 < 1 ms, open loop (--client)"),
        Figure("floor_saturation_python_per_s", sat_py, "req/s",
               note="most answers/s in any step (client-bound if client CPU ~100 %)"),
    ]  # fmt: skip
    if closed is not None:
        figures.append(
            Figure("floor_saturation_h2load_per_s", closed["rate_per_s"], "req/s",
                   note=f"h2load closed loop, {closed['streams']} streams")
        )  # fmt: skip
    figures.append(
        Figure("floor_saturation_per_s", max(sat_py, closed["rate_per_s"] if closed else 0.0),
               "req/s", note="the best of the two clients: the empty-handler ceiling")
    )  # fmt: skip
    extra = {"h2load": closed, "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU}
    payload = finish("grpc-floor", figures, args.json, None, extra=extra, argv=argv)
    write_outputs(payload, points, args, "grpc-floor: empty handler")
    return payload


# --- the empty server (python -m bench.grpc_floor --serve PORT_FILE) ---------------------------


async def serve_empty(port_file: str) -> None:
    import grpc

    from server.config import CONCURRENT_RPCS_MAX, MESSAGE_BYTES_MAX

    async def handler(request: bytes, context: Any) -> bytes:
        return b""

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=CONCURRENT_RPCS_MAX,
    )
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
    tmp = Path(port_file + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 3_600)  # bounded: an hour at most
    await server.stop(0.5)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        import uvloop

        uvloop.run(serve_empty(sys.argv[2]))
    else:
        print("usage: python -m bench grpc-floor …", file=sys.stderr)
        sys.exit(2)
