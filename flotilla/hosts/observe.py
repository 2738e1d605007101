"""The per-call metrics hook of the host interfaces: `observe(interface, op, outcome, seconds)`.

A host wraps each call in `Meter.measure(op)`; the outcome is `ok`, the HostError's WIT case
(`denied`, `timeout`, ...) or `error` for anything unexpected (a bug). With no hook the
wrapper costs one attribute check; a hook that raises is logged and otherwise ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

from flotilla.hosts.base import HostError

log = logging.getLogger(__name__)

Observe = Callable[[str, str, str, float], None]

_NULL: AbstractContextManager[None] = nullcontext()


class _Span(AbstractContextManager[None]):
    __slots__ = ("_interface", "_observe", "_op", "_start")

    def __init__(self, observe: Observe, interface: str, op: str) -> None:
        self._observe = observe
        self._interface = interface
        self._op = op
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, HostError):
            outcome = exc.case
        else:
            outcome = "error"
        try:
            self._observe(self._interface, self._op, outcome, time.perf_counter() - self._start)
        except Exception:
            # A broken metrics hook must not turn a guest's successful call into a failure.
            log.exception("observe hook failed for %s.%s", self._interface, self._op)


class Meter:
    """Times one interface's calls and reports them to an optional `observe` callable."""

    def __init__(self, interface: str, observe: Observe | None = None) -> None:
        self.interface = interface
        self._observe = observe

    def measure(self, op: str) -> AbstractContextManager[None]:
        """A context manager that reports `op`'s outcome and duration when it exits."""
        if self._observe is None:
            return _NULL
        return _Span(self._observe, self.interface, op)
