"""Structured JSON log lines for every mlcycle process: one object per line, the fields a
call passes as `extra=` beside time, level, logger and message.

Standard library only and nothing from mlcycle, so the operator, the data plane and the
local stack can all use it without pulling each other in.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO


class JsonLogFormatter(logging.Formatter):
    """`log.info("pod accepted", extra={"namespace": ns, "pod": name})` becomes
    `{"time": …, "level": "INFO", "logger": …, "message": "pod accepted", "namespace": …}`.

    Every record attribute a plain LogRecord does not have is a field, so callers need no
    wrapper. An exception's traceback goes under `exception`.
    """

    _STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # Values JSON has no type for (paths, datetimes, exceptions) are written as text.
        return json.dumps(entry, default=str)


def _utc_timestamp(record: logging.LogRecord) -> str:
    # ISO 8601 in UTC: log collectors parse it without knowing the pod's locale or zone.
    created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return created.isoformat(timespec="milliseconds")


def configure_json_logging(level: str, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing JSON lines to `stream`
    (stderr by default) at `level`."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
