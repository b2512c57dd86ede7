"""The ledger's memory: a numba StructRef holding every array, and the column layouts.

All state lives in a handful of numpy arrays (structure of arrays; the per-position quantities are
one 64-byte row so a lookup touches one cache line). Kernels receive the whole `State` as a single
argument, which keeps numba's per-call dispatch cost flat however many arrays a kernel reads
(about 0.8 µs instead of ~3 µs for twenty separate array arguments).

Column numbers are module constants; numba freezes them into the kernels at compile time.
"""

from __future__ import annotations

import mmap

import numpy as np
from numba import types
from numba.experimental import structref

from engine.codes import Bucket

__all__ = [
    "ADOPTABLE_FILL",
    "ArraysWithRoom",
    "State",
    "StateArrays",
    "aligned_full",
    "new_arrays",
    "rows_with_room",
    "FIELDS",
]

# Per-position quantity row (see codes.Bucket).
ON_HAND = int(Bucket.ON_HAND)
RESERVED = int(Bucket.RESERVED)
ALLOCATED = int(Bucket.ALLOCATED)
SAFETY = int(Bucket.SAFETY_STOCK)
UNAVAILABLE = int(Bucket.UNAVAILABLE)
INBOUND = int(Bucket.INBOUND)
BACKORDER = int(Bucket.BACKORDER_LIMIT)
SOURCE_SEQ = int(Bucket.SOURCE_SEQ)
QTY_COLS = 8

# Node attribute columns (int64) and coordinates (float64: lat, lon in degrees).
N_REGISTERED = 0
N_ENABLED = 1
N_TYPE = 2
N_PICKUP = 3
N_SHIP = 4
N_PRIORITY = 5
N_CAPACITY_DAILY = 6  # 0 = unlimited
N_CAPACITY_USED = 7  # units committed on N_CAPACITY_DAY
N_CAPACITY_DAY = 8  # day number (batch clock ms // 86_400_000) N_CAPACITY_USED counts for
NODE_COLS = 9

# Group columns.
G_DEFINED = 0
G_BUFFER_UNITS = 1
G_BUFFER_BP = 2  # buffer as basis points of on_hand (1 % = 100 bp), rounded up per position
GROUP_COLS = 3

# Reservation record columns.
R_STATE = 0
R_EXPIRES_MS = 1
R_LINE_START = 2
R_LINE_COUNT = 3
R_GROUP = 4  # -1: no group
R_CREATED_MS = 5
R_TERMINAL_MS = 6  # when the reservation reached a final state (idempotency window start)
R_ALLOW_PARTIAL = 7
RES_COLS = 8

# Reservation line columns (the line arena).
L_SLOT = 0  # position slot, -1 if the line never matched one
L_SKU = 1
L_NODE = 2
L_QTY = 3  # units asked
L_HELD = 4  # units currently reserved or allocated for this line
L_FULFILLED = 5
L_STATUS = 6
L_GRANTED = 7  # units the reserve granted (L_HELD falls as units are fulfilled or released)
LINE_COLS = 8

# Expiry heap entries, ordered by (expires_ms, push seq): holds due at the same instant expire in
# the order their deadlines were set. Stale entries (extended, committed, released) are skipped.
H_EXPIRES_MS = 0
H_SEQ = 1
H_RES = 2
HEAP_COLS = 3

# Counters (int64 vector).
C_POSITIONS = 0
C_LINES_USED = 1
C_HEAP_LEN = 2
C_HELD = 3  # reservations in state HELD
C_EXPIRED_OUT = 4  # entries written to `expired_out` by the last expire call
C_NOW_MS = 5  # the latest batch clock the ledger has seen
C_HEAP_SEQ = 6  # deadlines set so far (the last H_SEQ handed out)
COUNTERS = 8

EMPTY = -1

FIELDS: tuple[str, ...] = (
    "qty",
    "pos_key",
    "pos_next",
    "table",
    "sku_head",
    "sku_known",
    "node_i64",
    "node_f64",
    "grp_i64",
    "member",
    "res",
    "ln",
    "heap",
    "ctr",
    "expired_out",
)


@structref.register
class StateType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class State(structref.StructRefProxy):
    """Opaque handle passed to kernels. Python keeps its own references to the same arrays."""


structref.define_proxy(State, StateType, list(FIELDS))

StateArrays = dict[str, np.ndarray]


ALIGN_BYTES = 64  # a cache line


def aligned_full(shape: int | tuple[int, ...], fill: int, dtype: type | np.dtype) -> np.ndarray:
    """`np.full`, but the data starts on a cache-line boundary.

    Large numpy buffers come from mmap with a 16-byte header, so a 64-byte quantity row would
    straddle two cache lines and a random lookup would miss twice. Large arrays are also
    pre-faulted (`populated_bytes`): their pages are mapped when the ledger is built or grown,
    not one fault at a time on the serving path.
    """
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    buf = populated_bytes(nbytes + ALIGN_BYTES, zeroed=True)
    offset = -buf.ctypes.data % ALIGN_BYTES
    out = buf[offset : offset + nbytes].view(dt).reshape(dims)
    if fill != 0:
        out.fill(fill)
    return out


# Below this a buffer comes from numpy (malloc); at or above it, from a pre-faulted mmap.
POPULATE_BYTES_MIN = 16 << 20


