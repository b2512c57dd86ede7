"""AdminService: take a snapshot now, and the server's statistics (role `admin`)."""

from __future__ import annotations

from typing import Any

import grpc

from omnistock.v1 import admin_pb2, admin_pb2_grpc
from server.convert import abort_status, unary

__all__ = ["AdminServicer"]

_STATS_FIELDS = frozenset(admin_pb2.GetStatsResponse.DESCRIPTOR.fields_by_name)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, app: Any) -> None:
        self.app = app

    @unary
    async def Snapshot(
        self, request: admin_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SnapshotResponse:
        take = getattr(self.app, "snapshot_now", None) or self.app.snapshot
        try:
            info = await take()
        except Exception as exc:
            if getattr(exc, "reason", None) is not None and getattr(exc, "code", None):
                raise  # a SequencerError (e.g. still recovering): its own status
            await abort_status(
                context,
                grpc.StatusCode.INTERNAL,
                "SNAPSHOT_FAILED",
                f"snapshot failed: {exc}",
            )
        return admin_pb2.SnapshotResponse(
            journal_seq=info.journal_seq,
            bytes=info.bytes,
            duration_ms=info.duration_ms,
            location=info.location,
            at_ms=info.at_ms,
        )

    @unary
    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetStatsResponse:
        stats = self.app.stats()
        return admin_pb2.GetStatsResponse(
            **{name: value for name, value in stats.items() if name in _STATS_FIELDS}
        )
