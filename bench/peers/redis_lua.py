"""Peer (a): stock on Redis with Lua scripts, the usual flash-sale design.

One EVALSHA per reserve (`reserve.lua`): check every line's available units in per-SKU hashes,
decrement all or none, record the hold with its expiry in a sorted set; holds past their expiry are
given back lazily by whichever script runs next (at most 32 per call). Commit and release are one
EVALSHA each, availability one EVALSHA (so it sees lazily expired holds too).

Many reserves at once (`reserve_many`, what the front calls for `ReserveBatch`) are ONE EVALSHA of
the batch script: the same `reserve_one` per reservation in order, each all or nothing and
idempotent on its own (a later duplicate id in the batch replays or conflicts with the earlier
one), answered as one compact bulk string so the Python side parses one reply, not one per
reservation. The prelude (clock, lazy expiry) runs once per script call.

Single-instance Redis only: the scripts compute their key names, which Redis Cluster forbids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat
from pathlib import Path

import redis.asyncio as aioredis

from bench.peers import (
    Columns,
    Outcome,
    columns_result,
    conflict,
    make_result,
    not_found,
    validate_reserve,
    wrong_state,
)
from engine import limits
from engine.codes import ReservationState
from engine.commands import Commit, Line, Release, Reserve, ReserveColumns, ReserveColumnsResult
from engine.errors import Code, Rejection

__all__ = [
    "AVAILABILITY_LUA",
    "RESERVE_BATCH_LUA",
    "RESERVE_LUA",
    "TRANSITION_LUA",
    "RedisLuaBackend",
    "reserve_args",
    "reserve_batch_args",
]

_SOURCE = (Path(__file__).parent / "reserve.lua").read_text()
_PRELUDE, _MARK, _ = _SOURCE.partition("-- @reserve")
assert _MARK, "reserve.lua lost its @reserve marker"
_FUNCTIONS, _MARK, _ = _SOURCE.partition("-- @single")
assert _MARK, "reserve.lua lost its @single marker"
RESERVE_LUA = _SOURCE

# ARGV: prefix, now_ms, batch: ONE string, the fields "count", then per reservation "id", "ttl_ms",
# "n", "sku_1", "node_1", "qty_1", ... joined by \x1f (a string the client joins and the script
# splits at C speed, instead of one RESP argument per field that the client packs in Python).
# Returns one string: per reservation "state replayed expires_ms created_ms statuses" (statuses
# comma-separated) or "-1" (ID_CONFLICT), joined by ';'.
RESERVE_BATCH_LUA = (
    _FUNCTIONS
    + """
local F = {}
local f = 0
for part in string.gmatch(ARGV[3], '[^\\31]+') do
  f = f + 1
  F[f] = part
end
local out = {}
local a = 2
for r = 1, tonumber(F[1]) do
  local n = F[a + 2]
  local res = reserve_one(F[a], F[a + 1], n, F, a + 3)
  if res[1] == -1 then
    out[r] = '-1'
  else
    out[r] = res[1] .. ' ' .. res[2] .. ' ' .. res[3] .. ' ' .. res[4] .. ' ' .. res[5]
  end
  a = a + 3 + 3 * tonumber(n)
end
return table.concat(out, ';')
"""
)

# ARGV: prefix, now_ms, reservation_id, action ('c' commit | 'r' release).
# Returns {state, replayed, expires_ms, created_ms, statuses, content}; {-2} NOT_FOUND;
# {-3, state} WRONG_STATE.
TRANSITION_LUA = (
    _PRELUDE
    + """
local rid = ARGV[3]
local rk = P .. 'r:' .. rid
local cur = redis.call('HMGET', rk, 'st', 'x', 't', 's', 'c')
if not cur[1] then return {-2} end
local st, x = tonumber(cur[1]), tonumber(cur[2])
if st == 1 and x <= now then  -- due but not yet swept: expire it first, as the engine does
  give_back(cur[5])
  redis.call('HSET', rk, 'st', 5, 'x', 0)
  redis.call('PEXPIRE', rk, WINDOW_MS)
  redis.call('ZREM', P .. 'holds', rid)
  st, x = 5, 0
end
if ARGV[4] == 'c' then
  if st == 2 or st == 3 then return {st, 1, 0, tonumber(cur[3]), cur[4], cur[5]} end
  if st ~= 1 then return {-3, st} end
  redis.call('HSET', rk, 'st', 2, 'x', 0)
  redis.call('ZREM', P .. 'holds', rid)
  return {2, 0, 0, tonumber(cur[3]), cur[4], cur[5]}
end
if st ~= 1 and st ~= 2 then return {st, 1, 0, tonumber(cur[3]), cur[4], cur[5]} end
give_back(cur[5])
redis.call('HSET', rk, 'st', 4, 'x', 0)
redis.call('ZREM', P .. 'holds', rid)
redis.call('PEXPIRE', rk, WINDOW_MS)
return {4, 0, 0, tonumber(cur[3]), cur[4], cur[5]}
"""
)

# ARGV: prefix, now_ms, sku, node_1, node_2, ... Returns available per node (false = unknown).
AVAILABILITY_LUA = (
    _PRELUDE
    + """
