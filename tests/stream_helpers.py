"""Helpers shared by the stream and replica tests: random writes, bounded waits, state equality."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.codes import AdjustReason, NodeType
from engine.commands import (
    Adjust,
    Adjustment,
    Commit,
    Line,
    NodeSpec,
    Release,
    Reserve,
    SetOnHand,
    StockCount,
    UpsertNodes,
)
from engine.ledger import Ledger

NODES = [f"n{i}" for i in range(4)]
SKUS = [f"s{i}" for i in range(12)]


def setup_commands() -> list[Any]:
    nodes = tuple(NodeSpec(n, NodeType.STORE, 48.0 + i, 2.0 + i) for i, n in enumerate(NODES))
    counts = tuple(StockCount(s, n, 20, 1) for s in SKUS for n in NODES)
    return [UpsertNodes(nodes), SetOnHand("setup-soh", counts)]


def random_command(rng: random.Random, i: int) -> Any:
    kind = rng.random()
    sku, node = rng.choice(SKUS), rng.choice(NODES)
    if kind < 0.4:
        return Reserve(f"r{i}", (Line(sku, node, rng.randint(1, 3)),), rng.choice((50, 60_000)))
    if kind < 0.55:
        return Commit(f"r{rng.randrange(max(1, i))}")
    if kind < 0.7:
        return Release(f"r{rng.randrange(max(1, i))}")
    reason = AdjustReason.RECEIPT
    return Adjust(f"a{i}", (Adjustment(sku, node, rng.randint(-2, 5), reason),))


async def random_writes(sequencer: Any, rng: random.Random, count: int, start: int = 0) -> None:
    """`count` writes, some concurrent (so batches hold several commands)."""
    i = start
    while i < start + count:
        end = min(i + rng.randint(1, 4), start + count)
        group = [random_command(rng, j) for j in range(i, end)]
        await asyncio.gather(*(sequencer.submit(c) for c in group))
        i += len(group)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def same_state(a: Ledger, b: Ledger) -> bool:
    arrays_a, meta_a = a.export_state()
    arrays_b, meta_b = b.export_state()
    if meta_a != meta_b or arrays_a.keys() != arrays_b.keys():
        return False
    return all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)
