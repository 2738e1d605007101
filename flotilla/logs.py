"""Logging of both processes: JSON lines (or plain text), tagged with the current invocation.

Code that handles an invocation calls `bind(invocation_id, function)` once; every record
logged after that in the same context (the worker thread running it, the dispatcher task
serving the request) carries `invocation_id` and `function` until `unbind()`. The tags are
context variables read by a filter on the handler, so no call site passes them and third
party loggers (aio-pika, uvicorn, botocore) get them too.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import IO

from pythonjsonlogger.json import JsonFormatter

_invocation_id: ContextVar[str | None] = ContextVar("flotilla_invocation_id", default=None)
_function: ContextVar[str | None] = ContextVar("flotilla_function", default=None)

JSON_FIELDS = "{asctime}{levelname}{name}{message}"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
FORMATS = ("json", "text")


def bind(invocation_id: str, function: str | None = None) -> None:
    """Tag the records logged from now on in this context with the invocation."""
    _invocation_id.set(invocation_id)
    if function is not None:
        _function.set(function)


def unbind() -> None:
    """Stop tagging (a worker thread goes on to the next delivery)."""
    _invocation_id.set(None)
    _function.set(None)


def current() -> tuple[str | None, str | None]:
    """(invocation id, function) of this context."""
    return _invocation_id.get(), _function.get()


class InvocationFilter(logging.Filter):
    """Adds `invocation_id` and `function` to records logged while an invocation is bound."""

    def filter(self, record: logging.LogRecord) -> bool:
        invocation_id = _invocation_id.get()
        context = ""
        if invocation_id is not None and not hasattr(record, "invocation_id"):
            record.invocation_id = invocation_id
            function = _function.get()
            if function is not None:
                record.function = function
            context = f" [{function or '-'} {invocation_id}]"
        record.context = context
        return True


class _JsonFormatter(JsonFormatter):
    """JSON without the text formatter's helper field."""

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:  # type: ignore[type-arg]
        super().add_fields(log_data, record, message_dict)
        log_data.pop("context", None)


def handler(fmt: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) writing `fmt` records with invocation tags."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        out.setFormatter(_JsonFormatter(
            JSON_FIELDS, style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        out.setFormatter(logging.Formatter(TEXT_FORMAT))
    out.addFilter(InvocationFilter())
    return out


def configure(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Route every logger through one handler on the root logger (replacing earlier ones)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(fmt, stream))
    root.setLevel(level.upper())