return redis.call('HMGET', P .. 's:' .. ARGV[3], unpack(ARGV, 4))
"""
)

SEP = "\x1f"
_HELD = int(ReservationState.HELD)
_HOLDING = frozenset({_HELD, int(ReservationState.COMMITTED)})

LOAD_CHUNK_ROWS = 10_000
POOL_CONNECTIONS_MAX = 64


def reserve_args(prefix: str, cmd: Reserve, now_ms: int = 0) -> list[str | int]:
    args: list[str | int] = [prefix, now_ms, cmd.reservation_id, cmd.ttl_ms, len(cmd.lines)]
    for line in cmd.lines:
        args += (line.sku, line.node_id, line.qty)
    return args


def reserve_batch_args(prefix: str, cmds: Sequence[Reserve], now_ms: int = 0) -> list[str | int]:
    fields: list[str | int] = [len(cmds)]
    for cmd in cmds:
        fields += (cmd.reservation_id, cmd.ttl_ms, len(cmd.lines))
        for line in cmd.lines:
            fields += (line.sku, line.node_id, line.qty)
    return [prefix, now_ms, SEP.join(map(str, fields))]


def _separator_in(cmd: Reserve) -> Rejection | None:
    """The scripts keep a reservation's content as fields joined by \x1f: no field may hold one."""
    if SEP in cmd.reservation_id or any(SEP in ln.sku or SEP in ln.node_id for ln in cmd.lines):
        return Rejection(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                         "ids may not contain \\x1f on the redis-lua peer")  # fmt: skip
    return None


def _plain_ids(column: Sequence[str]) -> bool:
    """Every id is 1..ID_BYTES_MAX ASCII characters (checked at C speed)."""
    if not "".join(column).isascii():
        return False
    lengths = list(map(len, column))
    return min(lengths) >= 1 and max(lengths) <= limits.ID_BYTES_MAX


def _parse_lines(content: bytes) -> list[Line]:
    f = content.split(b"\x1f")
    n = int(f[1])
    return [Line(f[2 + 3 * i].decode(), f[3 + 3 * i].decode(), int(f[4 + 3 * i])) for i in range(n)]


def _result(rid: str, reply: list, lines: Sequence[Line] | None) -> Outcome:
    state, replayed, expires, created, statuses, content = reply
    if lines is None:
        lines = _parse_lines(content)
    return make_result(
        rid,
        int(state),
        lines,
        [int(s) for s in statuses.split(b",")],
        int(expires),
        int(created),
        bool(replayed),
    )


