"""peers: the same mix at the same offered rates against omnistock, redis-lua and postgres, all
behind the same gRPC front (same servicers, proto, options), in one run; plus redis-direct.

Every system serves on CPU 0 (`taskset -c 0`: the omnistock server; the peer front and its
private redis-server or private PostgreSQL cluster, `bench/peers/private_pg.py`), the open-loop
Python workers run on CPU 1. `--postgres shared` uses the machine's PostgreSQL instead
(`OMNISTOCK_BENCH_PG`, default 127.0.0.1:5432, on a fresh database created and dropped by the
run): it cannot be pinned, so it also runs on the load generator's core (the peers' figures
until 2 Dec 2026 were taken that way). All systems get the same workload (`--skus` × ~66
nodes) and the same request bytes:

- `mix`: 80 % GetAvailability, 15 % Reserve, 3.5 % Commit, 1.5 % Release (the peak-sale mix
  without FindNearby, which the peers cannot answer), stepped ×1.5 from `--rate-start` until the
  system saturates (< 95 % of the offered rate answered, or p99 over 1 s);
- `reserve`: unary Reserve only, stepped the same way; its most successful answers/s in any step
  is the system's reserves/s at saturation;
- `reserve closed loop`: unary Reserve again, closed loop with `--batch-in-flight` calls in
  flight per client process for `--batch-seconds`, fresh ids: saturation measured without the
  open-loop steps' ×1.5 grid (a system peaking between two steps is read at the lower one);
  a system's reserves/s at saturation is the higher of the two measurements;
- `batched`: `ReserveBatch` of `--batch-size` (100) one-line reservations per call, closed loop
  with `--batch-in-flight` (8) calls in flight per client process, for `--batch-seconds`: the
  reserves/s each system answers when the per-call cost of the Python front is spread over a
  batch (the peers take a batch in one round trip: redis-lua one batch script, postgres one
  transaction). Fresh ids, uniformly random positions (some sold out: INSUFFICIENT answers count,
  as the system still judged them), the SAME pre-encoded messages for every system.

omnistock starts with `--holds-capacity` (2,000,000 by default) as `batch` does: its reservation
arrays and id table are sized at start for the holds the run makes, as an operator sizes them for
a planned sale, instead of doubling into fresh memory while the run measures (on the project's
VMs that was ~11 % of the server's time in the batched phase). The peers need no such setting:
PostgreSQL's buffers are sized by its own configuration, Redis grows its hash incrementally.

Durability is equal (`--durability`, default `sync`): omnistock `--durability sync|async|none`;
the private redis-server `appendonly yes` + `appendfsync always` | `everysec` | no persistence;
PostgreSQL `synchronous_commit` on for `sync`, off for `async` and `none` (per session; the
cluster's fsync stays on, so PostgreSQL's `none` is its `async`).

The front's own ceiling: `grpc-floor`'s empty-handler server on the same core, driven by h2load
in closed loop (when h2load is there). No system behind this front can answer more unary calls
than that, so `front_ceiling_vs_<peer>_reserves` (the ceiling over the peer's unary reserves/s)
is the highest `omnistock_vs_<peer>_reserves` any engine could reach on this machine.

redis-direct (`bench/redis_direct.py`): the Lua reserve script sent straight to a private Redis
on CPU 0 (unpipelined and 16 deep), no front at all.

Targets: omnistock reserves/s at saturation ≥ 1.5× redis-lua and ≥ 10× postgres (reported for unary
and batched reserves); p99 no higher than both at equal offered load: the median, over every mix
rate all systems answered, of omnistock's p99 over the best peer's at that rate (the highest such
rate alone is reported too). redis-direct keeps Redis without persistence (the per-core reference
of the issue).

    python -m bench peers --json peers.json --plot peers.png
    python -m bench peers --quick --json /tmp/p.json      # seconds (tests)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, finish
from bench.harness import (
    SERVER_CPU,
    ServerRun,
    add_to_json,
    client_cpus,
    encode_ops,
    geometric_rates,
    only,
    peak_achieved,
    seed_data_dir,
    step_rates,
    workdir,
    write_outputs,
)

# Step each system up to saturation (< 95 % answered), not just to a latency bound.
P99_STOP_US = 1_000_000.0
SETTLE_S_MAX = 60.0
SETTLE_ANSWER_S = 0.05
PG_ADMIN = os.environ.get("OMNISTOCK_BENCH_PG", "host=127.0.0.1 port=5432 dbname=postgres")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny workload and rates (tests)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per step")
    p.add_argument("--rate-start", type=float, default=250.0)
    p.add_argument("--rate-max", type=float, default=20_000.0)
    p.add_argument("--factor", type=float, default=1.5)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--skus", type=int, default=2_000)
    p.add_argument("--stores", type=int, default=50)
    p.add_argument("--systems", default="omnistock,redis-lua,postgres")
    p.add_argument("--direct-requests", type=int, default=100_000)
    p.add_argument("--no-direct", action="store_true")
    p.add_argument("--durability", choices=("sync", "async", "none"), default="sync",
                   help="the same for every system (see the module doc)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=100, help="reservations per ReserveBatch")
    p.add_argument("--batch-in-flight", type=int, default=8, help="calls in flight per process")
    p.add_argument("--batch-seconds", type=float, default=4.0)
    p.add_argument("--batch-reserves-max", type=int, default=1_000_000,
                   help="pre-encoded reservations (fresh ids; bounds memory)")  # fmt: skip
    p.add_argument("--no-batched", action="store_true")
    p.add_argument("--closed-reserves", type=int, default=60_000,
                   help="pre-encoded unary Reserves for the closed loop (fresh ids)")  # fmt: skip
    p.add_argument("--no-closed", action="store_true",
                   help="skip the closed-loop unary Reserve and the front's ceiling")  # fmt: skip
    p.add_argument("--h2load-requests", type=int, default=100_000,
                   help="empty-handler calls for the front's ceiling (h2load)")  # fmt: skip
    p.add_argument("--postgres", choices=("private", "shared"), default="private",
                   help="private: a throwaway cluster pinned to the server core (initdb; the "
                        "default); shared: the machine's server (OMNISTOCK_BENCH_PG), on every "
                        "core")  # fmt: skip
    p.add_argument("--holds-capacity", type=int, default=2_000_000,
                   help="omnistock's --holds-capacity: reservation arrays and id table sized at "
                        "start for this many holds, as for a planned sale (the run makes at most "
                        "--batch-reserves-max batched and ~100,000 unary ones); 0 = grow on "
                        "demand")  # fmt: skip


def _mix() -> Any:
    from bench.workload import Mix

    return Mix(availability=0.80, nearby=0.0, reserve=0.15, commit=0.035, release=0.015)


def _stepper(target: str, net: Any, series: str, args: argparse.Namespace, system: str):
    from bench.loadgen import run_open_loop
    from bench.workload import OpKind, generate_ops

    step = {"n": 0}

    def one(rate: float) -> Any:
        step["n"] += 1
        count = max(args.processes, int(rate * args.duration))
        prefix = f"{system[:2]}{series[0]}{step['n']}-"
        if series == "reserve":
            ops = only(net, OpKind.RESERVE, count, 500 + step["n"], prefix)
        else:
            ops = generate_ops(net, count, _mix(), seed=500 + step["n"], prefix=prefix)
        methods, payloads = encode_ops(ops)
        return run_open_loop(target, f"{system} {series}", payloads, rate, args.duration,
                             args.processes, cpus=client_cpus(), methods=methods)  # fmt: skip

    return one


class _Front:
    """A peer front process (and what it needs), as a context manager yielding the target."""

    def __init__(self, system: str, net: Any, tmp: Path, durability: str, postgres: str) -> None:
        self.system, self.net, self.tmp, self.durability = system, net, tmp, durability
        self.postgres = postgres
        self.redis: Any = None
        self.pg: Any = None  # PrivatePostgres
        self.pg_admin = PG_ADMIN
        self.db = ""
        self.server: ServerRun | None = None

    def __enter__(self) -> str:
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # what did start (a private redis-server or cluster) is stopped
            raise

    def _start(self) -> str:
        from bench.workload import peer_positions

        argv = [sys.executable, "-m", "bench.peers.front", "--backend", self.system]
        if self.system == "redis-lua":
            from bench.peers.redis_lua import RedisLuaBackend
            from bench.redis_direct import _PrivateRedis

            self.redis = _PrivateRedis(SERVER_CPU, self.durability)
            backend: Any = RedisLuaBackend(self.redis.url)
            argv += ["--url", self.redis.url]
        else:
            import psycopg

            from bench.peers.postgres import PostgresBackend

            if self.postgres == "private":
                from bench.peers.private_pg import PrivatePostgres

                self.pg = PrivatePostgres(SERVER_CPU)
                self.pg_admin = self.pg.admin
            self.db = f"omnistock_bench_{os.getpid()}_{int(time.time())}"
            with psycopg.connect(self.pg_admin, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{self.db}"')
            conninfo = f"{self.pg_admin.replace('dbname=postgres', '')} dbname={self.db}"
            backend = PostgresBackend(conninfo, pool_size=8)
            argv += ["--conninfo", conninfo, "--durability", self.durability]

        async def load() -> int:
            if hasattr(backend, "open"):
                await backend.open()
            try:
                return await backend.load(peer_positions(self.net))
            finally:
                await backend.close()

        rows = asyncio.run(load())
        print(f"  {self.system}: loaded {rows:,} positions")
        port_file = self.tmp / f"{self.system}.port"
        argv += ["--port-file", str(port_file)]
        self.server = ServerRun(argv, port_file, self.tmp / f"{self.system}.log", SERVER_CPU)
        self.server.start()
        return self.server.target

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()
        if self.redis is not None:
            self.redis.close()
        if self.pg is not None:
            self.pg.close()  # the whole cluster goes
        elif self.db:
            import psycopg

            with psycopg.connect(self.pg_admin, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def _settle(target: str) -> float:
    """Wait (≤ SETTLE_S_MAX) until the server answers a health check within SETTLE_ANSWER_S: the
    unary steps end past saturation, with calls still queued in the server. Seconds waited."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    t0 = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - t0 < SETTLE_S_MAX:
            t = time.monotonic()
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=SETTLE_S_MAX)
                if time.monotonic() - t < SETTLE_ANSWER_S:
                    break
            except grpc.RpcError:
                time.sleep(0.5)
    return time.monotonic() - t0


