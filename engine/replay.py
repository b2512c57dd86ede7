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

from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

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
# The group's stream packs an entry's start as now_ms << 3 | kernel.MARK_ENTRY and an operation as
# res_index << 3 | kind: one list, one append per item.
_SHIFT = kernel.STREAM_SHIFT
_MARK = kernel.MARK_ENTRY
# An ASCII id is one byte a character.
_ID_CHARS_PLAIN_MAX = limits.ID_BYTES_MAX


def replay(
    ledger: Ledger,
    batches: Iterable[Batch],
    *,
    decoded: bool = False,
    entries_max: int = GROUP_ENTRIES_MAX,
) -> int:
    """Apply `batches` in order, leaving exactly the state `apply_batch` on each would; returns
    how many were applied. Results are not built.

    `decoded=True` promises that the batches come from `msgspec.msgpack.Decoder(Batch)` (as the
    journal's do), so every field already has its declared type.
    """
    from engine.ledger import _GROUP_UNKNOWN, _encode

    group = _Group(ledger, entries_max)
    count = 0
    # The common entry (one plain Reserve of one line, one Commit or one Release) is walked right
    # here with the group's state in locals: attribute and method lookups were most of an entry's
    # time. Every other entry goes through `_Group.add`, the reference for what this loop does.
    res_ids_get = ledger._res_ids.get
    res_ids_setdefault = ledger._res_ids.setdefault
    res_names = ledger._res_names
    res_content = ledger._res_content
    res_free = ledger._res_free
    skus_get = ledger._skus.ids.get
    nodes_get = ledger._nodes.ids.get
    groups_get = ledger._groups.ids.get
    stream = group.stream
    stream_append = stream.append
    req_extend = group.req.extend
    lines_extend = group.lines.extend
    ttl_min = limits.TTL_MS_MIN
    ttl_max = limits.TTL_MS_MAX
    qty_max = limits.QTY_MAX
    id_max = _ID_CHARS_PLAIN_MAX
    op_reserve = kernel.OP_RESERVE
    op_commit = kernel.OP_COMMIT
    op_release = kernel.OP_RELEASE
    op_touch = kernel.OP_TOUCH
    # The group's budget (see `_Group.start`): entries it may still take, and the clock it must
    # not reach; the group runs as soon as either is spent.
    clock = group.clock
    mark = clock << _SHIFT | _MARK  # the current entry's start in the stream
    left = group.left
    clock_limit = group.clock_limit
    for batch in batches:
        count += 1
        cmds: Sequence[Any] = batch.commands
        now_ms = batch.now_ms
        if len(cmds) == 1 and type(now_ms) is int:  # noqa: E721
            cmd = cmds[0]
            kind = type(cmd)
            if kind is Release or kind is Commit:
                if now_ms > clock:
                    clock = now_ms
                    mark = clock << _SHIFT | _MARK
                stream_append(mark)
                r = res_ids_get(cmd.reservation_id)
                if r is not None:
                    stream_append(r << _SHIFT | (op_release if kind is Release else op_commit))
                left -= 1
                if left <= 0 or clock >= clock_limit:
                    group.flush()
                    clock, left, clock_limit = group.clock, group.left, group.clock_limit
                    mark = clock << _SHIFT | _MARK
                continue
            if kind is Reserve:
                rid = cmd.reservation_id
                gid = cmd.group_id
                ttl_ms = cmd.ttl_ms
                lines = cmd.lines
                # `_plain_reserve` for one line, written out (the type checks only for batches
                # that were not decoded from msgpack, which gives every field its declared type).
                if (
                    decoded
                    or type(rid) is str
                    and type(gid) is str
                    and type(ttl_ms) is int
                    and type(cmd.allow_partial) is bool
                    and type(lines) is tuple
                ) and (
                    0 < len(rid) <= id_max
                    and len(gid) <= id_max
                    and ttl_min <= ttl_ms <= ttl_max
                    and len(lines) == 1
                    and (decoded or type(lines[0]) is Line)
                ):
                    line = lines[0]
                    sku = line.sku
                    node_id = line.node_id
                    qty = line.qty
                    if (
                        decoded or type(sku) is str and type(node_id) is str and type(qty) is int
                    ) and (
                        0 < len(sku) <= id_max
                        and 0 < len(node_id) <= id_max
                        and 1 <= qty <= qty_max
                        and (rid + gid + sku + node_id).isascii()
                    ):
                        if now_ms > clock:
                            clock = now_ms
                            mark = clock << _SHIFT | _MARK
                        stream_append(mark)
                        # The index a new id would get, taken only if the id is new.
                        r_new = res_free[-1] if res_free else len(res_names)
                        r = res_ids_setdefault(rid, r_new)
                        if r != r_new:  # a replay or an id conflict: nothing changes
                            stream_append(r << _SHIFT | op_touch)
                        else:
                            content = _encode(cmd)
                            if res_free:
                                res_free.pop()
                                res_names[r] = rid
                                res_content[r] = content
                            else:
                                res_names.append(rid)
                                res_content.append(content)
                            g = -1
                            if gid:
                                g = groups_get(gid, _GROUP_UNKNOWN)
                            req_extend((r, clock + ttl_ms, cmd.allow_partial, g, 1))
                            lines_extend((skus_get(sku, EMPTY), nodes_get(node_id, EMPTY), qty))
                            stream_append(r << _SHIFT | op_reserve)
                        left -= 1
                        if left <= 0 or clock >= clock_limit:
                            group.flush()
                            clock, left, clock_limit = group.clock, group.left, group.clock_limit
                            mark = clock << _SHIFT | _MARK
                        continue
        group.clock, group.left = clock, left
        if not group.add(batch):
            group.flush()
            if not group.add(batch):
                ledger.apply_batch(batch)
                group.start()  # the group's picture of the ledger is stale now
        clock, left, clock_limit = group.clock, group.left, group.clock_limit
        mark = clock << _SHIFT | _MARK
    group.flush()
    return count


