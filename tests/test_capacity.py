"""Capacity: `Ledger.reserve_room` sizes the reservation arrays up front and changes no state;
the server sizes them at start from `--holds-capacity`."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.commands import Line, Release, Reserve, ReserveColumns
from engine.ledger import Ledger
from server.app import start_server
from server.cli import build_parser, config_from_args
from server.config import ServerConfig
from tests.test_determinism import frozen
from tests.test_reserve_columns import SETUP, T0

GROWN = ("res", "ln", "heap", "expired_out")


def _holds(count: int, prefix: str) -> ReserveColumns:
    ids = [f"{prefix}{k}" for k in range(count)]
    skus = [("s0", "s1", "s2")[k % 3] for k in range(count)]
    nodes = [("n0", "n1", "n2")[k % 3] for k in range(count)]
    return ReserveColumns.build(ids, [1] * count, skus, nodes, [1] * count, 60_000)


def test_room_for_holds_means_no_growth_while_they_arrive() -> None:
    sized = Ledger(reservations=16)
    sized.apply(T0, SETUP)
    sized.reserve_room(3_000)
    arrays = {name: sized._a[name] for name in GROWN}
    assert all(a.shape[0] >= 3_000 for a in arrays.values())
    item = sized._res_item
    assert item.shape[0] >= 3_000
    for step in range(3):
        sized.apply(T0 + 1 + step, [_holds(1_000, f"b{step}-")])
    for name, a in arrays.items():
        assert sized._a[name] is a, f"{name} was replaced (grown) after reserve_room"
    assert sized._res_item is item


def test_room_changes_no_exported_byte() -> None:
    plain = Ledger()
    sized = Ledger()
    for ledger in (plain, sized):
        ledger.apply(T0, SETUP)
    sized.reserve_room(5_000, lines_per_hold=3)
    assert frozen(sized) == frozen(plain)
    for ledger in (plain, sized):
        ledger.apply(T0 + 1, [_holds(200, "h")])
        ledger.apply(T0 + 2, [Reserve("u", (Line("s0", "n0", 2), Line("s1", "n1", 1)), 9_000)])
        ledger.apply(T0 + 3, [Release("h7"), Release("u")])
    assert frozen(sized) == frozen(plain)
    sized_stats, plain_stats = sized.stats(), plain.stats()
    assert sized_stats.pop("array_bytes") > plain_stats.pop("array_bytes")  # only the room
    assert sized_stats == plain_stats


def test_room_refuses_nonsense() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError):
        ledger.reserve_room(-1)
    with pytest.raises(ValueError):
        ledger.reserve_room(10, lines_per_hold=0)


def test_holds_capacity_flag_and_variable(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["serve", "--data-dir", str(tmp_path), "--holds-capacity", "7"]
    )
    assert config_from_args(args, environ={}).holds_capacity == 7
    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path)])
    assert config_from_args(args, environ={}).holds_capacity == 0
    env = {"OMNISTOCK_HOLDS_CAPACITY": "1000"}
    assert config_from_args(args, environ=env).holds_capacity == 1_000
    bad = build_parser().parse_args(["serve", "--holds-capacity", "-5"])
    with pytest.raises(SystemExit, match="holds capacity"):
        config_from_args(bad, environ={})


async def test_server_sizes_the_holds_at_start(tmp_path: Path) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0", data_dir=str(tmp_path), durability="none", holds_capacity=50_000
    )
    server, app, _ = await start_server(config)
    try:
        ledger = app.ledger
        assert all(ledger._a[name].shape[0] >= 50_000 for name in GROWN)
        assert ledger.stats()["reservations_held"] == 0  # room, not state
    finally:
        await app.stop(server, 1.0)


@pytest.mark.parametrize("kind", ["nodes", "groups"])
def test_one_upsert_cannot_pass_the_node_or_group_limit(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit counts every new id of the command: one UpsertNodes / UpsertGroups of many new
    ids was let in whole while the table was one below its limit (and the group x node
    membership matrix grows with both)."""
    from engine import limits
    from engine.commands import GroupSpec, NodeSpec, UpsertGroups, UpsertNodes
    from engine.errors import Rejection

    monkeypatch.setattr(limits, "NODES_MAX", 4)
    monkeypatch.setattr(limits, "GROUPS_MAX", 4)

    def upsert(ids: list[str]) -> UpsertNodes | UpsertGroups:
        if kind == "nodes":
            return UpsertNodes(tuple(NodeSpec(i) for i in ids))
        return UpsertGroups(tuple(GroupSpec(i, ("n0",)) for i in ids))

    ledger = Ledger()
    ledger.apply(1, [UpsertNodes(tuple(NodeSpec(f"n{i}") for i in range(3)))])
    if kind == "groups":
        ledger.apply(1, [upsert([f"g{i}" for i in range(3)])])
    prefix = "n" if kind == "nodes" else "g"
    (refused,) = ledger.apply(2, [upsert([f"{prefix}0", f"{prefix}7", f"{prefix}8"])]).results
    assert isinstance(refused, Rejection) and refused.reason == "LIMIT"
    assert ledger.stats()[kind] == 3  # nothing of it was applied
    (one,) = ledger.apply(3, [upsert([f"{prefix}0", f"{prefix}7"])]).results
    assert (one.created, one.updated) == (1, 1) and ledger.stats()[kind] == 4  # fits exactly
