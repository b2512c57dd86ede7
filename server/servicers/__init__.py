"""The gRPC servicers: thin translators between `omnistock.v1` messages and engine commands.

`add_servicers(server, app)` registers every service this version serves and returns their full
names (for health checking and reflection).
"""

from __future__ import annotations

from typing import Any

import grpc

from omnistock.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
    sourcing_pb2,
    sourcing_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
)
from server.servicers.admin import AdminServicer
from server.servicers.availability import AvailabilityServicer
from server.servicers.reservation import ReservationServicer
from server.servicers.sourcing import SourcingServicer
from server.servicers.supply import SupplyServicer

__all__ = ["SERVICE_NAMES", "add_servicers"]

SERVICE_NAMES: tuple[str, ...] = (
    availability_pb2.DESCRIPTOR.services_by_name["AvailabilityService"].full_name,
    reservation_pb2.DESCRIPTOR.services_by_name["ReservationService"].full_name,
    supply_pb2.DESCRIPTOR.services_by_name["SupplyService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    sourcing_pb2.DESCRIPTOR.services_by_name["SourcingService"].full_name,
)


def add_servicers(server: grpc.aio.Server, app: Any) -> list[str]:
    """Register every omnistock.v1 service on `server`; their full names."""
    availability_pb2_grpc.add_AvailabilityServiceServicer_to_server(
        AvailabilityServicer(app), server
    )
    reservation_pb2_grpc.add_ReservationServiceServicer_to_server(ReservationServicer(app), server)
    supply_pb2_grpc.add_SupplyServiceServicer_to_server(SupplyServicer(app), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(app), server)
    sourcing_pb2_grpc.add_SourcingServiceServicer_to_server(SourcingServicer(app), server)
    return list(SERVICE_NAMES)
