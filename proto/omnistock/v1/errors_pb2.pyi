# ruff: noqa
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_MANY_LINES: _ClassVar[ErrorReason]
    ERROR_REASON_ID_CONFLICT: _ClassVar[ErrorReason]
    ERROR_REASON_RESERVATION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_WRONG_STATE: _ClassVar[ErrorReason]
    ERROR_REASON_OVER_FULFIL: _ClassVar[ErrorReason]
    ERROR_REASON_READ_ONLY_REPLICA: _ClassVar[ErrorReason]
    ERROR_REASON_RESUME_TOO_OLD: _ClassVar[ErrorReason]
    ERROR_REASON_SUBSCRIBER_TOO_SLOW: _ClassVar[ErrorReason]
    ERROR_REASON_OVERLOADED: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_SERVING: _ClassVar[ErrorReason]
    ERROR_REASON_SNAPSHOT_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_MALFORMED_MESSAGE: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_FIELD_INVALID: ErrorReason
ERROR_REASON_TOO_MANY_LINES: ErrorReason
ERROR_REASON_ID_CONFLICT: ErrorReason
ERROR_REASON_RESERVATION_NOT_FOUND: ErrorReason
ERROR_REASON_WRONG_STATE: ErrorReason
ERROR_REASON_OVER_FULFIL: ErrorReason
ERROR_REASON_READ_ONLY_REPLICA: ErrorReason
ERROR_REASON_RESUME_TOO_OLD: ErrorReason
ERROR_REASON_SUBSCRIBER_TOO_SLOW: ErrorReason
ERROR_REASON_OVERLOADED: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
ERROR_REASON_NOT_SERVING: ErrorReason
ERROR_REASON_SNAPSHOT_FAILED: ErrorReason
ERROR_REASON_MALFORMED_MESSAGE: ErrorReason
