"""Peer (b): stock on PostgreSQL with `SELECT … FOR UPDATE` row locks (Saleor/Medusa style).

A reserve is one transaction from the application: claim the reservation id (INSERT … ON CONFLICT
DO NOTHING, which waits for a concurrent claimer of the same id), lock the positions of its lines
in (sku, node_id) order — one order for every path, so transactions never deadlock — check, then
update `held` and insert the lines. Holds past their expiry are given back lazily by a short
transaction before each reserve, commit and release (at most 16, `FOR UPDATE SKIP LOCKED`).

Many reserves at once (`reserve_many`, what the front calls for `ReserveBatch`) are ONE
transaction: claim every id, lock every position the batch touches in the same (sku, node_id)
order, judge each reservation all or nothing in batch order, then update `held`, insert the lines
and record the outcomes with one statement each.

Durability: `synchronous_commit` on (the default: a commit waits for its WAL flush) or off per
session (`synchronous_commit=False`: a commit returns before the flush; the WAL writer flushes
within `wal_writer_delay`, 200 ms by default, and a crash may lose that window but never
corrupts).

Connections: psycopg 3 async, a small fixed pool (`psycopg_pool` is not a dependency, so the pool
is a queue of `AsyncConnection`s here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import psycopg

from bench.peers import (
    Outcome,
    conflict,
    make_result,
    not_found,
    validate_reserve,
    wrong_state,
)
from engine.codes import LineStatus, ReservationState
from engine.commands import Commit, Line, Release, ReservationResult, Reserve

__all__ = ["SCHEMA_SQL", "PostgresBackend"]

POOL_CONNECTIONS_MAX = 64
EXPIRE_BATCH_MAX = 16
DEADLOCK_RETRIES_MAX = 3  # never expected (one lock order), but a peer must not fail a bench

SCHEMA_SQL = """
DROP TABLE IF EXISTS bench_reservation_lines, bench_reservations, bench_positions;
CREATE TABLE bench_positions (
    sku text NOT NULL,
    node_id text NOT NULL,
    on_hand bigint NOT NULL,
    held bigint NOT NULL DEFAULT 0 CHECK (held >= 0 AND held <= on_hand),
    PRIMARY KEY (sku, node_id)
);
CREATE TABLE bench_reservations (
    id text PRIMARY KEY,
    state smallint NOT NULL,
    content text NOT NULL,
    expires_ms bigint NOT NULL,
    created_ms bigint NOT NULL,
    statuses smallint[] NOT NULL
);
CREATE INDEX bench_reservations_due ON bench_reservations (expires_ms) WHERE state = 1;
CREATE TABLE bench_reservation_lines (
    reservation_id text NOT NULL,
    line_no int NOT NULL,
    sku text NOT NULL,
    node_id text NOT NULL,
    qty bigint NOT NULL,
    PRIMARY KEY (reservation_id, line_no)
);
"""

_LOCK_LINES = """
SELECT p.sku, p.node_id FROM bench_positions p
JOIN (SELECT DISTINCT sku, node_id FROM bench_reservation_lines WHERE reservation_id = %s) l
  USING (sku, node_id)
ORDER BY p.sku, p.node_id FOR UPDATE OF p
"""
_GIVE_BACK = """
UPDATE bench_positions p SET held = p.held - l.q
FROM (SELECT sku, node_id, sum(qty) AS q FROM bench_reservation_lines
      WHERE reservation_id = %s GROUP BY sku, node_id) l