class RedisLuaBackend:
    name = "redis-lua"

    def __init__(self, url: str, prefix: str = "os:", max_connections: int = 32) -> None:
        self.prefix = prefix
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=min(max_connections, POOL_CONNECTIONS_MAX), timeout=30
        )
        self._pool = pool
        self._redis = aioredis.Redis(connection_pool=pool)
        self._sha: dict[str, str] = {}

    async def _eval(self, name: str, source: str, args: Sequence[str | int]) -> list:
        sha = self._sha.get(name)
        if sha is None:
            sha = self._sha[name] = await self._redis.script_load(source)
        return await self._redis.evalsha(sha, 0, *args)

    async def load(self, positions: Iterable[tuple[str, str, int]]) -> int:
        keys = [k async for k in self._redis.scan_iter(match=self.prefix + "*", count=1000)]
        for a in range(0, len(keys), LOAD_CHUNK_ROWS):
            await self._redis.unlink(*keys[a : a + LOAD_CHUNK_ROWS])
        rows = 0
        pipe = self._redis.pipeline(transaction=False)
        for sku, node_id, on_hand in positions:
            pipe.hset(self.prefix + "s:" + sku, node_id, on_hand)
            rows += 1
            if rows % LOAD_CHUNK_ROWS == 0:
                await pipe.execute()
        await pipe.execute()
        return rows

    async def reserve(self, cmd: Reserve, now_ms: int = 0) -> Outcome:
        bad = validate_reserve(cmd) or _separator_in(cmd)
        if bad is not None:
            return bad
        reply = await self._eval("reserve", RESERVE_LUA, reserve_args(self.prefix, cmd, now_ms))
        if reply[0] == -1:
            return conflict(cmd.reservation_id)
        return _result(cmd.reservation_id, reply, cmd.lines)

    async def reserve_many(self, cmds: Sequence[Reserve], now_ms: int = 0) -> list[Outcome]:
        out: list[Outcome] = []
        valid: list[Reserve] = []
        for cmd in cmds:
            bad = validate_reserve(cmd) or _separator_in(cmd)
            out.append(bad)  # type: ignore[arg-type] - None is filled in below
            if bad is None:
                valid.append(cmd)
        if not valid:
            return out
        args = reserve_batch_args(self.prefix, valid, now_ms)
        items = iter((await self._eval("reserve_batch", RESERVE_BATCH_LUA, args)).split(b";"))
        for i, cmd in enumerate(cmds):
            if out[i] is not None:
                continue
            item = next(items)
            if item == b"-1":
                out[i] = conflict(cmd.reservation_id)
                continue
            state, replayed, expires, created, statuses = item.split(b" ")
            out[i] = make_result(
                cmd.reservation_id,
                int(state),
                cmd.lines,
                [int(s) for s in statuses.split(b",")],
                int(expires),
                int(created),
                replayed == b"1",
            )
        assert next(items, None) is None, "batch script answered more items than it was sent"
        return out

    async def reserve_columns(self, cmd: ReserveColumns, now_ms: int = 0) -> ReserveColumnsResult:
        """A `ReserveColumns` (what ReserveBatch sends) straight from its columns to the batch
        script and back to a `ReserveColumnsResult`: the same script and outcomes as
        `reserve_many(cmd.to_reserves())`, without a Python object per reservation. Anything a
        Reserve would be refused for goes the `reserve_many` way, which words each refusal."""
        ids = cmd.reservation_ids
        counts = cmd.counts()
        qtys = cmd.qty_column()
        skus, node_ids = cmd.skus, cmd.node_ids
        if not (
            ids
            and cmd.consistent()
            and not cmd.allow_partial
            and not cmd.group_id
            and limits.TTL_MS_MIN <= cmd.ttl_ms <= limits.TTL_MS_MAX
            and int(counts.min()) >= 1
            and int(counts.max()) <= limits.REQUEST_LINES_MAX
            and int(qtys.min()) >= 1
            and int(qtys.max()) <= limits.QTY_MAX
            and all(_plain_ids(column) for column in (ids, skus, node_ids))
        ):
            return columns_result(await self.reserve_many(cmd.to_reserves(), now_ms), counts)
        ttl = str(cmd.ttl_ms)
        count_list = counts.tolist()
        qty_strs = list(map(str, qtys.tolist()))
        fields = [str(len(ids))]
        if int(counts.max()) == 1:  # one line each: the columns interleave without a loop
            rows = zip(ids, repeat(ttl), repeat("1"), skus, node_ids, qty_strs)
            fields += [x for row in rows for x in row]
        else:
            l0 = 0
            for rid, c in zip(ids, count_list, strict=True):
                fields += (rid, ttl, str(c))
                for j in range(l0, l0 + c):
                    fields += (skus[j], node_ids[j], qty_strs[j])
                l0 += c
        batch = SEP.join(fields)
        if batch.count(SEP) != len(fields) - 1:  # an id holds the separator: refuse it per item
            return columns_result(await self.reserve_many(cmd.to_reserves(), now_ms), counts)
        args = [self.prefix, now_ms, batch]
        reply = await self._eval("reserve_batch", RESERVE_BATCH_LUA, args)
        cols = Columns()
        states, replayed, expires_at_ms = cols.states, cols.replayed, cols.expires_at_ms
        held_qtys, line_statuses = cols.held_qtys, cols.line_statuses
        l0 = 0
        for k, (item, c) in enumerate(zip(reply.split(b";"), count_list, strict=True)):
            if item == b"-1":
                cols.reject(k, conflict(ids[k]), c)
                l0 += c
                continue
            state_b, replayed_b, expires_b, _, statuses_b = item.split(b" ")
            state = int(state_b)
            states.append(state)
            replayed.append(replayed_b == b"1")
            expires_at_ms.append(int(expires_b) if state == _HELD else 0)
            line_statuses += map(int, statuses_b.split(b","))
            if state in _HOLDING:
                held_qtys += qtys[l0 : l0 + c].tolist()
            else:
                held_qtys += [0] * c
            l0 += c
        return cols.result()

    async def _transition(self, rid: str, action: str, now_ms: int) -> Outcome:
        reply = await self._eval("transition", TRANSITION_LUA, [self.prefix, now_ms, rid, action])
        if reply[0] == -2:
            return not_found(rid)
        if reply[0] == -3:
            return wrong_state(rid, ReservationState(int(reply[1])), "committed")
        return _result(rid, reply, None)

    async def commit(self, cmd: Commit, now_ms: int = 0) -> Outcome:
        return await self._transition(cmd.reservation_id, "c", now_ms)

    async def release(self, cmd: Release, now_ms: int = 0) -> Outcome:
        return await self._transition(cmd.reservation_id, "r", now_ms)

    async def availability(
        self, sku: str, node_ids: Sequence[str], now_ms: int = 0
    ) -> list[int | None]:
        if not node_ids:
            return []
        reply = await self._eval(
            "availability", AVAILABILITY_LUA, [self.prefix, now_ms, sku, *node_ids]
        )
        return [None if v is None else max(0, int(v)) for v in reply]

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()
