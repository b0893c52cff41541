"""The request id of the work in progress, kept in contextvars.

Set by the HTTP middleware for a request (the caller's `X-Request-ID` when it is sane, a new id
otherwise) and by the Celery signals for a task (the id of the request or task that queued it,
carried in a message header). Every log line and every task queued meanwhile carries it, so one
change can be followed from the request or webhook through the tasks and pushes it caused.
contextvars (not thread locals) so it is right under threads, asyncio and eager tasks alike.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

REQUEST_ID_HEADER = "X-Request-ID"
# Ids we accept from callers: what tracing systems and proxies generate (UUIDs, hex, base64url,
# "Root=1-..." style ids), bounded; anything else (spaces, quotes, control characters that could
# forge a log line) is replaced by a fresh id.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/@-]{0,127}")

request_id_var: ContextVar[str | None] = ContextVar("stockline_request_id", default=None)
task_var: ContextVar[tuple[str, str] | None] = ContextVar("stockline_task", default=None)


def request_id_new() -> str:
    return uuid.uuid4().hex


def request_id_sane(value: str | None) -> str | None:
    """`value` if it may be used as a request id as it is, else None."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return None


def request_id_get() -> str | None:
    return request_id_var.get()


def request_id_set(value: str) -> Token:
    return request_id_var.set(value)


def request_id_reset(token: Token) -> None:
    request_id_var.reset(token)