def _int64s(values: list[int]) -> np.ndarray:
    return np.fromiter(values, np.int64, len(values))


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
        self.stream: list[int] = []
        self.req: list[int] = []
        self.lines: list[int] = []
        self._touched = self._fin_now = self._fin_res = _EMPTY_I64
        self.start()

    def start(self) -> None:
        """An empty group, with its budget from the ledger as it is now."""
        ledger = self._ledger
        ctr = ledger._ctr
        self.clock = ctr.item(C_NOW_MS)
        self.stream.clear()
        self._seen = 0
        self.req.clear()
        self.lines.clear()
        self._entries = 0
        self._ops = 0
        self._fresh = 0
        self._lines_total = 0
        self._held0 = ctr.item(C_HELD)
        # Fresh reserves the group may take without any risk of OVERLOADED.
        self._fresh_max = limits.RESERVATIONS_ACTIVE_MAX - 1 - self._held0
        final = ledger._final
        # Final outcomes the group may add before `_forget` could act on the count: every
        # operation and every hold live in the group may add one.
        self._finals_room = ledger._ids_remembered_max - len(final) - self._held0
        # ... and the clock at which the window could pass the oldest remembered id (any final
        # outcome added in the group is at least as late as the clock now).
        front_ms = final.first_ms() if final else self.clock
        self.clock_limit = front_ms + ledger._ids_window_ms
        # Only reachable when the state did not come from `apply` (see the module docstring);
        # then the first entry's `_compact` must run before the second entry.
        compact_due = ctr.item(C_LINES_USED) > 2 * ledger._lines_live + 65_536
        self._entries_limit = 1 if compact_due else self._entries_max
        self._budget()

    def _budget(self) -> None:
        """`left`: one-command entries (each adds at most an operation and a fresh reserve) the
        group may still take; 0 = run it now."""
        self._sync()
        room = min(
            (self._finals_room - self._ops - self._fresh) // 2,
            self._fresh_max - self._fresh,
            self._entries_limit - self._entries,
        )
        self.left = max(room, 0)

    def _sync(self, stream_array: np.ndarray | None = None) -> None:
        """Count what the fast loop added since the last look (it keeps only the lists);
        `stream_array` is the whole stream as an array when the caller has made it."""
        stream = self.stream
        if len(stream) > self._seen:
            if stream_array is None:
                new = _int64s(stream[self._seen :])
            else:
                new = stream_array[self._seen :]
            marks = int(np.count_nonzero(new & ((1 << _SHIFT) - 1) == _MARK))
            self._seen = len(stream)
            self._entries += marks
            self._ops += new.shape[0] - marks
        self._fresh = len(self.req) // rk.REQ_COLS
        self._lines_total = len(self.lines) // 3

    def add(self, batch: Batch) -> bool:
        """Walk one entry into the group; False (nothing done) if it must go through `apply`."""
        cmds: Sequence[Any] = batch.commands
        reserves = 0
        for cmd in cmds:
            kind = type(cmd)
            if kind is Reserve:
                reserves += 1
            elif kind is not Commit and kind is not Release:
                return False
        self._sync()
        if self._fresh + reserves > self._fresh_max:
            return False
        now_ms = batch.now_ms
        if type(now_ms) is not int:  # noqa: E721
            now_ms = int(now_ms)
        clock = self.clock
        if now_ms > clock:
            clock = self.clock = now_ms
        ledger = self._ledger
        res_ids = ledger._res_ids
        stream = self.stream
        stream.append(clock << _SHIFT | _MARK)
        for cmd in cmds:
            kind = type(cmd)
            rid = cmd.reservation_id
            if kind is Reserve:
                if not (self._plain(cmd) or ledger._validate_reserve(cmd) is None):
                    r = res_ids.get(rid)
                    if r is not None:
                        stream.append(r << _SHIFT | kernel.OP_TOUCH)
                    continue
                content = self._encode(cmd)
                r = res_ids.get(rid)
                if r is not None:  # a replay or an id conflict: nothing changes
                    stream.append(r << _SHIFT | kernel.OP_TOUCH)
                    continue
                r = ledger._new_res_index()
                res_ids[rid] = r
                ledger._res_names[r] = rid
                ledger._res_content[r] = content
                cmd_lines = cmd.lines
                g = -1
                if cmd.group_id:
                    g = ledger._groups.ids.get(cmd.group_id, self._group_unknown)
                self.req += (r, clock + cmd.ttl_ms, cmd.allow_partial, g, len(cmd_lines))
                skus = ledger._skus.ids
                nodes = ledger._nodes.ids
                lines = self.lines
                for line in cmd_lines:
                    lines += (skus.get(line.sku, EMPTY), nodes.get(line.node_id, EMPTY), line.qty)
                stream.append(r << _SHIFT | kernel.OP_RESERVE)
            else:
                r = res_ids.get(rid)
                if r is not None:
                    kind_op = kernel.OP_COMMIT if kind is Commit else kernel.OP_RELEASE
                    stream.append(r << _SHIFT | kind_op)
        self._budget()
        # Could `_forget` act after this entry (or is the group long enough)? Then run it now.
        if (
            self._ops + self._fresh > self._finals_room
            or clock >= self.clock_limit
            or self.left <= 0
        ):
            self.flush()
        return True

    def flush(self) -> None:
        """Run the group's entries, then what `apply` does after the last one."""
        if not self.stream:
            return
        stream = _int64s(self.stream)
        self._sync(stream)
        ledger = self._ledger
        ledger._ensure(res=len(ledger._res_names), lines=self._lines_total, heap=self._fresh)
        tracker = ledger._events
        tracker._fit(ledger)
        a = ledger._a
        # Room for every operation and every hold that could expire (kept between groups: the
        # live holds alone may number millions).
        size = self._held0 + self._fresh + self._ops + 1
        if self._touched.shape[0] < size:
            self._touched = np.empty(size + size // 4, np.int64)
            self._fin_now = np.empty(size + size // 4, np.int64)
            self._fin_res = np.empty(size + size // 4, np.int64)
        touched, fin_now, fin_res = self._touched, self._fin_now, self._fin_res
        tracked = len(tracker._groups) > 0
        events, fin, last_now = kernel.replay_stream(
            ledger._st,
            stream,
            _int64s(self.req).reshape(-1, rk.REQ_COLS),
            _int64s(self.lines).reshape(-1, 3),
            a["ev_last"],
            tracker._sku_mark if tracked else _EMPTY_U8,
            tracker._skus_out,
            tracker._groups_arr if tracked else _EMPTY_I64,
            tracker._grp_last,
            touched,
            fin_now,
            fin_res,
        )
        tracker.seq += int(events)
        if fin:
            names: list[Any] = ledger._res_names
            ledger._final.extend(
                zip(
                    fin_now[:fin].tolist(),
                    repeat("r"),
                    map(names.__getitem__, fin_res[:fin].tolist()),
                    strict=False,
                )
            )
        ledger._lines_live += self._lines_total
        ledger._forget(int(last_now))
        ledger._compact()
        self.start()
