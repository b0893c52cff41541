"""Log records carry the request id; one formatter for people, one for machines (LOG_FORMAT=json).

A small stdlib Formatter rather than python-json-logger or structlog: all we need is one JSON
object per line with a fixed set of keys plus the `extra=` fields, and the stdlib `logging` calls
every module already makes stay as they are. It is ~40 lines, no dependency to track (and
python-json-logger moved its module path in 3.x).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from core.observability.context import request_id_var, task_var

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "request_id", "task_name", "task_id", "context_tag", "taskName",
}


class RequestContextFilter(logging.Filter):
    """Adds `request_id`, `task_name` and `task_id` to every record (None outside a request or
    task). Attached to handlers in settings.LOGGING, so third-party loggers get them too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        task = task_var.get()
        if not hasattr(record, "task_name"):
            record.task_name, record.task_id = task if task else (None, None)
        return True


class TextFormatter(logging.Formatter):
    """`2026-12-01 10:00:00,123 INFO name [request id] message`: the id only when there is one."""

    def __init__(self, fmt: str | None = None, *args, **kwargs) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(context_tag)s%(message)s", *args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.context_tag = f"[{request_id}] " if request_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, request_id, task,
    task_id, process, the `extra=` fields, and exc_info (the formatted traceback) when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if getattr(record, "task_name", None):
            entry["task"] = record.task_name
            entry["task_id"] = record.task_id
        entry["process"] = record.process
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
