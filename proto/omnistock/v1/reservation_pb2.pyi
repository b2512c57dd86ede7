# ruff: noqa
from omnistock.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "lines", "ttl_ms", "allow_partial", "group_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    ttl_ms: int
    allow_partial: bool
    group_id: str
    def __init__(self, reservation_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ..., ttl_ms: _Optional[int] = ..., allow_partial: _Optional[bool] = ..., group_id: _Optional[str] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation", "replayed")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    replayed: bool
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "state", "lines", "expires_at_ms", "created_at_ms", "updated_at_ms", "group_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    state: _types_pb2.ReservationState
    lines: _containers.RepeatedCompositeFieldContainer[ReservedLine]
    expires_at_ms: int
    created_at_ms: int
    updated_at_ms: int
    group_id: str
    def __init__(self, reservation_id: _Optional[str] = ..., state: _Optional[_Union[_types_pb2.ReservationState, str]] = ..., lines: _Optional[_Iterable[_Union[ReservedLine, _Mapping]]] = ..., expires_at_ms: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., group_id: _Optional[str] = ...) -> None: ...

class ReservedLine(_message.Message):
    __slots__ = ("line", "reserved_qty", "fulfilled_qty", "status")
    LINE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_QTY_FIELD_NUMBER: _ClassVar[int]
    FULFILLED_QTY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    line: _types_pb2.Line
    reserved_qty: int
    fulfilled_qty: int
    status: _types_pb2.LineStatus
    def __init__(self, line: _Optional[_Union[_types_pb2.Line, _Mapping]] = ..., reserved_qty: _Optional[int] = ..., fulfilled_qty: _Optional[int] = ..., status: _Optional[_Union[_types_pb2.LineStatus, str]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("reservation", "replayed")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    replayed: bool
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("reservation", "replayed")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    replayed: bool
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("reservation_id", "ttl_ms", "request_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    ttl_ms: int
    request_id: str
    def __init__(self, reservation_id: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExtendResponse(_message.Message):
    __slots__ = ("reservation", "replayed")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    replayed: bool
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class GetReservationResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ...) -> None: ...

class FulfillRequest(_message.Message):
    __slots__ = ("reservation_id", "lines", "request_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    request_id: str
    def __init__(self, reservation_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class FulfillResponse(_message.Message):
    __slots__ = ("reservation", "replayed")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    replayed: bool
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReserveBatchRequest(_message.Message):
    __slots__ = ("reservation_ids", "line_counts", "skus", "node_ids", "qtys", "ttl_ms", "allow_partial", "group_id", "batch_id")
    RESERVATION_IDS_FIELD_NUMBER: _ClassVar[int]
    LINE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    QTYS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_ids: _containers.RepeatedScalarFieldContainer[str]
    line_counts: _containers.RepeatedScalarFieldContainer[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    qtys: _containers.RepeatedScalarFieldContainer[int]
    ttl_ms: int
    allow_partial: bool
    group_id: str
    batch_id: int
    def __init__(self, reservation_ids: _Optional[_Iterable[str]] = ..., line_counts: _Optional[_Iterable[int]] = ..., skus: _Optional[_Iterable[str]] = ..., node_ids: _Optional[_Iterable[str]] = ..., qtys: _Optional[_Iterable[int]] = ..., ttl_ms: _Optional[int] = ..., allow_partial: _Optional[bool] = ..., group_id: _Optional[str] = ..., batch_id: _Optional[int] = ...) -> None: ...

class ReserveBatchResponse(_message.Message):
    __slots__ = ("states", "replayed", "expires_at_ms", "reserved_qtys", "line_statuses", "errors", "batch_id")
    STATES_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_QTYS_FIELD_NUMBER: _ClassVar[int]
    LINE_STATUSES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[int]
    replayed: _containers.RepeatedScalarFieldContainer[bool]
    expires_at_ms: _containers.RepeatedScalarFieldContainer[int]
    reserved_qtys: _containers.RepeatedScalarFieldContainer[int]
    line_statuses: _containers.RepeatedScalarFieldContainer[int]
    errors: _containers.RepeatedCompositeFieldContainer[_types_pb2.BatchItemError]
    batch_id: int
    def __init__(self, states: _Optional[_Iterable[int]] = ..., replayed: _Optional[_Iterable[bool]] = ..., expires_at_ms: _Optional[_Iterable[int]] = ..., reserved_qtys: _Optional[_Iterable[int]] = ..., line_statuses: _Optional[_Iterable[int]] = ..., errors: _Optional[_Iterable[_Union[_types_pb2.BatchItemError, _Mapping]]] = ..., batch_id: _Optional[int] = ...) -> None: ...

class ReservationIdsBatch(_message.Message):
    __slots__ = ("reservation_ids", "batch_id")
    RESERVATION_IDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_ids: _containers.RepeatedScalarFieldContainer[str]
    batch_id: int
    def __init__(self, reservation_ids: _Optional[_Iterable[str]] = ..., batch_id: _Optional[int] = ...) -> None: ...

class ReservationStatesBatch(_message.Message):
    __slots__ = ("states", "replayed", "errors", "batch_id")
    STATES_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[int]
    replayed: _containers.RepeatedScalarFieldContainer[bool]
    errors: _containers.RepeatedCompositeFieldContainer[_types_pb2.BatchItemError]
    batch_id: int
    def __init__(self, states: _Optional[_Iterable[int]] = ..., replayed: _Optional[_Iterable[bool]] = ..., errors: _Optional[_Iterable[_Union[_types_pb2.BatchItemError, _Mapping]]] = ..., batch_id: _Optional[int] = ...) -> None: ...
