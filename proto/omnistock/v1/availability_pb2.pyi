# ruff: noqa
from omnistock.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_CHANGED: _ClassVar[EventKind]
    EVENT_KIND_OUT_OF_STOCK: _ClassVar[EventKind]
    EVENT_KIND_LOW_STOCK: _ClassVar[EventKind]
    EVENT_KIND_BACK_IN_STOCK: _ClassVar[EventKind]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_CHANGED: EventKind
EVENT_KIND_OUT_OF_STOCK: EventKind
EVENT_KIND_LOW_STOCK: EventKind
EVENT_KIND_BACK_IN_STOCK: EventKind

class AvailabilityQuery(_message.Message):
    __slots__ = ("sku", "node_id", "group_id", "promise_by_ms")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROMISE_BY_MS_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    group_id: str
    promise_by_ms: int
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., group_id: _Optional[str] = ..., promise_by_ms: _Optional[int] = ...) -> None: ...

class AvailabilityResult(_message.Message):
    __slots__ = ("query", "status", "quantities", "available_by_date")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BY_DATE_FIELD_NUMBER: _ClassVar[int]
    query: AvailabilityQuery
    status: _types_pb2.LineStatus
    quantities: _types_pb2.Quantities
    available_by_date: int
    def __init__(self, query: _Optional[_Union[AvailabilityQuery, _Mapping]] = ..., status: _Optional[_Union[_types_pb2.LineStatus, str]] = ..., quantities: _Optional[_Union[_types_pb2.Quantities, _Mapping]] = ..., available_by_date: _Optional[int] = ...) -> None: ...

class GetAvailabilityRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[AvailabilityQuery]
    def __init__(self, queries: _Optional[_Iterable[_Union[AvailabilityQuery, _Mapping]]] = ...) -> None: ...

class GetAvailabilityResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AvailabilityResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AvailabilityResult, _Mapping]]] = ...) -> None: ...

class GetAvailabilityColumnarRequest(_message.Message):
    __slots__ = ("skus", "node_ids", "group_ids", "include_buckets", "batch_id")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    group_ids: _containers.RepeatedScalarFieldContainer[str]
    include_buckets: bool
    batch_id: int
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., node_ids: _Optional[_Iterable[str]] = ..., group_ids: _Optional[_Iterable[str]] = ..., include_buckets: _Optional[bool] = ..., batch_id: _Optional[int] = ...) -> None: ...

class GetAvailabilityColumnarResponse(_message.Message):
    __slots__ = ("status", "available", "on_hand", "reserved", "allocated", "safety_stock", "unavailable", "inbound", "batch_id", "journal_seq")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_SEQ_FIELD_NUMBER: _ClassVar[int]
    status: _containers.RepeatedScalarFieldContainer[int]
    available: _containers.RepeatedScalarFieldContainer[int]
    on_hand: _containers.RepeatedScalarFieldContainer[int]
    reserved: _containers.RepeatedScalarFieldContainer[int]
    allocated: _containers.RepeatedScalarFieldContainer[int]
    safety_stock: _containers.RepeatedScalarFieldContainer[int]
    unavailable: _containers.RepeatedScalarFieldContainer[int]
    inbound: _containers.RepeatedScalarFieldContainer[int]
    batch_id: int
    journal_seq: int
    def __init__(self, status: _Optional[_Iterable[int]] = ..., available: _Optional[_Iterable[int]] = ..., on_hand: _Optional[_Iterable[int]] = ..., reserved: _Optional[_Iterable[int]] = ..., allocated: _Optional[_Iterable[int]] = ..., safety_stock: _Optional[_Iterable[int]] = ..., unavailable: _Optional[_Iterable[int]] = ..., inbound: _Optional[_Iterable[int]] = ..., batch_id: _Optional[int] = ..., journal_seq: _Optional[int] = ...) -> None: ...

class FindNearbyRequest(_message.Message):
    __slots__ = ("lat", "lon", "radius_km", "limit", "lines", "pickup_only", "node_types", "group_id", "full_cart_only", "full_cart_first")
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    RADIUS_KM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PICKUP_ONLY_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    FULL_CART_ONLY_FIELD_NUMBER: _ClassVar[int]
    FULL_CART_FIRST_FIELD_NUMBER: _ClassVar[int]
    lat: float
    lon: float
    radius_km: float
    limit: int
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    pickup_only: bool
    node_types: _containers.RepeatedScalarFieldContainer[_types_pb2.NodeType]
    group_id: str
    full_cart_only: bool
    full_cart_first: bool
    def __init__(self, lat: _Optional[float] = ..., lon: _Optional[float] = ..., radius_km: _Optional[float] = ..., limit: _Optional[int] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ..., pickup_only: _Optional[bool] = ..., node_types: _Optional[_Iterable[_Union[_types_pb2.NodeType, str]]] = ..., group_id: _Optional[str] = ..., full_cart_only: _Optional[bool] = ..., full_cart_first: _Optional[bool] = ...) -> None: ...

class NearbyNode(_message.Message):
    __slots__ = ("node_id", "distance_km", "available", "covers_all")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    COVERS_ALL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    distance_km: float
    available: _containers.RepeatedScalarFieldContainer[int]
    covers_all: bool
    def __init__(self, node_id: _Optional[str] = ..., distance_km: _Optional[float] = ..., available: _Optional[_Iterable[int]] = ..., covers_all: _Optional[bool] = ...) -> None: ...

class FindNearbyResponse(_message.Message):
    __slots__ = ("nodes", "line_statuses")
    NODES_FIELD_NUMBER: _ClassVar[int]
    LINE_STATUSES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NearbyNode]
    line_statuses: _containers.RepeatedScalarFieldContainer[_types_pb2.LineStatus]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NearbyNode, _Mapping]]] = ..., line_statuses: _Optional[_Iterable[_Union[_types_pb2.LineStatus, str]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("skus", "node_ids", "group_ids", "thresholds_only", "resume_after_seq")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_ONLY_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    group_ids: _containers.RepeatedScalarFieldContainer[str]
    thresholds_only: bool
    resume_after_seq: int
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., node_ids: _Optional[_Iterable[str]] = ..., group_ids: _Optional[_Iterable[str]] = ..., thresholds_only: _Optional[bool] = ..., resume_after_seq: _Optional[int] = ...) -> None: ...

class StockEvent(_message.Message):
    __slots__ = ("seq", "sku", "node_id", "group_id", "quantities", "kind", "at_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sku: str
    node_id: str
    group_id: str
    quantities: _types_pb2.Quantities
    kind: EventKind
    at_ms: int
    def __init__(self, seq: _Optional[int] = ..., sku: _Optional[str] = ..., node_id: _Optional[str] = ..., group_id: _Optional[str] = ..., quantities: _Optional[_Union[_types_pb2.Quantities, _Mapping]] = ..., kind: _Optional[_Union[EventKind, str]] = ..., at_ms: _Optional[int] = ...) -> None: ...
