"""Sourcing micro benchmarks: SourceOrder (plan only) and FindNearby, in-process, one call each.

A network of 2,000 nodes (50 DCs, the rest stores, spread over mainland France) and 100,000 SKUs;
every SKU is stocked at a few DCs and a few stores. Each timed call is one 3-line order (random
SKUs, random ship-to point) through the Ledger's friendly API, validation and result Structs
included: `source_order` and `find_nearby` (radius 50 km, K = 10).

`python -m bench sourcing --json PATH`, or standalone `python -m bench.sourcing --json PATH`.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import Figure, finish, time_rounds
from engine.codes import AdjustReason, NodeType
from engine.commands import Adjust, Adjustment, NodeSpec
from engine.ledger import Ledger

TARGET_P99_US = 50.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2_000)
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--dcs", type=int, default=50)
    parser.add_argument("--dcs-per-sku", type=int, default=4)
    parser.add_argument("--stores-per-sku", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--radius-km", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=7)


def build(args: argparse.Namespace) -> Ledger:
    rng = np.random.default_rng(args.seed)
    positions = args.skus * (args.dcs_per_sku + args.stores_per_sku)
    ledger = Ledger(positions=positions, skus=args.skus, nodes=args.nodes)
    lat = rng.uniform(43.5, 50.5, args.nodes)
    lon = rng.uniform(-1.5, 7.5, args.nodes)
    specs = [
        NodeSpec(
            f"N{n}",
            NodeType.DC if n < args.dcs else NodeType.STORE,
            float(lat[n]),
            float(lon[n]),
            pickup=n >= args.dcs,
            priority=int(rng.integers(0, 5)),
        )
        for n in range(args.nodes)
    ]
    ledger.upsert_nodes(specs)
    dcs = rng.integers(0, args.dcs, (args.skus, args.dcs_per_sku))
    stores = rng.integers(args.dcs, args.nodes, (args.skus, args.stores_per_sku))
    nodes = np.concatenate([dcs, stores], axis=1)
    qty = rng.integers(1, 20, nodes.shape)
    chunk: list[Adjustment] = []
    k = 0
    for s in range(args.skus):
        sku = f"SKU{s}"
        for n, q in zip(nodes[s].tolist(), qty[s].tolist(), strict=True):
            chunk.append(Adjustment(sku, f"N{n}", q, AdjustReason.RECEIPT))
        if len(chunk) >= 9_000:
            ledger.apply(0, [Adjust(f"load{k}", tuple(chunk))])
            chunk = []
            k += 1
    if chunk:
        ledger.apply(0, [Adjust(f"load{k}", tuple(chunk))])
    return ledger


def _pct(times: Sequence[float], p: float) -> float:
    return float(np.percentile(np.array(times) * 1e6, p))


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    ledger = build(args)
    rng = random.Random(args.seed)
    orders = [
        (
            [(f"SKU{rng.randrange(args.skus)}", rng.randint(1, 3)) for _ in range(3)],
            rng.uniform(43.5, 50.5),
            rng.uniform(-1.5, 7.5),
        )
        for _ in range(args.rounds)
    ]

    def source(i: int) -> object:
        lines, lat, lon = orders[i]
        return ledger.source_order(lines, lat=lat, lon=lon)

    def nearby(i: int) -> object:
        lines, lat, lon = orders[i]
        return ledger.find_nearby(lat, lon, args.radius_km, lines, limit=10)

    warm = min(2_000, args.rounds)
    time_rounds(source, warm)
    time_rounds(nearby, warm)
    src = time_rounds(source, args.rounds)
    near = time_rounds(nearby, args.rounds)
    shipments = [source(i).shipment_count for i in range(min(2_000, args.rounds))]
    found = [len(nearby(i).nodes) for i in range(min(2_000, args.rounds))]
    stats = ledger.stats()
    note = f"{args.nodes} nodes, {args.skus} SKUs, {stats['positions']} positions, 3-line orders"
    figures = [
        Figure("source_order_us_p50", _pct(src, 50), "µs", note=note),
        Figure("source_order_us_p99", _pct(src, 99), "µs", TARGET_P99_US, at_least=False),
        Figure("find_nearby_us_p50", _pct(near, 50), "µs", note=f"radius {args.radius_km} km"),
        Figure("find_nearby_us_p99", _pct(near, 99), "µs", TARGET_P99_US, at_least=False),
        Figure("source_order_shipments_mean", float(np.mean(shipments)), "shipments"),
        Figure("find_nearby_nodes_mean", float(np.mean(found)), "nodes"),
    ]
    return finish(
        "sourcing",
        figures,
        args.json,
        getattr(args, "plot", None),
        extra={
            "positions": stats["positions"],
            "rounds": args.rounds,
            # the body of the distribution; p99 on a shared machine is mostly preemption
            "source_order_us_p90": _pct(src, 90),
            "find_nearby_us_p90": _pct(near, 90),
        },
        argv=argv,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sourcing", description=__doc__)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PNG")
    add_arguments(parser)
    args_list = list(sys.argv[1:] if argv is None else argv)
    run(parser.parse_args(args_list), argv=["sourcing", *args_list])
    return 0


if __name__ == "__main__":
    sys.exit(main())
