# ruff: noqa
from omnistock.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StockBucket(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOCK_BUCKET_UNSPECIFIED: _ClassVar[StockBucket]
    STOCK_BUCKET_SELLABLE: _ClassVar[StockBucket]
    STOCK_BUCKET_UNAVAILABLE: _ClassVar[StockBucket]

class TransferAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_ACTION_UNSPECIFIED: _ClassVar[TransferAction]
    TRANSFER_ACTION_SHIP: _ClassVar[TransferAction]
    TRANSFER_ACTION_RECEIVE: _ClassVar[TransferAction]
    TRANSFER_ACTION_CANCEL: _ClassVar[TransferAction]
STOCK_BUCKET_UNSPECIFIED: StockBucket
STOCK_BUCKET_SELLABLE: StockBucket
STOCK_BUCKET_UNAVAILABLE: StockBucket
TRANSFER_ACTION_UNSPECIFIED: TransferAction
TRANSFER_ACTION_SHIP: TransferAction
TRANSFER_ACTION_RECEIVE: TransferAction
TRANSFER_ACTION_CANCEL: TransferAction

class LowStockThreshold(_message.Message):
    __slots__ = ("sku", "low_stock", "node_id", "group_id")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOW_STOCK_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    sku: str
    low_stock: int
    node_id: str
    group_id: str
    def __init__(self, sku: _Optional[str] = ..., low_stock: _Optional[int] = ..., node_id: _Optional[str] = ..., group_id: _Optional[str] = ...) -> None: ...

class SetThresholdsRequest(_message.Message):
    __slots__ = ("thresholds",)
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    thresholds: _containers.RepeatedCompositeFieldContainer[LowStockThreshold]
    def __init__(self, thresholds: _Optional[_Iterable[_Union[LowStockThreshold, _Mapping]]] = ...) -> None: ...

class SetThresholdsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class Adjustment(_message.Message):
    __slots__ = ("sku", "node_id", "delta", "reason")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    delta: int
    reason: _types_pb2.AdjustReason
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., delta: _Optional[int] = ..., reason: _Optional[_Union[_types_pb2.AdjustReason, str]] = ...) -> None: ...

class AdjustRequest(_message.Message):
    __slots__ = ("request_id", "adjustments")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ADJUSTMENTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    adjustments: _containers.RepeatedCompositeFieldContainer[Adjustment]
    def __init__(self, request_id: _Optional[str] = ..., adjustments: _Optional[_Iterable[_Union[Adjustment, _Mapping]]] = ...) -> None: ...

class AdjustResponse(_message.Message):
    __slots__ = ("results", "replayed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.SupplyLineResult]
    replayed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.SupplyLineResult, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class StockCount(_message.Message):
    __slots__ = ("sku", "node_id", "on_hand", "source_seq")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    on_hand: int
    source_seq: int
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., on_hand: _Optional[int] = ..., source_seq: _Optional[int] = ...) -> None: ...

class SetOnHandRequest(_message.Message):
    __slots__ = ("request_id", "counts")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    counts: _containers.RepeatedCompositeFieldContainer[StockCount]
    def __init__(self, request_id: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[StockCount, _Mapping]]] = ...) -> None: ...

class SetOnHandResponse(_message.Message):
    __slots__ = ("results", "replayed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.SupplyLineResult]
    replayed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.SupplyLineResult, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class UpsertNodesRequest(_message.Message):
    __slots__ = ("request_id", "nodes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    nodes: _containers.RepeatedCompositeFieldContainer[_types_pb2.Node]
    def __init__(self, request_id: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[_types_pb2.Node, _Mapping]]] = ...) -> None: ...

class UpsertNodesResponse(_message.Message):
    __slots__ = ("statuses", "created", "updated", "replayed")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[_types_pb2.LineStatus]
    created: int
    updated: int
    replayed: bool
    def __init__(self, statuses: _Optional[_Iterable[_Union[_types_pb2.LineStatus, str]]] = ..., created: _Optional[int] = ..., updated: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class UpsertGroupsRequest(_message.Message):
    __slots__ = ("request_id", "groups")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    groups: _containers.RepeatedCompositeFieldContainer[_types_pb2.Group]
    def __init__(self, request_id: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[_types_pb2.Group, _Mapping]]] = ...) -> None: ...

