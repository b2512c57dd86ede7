"""UpsertNodes / UpsertGroups in the engine: request ids, per-group UNKNOWN_NODE, created/updated.

The stateful property test (tests/test_ledger_model.py) checks the same rules against the
reference model with random commands; these are the retail cases spelled out.
"""

from __future__ import annotations

from engine.codes import LineStatus, NodeType
from engine.commands import GroupSpec, NodeSpec, UpsertGroups, UpsertNodes, UpsertResult
from engine.errors import Code, Rejection
from engine.ledger import Ledger
from engine.state import N_ENABLED

T0 = 1_000_000
OK = LineStatus.OK
UNKNOWN_NODE = LineStatus.UNKNOWN_NODE


def node_enabled(ledger: Ledger, node_id: str) -> bool:
    return bool(ledger._a["node_i64"][ledger.node_id(node_id), N_ENABLED])


def one(ledger: Ledger, command: UpsertNodes | UpsertGroups) -> object:
    return ledger.apply(T0, [command]).results[0]


def test_a_late_retry_of_an_upsert_does_not_undo_a_later_one() -> None:
    """The WMS sends "disable S1" (r1), then "enable S1" (r2); r1's retry arrives last. With its
    request_id it is answered as the first time and changes nothing."""
    ledger = Ledger()
    disable = UpsertNodes((NodeSpec("S1", NodeType.STORE, enabled=False),), "r1")
    enable = UpsertNodes((NodeSpec("S1", NodeType.STORE, enabled=True),), "r2")
    first = one(ledger, disable)
    assert first == UpsertResult((OK,), 1, 0, False)
    assert one(ledger, enable) == UpsertResult((OK,), 0, 1, False)
    assert one(ledger, disable) == UpsertResult((OK,), 1, 0, True)
    assert node_enabled(ledger, "S1")
    # Without a request id an upsert applies each time, as before.
    one(ledger, UpsertNodes((NodeSpec("S1", enabled=False),)))
    assert not node_enabled(ledger, "S1")


def test_a_request_id_reused_with_other_content_is_a_conflict() -> None:
    ledger = Ledger()
    one(ledger, UpsertNodes((NodeSpec("S1"),), "r1"))
    other = one(ledger, UpsertNodes((NodeSpec("S2"),), "r1"))
    assert isinstance(other, Rejection)
    assert (other.code, other.reason) == (Code.ALREADY_EXISTS, "ID_CONFLICT")
    assert ledger.node_id("S2") < 0
    # The key is per command type: a group upsert may use the same request id.
    assert one(ledger, UpsertGroups((GroupSpec("g", ("S1",)),), "r1")) == UpsertResult(
        (OK,), 1, 0, False
    )


def test_a_group_naming_an_unknown_node_is_left_out_and_the_others_apply() -> None:
    ledger = Ledger()
    one(ledger, UpsertNodes((NodeSpec("S1"), NodeSpec("S2"))))
    result = one(
        ledger,
        UpsertGroups(
            (
                GroupSpec("web", ("S1", "S2"), buffer_units=1),
                GroupSpec("app", ("S1", "NOPE")),
                GroupSpec("web", ("S2",), buffer_units=2),  # the same id again: one update
            )
        ),
    )
    assert result == UpsertResult((OK, UNKNOWN_NODE, OK), 1, 0, False)
    assert "app" not in ledger._groups.ids
    assert ledger._group_specs[ledger.group_id("web")] == GroupSpec("web", ("S2",), 2)
    again = one(ledger, UpsertGroups((GroupSpec("web", ("S1",)), GroupSpec("app", ("S1",)))))
    assert again == UpsertResult((OK, OK), 1, 1, False)


def test_nodes_upserted_earlier_in_the_same_batch_count_for_groups() -> None:
    """A bulk import sends the nodes, then the groups naming them; they may land in one batch."""
    ledger = Ledger()
    out = ledger.apply(
        T0,
        [
            UpsertNodes((NodeSpec("DC-1", NodeType.DC),)),
            UpsertGroups((GroupSpec("network", ("DC-1",)),)),
        ],
    )
    assert out.results[1] == UpsertResult((OK,), 1, 0, False)


def test_a_replayed_upsert_survives_a_snapshot() -> None:
    ledger = Ledger()
    command = UpsertGroups((GroupSpec("g", ("S1",)),), "g-1")
    one(ledger, UpsertNodes((NodeSpec("S1"),)))
    assert one(ledger, command) == UpsertResult((OK,), 1, 0, False)
    arrays, meta = ledger.export_state()
    restored = Ledger.from_state(arrays, meta)
    assert one(restored, command) == UpsertResult((OK,), 1, 0, True)
