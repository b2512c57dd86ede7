"""Drive a peer directly from Python (no gRPC front): reserves/s with C requests in flight.

    python -m bench.peers redis-lua --url redis://127.0.0.1:PORT/0 --reserves 20000
    python -m bench.peers postgres --conninfo "host=127.0.0.1 dbname=DB" --reserves 5000

A first look at each peer's own cost; the fair comparison (same gRPC front, same offered rates)
is `python -m bench peers`. Each reserve is a fresh id, one line, qty 1, on one of 1,000 SKUs
stocked so that no reserve runs out. Loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from urllib.parse import urlparse

from bench.loadgen import check_loopback
from bench.peers import StockBackend
from engine.codes import ReservationState
from engine.commands import Line, ReservationResult, Reserve

SKUS = 1_000
RESERVES_MAX = 1_000_000
CONCURRENCY_MAX = 256


async def measure(backend: StockBackend, reserves: int, concurrency: int) -> dict[str, float]:
    await backend.load((f"SKU-{s}", "N1", 10**9) for s in range(SKUS))
    queue = iter(range(reserves))
    held = 0

    async def worker() -> None:
        nonlocal held
        for k in queue:
            cmd = Reserve(f"pb-{k}", (Line(f"SKU-{k % SKUS}", "N1", 1),), ttl_ms=600_000)
            result = await backend.reserve(cmd)
            if isinstance(result, ReservationResult):
                held += result.reservation.state == ReservationState.HELD

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {
        "reserves": reserves,
        "held": held,
        "reserves_per_s": reserves / wall,
        "client_cpu_us_per_reserve": cpu / reserves * 1e6,
        "client_cpu_util": cpu / wall,
    }


async def _main(args: argparse.Namespace) -> None:
    backend: StockBackend
    if args.peer == "redis-lua":
        from bench.peers.redis_lua import RedisLuaBackend

        u = urlparse(args.url)
        check_loopback(f"{u.hostname}:{u.port or 6379}")
        backend = RedisLuaBackend(args.url, prefix="pb:", max_connections=args.concurrency)
    else:
        from bench.peers.postgres import PostgresBackend

        host = dict(kv.split("=", 1) for kv in args.conninfo.split()).get("host", "127.0.0.1")
        check_loopback(f"{host}:5432")
        backend = await PostgresBackend(args.conninfo, pool_size=args.pool).open()
    try:
        out = await measure(backend, args.reserves, args.concurrency)
    finally:
        await backend.close()
    print(
        f"{args.peer}: {out['reserves_per_s']:,.0f} reserves/s ({out['held']:,} held of "
        f"{out['reserves']:,}), client CPU {out['client_cpu_us_per_reserve']:.0f} µs/reserve "
        f"({out['client_cpu_util']:.0%} of a core), {args.concurrency} in flight"
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.peers")
    ap.add_argument("peer", choices=["redis-lua", "postgres"])
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--conninfo", default="host=127.0.0.1 dbname=test")
    ap.add_argument("--reserves", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--pool", type=int, default=8)
    args = ap.parse_args()
    if not 1 <= args.reserves <= RESERVES_MAX or not 1 <= args.concurrency <= CONCURRENCY_MAX:
        ap.error(f"reserves in 1..{RESERVES_MAX}, concurrency in 1..{CONCURRENCY_MAX}")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