def _closed_phase(
    target: str,
    method: str,
    payloads: list[bytes],
    lines: int,
    args: argparse.Namespace,
    system: str,
    what: str,
) -> Any:
    """A closed-loop phase of `system` against a drained server: `--batch-in-flight` calls per
    process for `--batch-seconds`, fresh pre-encoded requests (`ran_out` if they ended early)."""
    from bench.batch import closed_loop

    waited = _settle(target)
    if waited > 1.0:
        print(f"  {system}: waited {waited:.1f} s for the server to drain")
    print(f"{system} {what}, {args.batch_in_flight * args.processes} in flight")
    r = closed_loop(target, method, payloads, lines, args.batch_seconds, args.batch_in_flight,
                    args.processes, stream=False, reuse=False)  # fmt: skip
    r["ran_out"] = r["seconds"] < 0.9 * args.batch_seconds
    print(f"  {r['lines_per_s']:,.0f} reserves/s ({r['calls_per_s']:,.0f} calls/s), client CPU "
          f"{r['client_cpu_util']:.0%}, errors {r['errors']}"
          + ("  (ran out of pre-encoded messages)" if r["ran_out"] else ""))  # fmt: skip
    return r


def _batched(target: str, payloads: list[bytes], args: argparse.Namespace, system: str) -> Any:
    from bench.harness import M_RESERVE_BATCH

    return _closed_phase(target, M_RESERVE_BATCH, payloads, args.batch_size, args, system,
                         f"batched: ReserveBatch x{args.batch_size}")  # fmt: skip


