"""Structured logs: one JSON object per line on stderr.

Every record carries `ts` (RFC 3339, UTC, milliseconds), `level`, `logger` and `msg`; extra
fields passed with `log.info(..., extra={"fields": {...}})` are merged in; an exception adds
`exc` (type and message) and, for bugs, `traceback`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

__all__ = ["JsonFormatter", "setup_logging"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["exc"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO", *, stream: Any = None) -> None:
    """Route every logger to one JSON handler on stderr (idempotent)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # grpc and numba are chatty at INFO/DEBUG; their warnings still get through.
    for name in ("numba", "grpc", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
