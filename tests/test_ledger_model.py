"""The engine against the reference model (tests/model.py), step by step.

A hypothesis state machine sends the same random batches to `engine.ledger.Ledger` and to
`tests.model.Model` and compares every result, the expired ids and their order, every bucket of
every position, every availability read, every reservation and transfer, and the invariants,
after every step. The id universe is tiny (3 SKUs x 3 nodes, five reservation ids, ...) so ids
collide, replays and conflicts happen, and lines for one position pile up.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine import limits
from engine.codes import AdjustReason, LineStatus, MoveKind, ReservationState
from engine.commands import (
    Adjust,
    Adjustment,
    Commit,
    Extend,
    Fulfil,
    GroupSpec,
    Line,
    Move,
    MoveLine,
    NodeSpec,
    Release,
    ReservationResult,
    Reserve,
    ReserveColumns,
    ReserveColumnsResult,
    SetBackorderLimit,
    SetOnHand,
    SetSafetyStock,
    Setting,
    StockCount,
    TransferCancel,
    TransferReceive,
    TransferShip,
    UpsertGroups,
    UpsertNodes,
)
from engine.errors import EngineError, Rejection
from engine.ledger import Ledger
from engine.state import C_POSITIONS
from tests.model import Model, Rej

SKUS = ("s0", "s1", "s2")
NODES = ("n0", "n1", "n2")
GROUPS = ("g0", "g1")
RES_IDS = ("r0", "r1", "r2", "r3", "r4")
REQ_IDS = ("q0", "q1", "q2")
TRANSFER_IDS = ("t0", "t1", "t2")
# The idempotency memory under test: (window ms, most ids remembered).
MEMORIES = (
    (limits.IDS_WINDOW_MS, limits.IDS_REMEMBERED_MAX),
    (3_000, limits.IDS_REMEMBERED_MAX),
    (10**12, 4),
    (2_500, 6),
)

sku = st.sampled_from(SKUS * 4 + ("sX",))
node = st.sampled_from(NODES * 4 + ("nX",))
small = st.integers(1, 6)
dt = st.sampled_from((0, 0, 1, 250, 500, 999, 1_000, 1_500, 2_000, 3_000))
ttl = st.sampled_from((1_000, 1_500, 2_000, 3_000))
line = st.builds(Line, sku, node, small)
lines = st.lists(line, min_size=1, max_size=4).map(tuple)

reserve = st.builds(
    Reserve,
    reservation_id=st.sampled_from(RES_IDS),
    lines=lines,
    ttl_ms=ttl,
    allow_partial=st.booleans(),
    group_id=st.sampled_from(("", "", "", "g0", "g1", "gX")),
)
invalid_reserve = st.one_of(
    st.builds(Reserve, st.sampled_from(("", "x" * 129)), lines, ttl),
    st.builds(Reserve, st.sampled_from(RES_IDS), st.just(()), ttl),
    st.builds(Reserve, st.sampled_from(RES_IDS), lines, st.sampled_from((999, 0, 10**12))),
    st.builds(
        Reserve,
        st.sampled_from(RES_IDS),
        st.tuples(st.builds(Line, sku, node, st.sampled_from((0, -1, 10**9 + 1)))),
        ttl,
    ),
)


def _columns(items: list[tuple[str, tuple[Line, ...]]], ttl_ms: int, partial: bool, group: str):
    """A ReserveColumns of (reservation id, lines) items."""
    lines = [x for _, item_lines in items for x in item_lines]
    return ReserveColumns.build(
        [rid for rid, _ in items],
        [len(item_lines) for _, item_lines in items],
        [x.sku for x in lines],
        [x.node_id for x in lines],
        [x.qty for x in lines],
        ttl_ms,
        partial,
        group,
    )


# Items of a ReserveColumns: mostly valid, some with a bad id, no lines, too many bytes in a
# non-ASCII id (which the column checks must not take for valid), or a bad quantity.
column_item = st.one_of(
    st.tuples(st.sampled_from(RES_IDS), lines),
    st.tuples(st.sampled_from(RES_IDS), lines),
    st.tuples(st.sampled_from(RES_IDS), lines),
    st.tuples(st.sampled_from(("", "x" * 129, "é" * 65, "é" * 3)), lines),
    st.tuples(st.sampled_from(RES_IDS), st.just(())),
    st.tuples(
        st.sampled_from(RES_IDS),
        st.lists(
            st.one_of(
                line,
                st.builds(Line, st.sampled_from(("", "ß" * 70, "ß")), node, small),
                st.builds(Line, sku, node, st.sampled_from((0, -1, 10**9 + 1))),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),
    ),
)
reserve_columns = st.builds(
    _columns,
    st.lists(column_item, max_size=6),
    st.sampled_from((1_000, 1_500, 2_000, 3_000, 3_000, 999)),
    st.booleans(),
    st.sampled_from(("", "", "g0", "g1", "gX", "x" * 129)),
)
res_id = st.sampled_from(RES_IDS + ("rX",))
commit = st.builds(Commit, res_id)
release = st.builds(Release, res_id)
extend = st.builds(
    Extend,
    res_id,
    st.sampled_from((1_000, 2_000, 4_000, 999)),
    st.sampled_from(("", "", "e0", "e1", "x" * 129)),
)
fulfil = st.builds(
    Fulfil,
    res_id,
    st.one_of(
        st.just(()),
        st.lists(st.builds(Line, sku, node, st.integers(0, 4)), max_size=3).map(tuple),
    ),
    st.sampled_from(("", "", "f0", "f1")),
)
req_id = st.sampled_from(REQ_IDS + ("",))
adjust = st.builds(
    Adjust,
    req_id,
    st.lists(
        st.builds(
            Adjustment,
            sku,
            node,
            st.integers(-6, 9),
            st.sampled_from(list(AdjustReason)[1:] + [AdjustReason.RECEIPT] * 3),
        ),
        min_size=1,
        max_size=3,
    ).map(tuple),
)
set_on_hand = st.builds(
    SetOnHand,
    req_id,
    st.lists(
        st.builds(StockCount, sku, node, st.integers(0, 14), st.integers(0, 6)),
        min_size=1,
        max_size=3,
    ).map(tuple),
)
settings_ = st.lists(st.builds(Setting, sku, node, st.integers(0, 5)), min_size=1, max_size=3)
set_safety = st.builds(SetSafetyStock, req_id, settings_.map(tuple))
set_backorder = st.builds(SetBackorderLimit, req_id, settings_.map(tuple))
move = st.builds(
    Move,
    req_id,
    st.lists(
        st.builds(MoveLine, sku, node, st.integers(1, 4), st.sampled_from(list(MoveKind)[1:])),
        min_size=1,
        max_size=3,
    ).map(tuple),
)
transfer_id = st.sampled_from(TRANSFER_IDS)
ship = st.builds(TransferShip, transfer_id, sku, node, node, small)
receive = st.builds(
    TransferReceive, transfer_id, st.integers(0, 4), st.sampled_from(("", "", "v0"))
)
cancel = st.builds(TransferCancel, transfer_id)
# A retried upsert with a request_id answers as the first did (and never applies again).
upsert_request_id = st.sampled_from(("", "", "u0", "u1"))
upsert_nodes = st.builds(
    UpsertNodes,
    st.tuples(
        st.builds(NodeSpec, st.sampled_from(NODES), enabled=st.sampled_from((True, True, False)))
    ),
    upsert_request_id,
)
upsert_groups = st.builds(
    UpsertGroups,
    st.lists(
        st.builds(
            GroupSpec,
            st.sampled_from(GROUPS),
            st.lists(st.sampled_from(NODES + ("nX",)), max_size=3, unique=True).map(tuple),
            st.integers(0, 2),
            st.sampled_from((0.0, 0.0, 10.0, 12.5, 33.33, 50.0, 100.0)),
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
    upsert_request_id,
)
command = st.one_of(
    reserve,
    reserve,
    reserve,
    invalid_reserve,
    reserve_columns,
    reserve_columns,
    commit,
    commit,
    release,
    extend,
    fulfil,
    fulfil,
    adjust,
    adjust,
    set_on_hand,
    set_safety,
    set_backorder,
    move,
    ship,
    receive,
    cancel,
    upsert_nodes,
    upsert_groups,
)


def normalize(outcome: Any) -> Any:
    if isinstance(outcome, Rejection):
        assert outcome.message
        return Rej(outcome.code.value, outcome.reason)
    return outcome


def engine_columns(cmd: ReserveColumns, got: ReserveColumnsResult) -> list[Any]:
    """A ReserveColumns outcome per item: a Rej, or (state, replayed, expires, line answers)."""
    n = len(cmd.reservation_ids)
    counts = cmd.counts().tolist()
    assert len(got.states) == len(got.replayed) == len(got.expires_at_ms) == n
    assert len(got.held_qtys) == len(got.line_statuses) == sum(counts)
    assert all(0 <= k < n for k in got.rejections)
    out: list[Any] = []
    l0 = 0
    for k, count in enumerate(counts):
        item_lines = tuple(
            zip(got.held_qtys[l0 : l0 + count], got.line_statuses[l0 : l0 + count], strict=True)
        )
        l0 += count
        item = (got.states[k], got.replayed[k], got.expires_at_ms[k], item_lines)
        if k in got.rejections:
            # A refused item holds nothing and says so in every column.
            assert item == (int(ReservationState.REJECTED), False, 0, ((0, 0),) * count), item
            out.append(normalize(got.rejections[k]))
        else:
            out.append(item)
    return out


def model_columns(results: list[Any]) -> list[Any]:
    out: list[Any] = []
    for result in results:
        if isinstance(result, ReservationResult):
            view = result.reservation
            item_lines = tuple((x.held_qty, int(x.status)) for x in view.lines)
            out.append((int(view.state), result.replayed, view.expires_at_ms, item_lines))
        else:
            out.append(normalize(result))
    return out


def engine_positions(ledger: Ledger) -> dict[tuple[str, str], tuple[int, ...]]:
    """Every position of the engine with its eight columns, by names."""
    a = ledger._a
    count = int(a["ctr"][C_POSITIONS])
    skus = ledger._skus.names
    nodes = ledger._nodes.names
    out = {}
    for key, row in zip(a["pos_key"][:count].tolist(), a["qty"][:count].tolist(), strict=True):
        out[(skus[key >> 32], nodes[key & 0xFFFFFFFF])] = tuple(row)
    return out


def check_invariants(rows: dict[tuple[str, str], tuple[int, ...]]) -> None:
    for key, (on_hand, reserved, allocated, safety, unavailable, inbound, back, _) in rows.items():
        assert min(on_hand, reserved, allocated, safety, unavailable, inbound, back) >= 0, key
        assert unavailable <= on_hand, key
        assert reserved + allocated <= on_hand - unavailable + back, key


class LedgerVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000
        self.sent: list[Any] = []

    @initialize(
        memory=st.sampled_from(MEMORIES),
        stock=st.lists(st.tuples(st.sampled_from(SKUS), st.sampled_from(NODES), small)),
        backorder=st.lists(st.tuples(st.sampled_from(SKUS), st.sampled_from(NODES), small)),
    )
    def setup(
        self,
        memory: tuple[int, int],
        stock: list[tuple[str, str, int]],
        backorder: list[tuple[str, str, int]],
    ) -> None:
        self.window_ms, self.remembered_max = memory
        self.ledger = Ledger(ids_window_ms=self.window_ms, ids_remembered_max=self.remembered_max)
        self.model = Model(ids_window_ms=self.window_ms, ids_remembered_max=self.remembered_max)
        first: list[Any] = [
            UpsertNodes(tuple(NodeSpec(n) for n in NODES)),
            UpsertGroups(
                (
                    GroupSpec("g0", ("n0", "n1"), buffer_units=1),
                    GroupSpec("g1", ("n1", "n2"), buffer_pct=50.0),
                )
            ),
        ]
        if stock:
            receipts = tuple(Adjustment(s, n, q, AdjustReason.RECEIPT) for s, n, q in stock)
            first.append(Adjust("init", receipts))
        if backorder:
            limits_ = tuple(Setting(s, n, q) for s, n, q in backorder)
            first.append(SetBackorderLimit("init", limits_))
        self.run(0, first)

    # --- driving both -------------------------------------------------------------------------

    def run(self, step_ms: int, commands: list[Any]) -> None:
        self.now += step_ms
        self.sent.extend(commands)
        got = self.ledger.apply(self.now, commands)
        want, expired = self.model.apply(self.now, commands)
        assert len(got.results) == len(commands)
        for cmd, g, w in zip(commands, got.results, want, strict=True):
            if type(cmd) is ReserveColumns:
                assert engine_columns(cmd, g) == model_columns(w), cmd
                continue
            assert normalize(g) == w, cmd
        # Exactly the due holds expire, in expiry order (ties: the order deadlines were set).
        assert got.expired == expired
        due = [self.model.expiry_of(rid) for rid in got.expired]
        assert due == sorted(due)
        assert all(d <= self.now for d in due)

    @rule(step_ms=dt, cmd=command)
    def one(self, step_ms: int, cmd: Any) -> None:
        self.run(step_ms, [cmd])

    @rule(step_ms=dt, cmds=st.lists(command, min_size=2, max_size=6))
    def batch(self, step_ms: int, cmds: list[Any]) -> None:
        self.run(step_ms, cmds)

    @rule(
        step_ms=dt,
        cmds=st.lists(
            st.one_of(
                reserve.map(lambda r: msgspec.structs.replace(r, reservation_id="r0")),
                st.builds(Commit, st.just("r0")),
                st.builds(Release, st.just("r0")),
            ),
            min_size=2,
            max_size=5,
        ),
    )
    def same_id_in_one_batch(self, step_ms: int, cmds: list[Any]) -> None:
        self.run(step_ms, cmds)

    @rule(
        step_ms=dt,
        rid=st.sampled_from(RES_IDS),
        at=st.tuples(st.sampled_from(SKUS), st.sampled_from(NODES)),
        qtys=st.lists(small, min_size=2, max_size=4),
        backorder=st.integers(0, 8),
        damage=st.integers(0, 3),
        partial=st.booleans(),
        fulfil_lines=st.booleans(),
    )
    def pile_up_on_one_position(
        self,
        step_ms: int,
        rid: str,
        at: tuple[str, str],
        qtys: list[int],
        backorder: int,
        damage: int,
        partial: bool,
        fulfil_lines: bool,
    ) -> None:
        """Several lines for one position, promised beyond stock, damaged, then handed over."""
        s, n = at
        cmds: list[Any] = [
            SetBackorderLimit(f"bo{backorder}", (Setting(s, n, backorder),)),
            Reserve(rid, tuple(Line(s, n, q) for q in qtys), 2_000, partial),
        ]
        if damage:
            cmds.append(Adjust(f"dmg{damage}", (Adjustment(s, n, damage, AdjustReason.DAMAGE),)))
        lines = (Line(s, n, sum(qtys)),) if fulfil_lines else ()
        cmds.append(Fulfil(rid, lines))
        self.run(step_ms, cmds)

    @precondition(lambda self: self.sent)
    @rule(step_ms=dt, data=st.data())
    def resend(self, step_ms: int, data: st.DataObject) -> None:
        self.run(step_ms, [data.draw(st.sampled_from(self.sent))])

    @precondition(lambda self: any(type(c) in (Reserve, ReserveColumns) for c in self.sent))
    @rule(step_ms=dt, data=st.data())
    def resend_in_the_other_shape(self, step_ms: int, data: st.DataObject) -> None:
        """A columnar reserve retried as unary Reserves, and unary Reserves retried as one
        ReserveColumns: the same content is a replay either way."""
        sent = [c for c in self.sent if type(c) in (Reserve, ReserveColumns)]
        cmd = data.draw(st.sampled_from(sent))
        if type(cmd) is ReserveColumns:
            self.run(step_ms, list(cmd.to_reserves()))
            return
        alike = [
            c
            for c in sent
            if type(c) is Reserve
            and (c.ttl_ms, c.allow_partial, c.group_id)
            == (cmd.ttl_ms, cmd.allow_partial, cmd.group_id)
        ]
        more = data.draw(st.lists(st.sampled_from(alike), max_size=3))
        items = [(c.reservation_id, c.lines) for c in (cmd, *more)]
        self.run(step_ms, [_columns(items, cmd.ttl_ms, cmd.allow_partial, cmd.group_id)])

    @rule(step_ms=st.sampled_from((1, 500, 999, 1_000, 1_001, 2_000, 4_000, 10_000)))
    def tick(self, step_ms: int) -> None:
        self.run(step_ms, [])

    @rule()
    def snapshot_and_restore(self) -> None:
        arrays, meta = self.ledger.export_state()
        copied = {name: array.copy() for name, array in arrays.items()}
        restored = Ledger.from_state(
            copied,
            meta,
            ids_window_ms=self.window_ms,
            ids_remembered_max=self.remembered_max,
        )
        arrays2, meta2 = restored.export_state()
        assert meta2 == meta
        assert arrays2.keys() == arrays.keys()
        for name, array in arrays.items():
            assert arrays2[name].dtype == array.dtype, name
            assert arrays2[name].tobytes() == array.tobytes(), name
        self.ledger = restored

    # --- after every step -----------------------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "model"):
            return
        ledger, model = self.ledger, self.model
        rows = engine_positions(ledger)
        assert rows == {key: p.row() for key, p in model.positions.items()}
        check_invariants(rows)

        queries: list[tuple[str, str | None, str | None]] = []
        wanted = []
        for s in (*SKUS, "sX"):
            for n in (*NODES, "nX"):
                queries.append((s, n, None))
                wanted.append(model.availability_at(s, n))
            for g in (*GROUPS, "gX", None):
                queries.append((s, None, g))
                wanted.append(model.availability_in(s, g))
        for (status, q), (w_status, w_q), query in zip(
            ledger.availability(queries), wanted, queries, strict=True
        ):
            assert (status, msgspec.structs.astuple(q)) == (w_status, w_q), query
            if query[1] is not None and status == LineStatus.OK:
                raw = q.on_hand - q.reserved - q.allocated - q.safety_stock - q.unavailable
                assert q.available == max(0, raw), query

        for rid in (*RES_IDS, "rX"):
            try:
                got: Any = ledger.get_reservation(rid)
            except EngineError as e:
                got = normalize(e.rejection)
            assert got == model.get_reservation(rid), (rid, got, model.get_reservation(rid))
        for tid in TRANSFER_IDS:
            try:
                got = ledger.transfer(tid)
            except EngineError as e:
                got = normalize(e.rejection)
            assert got == model.transfer(tid), tid

        stats = ledger.stats()
        held = sum(r.state == ReservationState.HELD for r in model.reservations.values())
        assert stats["reservations_held"] == held
        assert stats["reservations_remembered"] == len(model.reservations)
        assert stats["requests_remembered"] == len(model.requests)
        assert stats["transfers_remembered"] == len(model.transfers)
        assert ledger.now_ms == model.now_ms
        assert not np.any(ledger._a["qty"][: stats["positions"], :7] < 0)


TestLedgerVsModel = LedgerVsModel.TestCase