def populated_bytes(nbytes: int, *, zeroed: bool = False) -> np.ndarray:
    """A uint8 buffer of `nbytes` whose pages are already mapped (all zero if `zeroed`; a
    mapping always is).

    For buffers that are about to be written end to end (a snapshot being read back) or read at
    random (the position arrays): the kernel maps every page up front, where writing into
    `np.empty` takes one page fault per 4 KiB page. On this project's VMs a fault on memory the
    guest has not touched lately costs ~14 µs (3–4 s per GB against ~0.4 s populated), which
    made it most of a snapshot load.

    The mapping asks for transparent huge pages (`MADV_HUGEPAGE`, then `MADV_POPULATE_WRITE`):
    2 MiB pages are mapped ~4× faster than 4 KiB ones when the guest has them free, and a
    random lookup over a 10M-position array misses the TLB far less. Where either advice is
    refused (no THP, a kernel before 5.14), `MAP_POPULATE` maps 4 KiB pages as before. Page
    aligned, so also cache-line aligned. Falls back to numpy (`np.zeros` or `np.empty`) for
    small buffers and where MAP_POPULATE does not exist (not Linux).
    """
    flag = getattr(mmap, "MAP_POPULATE", 0)
    fallback = np.zeros if zeroed else np.empty
    if nbytes < POPULATE_BYTES_MIN or not flag:
        return fallback(nbytes, np.uint8)
    try:
        mapped = _huge_populated(nbytes)
        if mapped is None:
            mapped = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flag)
    except OSError:
        return fallback(nbytes, np.uint8)
    # The array keeps the mapping alive; it is unmapped when the array is collected.
    return np.frombuffer(mapped, np.uint8)


# Linux 5.14+: fault every page of the range in, writable (what MAP_POPULATE does at mmap time).
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _huge_populated(nbytes: int) -> mmap.mmap | None:
    """An anonymous mapping advised to use huge pages, then populated; None where the kernel
    refuses either advice (the caller maps 4 KiB pages with MAP_POPULATE instead)."""
    huge = getattr(mmap, "MADV_HUGEPAGE", None)
    if huge is None:
        return None
    mapped = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        mapped.madvise(huge)
        mapped.madvise(MADV_POPULATE_WRITE)
    except OSError:
        mapped.close()
        return None
    return mapped


def new_arrays(
    positions: int = 1024,
    skus: int = 1024,
    nodes: int = 64,
    groups: int = 8,
    reservations: int = 1024,
    lines: int = 4096,
) -> StateArrays:
    """Empty arrays with room for the given counts (they grow on demand)."""
    table_size = 1 << max(4, int(2 * positions - 1).bit_length())
    node_i64 = np.zeros((nodes, NODE_COLS), np.int64)
    res = np.zeros((reservations, RES_COLS), np.int64)
    return {
        "qty": aligned_full((positions, QTY_COLS), 0, np.int64),
        "pos_key": aligned_full(positions, EMPTY, np.int64),
        "pos_next": aligned_full(positions, EMPTY, np.int32),
        "table": aligned_full(table_size, EMPTY, np.int32),
        "sku_head": np.full(skus, EMPTY, np.int32),
        "sku_known": np.zeros(skus, np.int8),
        "node_i64": node_i64,
        "node_f64": np.zeros((nodes, 2), np.float64),
        "grp_i64": np.zeros((groups, GROUP_COLS), np.int64),
        "member": np.zeros((groups, nodes), np.uint8),
        "res": res,
        "ln": np.zeros((lines, LINE_COLS), np.int64),
        "heap": np.zeros((max(16, reservations), HEAP_COLS), np.int64),
        "ctr": np.zeros(COUNTERS, np.int64),
        "expired_out": np.zeros(max(16, reservations), np.int64),
    }


def rows_with_room(rows: int) -> int:
    """Position rows a restored ledger holds for `rows` positions: a quarter spare, so the
    first positions created after a restart do not make it copy every array."""
    return max(1024, rows + rows // 4)


# The position arrays a restored ledger may adopt instead of copying (`ArraysWithRoom`), and the
# value of their spare rows; the hash table is adopted whole (its size is already a power of two
# with room).
ADOPTABLE_FILL = {"qty": 0, "pos_key": EMPTY, "pos_next": EMPTY, "table": EMPTY}


class ArraysWithRoom:
    """Reads a snapshot's large arrays straight into arrays a ledger can take as its own.

    Pass it to `SnapshotStore.load_latest(into=...)`, then its `arrays` to
    `Ledger.from_state(..., room=...)`. Each position array is allocated with
    `rows_with_room(rows)` rows (pre-faulted, the spare rows holding their empty value) and the
    snapshot is read into its first rows; the hash table is read into its own buffer. The ledger
    then adopts these instead of allocating its own and copying: at 10M positions that was
    ~1 GB of fresh memory and a copy of ~0.9 GB at every restart.
    """

    def __init__(self) -> None:
        self.arrays: StateArrays = {}

    def __call__(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
        fill = ADOPTABLE_FILL.get(name)
        if fill is None or not shape:
            return None
        rows = shape[0] if name == "table" else rows_with_room(shape[0])
        # Zeroed, and only the spare rows filled: the snapshot's rows are about to be read in.
        full = aligned_full((rows, *shape[1:]), 0, dtype)
        if fill != 0:
            full[shape[0] :] = fill
        self.arrays[name] = full
        return full[: shape[0]]


def make_state(arrays: StateArrays) -> State:
    return State(*(arrays[name] for name in FIELDS))
