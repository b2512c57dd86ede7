"""`python -m bench <scenario> [--json PATH] [--plot PNG] [scenario options]`.

Every scenario is a module in `bench/` with `add_arguments(parser)` and `run(args) -> dict`, and
is registered once in `SCENARIOS`. Modules are imported only when their scenario runs, so a
scenario's heavy dependencies (a database driver, a gRPC stack) never slow down another one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line description). Later issues add sourcing, grpc-floor, sweep, peers…
SCENARIOS: dict[str, tuple[str, str]] = {
    "kernels": (
        "bench.kernels",
        "engine micro benchmarks: reserve, availability, one-line call, expiry, memory",
    ),
    "replicas": ("bench.replicas", "read replicas: change visibility p50/p99, read scaling"),
    "sourcing": (
        "bench.sourcing",
        "SourceOrder and FindNearby in-process latency: 2,000 nodes, 100,000 SKUs, 3-line orders",
    ),
    "grpc-floor": ("bench.grpc_floor", "empty-handler gRPC server on one core: the cost of gRPC"),
    "sweep": ("bench.sweep", "real server: highest rate with p99 < 1 ms per call kind, vs floor"),
    "batch": ("bench.batch", "lines/s with 10/100-line calls and bidi streams (sync durability)"),
    "peers": ("bench.peers_scenario", "the mix vs redis-lua and postgres behind the same front"),
    "recovery": ("bench.recovery", "restart time: 10M positions snapshot + 1M journal entries"),
    "durability": ("bench.durability_scenario", "the unary Reserve sweep in sync, async, none"),
}


def _usage() -> str:
    width = max(len(name) for name in SCENARIOS)
    lines = ["usage: python -m bench <scenario> [--json PATH] [--plot PNG] [options]", ""]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SCENARIOS.items()]
    lines += ["", "python -m bench <scenario> --help shows a scenario's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name = args[0]
    if name not in SCENARIOS:
        print(f"unknown scenario {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, text = SCENARIOS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=text)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    parser.add_argument("--plot", metavar="PNG", help="also draw the figures (matplotlib)")
    module.add_arguments(parser)
    ns = parser.parse_args(args[1:])
    module.run(ns, argv=args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
