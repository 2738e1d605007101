"""The `log` host interface: structured records appended to the invocation's log sink."""

from __future__ import annotations

from typing import Any

from flotilla.hosts import interface as wit
from flotilla.hosts.base import InvocationContext
from flotilla.hosts.observe import Meter, Observe
from flotilla.sandbox import abi

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


# ---- the WIT interface ----------------------------------------------------------------------


def _log(host: LogHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.log(ctx, abi.get_enum(a[0]), wit.arg_string(a, 1))
    return _nothing


def _nothing(_val: abi.Val) -> None:
    return None


INTERFACE = wit.Interface("log", (wit.HostFunc("log", _log, returns=False),), client="log")
