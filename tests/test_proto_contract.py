"""The omnistock.v1 API contract: generated code is fresh, names and numbers are exactly as agreed
(issue 3, 4, 6), and a Node client can load the protos and discover the services by reflection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
NODE_DIR = Path(__file__).resolve().parent / "node"
SUBPROCESS_TIMEOUT_S = 120
NPM_INSTALL_TIMEOUT_S = 300

try:
    import omnistock.v1  # noqa: F401
except ImportError:  # not installed (e.g. a bare checkout): import from the source tree
    sys.path.insert(0, str(PROTO_ROOT))

from omnistock.v1 import (  # noqa: E402
    admin_pb2,
    availability_pb2,
    errors_pb2,
    reservation_pb2,
    sourcing_pb2,
    supply_pb2,
    types_pb2,
)

MODULES = [
    admin_pb2,
    availability_pb2,
    errors_pb2,
    reservation_pb2,
    sourcing_pb2,
    supply_pb2,
    types_pb2,
]
PACKAGE = "omnistock.v1"

SERVICES = {
    "AvailabilityService": {
        "GetAvailability": ("GetAvailabilityRequest", "GetAvailabilityResponse", False, False),
        "GetAvailabilityColumnar": (
            "GetAvailabilityColumnarRequest",
            "GetAvailabilityColumnarResponse",
            False,
            False,
        ),
        "StreamAvailability": (
            "GetAvailabilityColumnarRequest",
            "GetAvailabilityColumnarResponse",
            True,
            True,
        ),
        "FindNearby": ("FindNearbyRequest", "FindNearbyResponse", False, False),
        "WatchAvailability": ("WatchRequest", "StockEvent", False, True),
    },
    "ReservationService": {
        "Reserve": ("ReserveRequest", "ReserveResponse", False, False),
        "Commit": ("CommitRequest", "CommitResponse", False, False),
        "Release": ("ReleaseRequest", "ReleaseResponse", False, False),
        "Extend": ("ExtendRequest", "ExtendResponse", False, False),
        "GetReservation": ("GetReservationRequest", "GetReservationResponse", False, False),
        "Fulfill": ("FulfillRequest", "FulfillResponse", False, False),
        "ReserveBatch": ("ReserveBatchRequest", "ReserveBatchResponse", False, False),
        "StreamReserve": ("ReserveBatchRequest", "ReserveBatchResponse", True, True),
        "CommitBatch": ("ReservationIdsBatch", "ReservationStatesBatch", False, False),
        "ReleaseBatch": ("ReservationIdsBatch", "ReservationStatesBatch", False, False),
    },
    "SupplyService": {
        "Adjust": ("AdjustRequest", "AdjustResponse", False, False),
        "SetOnHand": ("SetOnHandRequest", "SetOnHandResponse", False, False),
        "UpsertNodes": ("UpsertNodesRequest", "UpsertNodesResponse", False, False),
        "UpsertGroups": ("UpsertGroupsRequest", "UpsertGroupsResponse", False, False),
        "SetSafetyStock": ("SetSafetyStockRequest", "SetSafetyStockResponse", False, False),
        "MoveStock": ("MoveStockRequest", "MoveStockResponse", False, False),
        "Transfer": ("TransferRequest", "TransferResponse", False, False),
        "AdjustColumnar": ("AdjustColumnarRequest", "AdjustColumnarResponse", False, False),
        "SetOnHandColumnar": (
            "SetOnHandColumnarRequest",
            "SetOnHandColumnarResponse",
            False,
            False,
        ),
        "StreamSupply": ("SupplyMessage", "StreamSupplyResponse", True, False),
        "SetThresholds": ("SetThresholdsRequest", "SetThresholdsResponse", False, False),
    },
    "SourcingService": {
        "SourceOrder": ("SourceOrderRequest", "SourceOrderResponse", False, False),
    },
    "AdminService": {
        "Snapshot": ("SnapshotRequest", "SnapshotResponse", False, False),
        "GetStats": ("GetStatsRequest", "GetStatsResponse", False, False),
    },
}

# message -> {field: (number, type, label)}; type is a scalar name, "Message:<Name>" or
# "Enum:<Name>"; label is "repeated" or "". Only the fields other teams code against.
FIELDS = {
    "Line": {"sku": (1, "string", ""), "node_id": (2, "string", ""), "qty": (3, "int64", "")},
    "Quantities": {
        name: (number, "int64", "")
        for number, name in enumerate(
            [
                "on_hand",
                "reserved",
                "allocated",
                "safety_stock",
                "unavailable",
                "inbound",
                "available",
            ],
            start=1,
        )
    },
    "AvailabilityQuery": {
        "sku": (1, "string", ""),
        "node_id": (2, "string", ""),
        "group_id": (3, "string", ""),
        "promise_by_ms": (4, "int64", ""),
    },
    "AvailabilityResult": {
        "query": (1, "Message:AvailabilityQuery", ""),
        "status": (2, "Enum:LineStatus", ""),
        "quantities": (3, "Message:Quantities", ""),
        "available_by_date": (4, "int64", ""),
    },
    "GetAvailabilityRequest": {"queries": (1, "Message:AvailabilityQuery", "repeated")},
    "GetAvailabilityResponse": {"results": (1, "Message:AvailabilityResult", "repeated")},
    "ReserveRequest": {
        "reservation_id": (1, "string", ""),
        "lines": (2, "Message:Line", "repeated"),
        "ttl_ms": (3, "int64", ""),
        "allow_partial": (4, "bool", ""),
        "group_id": (5, "string", ""),
    },
    "ReserveResponse": {
        "reservation": (1, "Message:Reservation", ""),
        "replayed": (2, "bool", ""),
    },
    "Reservation": {
        "reservation_id": (1, "string", ""),
        "state": (2, "Enum:ReservationState", ""),
        "lines": (3, "Message:ReservedLine", "repeated"),
        "expires_at_ms": (4, "int64", ""),
    },
    "ReservedLine": {
        "line": (1, "Message:Line", ""),
        "reserved_qty": (2, "int64", ""),
        "fulfilled_qty": (3, "int64", ""),
        "status": (4, "Enum:LineStatus", ""),
    },
    "CommitRequest": {"reservation_id": (1, "string", "")},
    "ReleaseRequest": {"reservation_id": (1, "string", "")},
    "ExtendRequest": {"reservation_id": (1, "string", ""), "ttl_ms": (2, "int64", "")},
    "GetReservationRequest": {"reservation_id": (1, "string", "")},
    "FulfillRequest": {
        "reservation_id": (1, "string", ""),
        "lines": (2, "Message:Line", "repeated"),
    },
    "AdjustRequest": {
        "request_id": (1, "string", ""),
        "adjustments": (2, "Message:Adjustment", "repeated"),
    },
    "Adjustment": {
        "sku": (1, "string", ""),
        "node_id": (2, "string", ""),
        "delta": (3, "int64", ""),
        "reason": (4, "Enum:AdjustReason", ""),
    },
    "SetOnHandRequest": {
        "request_id": (1, "string", ""),
        "counts": (2, "Message:StockCount", "repeated"),
    },
    "StockCount": {
        "sku": (1, "string", ""),
        "node_id": (2, "string", ""),
        "on_hand": (3, "int64", ""),
        "source_seq": (4, "int64", ""),
    },
    "UpsertNodesRequest": {"nodes": (2, "Message:Node", "repeated")},
    "Node": {
        "node_id": (1, "string", ""),
        "type": (2, "Enum:NodeType", ""),
        "lat": (3, "double", ""),
        "lon": (4, "double", ""),
        "pickup": (5, "bool", ""),
        "ship": (6, "bool", ""),
        "enabled": (7, "bool", ""),
        "priority": (8, "int32", ""),
        "daily_capacity": (9, "int64", ""),
        "name": (10, "string", ""),
    },
    "Group": {
        "group_id": (1, "string", ""),
        "node_ids": (2, "string", "repeated"),
        "buffer_units": (3, "int64", ""),
        "buffer_pct": (4, "double", ""),
        "kind": (5, "Enum:GroupKind", ""),
    },
    "TransferRequest": {
        "request_id": (1, "string", ""),
        "transfer_id": (2, "string", ""),
        "action": (3, "Enum:TransferAction", ""),
        "sku": (4, "string", ""),
        "from_node_id": (5, "string", ""),
        "to_node_id": (6, "string", ""),
        "qty": (7, "int64", ""),
        "expected_at_ms": (8, "int64", ""),
    },
    "FindNearbyRequest": {
        "lat": (1, "double", ""),
        "lon": (2, "double", ""),
        "radius_km": (3, "double", ""),
        "limit": (4, "int32", ""),
        "lines": (5, "Message:Line", "repeated"),
        "pickup_only": (6, "bool", ""),
        "node_types": (7, "Enum:NodeType", "repeated"),
        "group_id": (8, "string", ""),
        "full_cart_only": (9, "bool", ""),
        "full_cart_first": (10, "bool", ""),
    },
    "NearbyNode": {
        "node_id": (1, "string", ""),
        "distance_km": (2, "double", ""),
        "available": (3, "int64", "repeated"),
        "covers_all": (4, "bool", ""),
    },
    "WatchRequest": {
        "skus": (1, "string", "repeated"),
        "node_ids": (2, "string", "repeated"),
        "group_ids": (3, "string", "repeated"),
        "thresholds_only": (4, "bool", ""),
        "resume_after_seq": (5, "uint64", ""),
    },
    "StockEvent": {
        "seq": (1, "uint64", ""),
        "sku": (2, "string", ""),
        "node_id": (3, "string", ""),
        "group_id": (4, "string", ""),
        "quantities": (5, "Message:Quantities", ""),
        "kind": (6, "Enum:EventKind", ""),
        "at_ms": (7, "int64", ""),
    },
    "ReserveBatchRequest": {
        "reservation_ids": (1, "string", "repeated"),
        "line_counts": (2, "uint32", "repeated"),
        "skus": (3, "string", "repeated"),
        "node_ids": (4, "string", "repeated"),
        "qtys": (5, "int64", "repeated"),
        "ttl_ms": (6, "int64", ""),
        "allow_partial": (7, "bool", ""),
    },
}

ONEOFS = {
    "AvailabilityQuery": ("scope", {"node_id", "group_id"}),
    "StockEvent": ("scope", {"node_id", "group_id"}),
    "SourceOrderRequest": ("destination", {"ship_to", "pickup_node_id"}),
}

ENUMS = {
    "LineStatus": [
        "UNSPECIFIED",
        "OK",
        "INSUFFICIENT",
        "UNKNOWN_SKU",
        "UNKNOWN_NODE",
        "STALE",
        "UNKNOWN_GROUP",
        "NODE_DISABLED",
        "INVALID_QTY",
        "NEGATIVE_STOCK",
        "PARTIAL",
    ],
    "ReservationState": [
        "UNSPECIFIED",
        "HELD",
        "COMMITTED",
        "FULFILLED",
        "RELEASED",
        "EXPIRED",
        "REJECTED",
    ],
    "AdjustReason": [
        "UNSPECIFIED",
        "RECEIPT",
        "SALE",
        "RETURN",
        "DAMAGE",
        "CORRECTION",
        "RETURN_TO_INSPECTION",
    ],
    "NodeType": ["UNSPECIFIED", "DC", "STORE", "DARK_STORE", "THIRD_PARTY", "MARKETPLACE"],
    "EventKind": ["UNSPECIFIED", "CHANGED", "OUT_OF_STOCK", "LOW_STOCK", "BACK_IN_STOCK"],
    "FulfilmentMode": ["UNSPECIFIED", "SHIP", "PICKUP"],
    "TransferAction": ["UNSPECIFIED", "SHIP", "RECEIVE", "CANCEL"],
}

# Columnar shapes must be packed repeated scalars so the server can turn them into numpy arrays.
COLUMNAR = [
    "GetAvailabilityColumnarRequest",
    "GetAvailabilityColumnarResponse",
    "ReserveBatchRequest",
    "ReserveBatchResponse",
    "AdjustColumnarRequest",
    "AdjustColumnarResponse",
    "SetOnHandColumnarRequest",
    "SetOnHandColumnarResponse",
]


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _pool():
    return types_pb2.DESCRIPTOR.pool


def _message(name: str):
    return _pool().FindMessageTypeByName(f"{PACKAGE}.{name}")


def _field_signature(field) -> tuple[int, str, str]:
    if field.message_type is not None:
        kind = f"Message:{field.message_type.name}"
    elif field.enum_type is not None:
        kind = f"Enum:{field.enum_type.name}"
    else:
        kind = _SCALAR_NAMES[field.type]
    label = "repeated" if field.is_repeated else ""
    return field.number, kind, label


def _scalar_names() -> dict[int, str]:
    from google.protobuf.descriptor import FieldDescriptor

    prefix = "TYPE_"
    return {
        getattr(FieldDescriptor, attr): attr[len(prefix) :].lower()
        for attr in dir(FieldDescriptor)
        if attr.startswith(prefix) and attr not in {"TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP"}
    }


_SCALAR_NAMES = _scalar_names()


def test_generated_code_is_fresh():
    result = subprocess.run(
        [sys.executable, str(PROTO_ROOT / "gen.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_is_in_package_omnistock_v1():
    for module in MODULES:
        assert module.DESCRIPTOR.package == PACKAGE, module.__name__
        file_proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert file_proto.syntax == "proto3", module.__name__


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_service_methods(service_name):
    service = _pool().FindServiceByName(f"{PACKAGE}.{service_name}")
    methods = {method.name: method for method in service.methods}
    assert set(methods) == set(SERVICES[service_name])
    for name, (request, response, client_stream, server_stream) in SERVICES[service_name].items():
        method = methods[name]
        assert method.input_type.full_name == f"{PACKAGE}.{request}", name
        assert method.output_type.full_name == f"{PACKAGE}.{response}", name
        assert method.client_streaming is client_stream, name
        assert method.server_streaming is server_stream, name


@pytest.mark.parametrize("message_name", sorted(FIELDS))
def test_contract_fields(message_name):
    fields = _message(message_name).fields_by_name
    for field_name, expected in FIELDS[message_name].items():
        assert field_name in fields, f"{message_name}.{field_name} missing"
        assert _field_signature(fields[field_name]) == expected, f"{message_name}.{field_name}"


@pytest.mark.parametrize("message_name", sorted(ONEOFS))
def test_oneofs(message_name):
    oneof_name, members = ONEOFS[message_name]
    oneof = _message(message_name).oneofs_by_name[oneof_name]
    assert {field.name for field in oneof.fields} == members


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_enum_numbering(enum_name):
    enum = _pool().FindEnumTypeByName(f"{PACKAGE}.{enum_name}")
    prefix = "".join(
        ("_" + char if char.isupper() and index else char) for index, char in enumerate(enum_name)
    ).upper()
    expected = [(f"{prefix}_{suffix}", number) for number, suffix in enumerate(ENUMS[enum_name])]
    assert [(value.name, value.number) for value in enum.values] == expected


def test_every_enum_value_is_prefixed_and_zero_is_unspecified():
    for module in MODULES:
        enums = list(module.DESCRIPTOR.enum_types_by_name.values())
        for message in module.DESCRIPTOR.message_types_by_name.values():
            enums += list(message.enum_types)
        for enum in enums:
            prefix = "".join(
                ("_" + char if char.isupper() and index else char)
                for index, char in enumerate(enum.name)
            ).upper()
            assert enum.values[0].name == f"{prefix}_UNSPECIFIED"
            assert enum.values[0].number == 0
            for value in enum.values:
                assert value.name.startswith(prefix + "_"), value.name


@pytest.mark.parametrize("message_name", COLUMNAR)
def test_columnar_shapes_are_packed_scalars(message_name):
    message = _message(message_name)
    columns = [field for field in message.fields if field.is_repeated and not field.message_type]
    assert len(columns) >= 2, f"{message_name} has no parallel columns"
    for field in columns:
        if field.type == field.TYPE_STRING:
            continue
        assert field.is_packed, f"{message_name}.{field.name} is not packed"


def test_packed_columns_decode_to_numpy_without_a_loop():
    np = pytest.importorskip("numpy")
    request = reservation_pb2.ReserveBatchRequest(
        reservation_ids=["r1", "r2"],
        line_counts=[1, 2],
        skus=["a", "b", "c"],
        node_ids=["n1", "n1", "n2"],
        qtys=[1, 2, 3],
        ttl_ms=60_000,
    )
    decoded = reservation_pb2.ReserveBatchRequest.FromString(request.SerializeToString())
    qtys = np.array(decoded.qtys, dtype=np.int64)
    assert qtys.tolist() == [1, 2, 3]
    assert int(np.array(decoded.line_counts, dtype=np.uint32).sum()) == len(decoded.skus)


def test_error_reasons_are_distinct_names():
    enum = errors_pb2.ErrorReason.DESCRIPTOR
    reasons = [value.name.removeprefix("ERROR_REASON_") for value in enum.values[1:]]
    assert len(reasons) == len(set(reasons))
    assert "FIELD_INVALID" in reasons and "ID_CONFLICT" in reasons


def test_grpc_stubs_import():
    from omnistock.v1 import (
        admin_pb2_grpc,
        availability_pb2_grpc,
        reservation_pb2_grpc,
        sourcing_pb2_grpc,
        supply_pb2_grpc,
    )

    stubs = {
        "AvailabilityService": availability_pb2_grpc,
        "ReservationService": reservation_pb2_grpc,
        "SupplyService": supply_pb2_grpc,
        "SourcingService": sourcing_pb2_grpc,
        "AdminService": admin_pb2_grpc,
    }
    for service, module in stubs.items():
        assert hasattr(module, f"{service}Stub")
        assert hasattr(module, f"{service}Servicer")
        assert hasattr(module, f"add_{service}Servicer_to_server")


def _node_tools() -> tuple[str, str]:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the cross-language check")
    return node, npm


@pytest.fixture(scope="module")
def node_modules() -> str:
    node, npm = _node_tools()
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return node


def test_node_proto_loader_loads_every_service(node_modules):
    result = subprocess.run(
        [node_modules, "load_proto.js", str(PROTO_ROOT)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for service, methods in SERVICES.items():
        assert f"service {PACKAGE}.{service}\n" in result.stdout
        for method in methods:
            assert f"  {method}(" in result.stdout, method


def test_node_reflection_lists_services(node_modules):
    import grpc
    from grpc_reflection.v1alpha import reflection

    names = [
        service.full_name
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = subprocess.run(
            [node_modules, "reflect.js", f"127.0.0.1:{port}"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
            env={**os.environ, "OMNISTOCK_TOKEN": ""},
        )
    finally:
        server.stop(grace=None)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = set(result.stdout.split())
    assert {f"{PACKAGE}.{service}" for service in SERVICES} <= listed
