"""The ids the ledger remembers: `IdTable` maps each id (a str) to its dense index, and
`FinalIds` lists the ids with a final outcome, oldest first, until they are forgotten.

`IdTable`: the map from a client's id to its dense index, for millions of ids.

The ledger remembers every reservation id it has seen within the idempotency window, millions of
them during a sale. A dict did that at ~0.3-0.7 µs per new id (a DRAM miss or two per insert,
and a rehash into fresh memory each time it doubled), which was the largest cost of a columnar
reserve. This table keeps `(hash(key), value)` pairs in one numpy array
(`engine/kernels/ids.py`), so a batch of new ids is checked and inserted by two kernel calls with
the misses of neighbouring ids overlapped, and single lookups stay in Python (a memoryview over
the same array; no kernel dispatch per id).

The keys themselves are not stored: `keys[value]` is the key of `value`, a list the owner keeps
anyway (the ledger's reservation names). A lookup is a probe for equal hashes whose key compares
equal, so two keys with the same 64-bit hash are still told apart. `hash(str)` is salted per
process: the table is rebuilt on recovery and never written to a snapshot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from engine.kernels import ids as kernel
from engine.state import aligned_full

__all__ = ["FinalIds", "IdTable"]

_H, _V, _VACANT = kernel.H, kernel.V, kernel.VACANT
# The hash of a key. A module global, so tests can swap in one that collides a lot; a global is
# also found before the builtin.
_hash = hash
_SLOTS_MIN = 1024


def _slots_for(count: int) -> int:
    """Slots for `count` entries at most half full (a power of two)."""
    return max(_SLOTS_MIN, 1 << (2 * count - 1).bit_length())


class IdTable:
    """A `dict[str, int]` of non-negative values where `keys[value] == key` for every entry.

    `keys` is the owner's list, read (never written) by the table; an entry must be added after
    or together with its key, and removed before its key is cleared.
    """

    __slots__ = ("_keys", "_slots", "_hv", "_vv", "_mask", "_count")

    def __init__(self, keys: list[str | None]) -> None:
        """A table of every `keys[value]` that is not None (as `from_state` rebuilds it)."""
        self._keys = keys
        self._count = 0
        self._set_slots(aligned_full((_SLOTS_MIN, 2), _VACANT, np.int64))
        present = [k for k in keys if k is not None]
        if present:
            values = np.array([v for v, k in enumerate(keys) if k is not None], np.int64)
            self.reserve(len(present))
            kernel.put_all(self._slots, self._hashes(present), values)
            self._count = len(present)

    def _set_slots(self, slots: np.ndarray) -> None:
        self._slots = slots
        self._mask = slots.shape[0] - 1
        # Memoryviews over the two columns: an element read is a Python int at C speed (numpy's
        # scalar indexing costs several times more), which keeps the one-id methods cheap.
        self._hv = memoryview(slots[:, _H])  # type: ignore[arg-type]
        self._vv = memoryview(slots[:, _V])  # type: ignore[arg-type]

    @staticmethod
    def _hashes(keys: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(_hash, keys), np.int64, len(keys))

    def reserve(self, more: int) -> None:
        """Make room for `more` entries beyond the present ones (a bigger table, rehashed)."""
        need = self._count + more
        if 2 * need <= self._slots.shape[0]:
            return
        bigger = aligned_full((_slots_for(need), 2), _VACANT, np.int64)
        kernel.rehash(self._slots, bigger)
        self._set_slots(bigger)

    def __len__(self) -> int:
        return self._count

    def _find(self, key: str) -> int:
        """The slot of `key`, or -1 - (the vacant slot ending its probe run)."""
        h = _hash(key)
        hv, vv, mask, keys = self._hv, self._vv, self._mask, self._keys
        i = h & mask
        while True:
            v = vv[i]
            if v == _VACANT:
                return -1 - i
            if hv[i] == h and keys[v] == key:
                return i
            i = (i + 1) & mask

    def get(self, key: str, default: int | None = None) -> int | None:
        # `_find` written out (with VACANT as `< 0`): the replay's and every one-id command's
        # lookup, which a dict answered in ~0.1 µs.
        h = _hash(key)
        hv, vv, mask = self._hv, self._vv, self._mask
        i = h & mask
        while True:
            v = vv[i]
            if v < 0:
                return default
            if hv[i] == h and self._keys[v] == key:
                return v
            i = (i + 1) & mask

    def setdefault(self, key: str, value: int) -> int:
        """The value of `key`; if it has none, `value`, which it then gets (one probe: the
        replay's lookup-or-insert of every new reservation id)."""
        h = _hash(key)
        hv, vv, mask = self._hv, self._vv, self._mask
        i = h & mask
        while True:
            v = vv[i]
            if v < 0:
                break
            if hv[i] == h and self._keys[v] == key:
                return v
            i = (i + 1) & mask
        if value < 0:
            raise ValueError("IdTable values are >= 0")
        if 2 * self._count + 2 > mask + 1:
            self.reserve(1)
            return self.setdefault(key, value)
        hv[i] = h
        vv[i] = value
        self._count += 1
        return value

    def __contains__(self, key: object) -> bool:
        return type(key) is str and self._find(key) >= 0

    def __getitem__(self, key: str) -> int:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        return self._vv[i]

    def __setitem__(self, key: str, value: int) -> None:
        if value < 0:
            raise ValueError("IdTable values are >= 0")
        if self.setdefault(key, value) != value:
            self._vv[self._find(key)] = value

    def pop(self, key: str) -> int:
        """Remove `key` and return its value (KeyError if absent)."""
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        hv, vv, mask = self._hv, self._vv, self._mask
        value = vv[i]
        # Backward-shift deletion: move each later entry of the run whose home is not in
        # (hole, entry] into the hole, so every remaining entry stays reachable from its home.
        j = i
        while True:
            j = (j + 1) & mask
            v = vv[j]
            if v == _VACANT:
                break
            home = hv[j] & mask
            if (home <= i < j) or (i < j < home) or (j < home <= i):
                hv[i] = hv[j]
                vv[i] = v
                i = j
        vv[i] = _VACANT
        self._count -= 1
        return value

    def values(self) -> np.ndarray:
        """Every value, in slot order (int64)."""
        v = self._slots[:, _V]
        return v[v != _VACANT]

    def take_new(self, keys: Sequence[str], values: np.ndarray) -> bool:
        """Add `keys[i] → values[i]` for all i if no key is present and none repeats; else
        change nothing and return False (a key whose hash is present counts as present: the
        caller then goes key by key, which tells equal keys from equal hashes)."""
        hashes = self._hashes(keys)
        if not kernel.none_present(self._slots, hashes):
            return False
        self.reserve(len(keys))
        kernel.put_all(self._slots, hashes, values)
        self._count += len(keys)
        return True


Final = tuple[int, str, str]  # (final_at_ms, kind, id); kind r (reservation), q, t


class _Run:
    """Ids that became final together: `keys[at:]`, all at `now` and of one `kind`."""

    __slots__ = ("now", "kind", "keys", "at")

    def __init__(self, now: int, kind: str, keys: list[str]) -> None:
        self.now, self.kind, self.keys, self.at = now, kind, keys, 0


class FinalIds:
    """Ids with a final outcome, oldest first: a deque of `(final_at_ms, kind, id)` as far as
    its users can tell (`append`, `extend`, `popleft`, `len`, iteration), except that ids that
    became final together can be added as one run (`append_run`), without a tuple per id.

    A ReserveColumns whose holds are refused (a sold-out sale refuses most of them) and an
    expiry tick add hundreds of ids at one time; a tuple each was new memory that stays until
    the ids are forgotten, and on the project's VMs fresh memory costs a page fault per 4 KiB
    (~15 % of a 1,000-line ReserveColumns in the server when most holds were refused).
    """

    __slots__ = ("_q", "_count")

    def __init__(self, items: Iterable[Final] = ()) -> None:
        self._q: deque[Final | _Run] = deque()
        self._count = 0
        self.extend(items)

    def __len__(self) -> int:
        return self._count

    def append(self, item: Final) -> None:
        self._q.append(item)
        self._count += 1

    def extend(self, items: Iterable[Final]) -> None:
        before = len(self._q)
        self._q.extend(items)
        self._count += len(self._q) - before

    def append_run(self, now: int, kind: str, keys: list[str]) -> None:
        """`extend((now, kind, key) for key in keys)`; keeps `keys` (the caller's list)."""
        if keys:
            self._q.append(_Run(now, kind, keys))
            self._count += len(keys)

    def first_ms(self) -> int:
        """The oldest id's final_at_ms (IndexError when empty)."""
        head = self._q[0]
        return head.now if isinstance(head, _Run) else head[0]

    def popleft(self) -> Final:
        head = self._q[0]
        self._count -= 1
        if type(head) is not _Run:
            return self._q.popleft()  # type: ignore[return-value]
        key = head.keys[head.at]
        head.at += 1
        if head.at == len(head.keys):
            self._q.popleft()
        return (head.now, head.kind, key)

    def __iter__(self) -> Iterator[Final]:
        for item in self._q:
            if type(item) is _Run:
                now, kind = item.now, item.kind
                for key in item.keys[item.at :]:
                    yield (now, kind, key)
            else:
                yield item  # type: ignore[misc]
