"""Durability building blocks: the journal and the snapshot stores.

They move bytes and numpy arrays and know nothing of stock; the server decides what goes in.
"""

from engine.persistence.journal import (
    ENTRY_BYTES_MAX,
    SEGMENT_BYTES_DEFAULT,
    Durability,
    Journal,
    JournalCorruptError,
    JournalError,
    JournalStats,
)
from engine.persistence.snapshot import (
    SNAPSHOT_BYTES_MAX,
    FileSnapshotStore,
    LoadedSnapshot,
    RedisSnapshotStore,
    SnapshotInfo,
    SnapshotStore,
    SnapshotStoreError,
)

__all__ = [
    "ENTRY_BYTES_MAX",
    "SEGMENT_BYTES_DEFAULT",
    "SNAPSHOT_BYTES_MAX",
    "Durability",
    "FileSnapshotStore",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalStats",
    "LoadedSnapshot",
    "RedisSnapshotStore",
    "SnapshotInfo",
    "SnapshotStore",
    "SnapshotStoreError",
]