WHERE p.sku = l.sku AND p.node_id = l.node_id
"""


def _content(cmd: Reserve) -> str:
    parts = [str(cmd.ttl_ms), str(len(cmd.lines))]
    for line in cmd.lines:
        parts += (line.sku, line.node_id, str(line.qty))
    return "\x1f".join(parts)


def _lines(content: str) -> list[Line]:
    f = content.split("\x1f")
    return [Line(f[2 + 3 * i], f[3 + 3 * i], int(f[4 + 3 * i])) for i in range(int(f[1]))]


def _need(lines: Sequence[Line]) -> dict[tuple[str, str], int]:
    """Units asked per (sku, node): lines for one position are judged on their sum."""
    need: dict[tuple[str, str], int] = {}
    for line in lines:
        key = (line.sku, line.node_id)
        need[key] = need.get(key, 0) + line.qty
    return need


def _judge(
    lines: Sequence[Line], need: dict[tuple[str, str], int], avail: dict[tuple[str, str], int]
) -> list[LineStatus]:
    """Each line's status against the locked rows' availability (missing row: UNKNOWN_SKU)."""
    statuses = []
    for line in lines:
        key = (line.sku, line.node_id)
        a = avail.get(key)
        if a is None:
            statuses.append(LineStatus.UNKNOWN_SKU)
        elif a < need[key]:
            statuses.append(LineStatus.INSUFFICIENT)
        else:
            statuses.append(LineStatus.OK)
    return statuses


def _now_ms(now_ms: int) -> int:
    return now_ms or int(time.time() * 1000)


class PostgresBackend:
    name = "postgres"

    def __init__(self, conninfo: str, pool_size: int = 8, synchronous_commit: bool = True) -> None:
        self.conninfo = conninfo
        self.synchronous_commit = synchronous_commit
        self.deadlock_retries = 0  # stays 0 unless the one-lock-order rule is broken somewhere
        self.pool_size = min(max(1, pool_size), POOL_CONNECTIONS_MAX)
        self._idle: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        self._all: list[psycopg.AsyncConnection] = []

    async def open(self) -> PostgresBackend:
        for _ in range(self.pool_size - len(self._all)):
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            if not self.synchronous_commit:
                await conn.execute("SET synchronous_commit = off")
            self._all.append(conn)
            self._idle.put_nowait(conn)
        return self

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if not self._all:
            await self.open()
        conn = await self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        conns, self._all = self._all, []
        while not self._idle.empty():
            self._idle.get_nowait()
        for conn in conns:
            await conn.close()

    async def load(self, positions: Iterable[tuple[str, str, int]]) -> int:
        rows = 0
        async with self._conn() as conn:
            await conn.execute(SCHEMA_SQL)
            async with conn.cursor() as cur:
                copy_sql = "COPY bench_positions (sku, node_id, on_hand) FROM STDIN"
                async with cur.copy(copy_sql) as copy:
                    for row in positions:
                        await copy.write_row(row)
                        rows += 1
            await conn.execute("ANALYZE bench_positions")
        return rows

    async def _expire_due(self, conn: psycopg.AsyncConnection, now: int) -> None:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT id FROM bench_reservations WHERE state = 1 AND expires_ms <= %s "
                "ORDER BY expires_ms LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, EXPIRE_BATCH_MAX),
            )
            for (rid,) in await cur.fetchall():
                await self._give_back(conn, rid, ReservationState.EXPIRED)

    async def _give_back(self, conn: psycopg.AsyncConnection, rid: str, state: int) -> None:
        await conn.execute(_LOCK_LINES, (rid,))
        await conn.execute(_GIVE_BACK, (rid,))
        await conn.execute(
            "UPDATE bench_reservations SET state = %s, expires_ms = 0 WHERE id = %s", (state, rid)
        )

    async def _retrying(self, fn, *args):  # type: ignore[no-untyped-def]
        for attempt in range(DEADLOCK_RETRIES_MAX + 1):
            try:
                async with self._conn() as conn:
                    return await fn(conn, *args)
            except psycopg.errors.DeadlockDetected:
                self.deadlock_retries += 1
                if attempt == DEADLOCK_RETRIES_MAX:
                    raise
        raise AssertionError("unreachable")

    async def reserve(self, cmd: Reserve, now_ms: int = 0) -> Outcome:
        bad = validate_reserve(cmd)
        if bad is not None:
            return bad
        return await self._retrying(self._reserve, cmd, _now_ms(now_ms))

    async def _reserve(self, conn: psycopg.AsyncConnection, cmd: Reserve, now: int) -> Outcome:
        await self._expire_due(conn, now)
        rid, content = cmd.reservation_id, _content(cmd)
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO bench_reservations VALUES (%s, 0, %s, 0, %s, '{}') "
                "ON CONFLICT (id) DO NOTHING RETURNING 1",
                (rid, content, now),
            )
            if await cur.fetchone() is None:
                cur = await conn.execute(
                    "SELECT state, content, expires_ms, created_ms, statuses "
                    "FROM bench_reservations WHERE id = %s",
                    (rid,),
                )
                row = await cur.fetchone()
                assert row is not None
                state, old, expires, created, statuses = row
                if old != content:
                    return conflict(rid)
                return make_result(rid, state, cmd.lines, statuses, expires, created, True)
            need = _need(cmd.lines)
            keys = sorted(need)
            cur = await conn.execute(
                "SELECT sku, node_id, on_hand - held FROM bench_positions "
                "WHERE (sku, node_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                "ORDER BY sku, node_id FOR UPDATE",
                ([k[0] for k in keys], [k[1] for k in keys]),
            )
            avail = {(s, n): a for s, n, a in await cur.fetchall()}
            statuses = _judge(cmd.lines, need, avail)
            ok = all(s == LineStatus.OK for s in statuses)
            state, expires = ReservationState.REJECTED, 0
            if ok:
                state, expires = ReservationState.HELD, now + cmd.ttl_ms
                await conn.execute(
                    "UPDATE bench_positions p SET held = p.held + v.q FROM "
                    "(SELECT unnest(%s::text[]) s, unnest(%s::text[]) n, unnest(%s::bigint[]) q) v "
                    "WHERE p.sku = v.s AND p.node_id = v.n",
                    ([k[0] for k in keys], [k[1] for k in keys], [need[k] for k in keys]),
                )
                await conn.execute(
                    "INSERT INTO bench_reservation_lines "
                    "SELECT %s, i, s, n, q FROM unnest(%s::int[], %s::text[], %s::text[], "
                    "%s::bigint[]) AS t(i, s, n, q)",
                    (
                        rid,
                        list(range(len(cmd.lines))),
                        [ln.sku for ln in cmd.lines],
                        [ln.node_id for ln in cmd.lines],
                        [ln.qty for ln in cmd.lines],
                    ),
                )
            await conn.execute(
                "UPDATE bench_reservations SET state = %s, expires_ms = %s, statuses = %s "
                "WHERE id = %s",
                (int(state), expires, [int(s) for s in statuses], rid),
            )
        return make_result(rid, state, cmd.lines, statuses, expires, now, False)

    async def reserve_many(self, cmds: Sequence[Reserve], now_ms: int = 0) -> list[Outcome]:
        out: list[Outcome | None] = [validate_reserve(cmd) for cmd in cmds]
        valid = [cmd for cmd, bad in zip(cmds, out, strict=True) if bad is None]
        if valid:
            results = iter(await self._retrying(self._reserve_batch, valid, _now_ms(now_ms)))
            out = [next(results) if bad is None else bad for bad in out]
        return out  # type: ignore[return-value]

    async def _reserve_batch(
        self, conn: psycopg.AsyncConnection, cmds: Sequence[Reserve], now: int
    ) -> list[Outcome]:
        """One transaction for many reservations, each all or nothing on its own, judged in
        batch order against the running availability. Locks are taken in one global order —
        reservation ids sorted (the claiming INSERT), then positions sorted — so concurrent
        batches (and single reserves, which follow the same order) never deadlock."""
        await self._expire_due(conn, now)
        contents = [_content(cmd) for cmd in cmds]
        first: dict[str, int] = {}
        for k, cmd in enumerate(cmds):
            first.setdefault(cmd.reservation_id, k)
        ids = sorted(first)
        results: list[Outcome | None] = [None] * len(cmds)
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO bench_reservations (id, state, content, expires_ms, created_ms, "
                "statuses) SELECT id, 0, c, 0, %s, '{}' FROM unnest(%s::text[], %s::text[]) "
                "AS t(id, c) ORDER BY id ON CONFLICT (id) DO NOTHING RETURNING id",
                (now, ids, [contents[first[rid]] for rid in ids]),
            )
            claimed = {rid for (rid,) in await cur.fetchall()}
            stored: dict[str, tuple] = {}
            if len(claimed) < len(ids):
                cur = await conn.execute(
                    "SELECT id, state, content, expires_ms, created_ms, statuses "
                    "FROM bench_reservations WHERE id = ANY(%s)",
                    ([rid for rid in ids if rid not in claimed],),
                )
                stored = {row[0]: row[1:] for row in await cur.fetchall()}
            keys = sorted(
                {(ln.sku, ln.node_id) for rid in claimed for ln in cmds[first[rid]].lines}
            )
            avail: dict[tuple[str, str], int] = {}
            if keys:
                cur = await conn.execute(
                    "SELECT sku, node_id, on_hand - held FROM bench_positions "
                    "WHERE (sku, node_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                    "ORDER BY sku, node_id FOR UPDATE",
                    ([k[0] for k in keys], [k[1] for k in keys]),
                )
                avail = {(s, n): a for s, n, a in await cur.fetchall()}
            taken: dict[tuple[str, str], int] = {}
            line_rows: tuple[list, list, list, list, list] = ([], [], [], [], [])
            updates: tuple[list, list, list, list] = ([], [], [], [])
            for k, cmd in enumerate(cmds):
                rid = cmd.reservation_id
                f = first[rid]
                if f != k:  # the same id earlier in this batch
                    earlier = results[f]
                    if contents[k] != contents[f] or not isinstance(earlier, ReservationResult):
                        results[k] = conflict(rid)
                    else:
                        results[k] = ReservationResult(earlier.reservation, True)
                    continue
                if rid not in claimed:
                    state, old, expires, created, statuses = stored[rid]
                    results[k] = (
                        conflict(rid)
                        if old != contents[k]
                        else make_result(rid, state, cmd.lines, statuses, expires, created, True)
                    )
                    continue
                need = _need(cmd.lines)
                statuses = _judge(cmd.lines, need, avail)
                state, expires = ReservationState.REJECTED, 0
                if all(s == LineStatus.OK for s in statuses):
                    state, expires = ReservationState.HELD, now + cmd.ttl_ms
                    for key, q in need.items():
                        avail[key] -= q
                        taken[key] = taken.get(key, 0) + q
                    for i, line in enumerate(cmd.lines):
                        for column, value in zip(
                            line_rows, (rid, i, line.sku, line.node_id, line.qty), strict=True
                        ):
                            column.append(value)
                codes = [int(s) for s in statuses]
                for column, value in zip(
                    updates,
                    (rid, int(state), expires, "{" + ",".join(map(str, codes)) + "}"),
                    strict=True,
                ):
                    column.append(value)
                results[k] = make_result(rid, state, cmd.lines, codes, expires, now, False)
            if taken:
                tkeys = sorted(taken)
                await conn.execute(
                    "UPDATE bench_positions p SET held = p.held + v.q FROM "
                    "(SELECT unnest(%s::text[]) s, unnest(%s::text[]) n, unnest(%s::bigint[]) q) v "
                    "WHERE p.sku = v.s AND p.node_id = v.n",
                    ([k[0] for k in tkeys], [k[1] for k in tkeys], [taken[k] for k in tkeys]),
                )
            if line_rows[0]:
                await conn.execute(
                    "INSERT INTO bench_reservation_lines SELECT * FROM unnest(%s::text[], "
                    "%s::int[], %s::text[], %s::text[], %s::bigint[])",
                    line_rows,
                )
            if updates[0]:
                await conn.execute(
                    "UPDATE bench_reservations r SET state = v.st, expires_ms = v.x, "
                    "statuses = v.s::smallint[] FROM unnest(%s::text[], %s::smallint[], "
                    "%s::bigint[], %s::text[]) AS v(id, st, x, s) WHERE r.id = v.id",
                    updates,
                )
        return results  # type: ignore[return-value]

    async def _transition(
        self, conn: psycopg.AsyncConnection, rid: str, action: str, now: int
    ) -> Outcome:
        await self._expire_due(conn, now)
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT state, content, expires_ms, created_ms, statuses "
                "FROM bench_reservations WHERE id = %s FOR UPDATE",
                (rid,),
            )
            row = await cur.fetchone()
            if row is None:
                return not_found(rid)
            state, content, expires, created, statuses = row
            if state == ReservationState.HELD and expires <= now:
                await self._give_back(conn, rid, ReservationState.EXPIRED)
                state = ReservationState.EXPIRED
            lines = _lines(content)
            if action == "commit":
                if state in (ReservationState.COMMITTED, ReservationState.FULFILLED):
                    return make_result(rid, state, lines, statuses, 0, created, True)
                if state != ReservationState.HELD:
                    return wrong_state(rid, state, "committed")
                await conn.execute(
                    "UPDATE bench_reservations SET state = 2, expires_ms = 0 WHERE id = %s", (rid,)
                )
                state = ReservationState.COMMITTED
                return make_result(rid, state, lines, statuses, 0, created, False)
            if state not in (ReservationState.HELD, ReservationState.COMMITTED):
                return make_result(rid, state, lines, statuses, 0, created, True)
            await self._give_back(conn, rid, ReservationState.RELEASED)
            return make_result(rid, ReservationState.RELEASED, lines, statuses, 0, created, False)

    async def commit(self, cmd: Commit, now_ms: int = 0) -> Outcome:
        return await self._retrying(self._transition, cmd.reservation_id, "commit", _now_ms(now_ms))

    async def release(self, cmd: Release, now_ms: int = 0) -> Outcome:
        return await self._retrying(
            self._transition, cmd.reservation_id, "release", _now_ms(now_ms)
        )

    async def availability(
        self, sku: str, node_ids: Sequence[str], now_ms: int = 0
    ) -> list[int | None]:
        if not node_ids:
            return []
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT node_id, on_hand - held FROM bench_positions "
                "WHERE sku = %s AND node_id = ANY(%s)",
                (sku, list(node_ids)),
            )
            found = {n: max(0, int(a)) for n, a in await cur.fetchall()}
        return [found.get(n) for n in node_ids]
