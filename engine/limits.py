"""Every limit of the engine, in one place (DESIGN §5: put a limit on everything).

Names carry their unit or qualifier last. The relationships between limits are asserted once, at
import, so a bad edit fails loudly instead of producing a subtly broken engine.
"""

from __future__ import annotations

__all__ = [
    "BATCH_LINES_MAX",
    "BUFFER_PCT_MAX",
    "GROUPS_MAX",
    "GROUP_NODES_MAX",
    "ID_BYTES_MAX",
    "ID_CHARS_SURELY_OK",
    "IDS_REMEMBERED_MAX",
    "IDS_WINDOW_MS",
    "NODES_MAX",
    "POSITIONS_MAX",
    "QTY_MAX",
    "RESERVATIONS_ACTIVE_MAX",
    "REQUEST_LINES_MAX",
    "SKUS_MAX",
    "TTL_MS_MAX",
    "TTL_MS_MIN",
]

# One quantity on the wire or in a single bucket change (|qty| <= 10^9, DESIGN §5).
QTY_MAX = 1_000_000_000
# SKU, node, group, reservation and request ids are strings of at most this many UTF-8 bytes.
ID_BYTES_MAX = 128
# An id of at most this many characters is at most ID_BYTES_MAX bytes whatever they are (≤ 4
# UTF-8 bytes each): checks test its length first and encode only longer ones.
ID_CHARS_SURELY_OK = ID_BYTES_MAX // 4
# Lines in one request (one reservation, one adjust call, one availability call).
REQUEST_LINES_MAX = 10_000
# Lines one engine batch may carry in total (the sequencer splits beyond this).
BATCH_LINES_MAX = 1_000_000

# Holds live at least a second and at most 30 days.
TTL_MS_MIN = 1_000
TTL_MS_MAX = 30 * 24 * 3_600_000

# Interned id spaces are int32 (DESIGN §2); positions are addressed by int32 slots.
SKUS_MAX = 50_000_000
NODES_MAX = 100_000
GROUPS_MAX = 10_000
GROUP_NODES_MAX = NODES_MAX
POSITIONS_MAX = 1_000_000_000
RESERVATIONS_ACTIVE_MAX = 20_000_000

# Idempotency memory: an id that reached a final outcome is remembered for this long after it
# did (by the batch clock), and at most this many such ids are kept (oldest forgotten first), as
# many reservation and transfer ids and as many request ids (docs/ledger.md, "Idempotency").
IDS_WINDOW_MS = 24 * 3_600_000
IDS_REMEMBERED_MAX = 5_000_000

# A group may hold back at most this percentage of on-hand (100 % hides the node entirely).
BUFFER_PCT_MAX = 100.0

_INT32_MAX = 2**31 - 1
assert POSITIONS_MAX <= _INT32_MAX
assert SKUS_MAX <= _INT32_MAX and NODES_MAX <= _INT32_MAX and GROUPS_MAX <= _INT32_MAX
assert TTL_MS_MIN < TTL_MS_MAX
assert REQUEST_LINES_MAX <= BATCH_LINES_MAX
# A batch of maximal lines times maximal quantities must not overflow int64 sums.
assert BATCH_LINES_MAX * QTY_MAX < 2**62
assert IDS_REMEMBERED_MAX >= REQUEST_LINES_MAX