def _unary_closed(target: str, payloads: list[bytes], args: argparse.Namespace, system: str) -> Any:
    """Unary Reserve in closed loop: the system's saturation without the open-loop rate grid."""
    from bench.harness import M_RESERVE

    return _closed_phase(target, M_RESERVE, payloads, 1, args, system, "reserve, closed loop")


def saturation(
    stepped: dict[str, float], closed: dict[str, dict[str, Any]]
) -> tuple[dict[str, float], set[str]]:
    """Each system's unary reserves/s at saturation: the higher of its open-loop peak and its
    closed-loop rate, where a closed loop that ran out of requests or had errors is reported
    but not counted. Returns the rates and the systems whose closed loop counted."""
    counted = {s for s, r in closed.items() if not r["ran_out"] and not r["errors"]}
    rates = {
        s: max(peak, closed[s]["calls_per_s"] if s in counted else 0.0)
        for s, peak in stepped.items()
    }
    return rates, counted


def equal_loads(
    points: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str], rates: list[float]
) -> list[tuple[float, dict[str, float]]]:
    """The mix's p99 per system at every offered rate that every system answered (≥ 95 % of
    it), lowest rate first: `[(rate, {system: p99_us})]`."""
    out = []
    for rate in rates:
        p99 = {}
        for s in systems:
            for p in points[s]["mix"]:
                if p["offered_per_s"] == rate and p["achieved_per_s"] >= 0.95 * rate:
                    p99[s] = p["p99_us"]
                    break
        if len(p99) == len(systems):
            out.append((rate, p99))
    return out


