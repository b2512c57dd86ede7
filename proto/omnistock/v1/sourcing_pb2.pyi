# ruff: noqa
from omnistock.v1 import reservation_pb2 as _reservation_pb2
from omnistock.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FulfilmentMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FULFILMENT_MODE_UNSPECIFIED: _ClassVar[FulfilmentMode]
    FULFILMENT_MODE_SHIP: _ClassVar[FulfilmentMode]
    FULFILMENT_MODE_PICKUP: _ClassVar[FulfilmentMode]
FULFILMENT_MODE_UNSPECIFIED: FulfilmentMode
FULFILMENT_MODE_SHIP: FulfilmentMode
FULFILMENT_MODE_PICKUP: FulfilmentMode

class SourcingPolicy(_message.Message):
    __slots__ = ("max_shipments", "node_types", "group_id", "allow_ship_from_store", "distance_weight", "priority_weight", "split_penalty", "respect_capacity")
    MAX_SHIPMENTS_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SHIP_FROM_STORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    RESPECT_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    max_shipments: int
    node_types: _containers.RepeatedScalarFieldContainer[_types_pb2.NodeType]
    group_id: str
    allow_ship_from_store: bool
    distance_weight: float
    priority_weight: float
    split_penalty: float
    respect_capacity: bool
    def __init__(self, max_shipments: _Optional[int] = ..., node_types: _Optional[_Iterable[_Union[_types_pb2.NodeType, str]]] = ..., group_id: _Optional[str] = ..., allow_ship_from_store: _Optional[bool] = ..., distance_weight: _Optional[float] = ..., priority_weight: _Optional[float] = ..., split_penalty: _Optional[float] = ..., respect_capacity: _Optional[bool] = ...) -> None: ...

class SourceOrderRequest(_message.Message):
    __slots__ = ("lines", "ship_to", "pickup_node_id", "mode", "policy", "reservation_id", "ttl_ms")
    LINES_FIELD_NUMBER: _ClassVar[int]
    SHIP_TO_FIELD_NUMBER: _ClassVar[int]
    PICKUP_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    ship_to: _types_pb2.GeoPoint
    pickup_node_id: str
    mode: FulfilmentMode
    policy: SourcingPolicy
    reservation_id: str
    ttl_ms: int
    def __init__(self, lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ..., ship_to: _Optional[_Union[_types_pb2.GeoPoint, _Mapping]] = ..., pickup_node_id: _Optional[str] = ..., mode: _Optional[_Union[FulfilmentMode, str]] = ..., policy: _Optional[_Union[SourcingPolicy, _Mapping]] = ..., reservation_id: _Optional[str] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class Shipment(_message.Message):
    __slots__ = ("node_id", "lines", "distance_km", "cost", "is_transfer", "ready_at_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    IS_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    READY_AT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    distance_km: float
    cost: float
    is_transfer: bool
    ready_at_ms: int
    def __init__(self, node_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ..., distance_km: _Optional[float] = ..., cost: _Optional[float] = ..., is_transfer: _Optional[bool] = ..., ready_at_ms: _Optional[int] = ...) -> None: ...

class UnfulfilledLine(_message.Message):
    __slots__ = ("sku", "qty", "reason")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sku: str
    qty: int
    reason: _types_pb2.LineStatus
    def __init__(self, sku: _Optional[str] = ..., qty: _Optional[int] = ..., reason: _Optional[_Union[_types_pb2.LineStatus, str]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("shipments", "shipment_count", "total_cost", "unfulfilled", "explanation")
    SHIPMENTS_FIELD_NUMBER: _ClassVar[int]
    SHIPMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    UNFULFILLED_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    shipments: _containers.RepeatedCompositeFieldContainer[Shipment]
    shipment_count: int
    total_cost: float
    unfulfilled: _containers.RepeatedCompositeFieldContainer[UnfulfilledLine]
    explanation: str
    def __init__(self, shipments: _Optional[_Iterable[_Union[Shipment, _Mapping]]] = ..., shipment_count: _Optional[int] = ..., total_cost: _Optional[float] = ..., unfulfilled: _Optional[_Iterable[_Union[UnfulfilledLine, _Mapping]]] = ..., explanation: _Optional[str] = ...) -> None: ...

class SourceOrderResponse(_message.Message):
    __slots__ = ("plan", "reservation", "replayed")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    reservation: _reservation_pb2.Reservation
    replayed: bool
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., reservation: _Optional[_Union[_reservation_pb2.Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...
