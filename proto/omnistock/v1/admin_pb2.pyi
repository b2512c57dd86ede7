# ruff: noqa
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServerRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_ROLE_UNSPECIFIED: _ClassVar[ServerRole]
    SERVER_ROLE_PRIMARY: _ClassVar[ServerRole]
    SERVER_ROLE_REPLICA: _ClassVar[ServerRole]
SERVER_ROLE_UNSPECIFIED: ServerRole
SERVER_ROLE_PRIMARY: ServerRole
SERVER_ROLE_REPLICA: ServerRole

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("journal_seq", "bytes", "duration_ms", "location", "at_ms")
    JOURNAL_SEQ_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    journal_seq: int
    bytes: int
    duration_ms: float
    location: str
    at_ms: int
    def __init__(self, journal_seq: _Optional[int] = ..., bytes: _Optional[int] = ..., duration_ms: _Optional[float] = ..., location: _Optional[str] = ..., at_ms: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("positions", "skus", "nodes", "groups", "reservations_active", "journal_seq", "last_snapshot_at_ms", "last_snapshot_bytes", "last_snapshot_journal_seq", "durability", "snapshot_store", "snapshot_errors", "role", "primary", "replica_lag_entries", "replica_lag_ms", "uptime_ms", "watchers", "event_seq", "version")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_JOURNAL_SEQ_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_STORE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    REPLICA_LAG_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REPLICA_LAG_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    WATCHERS_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    positions: int
    skus: int
    nodes: int
    groups: int
    reservations_active: int
    journal_seq: int
    last_snapshot_at_ms: int
    last_snapshot_bytes: int
    last_snapshot_journal_seq: int
    durability: str
    snapshot_store: str
    snapshot_errors: int
    role: ServerRole
    primary: str
    replica_lag_entries: int
    replica_lag_ms: float
    uptime_ms: int
    watchers: int
    event_seq: int
    version: str
    def __init__(self, positions: _Optional[int] = ..., skus: _Optional[int] = ..., nodes: _Optional[int] = ..., groups: _Optional[int] = ..., reservations_active: _Optional[int] = ..., journal_seq: _Optional[int] = ..., last_snapshot_at_ms: _Optional[int] = ..., last_snapshot_bytes: _Optional[int] = ..., last_snapshot_journal_seq: _Optional[int] = ..., durability: _Optional[str] = ..., snapshot_store: _Optional[str] = ..., snapshot_errors: _Optional[int] = ..., role: _Optional[_Union[ServerRole, str]] = ..., primary: _Optional[str] = ..., replica_lag_entries: _Optional[int] = ..., replica_lag_ms: _Optional[float] = ..., uptime_ms: _Optional[int] = ..., watchers: _Optional[int] = ..., event_seq: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...
