"""The bench workload generator: deterministic, well-formed, and accepted by the engine."""

from __future__ import annotations

import numpy as np
import pytest

from bench.workload import (
    PEAK_SALE_MIX,
    Mix,
    OpKind,
    WorkloadSpec,
    engine_setup_commands,
    generate_network,
    generate_ops,
    mix_counts,
    op_to_command,
    peer_positions,
)
from engine.codes import NodeType, ReservationState
from engine.commands import ReservationResult, SupplyResult
from engine.ledger import Ledger

SPEC = WorkloadSpec(skus_count=500, stores_count=40, dcs_count=3, dark_stores_count=4, seed=7)


def test_network_is_deterministic_and_shaped() -> None:
    a, b = generate_network(SPEC), generate_network(SPEC)
    assert a.node_ids == b.node_ids and a.skus == b.skus
    assert np.array_equal(a.pos_on_hand, b.pos_on_hand)
    assert len(set(a.node_ids)) == len(a.node_ids) == 47
    assert (a.node_type == NodeType.DC).sum() == 3
    assert np.all(np.diff(a.pos_sku) >= 0)
    keys = a.pos_sku.astype(np.int64) << 32 | a.pos_node
    assert np.unique(keys).shape == keys.shape
    assert a.sku_pos_start[-1] == a.positions_count
    # Real geography: every node within ~1.5 degrees of the continental US box.
    assert np.all((a.node_lat > 23) & (a.node_lat < 50))
    assert np.all((a.node_lon > -126) & (a.node_lon < -65))
    # Long tail: many zeros, median small, a few large.
    q = a.pos_on_hand
    assert 0.15 < (q == 0).mean() < 0.35
    assert np.median(q) <= 5 and q.max() >= 100
    assert generate_network(WorkloadSpec(skus_count=500, seed=8)).pos_on_hand.sum() != q.sum()


def test_ops_follow_the_mix_and_are_deterministic() -> None:
    net = generate_network(SPEC)
    ops = generate_ops(net, 20_000)
    assert ops == generate_ops(net, 20_000)
    assert ops != generate_ops(net, 20_000, seed=8)
    counts = mix_counts(ops)
    shares = PEAK_SALE_MIX.shares()
    for kind in (OpKind.AVAILABILITY, OpKind.NEARBY):
        assert abs(counts[kind.name] / 20_000 - shares[kind]) < 0.02
    assert abs(counts["COMMIT"] + counts["RELEASE"] - 1_000) < 200
    seen: set[str] = set()
    finished: set[str] = set()
    for op in ops:
        if op.kind == OpKind.RESERVE:
            assert op.reservation_id not in seen and 1 <= len(op.lines) <= 3
            seen.add(op.reservation_id)
        elif op.kind in (OpKind.COMMIT, OpKind.RELEASE):
            assert op.reservation_id in seen and op.reservation_id not in finished
            finished.add(op.reservation_id)
    # The hot set draws a large share of all requests.
    hot = {net.skus[s] for s in net.hot_skus.tolist()}
    reads = [op.sku for op in ops if op.kind == OpKind.AVAILABILITY]
    assert sum(s in hot for s in reads) / len(reads) > 0.4


def test_bad_mix_is_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        Mix(availability=0.9).shares()


def test_engine_accepts_setup_and_stream() -> None:
    net = generate_network(SPEC)
    ledger = Ledger()
    for cmd in engine_setup_commands(net, chunk_lines=5_000):
        for result in ledger.apply(0, [cmd]).results:
            assert not hasattr(result, "code"), result
            if isinstance(result, SupplyResult):
                assert all(s == 1 for s in result.statuses)
    assert sum(q for *_, q in peer_positions(net)) == int(net.pos_on_hand.sum())
    states: dict[str, int] = {}
    for i, op in enumerate(generate_ops(net, 2_000)):
        if op.kind in (OpKind.AVAILABILITY, OpKind.NEARBY):
            continue
        (result,) = ledger.apply(1_000 + i, [op_to_command(op)]).results
        if op.kind == OpKind.RESERVE:
            assert isinstance(result, ReservationResult)
            states[result.reservation.state.name] = states.get(result.reservation.state.name, 0) + 1
    assert states[ReservationState.HELD.name] > 0