class UpsertGroupsResponse(_message.Message):
    __slots__ = ("statuses", "created", "updated", "replayed")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[_types_pb2.LineStatus]
    created: int
    updated: int
    replayed: bool
    def __init__(self, statuses: _Optional[_Iterable[_Union[_types_pb2.LineStatus, str]]] = ..., created: _Optional[int] = ..., updated: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SafetyStock(_message.Message):
    __slots__ = ("sku", "node_id", "safety_stock")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    safety_stock: int
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., safety_stock: _Optional[int] = ...) -> None: ...

class SetSafetyStockRequest(_message.Message):
    __slots__ = ("request_id", "safety_stocks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCKS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    safety_stocks: _containers.RepeatedCompositeFieldContainer[SafetyStock]
    def __init__(self, request_id: _Optional[str] = ..., safety_stocks: _Optional[_Iterable[_Union[SafetyStock, _Mapping]]] = ...) -> None: ...

class SetSafetyStockResponse(_message.Message):
    __slots__ = ("results", "replayed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.SupplyLineResult]
    replayed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.SupplyLineResult, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class StockMove(_message.Message):
    __slots__ = ("sku", "node_id", "qty", "from_bucket", "to_bucket")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    FROM_BUCKET_FIELD_NUMBER: _ClassVar[int]
    TO_BUCKET_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node_id: str
    qty: int
    from_bucket: StockBucket
    to_bucket: StockBucket
    def __init__(self, sku: _Optional[str] = ..., node_id: _Optional[str] = ..., qty: _Optional[int] = ..., from_bucket: _Optional[_Union[StockBucket, str]] = ..., to_bucket: _Optional[_Union[StockBucket, str]] = ...) -> None: ...

class MoveStockRequest(_message.Message):
    __slots__ = ("request_id", "moves")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    moves: _containers.RepeatedCompositeFieldContainer[StockMove]
    def __init__(self, request_id: _Optional[str] = ..., moves: _Optional[_Iterable[_Union[StockMove, _Mapping]]] = ...) -> None: ...

class MoveStockResponse(_message.Message):
    __slots__ = ("results", "replayed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.SupplyLineResult]
    replayed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.SupplyLineResult, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("request_id", "transfer_id", "action", "sku", "from_node_id", "to_node_id", "qty", "expected_at_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    transfer_id: str
    action: TransferAction
    sku: str
    from_node_id: str
    to_node_id: str
    qty: int
    expected_at_ms: int
    def __init__(self, request_id: _Optional[str] = ..., transfer_id: _Optional[str] = ..., action: _Optional[_Union[TransferAction, str]] = ..., sku: _Optional[str] = ..., from_node_id: _Optional[str] = ..., to_node_id: _Optional[str] = ..., qty: _Optional[int] = ..., expected_at_ms: _Optional[int] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("results", "replayed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.SupplyLineResult]
    replayed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.SupplyLineResult, _Mapping]]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class AdjustColumnarRequest(_message.Message):
    __slots__ = ("request_id", "skus", "node_ids", "deltas", "reasons", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    skus: _containers.RepeatedScalarFieldContainer[str]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    deltas: _containers.RepeatedScalarFieldContainer[int]
    reasons: _containers.RepeatedScalarFieldContainer[int]
    reason: _types_pb2.AdjustReason
    def __init__(self, request_id: _Optional[str] = ..., skus: _Optional[_Iterable[str]] = ..., node_ids: _Optional[_Iterable[str]] = ..., deltas: _Optional[_Iterable[int]] = ..., reasons: _Optional[_Iterable[int]] = ..., reason: _Optional[_Union[_types_pb2.AdjustReason, str]] = ...) -> None: ...

class AdjustColumnarResponse(_message.Message):
    __slots__ = ("statuses", "on_hand", "available", "replayed")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[int]
    on_hand: _containers.RepeatedScalarFieldContainer[int]
    available: _containers.RepeatedScalarFieldContainer[int]
    replayed: bool
    def __init__(self, statuses: _Optional[_Iterable[int]] = ..., on_hand: _Optional[_Iterable[int]] = ..., available: _Optional[_Iterable[int]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SetOnHandColumnarRequest(_message.Message):
    __slots__ = ("request_id", "skus", "node_ids", "on_hand", "source_seqs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SEQS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    skus: _containers.RepeatedScalarFieldContainer[str]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    on_hand: _containers.RepeatedScalarFieldContainer[int]
    source_seqs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[str] = ..., skus: _Optional[_Iterable[str]] = ..., node_ids: _Optional[_Iterable[str]] = ..., on_hand: _Optional[_Iterable[int]] = ..., source_seqs: _Optional[_Iterable[int]] = ...) -> None: ...

class SetOnHandColumnarResponse(_message.Message):
    __slots__ = ("statuses", "on_hand", "available", "replayed")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[int]
    on_hand: _containers.RepeatedScalarFieldContainer[int]
    available: _containers.RepeatedScalarFieldContainer[int]
    replayed: bool
    def __init__(self, statuses: _Optional[_Iterable[int]] = ..., on_hand: _Optional[_Iterable[int]] = ..., available: _Optional[_Iterable[int]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class SupplyMessage(_message.Message):
    __slots__ = ("adjust", "set_on_hand", "adjust_columnar", "set_on_hand_columnar", "upsert_nodes", "upsert_groups", "set_safety_stock", "transfer", "move_stock")
    ADJUST_FIELD_NUMBER: _ClassVar[int]
    SET_ON_HAND_FIELD_NUMBER: _ClassVar[int]
    ADJUST_COLUMNAR_FIELD_NUMBER: _ClassVar[int]
    SET_ON_HAND_COLUMNAR_FIELD_NUMBER: _ClassVar[int]
    UPSERT_NODES_FIELD_NUMBER: _ClassVar[int]
    UPSERT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SET_SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    MOVE_STOCK_FIELD_NUMBER: _ClassVar[int]
    adjust: AdjustRequest
    set_on_hand: SetOnHandRequest
    adjust_columnar: AdjustColumnarRequest
    set_on_hand_columnar: SetOnHandColumnarRequest
    upsert_nodes: UpsertNodesRequest
    upsert_groups: UpsertGroupsRequest
    set_safety_stock: SetSafetyStockRequest
    transfer: TransferRequest
    move_stock: MoveStockRequest
    def __init__(self, adjust: _Optional[_Union[AdjustRequest, _Mapping]] = ..., set_on_hand: _Optional[_Union[SetOnHandRequest, _Mapping]] = ..., adjust_columnar: _Optional[_Union[AdjustColumnarRequest, _Mapping]] = ..., set_on_hand_columnar: _Optional[_Union[SetOnHandColumnarRequest, _Mapping]] = ..., upsert_nodes: _Optional[_Union[UpsertNodesRequest, _Mapping]] = ..., upsert_groups: _Optional[_Union[UpsertGroupsRequest, _Mapping]] = ..., set_safety_stock: _Optional[_Union[SetSafetyStockRequest, _Mapping]] = ..., transfer: _Optional[_Union[TransferRequest, _Mapping]] = ..., move_stock: _Optional[_Union[MoveStockRequest, _Mapping]] = ...) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    status: _types_pb2.LineStatus
    count: int
    def __init__(self, status: _Optional[_Union[_types_pb2.LineStatus, str]] = ..., count: _Optional[int] = ...) -> None: ...

class StreamSupplyResponse(_message.Message):
    __slots__ = ("messages", "messages_replayed", "lines", "lines_ok", "failures", "journal_seq")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_REPLAYED_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    LINES_OK_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_SEQ_FIELD_NUMBER: _ClassVar[int]
    messages: int
    messages_replayed: int
    lines: int
    lines_ok: int
    failures: _containers.RepeatedCompositeFieldContainer[StatusCount]
    journal_seq: int
    def __init__(self, messages: _Optional[int] = ..., messages_replayed: _Optional[int] = ..., lines: _Optional[int] = ..., lines_ok: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., journal_seq: _Optional[int] = ...) -> None: ...
