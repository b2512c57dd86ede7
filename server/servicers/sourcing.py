"""SourcingService.SourceOrder and AvailabilityService.FindNearby: thin translators.

A plain SourceOrder is a read of `app.ledger` (no sequencer round trip); with a reservation_id it
is a `SourceReserve` command submitted through the sequencer, so the plan and the hold are made
in the same engine batch. Rules and defaults: docs/sourcing.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from engine import sourcing
from engine.commands import (
    FulfilmentMode,
    NearbyResult,
    SkuQty,
    SourceReserve,
    SourcingPlan,
    SourcingPolicy,
)
from engine.errors import EngineError, Rejection
from omnistock.v1 import (
    availability_pb2,
    sourcing_pb2,
    sourcing_pb2_grpc,
    types_pb2,
)
from server.convert import check_id, check_ttl, raise_invalid, reservation_pb, submit, unary

__all__ = ["SourcingServicer", "find_nearby", "plan_pb"]

_DEFAULTS = SourcingPolicy()


def _lines(lines: Sequence[types_pb2.Line]) -> tuple[SkuQty, ...]:
    # node_id is ignored here (the engine picks the node); sku and qty are validated by the engine
    # with the same field names (lines[i].sku, lines[i].qty).
    return tuple(SkuQty(line.sku, line.qty) for line in lines)


def _policy(p: sourcing_pb2.SourcingPolicy) -> SourcingPolicy:
    return SourcingPolicy(
        max_shipments=p.max_shipments,
        node_types=tuple(p.node_types),  # type: ignore[arg-type]
        group_id=p.group_id,
        allow_ship_from_store=(
            p.allow_ship_from_store
            if p.HasField("allow_ship_from_store")
            else _DEFAULTS.allow_ship_from_store
        ),
        distance_weight=(
            p.distance_weight if p.HasField("distance_weight") else _DEFAULTS.distance_weight
        ),
        priority_weight=(
            p.priority_weight if p.HasField("priority_weight") else _DEFAULTS.priority_weight
        ),
        split_penalty=p.split_penalty if p.HasField("split_penalty") else _DEFAULTS.split_penalty,
        respect_capacity=(
            p.respect_capacity if p.HasField("respect_capacity") else _DEFAULTS.respect_capacity
        ),
    )


def plan_pb(plan: SourcingPlan) -> sourcing_pb2.Plan:
    return sourcing_pb2.Plan(
        shipments=[
            sourcing_pb2.Shipment(
                node_id=s.node_id,
                lines=[types_pb2.Line(sku=x.sku, node_id=x.node_id, qty=x.qty) for x in s.lines],
                distance_km=s.distance_km,
                cost=s.cost,
                is_transfer=s.is_transfer,
                ready_at_ms=s.ready_at_ms,
            )
            for s in plan.shipments
        ],
        shipment_count=plan.shipment_count,
        total_cost=plan.total_cost,
        unfulfilled=[
            sourcing_pb2.UnfulfilledLine(sku=u.sku, qty=u.qty, reason=int(u.reason))
            for u in plan.unfulfilled
        ],
        explanation=plan.explanation,
    )


class SourcingServicer(sourcing_pb2_grpc.SourcingServiceServicer):
    def __init__(self, app: Any) -> None:
        self.app = app

    @unary
    async def SourceOrder(
        self, request: sourcing_pb2.SourceOrderRequest, context: grpc.aio.ServicerContext
    ) -> sourcing_pb2.SourceOrderResponse:
        destination = request.WhichOneof("destination")
        mode = FulfilmentMode(request.mode) if request.mode in (1, 2) else None
        if request.mode and mode is None:
            raise_invalid("mode", f"unknown fulfilment mode {request.mode}")
        if mode is None:
            mode = FulfilmentMode.PICKUP if destination == "pickup_node_id" else FulfilmentMode.SHIP
        if mode == FulfilmentMode.SHIP and destination != "ship_to":
            raise_invalid("ship_to", "required in mode SHIP")
        if mode == FulfilmentMode.PICKUP and destination != "pickup_node_id":
            raise_invalid("pickup_node_id", "required in mode PICKUP")
        lat = request.ship_to.lat if destination == "ship_to" else 0.0
        lon = request.ship_to.lon if destination == "ship_to" else 0.0
        pickup = request.pickup_node_id if destination == "pickup_node_id" else ""
        lines = _lines(request.lines)
        policy = _policy(request.policy)
        if not request.reservation_id:
            result = sourcing.plan(
                self.app.ledger,
                lines,
                mode=mode,
                lat=lat,
                lon=lon,
                pickup_node_id=pickup,
                policy=policy,
            )
            if isinstance(result, Rejection):
                raise EngineError(result)
            return sourcing_pb2.SourceOrderResponse(plan=plan_pb(result[0]))
        check_id(request.reservation_id, "reservation_id")
        check_ttl(request.ttl_ms)
        command = SourceReserve(
            request.reservation_id, request.ttl_ms, lines, mode, lat, lon, pickup, policy
        )
        out = await submit(self.app, context, command, reservation_id=request.reservation_id)
        return sourcing_pb2.SourceOrderResponse(
            plan=plan_pb(out.plan),
            reservation=reservation_pb(out.reservation),
            replayed=out.replayed,
        )


def find_nearby(app: Any, request: availability_pb2.FindNearbyRequest) -> Any:
    """AvailabilityService.FindNearby, called by the availability servicer (a read)."""
    result = sourcing.find_nearby(
        app.ledger,
        request.lat,
        request.lon,
        request.radius_km,
        [(line.sku, line.qty) for line in request.lines],
        limit=request.limit,
        pickup_only=request.pickup_only,
        node_types=tuple(request.node_types),
        group_id=request.group_id,
        full_cart_only=request.full_cart_only,
        full_cart_first=request.full_cart_first,
    )
    if isinstance(result, Rejection):
        raise EngineError(result)
    return nearby_pb(result)


def nearby_pb(result: NearbyResult) -> availability_pb2.FindNearbyResponse:
    return availability_pb2.FindNearbyResponse(
        nodes=[
            availability_pb2.NearbyNode(
                node_id=n.node_id,
                distance_km=n.distance_km,
                available=n.available,
                covers_all=n.covers_all,
            )
            for n in result.nodes
        ],
        line_statuses=[int(s) for s in result.line_statuses],
    )
