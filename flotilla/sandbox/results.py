"""What goes into and comes out of one invocation: Request, Response, Outcome, InvocationResult."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from flotilla.hosts.base import SYNC_CALL, CallInfo, LogRecord


@dataclass(frozen=True)
class Request:
    """One invocation's input, as the guest's `types.request` record."""

    invocation_id: str
    function_name: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    call: CallInfo = SYNC_CALL  # method, path, query, caller, kind, attempt (`invocation`)


@dataclass(frozen=True)
class Response:
    """The guest's `types.response`, returned to the caller as-is."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class Outcome(str, enum.Enum):
    """How an invocation ended; every value but `ok` is a failure the caller can tell apart."""

    OK = "ok"  # handle returned ok(response) within every limit
    TIMEOUT = "timeout"  # the epoch deadline (config.timeout_ms) interrupted the guest
    MEMORY_LIMIT = "memory_limit"  # linear memory hit config.memory_limit_mb
    TRAP = "trap"  # the guest trapped (unreachable, stack overflow, wasi exit, ...)
    FUNCTION_ERROR = "function_error"  # handle returned err(string)
    BAD_RESPONSE = "bad_response"  # the response broke a limit (body size, status range)


@dataclass(frozen=True)
class Timings:
    """Microseconds spent in each phase of one invocation."""

    store_us: float = 0.0  # new Store, WASI context, limits, deadline
    instantiate_us: float = 0.0
    call_us: float = 0.0  # lowering the request, running handle, lifting to C values
    post_return_us: float = 0.0  # reading the response into Python, post-return
    teardown_us: float = 0.0  # dropping the store (instance, memory, WASI context)
    total_us: float = 0.0  # all of the above

    @property
    def invocation_us(self) -> float:
        """New store, instantiate, call and post-return: the total without the teardown."""
        return self.total_us - self.teardown_us


@dataclass(frozen=True)
class InvocationResult:
    """The outcome, the response when ok, the error text otherwise, and the guest's logs."""

    outcome: Outcome
    response: Response | None = None
    error: str | None = None
    logs: tuple[LogRecord, ...] = ()
    logs_dropped: int = 0
    timings: Timings = field(default_factory=Timings)

    @property
    def ok(self) -> bool:
        """True when the outcome is `ok`."""
        return self.outcome is Outcome.OK
