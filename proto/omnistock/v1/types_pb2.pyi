# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LineStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINE_STATUS_UNSPECIFIED: _ClassVar[LineStatus]
    LINE_STATUS_OK: _ClassVar[LineStatus]
    LINE_STATUS_INSUFFICIENT: _ClassVar[LineStatus]
    LINE_STATUS_UNKNOWN_SKU: _ClassVar[LineStatus]
    LINE_STATUS_UNKNOWN_NODE: _ClassVar[LineStatus]
    LINE_STATUS_STALE: _ClassVar[LineStatus]
    LINE_STATUS_UNKNOWN_GROUP: _ClassVar[LineStatus]
    LINE_STATUS_NODE_DISABLED: _ClassVar[LineStatus]
    LINE_STATUS_INVALID_QTY: _ClassVar[LineStatus]
    LINE_STATUS_NEGATIVE_STOCK: _ClassVar[LineStatus]
    LINE_STATUS_PARTIAL: _ClassVar[LineStatus]

class ReservationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATE_UNSPECIFIED: _ClassVar[ReservationState]
    RESERVATION_STATE_HELD: _ClassVar[ReservationState]
    RESERVATION_STATE_COMMITTED: _ClassVar[ReservationState]
    RESERVATION_STATE_FULFILLED: _ClassVar[ReservationState]
    RESERVATION_STATE_RELEASED: _ClassVar[ReservationState]
    RESERVATION_STATE_EXPIRED: _ClassVar[ReservationState]
    RESERVATION_STATE_REJECTED: _ClassVar[ReservationState]

class AdjustReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADJUST_REASON_UNSPECIFIED: _ClassVar[AdjustReason]
    ADJUST_REASON_RECEIPT: _ClassVar[AdjustReason]
    ADJUST_REASON_SALE: _ClassVar[AdjustReason]
    ADJUST_REASON_RETURN: _ClassVar[AdjustReason]
    ADJUST_REASON_DAMAGE: _ClassVar[AdjustReason]
    ADJUST_REASON_CORRECTION: _ClassVar[AdjustReason]
    ADJUST_REASON_RETURN_TO_INSPECTION: _ClassVar[AdjustReason]

class NodeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_TYPE_UNSPECIFIED: _ClassVar[NodeType]
    NODE_TYPE_DC: _ClassVar[NodeType]
    NODE_TYPE_STORE: _ClassVar[NodeType]
    NODE_TYPE_DARK_STORE: _ClassVar[NodeType]
    NODE_TYPE_THIRD_PARTY: _ClassVar[NodeType]
    NODE_TYPE_MARKETPLACE: _ClassVar[NodeType]

class GroupKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_KIND_UNSPECIFIED: _ClassVar[GroupKind]
    GROUP_KIND_CHANNEL: _ClassVar[GroupKind]
    GROUP_KIND_MARKETPLACE: _ClassVar[GroupKind]
    GROUP_KIND_REGION: _ClassVar[GroupKind]
    GROUP_KIND_PICKUP_ZONE: _ClassVar[GroupKind]
LINE_STATUS_UNSPECIFIED: LineStatus
LINE_STATUS_OK: LineStatus
LINE_STATUS_INSUFFICIENT: LineStatus
LINE_STATUS_UNKNOWN_SKU: LineStatus
LINE_STATUS_UNKNOWN_NODE: LineStatus
LINE_STATUS_STALE: LineStatus
LINE_STATUS_UNKNOWN_GROUP: LineStatus
LINE_STATUS_NODE_DISABLED: LineStatus
LINE_STATUS_INVALID_QTY: LineStatus
LINE_STATUS_NEGATIVE_STOCK: LineStatus
LINE_STATUS_PARTIAL: LineStatus
RESERVATION_STATE_UNSPECIFIED: ReservationState
RESERVATION_STATE_HELD: ReservationState
RESERVATION_STATE_COMMITTED: ReservationState
RESERVATION_STATE_FULFILLED: ReservationState
RESERVATION_STATE_RELEASED: ReservationState
RESERVATION_STATE_EXPIRED: ReservationState
RESERVATION_STATE_REJECTED: ReservationState
ADJUST_REASON_UNSPECIFIED: AdjustReason
ADJUST_REASON_RECEIPT: AdjustReason
ADJUST_REASON_SALE: AdjustReason
ADJUST_REASON_RETURN: AdjustReason
ADJUST_REASON_DAMAGE: AdjustReason
ADJUST_REASON_CORRECTION: AdjustReason
ADJUST_REASON_RETURN_TO_INSPECTION: AdjustReason
NODE_TYPE_UNSPECIFIED: NodeType
NODE_TYPE_DC: NodeType
NODE_TYPE_STORE: NodeType
NODE_TYPE_DARK_STORE: NodeType
NODE_TYPE_THIRD_PARTY: NodeType
NODE_TYPE_MARKETPLACE: NodeType
GROUP_KIND_UNSPECIFIED: GroupKind
GROUP_KIND_CHANNEL: GroupKind
GROUP_KIND_MARKETPLACE: GroupKind
GROUP_KIND_REGION: GroupKind
GROUP_KIND_PICKUP_ZONE: GroupKind

class Line(_message.Message):
    __slots__ = ("sku", "node_id", "qty")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    qty: int
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., qty: _Optional[int] = ...) -> None: ...

class Quantities(_message.Message):
    __slots__ = ("on_hand", "reserved", "allocated", "safety_stock", "unavailable", "inbound", "available")
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    on_hand: int
    reserved: int
    allocated: int
    safety_stock: int
    unavailable: int
    inbound: int
    available: int
    def __init__(self, on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., allocated: _Optional[int] = ..., safety_stock: _Optional[int] = ..., unavailable: _Optional[int] = ..., inbound: _Optional[int] = ..., available: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "type", "lat", "lon", "pickup", "ship", "enabled", "priority", "daily_capacity", "name")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    PICKUP_FIELD_NUMBER: _ClassVar[int]
    SHIP_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DAILY_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    type: NodeType
    lat: float
    lon: float
    pickup: bool
    ship: bool
    enabled: bool
    priority: int
    daily_capacity: int
    name: str
    def __init__(self, node_id: _Optional[str] = ..., type: _Optional[_Union[NodeType, str]] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., pickup: _Optional[bool] = ..., ship: _Optional[bool] = ..., enabled: _Optional[bool] = ..., priority: _Optional[int] = ..., daily_capacity: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("group_id", "node_ids", "buffer_units", "buffer_pct", "kind", "name")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    BUFFER_UNITS_FIELD_NUMBER: _ClassVar[int]
    BUFFER_PCT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    buffer_units: int
    buffer_pct: float
    kind: GroupKind
    name: str
    def __init__(self, group_id: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., buffer_units: _Optional[int] = ..., buffer_pct: _Optional[float] = ..., kind: _Optional[_Union[GroupKind, str]] = ..., name: _Optional[str] = ...) -> None: ...

class GeoPoint(_message.Message):
    __slots__ = ("lat", "lon")
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    lat: float
    lon: float
    def __init__(self, lat: _Optional[float] = ..., lon: _Optional[float] = ...) -> None: ...

class SupplyLineResult(_message.Message):
    __slots__ = ("sku", "node_id", "status", "quantities")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    status: LineStatus
    quantities: Quantities
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., status: _Optional[_Union[LineStatus, str]] = ..., quantities: _Optional[_Union[Quantities, _Mapping]] = ...) -> None: ...

class BatchItemError(_message.Message):
    __slots__ = ("index", "code", "reason", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    code: int
    reason: str
    message: str
    def __init__(self, index: _Optional[int] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
