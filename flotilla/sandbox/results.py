"""What goes into and comes out of one invocation: Request, Response, InvocationResult.

The outcome is `flotilla.outcomes.Outcome` (the one enum of sandbox, wire and API; the
sandbox decides its first six members).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flotilla.hosts.base import SYNC_CALL, CallInfo, LogRecord
from flotilla.outcomes import Outcome


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