def _equal_load_figures(
    points: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str], rates: list[float]
) -> list[Figure]:
    """p99 at equal offered load. The target is on the median, over every rate all systems
    answered, of omnistock's p99 over the best peer's at that rate: one step's p99 is set by a
    handful of its slowest calls, which one stall of these VMs decides (bench/README.md, "Why
    p99 < 1 ms does not hold on these VMs"). The highest such rate is reported alone too."""
    common = equal_loads(points, systems, rates)
    if not common:
        return []
    top, p99 = common[-1]
    figures = [
        Figure(
            f"{s.replace('-', '_')}_mix_p99_us_at_common_rate",
            p99[s],
            "µs",
            note=f"mix at {top:,.0f}/s offered, the highest rate every system answered",
        )
        for s in systems
    ]
    if "omnistock" not in systems or len(systems) < 2:
        return figures
    ratios = [
        at["omnistock"] / max(min(v for s, v in at.items() if s != "omnistock"), 1e-9)
        for _, at in common
    ]
    figures.append(
        Figure(
            "omnistock_p99_vs_best_peer_at_common_rate",
            ratios[-1],
            "ratio",
            note=f"at {top:,.0f}/s alone; < 1: omnistock's p99 is lower",
        )
    )
    lower = sum(r < 1.0 for r in ratios)
    listed = ", ".join(
        f"{rate:,.0f}/s {r:.2f}" for (rate, _), r in zip(common, ratios, strict=True)
    )
    figures.append(
        Figure(
            "omnistock_p99_vs_best_peer_median",
            statistics.median(ratios),
            "ratio",
            target=1.0,
            at_least=False,
            note=f"median over the {len(ratios)} rates every system answered ({listed}); "
            f"omnistock lowest at {lower} of {len(ratios)}",
        )
    )
    return figures


