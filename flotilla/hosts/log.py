"""The `log` host interface: structured records appended to the invocation's log sink."""

from __future__ import annotations

from flotilla.hosts.base import InvocationContext
from flotilla.hosts.observe import Meter, Observe

LEVELS = ("debug", "info", "warn", "error")


class LogHost:
    """Appends guest log records (level, message, time) to `ctx.logs`; never fails.

    The sink caps the record count and total size and counts what it drops; an unknown
    level (not possible through the WIT enum) is recorded as `info`.
    """

    def __init__(self, *, observe: Observe | None = None) -> None:
        self._meter = Meter("log", observe)

    def log(self, ctx: InvocationContext, level: str, message: str) -> None:
        """Record one message at `level` (debug | info | warn | error)."""
        with self._meter.measure("log"):
            ctx.logs.add(level if level in LEVELS else "info", message)
