"""Replaying many journal entries at once: the same state as `Ledger.apply_batch` entry by entry.

`replay(ledger, batches)` is what recovery (server/durability.py) runs over the journal. Each
batch stays its own entry (its clock, its expiries, its stock events, its idempotency memory),
but consecutive entries made only of Reserve / Commit / Release commands go to one kernel call
(engine/kernels/replay.py) and no result objects are built (nobody reads a replayed entry's
results, views or event rows; only the state they leave behind counts). Anything else (other
commands, or an entry where the shortcut could differ) is applied with `Ledger.apply_batch`.

How a group stays exact. Python walks the group's entries first, in order, doing what needs
Python objects exactly as `Ledger.apply` would: validating, looking ids up, handing out
reservation indexes and recording names and contents. The kernel then runs the entries one after
the other. Three things depend on outcomes only the kernel knows, and the group is cut so that
they cannot act inside it:

- forgetting ids (`Ledger._forget`) frees indexes and names that later entries look up, so it may
  only act after the group's last entry: the group ends at the first entry after which the
  idempotency memory could be full (counting every command and every live hold as a possible
  final outcome) or the window could pass its oldest id;
- compacting the line arena (`Ledger._compact`) can only become due when ids are forgotten
  (a reserve adds as many live lines as used ones), so it too can only be due at the group's end;
  the heap compaction, which a run of releases can make due anywhere, runs in the kernel;
- the live-hold limit (`RESERVATIONS_ACTIVE_MAX`): a group never carries more fresh reserves than
  the room left under it, so no reserve in it is refused as OVERLOADED.

At the end of a group the final outcomes the kernel recorded are appended to the idempotency
memory in order, the event sequence number advances by the events counted, and `_forget` and
`_compact` run as after the last entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from engine import limits
from engine.commands import Batch, Commit, Line, Release, Reserve
from engine.kernels import replay as kernel
from engine.kernels import reserve as rk
from engine.state import C_HELD, C_LINES_USED, C_NOW_MS, EMPTY

if TYPE_CHECKING:
    from engine.ledger import Ledger

__all__ = ["replay", "GROUP_ENTRIES_MAX"]

# Entries per kernel call: large enough that the call's fixed costs vanish, small enough that the
# group's Python lists stay in cache.
GROUP_ENTRIES_MAX = 8_192

_EMPTY_I64 = np.zeros(0, np.int64)
_EMPTY_U8 = np.zeros(0, np.uint8)


def replay(
    ledger: Ledger, batches: Iterable[Batch], *, entries_max: int = GROUP_ENTRIES_MAX
) -> int:
    """Apply `batches` in order, leaving exactly the state `apply_batch` on each would; returns
    how many were applied. Results are not built."""
    from engine.ledger import _GROUP_UNKNOWN, _encode

    group = _Group(ledger, entries_max)
    count = 0
    # The common entry (one plain command) is walked right here, with the group's state in
    # locals: attribute and method lookups were most of an entry's time. Everything else goes
    # through `_Group.add`, which is the reference for what this loop does.
    res_ids_get = ledger._res_ids.get
    res_ids = ledger._res_ids
    res_names = ledger._res_names
    res_content = ledger._res_content
    res_free = ledger._res_free
    skus_get = ledger._skus.ids.get
    nodes_get = ledger._nodes.ids.get
    groups_get = ledger._groups.ids.get
    op_append = group.ops.append
    req_extend = group.req.extend
    lines_extend = group.lines.extend
    entry_now = group.entry_now
    entry_now_append = entry_now.append
    entry_end_append = group.entry_op_end.append
    ops = group.ops
    ttl_min = limits.TTL_MS_MIN
    ttl_max = limits.TTL_MS_MAX
    qty_max = limits.QTY_MAX
    id_max = _ID_CHARS_PLAIN_MAX
    op_reserve = kernel.OP_RESERVE
    op_commit = kernel.OP_COMMIT
    op_release = kernel.OP_RELEASE
    op_touch = kernel.OP_TOUCH
    for batch in batches:
        count += 1
        cmds = batch.commands
        now_ms = batch.now_ms
        if len(cmds) == 1 and type(now_ms) is int:  # noqa: E721
            cmd = cmds[0]
            kind = type(cmd)
            if now_ms > group.clock:
                group.clock = now_ms
            if kind is Release or kind is Commit:
                rid = cmd.reservation_id
                if group.front_ms is None:
                    group.front_ms = group.clock
                r = res_ids_get(rid)
                if r is not None:
                    op_append(r * _OP_SHIFT + (op_release if kind is Release else op_commit))
                entry_now_append(group.clock)
                entry_end_append(len(ops))
                group.close_entry()
                continue
            if kind is Reserve:
                rid = cmd.reservation_id
                gid = cmd.group_id
                ttl_ms = cmd.ttl_ms
                lines = cmd.lines
                if (
                    type(rid) is str
                    and 0 < len(rid) <= id_max
                    and rid.isascii()
                    and type(gid) is str
                    and len(gid) <= id_max
                    and gid.isascii()
                    and type(ttl_ms) is int
                    and ttl_min <= ttl_ms <= ttl_max
                    and type(cmd.allow_partial) is bool
                    and type(lines) is tuple
                    and len(lines) == 1
                    and group.fresh_room
                ):
                    line = lines[0]
                    sku = line.sku
                    node_id = line.node_id
                    qty = line.qty
                    if (
                        type(line) is Line
                        and type(sku) is str
                        and 0 < len(sku) <= id_max
                        and sku.isascii()
                        and type(node_id) is str
                        and 0 < len(node_id) <= id_max
                        and node_id.isascii()
                        and type(qty) is int
                        and 1 <= qty <= qty_max
                    ):
                        if group.front_ms is None:
                            group.front_ms = group.clock
                        r = res_ids_get(rid)
                        if r is not None:  # a replay or an id conflict: nothing changes
                            op_append(r * _OP_SHIFT + op_touch)
                        else:
                            content = _encode(cmd)
                            if res_free:
                                r = res_free.pop()
                                res_names[r] = rid
                                res_content[r] = content
                            else:
                                r = len(res_names)
                                res_names.append(rid)
                                res_content.append(content)
                            res_ids[rid] = r
                            g = -1
                            if gid:
                                g = groups_get(gid, _GROUP_UNKNOWN)
                            req_extend((r, group.clock + ttl_ms, cmd.allow_partial, g, 1))
                            lines_extend((skus_get(sku, EMPTY), nodes_get(node_id, EMPTY), qty))
                            group.lines_total += 1
                            group.fresh += 1
                            op_append(r * _OP_SHIFT + op_reserve)
                        entry_now_append(group.clock)
                        entry_end_append(len(ops))
                        group.close_entry()
                        continue
            # Not the common shape after all: the clock is advanced again by `add` (a no-op).
        if not group.add(batch):
            group.flush()
            if not group.add(batch):
                ledger.apply_batch(batch)
                group.start()  # the group's picture of the ledger is stale now
    group.flush()
    return count


# Operations are packed as res_index * _OP_SHIFT + kind (one list append per operation).
_OP_SHIFT = 4
# An ASCII id is one byte a character.
_ID_CHARS_PLAIN_MAX = limits.ID_BYTES_MAX


class _Group:
    """Consecutive entries of plain reservation commands, walked in Python, run in one call."""

    def __init__(self, ledger: Ledger, entries_max: int) -> None:
        from engine.ledger import _GROUP_UNKNOWN, _encode, _plain_reserve

        self._ledger = ledger
        self._entries_max = entries_max
        self._encode = _encode
        self._plain = _plain_reserve
        self._group_unknown = _GROUP_UNKNOWN
        # The lists live as long as the group object (the fast loop holds their methods).
        self.entry_now: list[int] = []
        self.entry_op_end: list[int] = []
        self.ops: list[int] = []
        self.req: list[int] = []
        self.lines: list[int] = []
        self.start()

    def start(self) -> None:
        ledger = self._ledger
        ctr = ledger._ctr
        self.clock = ctr.item(C_NOW_MS)
        self.entry_now.clear()
        self.entry_op_end.clear()
        self.ops.clear()
        self.req.clear()
        self.lines.clear()
        self.lines_total = 0
        self.fresh = 0
        self._held0 = ctr.item(C_HELD)
        # Fresh reserves the group may still take without any risk of OVERLOADED.
        self._fresh_max = limits.RESERVATIONS_ACTIVE_MAX - 1 - self._held0
        self.fresh_room = self._fresh_max > 0
        final = ledger._final
        self.front_ms: int | None = final[0][0] if final else None
        # The idempotency memory's limits: a group ends where either could act. Every command and
        # every hold live in the group may add a final outcome.
        self._window_ms = ledger._ids_window_ms
        self._finals_room = ledger._ids_remembered_max - len(final) - self._held0
        # Only reachable when the state did not come from `apply` (see the module docstring);
        # then the first entry's `_compact` must run before the second entry.
        compact_due = ctr.item(C_LINES_USED) > 2 * ledger._lines_live + 65_536
        self._entries_limit = 1 if compact_due else self._entries_max

    def close_entry(self) -> None:
        """After an entry joined: run the group now if `_forget` could act after this entry."""
        front_ms = self.front_ms
        assert front_ms is not None
        if (
            len(self.ops) + self.fresh > self._finals_room
            or self.clock - self._window_ms >= front_ms
            or len(self.entry_now) >= self._entries_limit
        ):
            self.flush()
        elif self.fresh >= self._fresh_max:
            self.fresh_room = False

    def add(self, batch: Batch) -> bool:
        """Walk one entry into the group; False (nothing done) if it must go through `apply`."""
        cmds = batch.commands
        reserves = 0
        for cmd in cmds:
            kind = type(cmd)
            if kind is Reserve:
                reserves += 1
            elif kind is not Commit and kind is not Release:
                return False
        if self.fresh + reserves > self._fresh_max:
            return False
        now_ms = batch.now_ms
        if type(now_ms) is not int:  # noqa: E721
            now_ms = int(now_ms)
        clock = self.clock
        if now_ms > clock:
            clock = self.clock = now_ms
        if self.front_ms is None:
            self.front_ms = clock  # no final outcome in the group is older than this
        ledger = self._ledger
        res_ids = ledger._res_ids
        ops = self.ops
        for cmd in cmds:
            kind = type(cmd)
            rid = cmd.reservation_id
            if kind is Reserve:
                if not (self._plain(cmd) or ledger._validate_reserve(cmd) is None):
                    r = res_ids.get(rid)
                    if r is not None:
                        ops.append(r * _OP_SHIFT + kernel.OP_TOUCH)
                    continue
                content = self._encode(cmd)
                r = res_ids.get(rid)
                if r is not None:  # a replay or an id conflict: nothing changes
                    ops.append(r * _OP_SHIFT + kernel.OP_TOUCH)
                    continue
                r = ledger._new_res_index()
                res_ids[rid] = r
                ledger._res_names[r] = rid
                ledger._res_content[r] = content
                cmd_lines = cmd.lines
                count = len(cmd_lines)
                g = -1
                if cmd.group_id:
                    g = ledger._groups.ids.get(cmd.group_id, self._group_unknown)
                self.req += (r, clock + cmd.ttl_ms, cmd.allow_partial, g, count)
                skus = ledger._skus.ids
                nodes = ledger._nodes.ids
                lines = self.lines
                for line in cmd_lines:
                    lines += (skus.get(line.sku, EMPTY), nodes.get(line.node_id, EMPTY), line.qty)
                self.lines_total += count
                self.fresh += 1
                ops.append(r * _OP_SHIFT + kernel.OP_RESERVE)
            else:
                r = res_ids.get(rid)
                if r is not None:
                    kind_op = kernel.OP_COMMIT if kind is Commit else kernel.OP_RELEASE
                    ops.append(r * _OP_SHIFT + kind_op)
        self.entry_now.append(clock)
        self.entry_op_end.append(len(ops))
        self.close_entry()
        return True

    def flush(self) -> None:
        """Run the group's entries, then what `apply` does after the last one."""
        n = len(self.entry_now)
        if n == 0:
            return
        ledger = self._ledger
        ledger._ensure(res=len(ledger._res_names), lines=self.lines_total, heap=self.fresh)
        tracker = ledger._events
        tracker._fit(ledger)
        a = ledger._a
        ops = np.array(self.ops, np.int64)
        n_ops = ops.shape[0]
        held_max = self._held0 + self.fresh
        touched = np.empty(held_max + n_ops + 1, np.int64)
        fin_entry = np.empty(held_max + n_ops + 1, np.int64)
        fin_res = np.empty(held_max + n_ops + 1, np.int64)
        tracked = len(tracker._groups) > 0
        events, fin = kernel.replay_entries(
            ledger._st,
            np.array(self.entry_now, np.int64),
            np.array(self.entry_op_end, np.int64),
            ops & (_OP_SHIFT - 1),
            ops >> 2,
            np.array(self.req, np.int64).reshape(-1, rk.REQ_COLS),
            np.array(self.lines, np.int64).reshape(-1, 3),
            a["ev_last"],
            tracker._sku_mark if tracked else _EMPTY_U8,
            tracker._skus_out,
            tracker._groups_arr if tracked else _EMPTY_I64,
            tracker._grp_last,
            touched,
            fin_entry,
            fin_res,
        )
        tracker.seq += int(events)
        if fin:
            names = ledger._res_names
            ledger._final.extend(
                zip(
                    map(self.entry_now.__getitem__, fin_entry[:fin].tolist()),
                    repeat("r"),
                    map(names.__getitem__, fin_res[:fin].tolist()),
                    strict=False,
                )
            )
        ledger._lines_live += self.lines_total
        ledger._forget(self.entry_now[-1])
        ledger._compact()
        self.start()
