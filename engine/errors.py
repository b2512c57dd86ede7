"""Errors are values inside the engine (`Rejection`) and exceptions only at the friendly API.

Each rejection names a gRPC-style code, a machine-readable reason (sent as
`google.rpc.ErrorInfo.reason`) and a message that says where: "lines[3].qty: must be in 1..10^9".
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

__all__ = ["Code", "EngineError", "Rejection", "id_conflict"]


class Code(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


class Rejection(msgspec.Struct, frozen=True):
    """A whole command refused; nothing changed."""

    code: Code
    reason: str  # e.g. "QTY_OUT_OF_RANGE", "RESERVATION_NOT_FOUND", "IDEMPOTENCY_CONFLICT"
    message: str


def id_conflict(field: str, value: str) -> Rejection:
    """An idempotency key (`reservation_id`, `request_id`, `transfer_id`) sent again with other
    content."""
    return Rejection(
        Code.ALREADY_EXISTS, "ID_CONFLICT", f"{field} {value!r} was used with other content"
    )


class EngineError(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.code.value} {rejection.reason}: {rejection.message}")
        self.rejection = rejection

    @property
    def code(self) -> Code:
        return self.rejection.code

    @property
    def reason(self) -> str:
        return self.rejection.reason