def _front_ceiling(tmp: Path, args: argparse.Namespace) -> Any:
    """The empty handler's saturation on the server core (h2load closed loop, 32 streams on one
    connection): the most unary calls/s any system behind this front can answer. None without
    h2load, or when the measurement failed (printed: the rest of the run still counts)."""
    from bench.grpc_floor import EMPTY_METHOD, PAYLOAD, start_floor_server
    from bench.harness import CLIENT_CPU, h2load_closed
    from bench.loadgen import find_h2load

    if find_h2load() is None:
        print("front ceiling: skipped (no h2load; bench/README.md, 'Getting h2load')")
        return None
    try:
        with start_floor_server(tmp) as server:
            closed = h2load_closed(server.target, EMPTY_METHOD, PAYLOAD, args.h2load_requests,
                                   cpu=CLIENT_CPU)  # fmt: skip
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"front ceiling: not measured ({type(exc).__name__}: {exc})")
        return None
    if closed is None or closed["failed"] or not closed["succeeded"]:
        print(f"front ceiling: not measured (h2load: {closed})")
        return None
    print(f"front ceiling (empty handler, h2load closed loop): {closed['rate_per_s']:,.0f}/s")
    return closed


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    from bench.workload import OpKind, WorkloadSpec

    if args.quick:
        args.duration, args.rate_start, args.rate_max = 1.0, 100.0, 150.0
        args.processes, args.skus, args.stores, args.direct_requests = 1, 200, 10, 2_000
        args.batch_size, args.batch_in_flight, args.batch_seconds = 10, 2, 1.0
        args.batch_reserves_max = 5_000
        args.closed_reserves, args.h2load_requests = 2_000, 2_000
        args.holds_capacity = min(args.holds_capacity, 100_000)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    batched: dict[str, dict[str, Any]] = {}
    closed: dict[str, dict[str, Any]] = {}
    ceiling = None
    rates = geometric_rates(args.rate_start, args.rate_max, args.factor)
    spec = WorkloadSpec(skus_count=args.skus, stores_count=args.stores)
    points: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with workdir("peers") as tmp_s:
        tmp = Path(tmp_s)
        data = tmp / "data"
        net = seed_data_dir(data, spec)
        batch_payloads: list[bytes] = []
        if not args.no_batched:
            from bench.batch import reserve_payloads

            calls = max(args.processes, args.batch_reserves_max // args.batch_size)
            batch_payloads = reserve_payloads(net, args.batch_size, calls, seed=77, tag="pb")
        closed_payloads: list[bytes] = []
        if not args.no_closed:  # the same requests for every system (each has its own stock)
            ops = only(net, OpKind.RESERVE, args.closed_reserves, 91, "uc-")
            closed_payloads = encode_ops(ops)[1]
        for system in systems:
            ctx: Any = (
                ServerRun.omnistock(data, args.durability, holds_capacity=args.holds_capacity)
                if system == "omnistock"
                else _Front(system, net, tmp, args.durability, args.postgres)
            )
            with ctx as handle:
                target = handle.target if isinstance(handle, ServerRun) else handle
                points[system] = {}
                for series in ("mix", "reserve"):
                    waited = _settle(target)
                    if waited > 1.0:
                        print(f"  {system}: waited {waited:.1f} s for the server to drain")
                    print(f"{system} {series}: stepping from {rates[0]:,.0f}/s")
                    points[system][series] = step_rates(
                        _stepper(target, net, series, args, system), f"{system} {series}",
                        rates, keep_going=0, p99_stop_us=P99_STOP_US, warm_up=not args.quick,
                    )  # fmt: skip
                if closed_payloads:
                    closed[system] = _unary_closed(target, closed_payloads, args, system)
                if batch_payloads:
                    batched[system] = _batched(target, batch_payloads, args, system)
        if not args.no_closed:
            ceiling = _front_ceiling(tmp, args)
    direct = None
    if not args.no_direct:
        from bench.redis_direct import _PrivateRedis, run_mode

        private = _PrivateRedis(SERVER_CPU)
        try:
            cpu = (client_cpus() or [None])[0]
            direct = {
                f"depth_{d}": run_mode(
                    private.url, args.direct_requests, args.processes, d, f"pd{d}-", cpu
                )  # fmt: skip
                for d in (1, 16)
            }
        finally:
            private.close()
    figures: list[Figure] = []
    stepped = {s: peak_achieved(points[s]["reserve"]) for s in systems}
    sat, counted = saturation(stepped, closed)
    mix_sat = {s: peak_achieved(points[s]["mix"]) for s in systems}
    for s in systems:
        key = s.replace("-", "_")
        figures.append(
            Figure(
                f"{key}_reserves_per_s",
                sat[s],
                "reserves/s",
                note="unary Reserve at saturation: the higher of the two below",
            )
        )
        figures.append(
            Figure(
                f"{key}_reserves_per_s_stepped",
                stepped[s],
                "reserves/s",
                note="unary Reserve, most successful answers/s in an open-loop step",
            )
        )
        if s in closed:
            r = closed[s]
            figures.append(
                Figure(
                    f"{key}_reserves_per_s_closed",
                    r["calls_per_s"],
                    "reserves/s",
                    note=f"unary Reserve, closed loop, {args.batch_in_flight * args.processes} "
                    f"in flight, client CPU {r['client_cpu_util']:.0%}, errors {r['errors']}"
                    + ("" if s in counted else "; not counted (ran out of requests or errors)"),
                )
            )
        figures.append(
            Figure(
                f"{key}_mix_ok_per_s",
                mix_sat[s],
                "req/s",
                note="the mix, most successful answers/s in a step",
            )
        )
    for s, r in batched.items():
        figures.append(
            Figure(
                f"{s.replace('-', '_')}_batched_reserves_per_s",
                r["lines_per_s"],
                "reserves/s",
                note=f"ReserveBatch x{args.batch_size} x 1 line, closed loop, "
                f"{args.batch_in_flight * args.processes} in flight, errors {r['errors']}",
            )
        )
    if ceiling is not None:
        figures.append(Figure("front_ceiling_per_s", ceiling["rate_per_s"], "calls/s",
                              note=f"empty handler, h2load closed loop ({ceiling['streams']} "
                              "streams), same core"))  # fmt: skip
        for peer in ("redis-lua", "postgres"):
            if peer in sat:
                figures.append(Figure(
                    f"front_ceiling_vs_{peer.replace('-', '_')}_reserves",
                    ceiling["rate_per_s"] / max(sat[peer], 1e-9), "ratio",
                    note="the highest omnistock_vs_ ratio any engine behind this front could "
                    "reach here"))  # fmt: skip
    if "omnistock" in sat:
        for peer, target in (("redis-lua", 1.5), ("postgres", 10.0)):
            key = peer.replace("-", "_")
            if peer in sat:
                figures.append(Figure(
                    f"omnistock_vs_{key}_reserves", sat["omnistock"]
                    / max(sat[peer], 1e-9), "ratio", target=target))  # fmt: skip
            if peer in batched and "omnistock" in batched:
                figures.append(Figure(
                    f"omnistock_vs_{key}_batched_reserves", batched["omnistock"]["lines_per_s"]
                    / max(batched[peer]["lines_per_s"], 1e-9), "ratio", target=target,
                    note=f"durability {args.durability}"))  # fmt: skip
        figures += _equal_load_figures(points, systems, rates)
    if direct is not None:
        for d, r in direct.items():
            figures.append(
                Figure(
                    f"redis_direct_{d}_reserves_per_s",
                    r["reserves_per_s"],
                    "reserves/s",
                    note=f"Redis CPU {r['redis_cpu_util']:.0%}",
                )
            )
            figures.append(
                Figure(
                    f"redis_direct_{d}_reserves_per_redis_cpu_s",
                    r["reserves_per_redis_cpu_s"],
                    "reserves/CPU-s",
                )
            )
        piped = direct.get("depth_16")
        if piped is not None and "omnistock" in batched:
            # The server is pinned to one core: its batched reserves/s is at most per core.
            figures.append(
                Figure(
                    "omnistock_batched_per_core_vs_redis_direct_piped_per_core",
                    batched["omnistock"]["lines_per_s"]
                    / max(piped["reserves_per_redis_cpu_s"], 1e-9),
                    "ratio",
                    target=1.0,
                    note="omnistock batched reserves/s on its one core vs redis-direct 16-deep "
                    "reserves per Redis CPU-second",
                )
            )
    extra = {
        "direct": direct,
        "positions": net.positions_count,
        "systems": systems,
        "durability": args.durability,
        "postgres": args.postgres,
        "batched": batched,
        "reserve_closed": closed,
        "front_ceiling": ceiling,
    }
    payload = finish("peers", figures, args.json, None, extra=extra, argv=argv)
    flat = [p for s in systems for series in ("mix", "reserve") for p in points[s][series]]
    title = f"peers: same front, same offered rates, durability {args.durability}"
    table = write_outputs(payload, flat, args, title)
    if batched:
        _add_batched_table(args, payload, title, table, batched)
    return payload


def _add_batched_table(
    args: argparse.Namespace, payload: Any, title: str, table: str, batched: dict[str, Any]
) -> None:
    rows = [
        f"| system | ReserveBatch x{args.batch_size}: reserves/s | calls/s | client CPU | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for s, r in batched.items():
        rows.append(f"| {s} | {r['lines_per_s']:,.0f} | {r['calls_per_s']:,.0f} | "
                    f"{r['client_cpu_util']:.0%} | {r['errors']} |")  # fmt: skip
    md = "\n".join(rows)
    print(md)
    if args.json:
        add_to_json(
            args.json,
            {"batched_table_md": md},
            f"# {title}\n\n`{payload['command']}`\n\n{table}\n\n{md}\n",
        )
