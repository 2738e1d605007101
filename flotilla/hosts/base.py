"""What every host interface shares: the per-invocation context and the typed host error."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flotilla.config import FunctionConfig

MAX_LOG_RECORDS = 1000
MAX_LOG_BYTES = 64 * 1024


class HostError(Exception):
    """A host call failed; the guest sees it as the interface's `error` variant.

    `case` is the WIT case name (`unavailable`, `invalid-argument`, `denied`, `timeout`,
    `connection`, `invalid-request`, `too-large`); `detail` its payload, None for cases
    without one.
    """

    def __init__(self, case: str, detail: str | None = None) -> None:
        self.case = case
        self.detail = detail
        super().__init__(f"{case}: {detail}" if detail is not None else case)


@dataclass(frozen=True)
class LogRecord:
    """One structured log line a guest produced (via `log.log`, stdout or stderr)."""

    level: str  # debug | info | warn | error | stdout | stderr
    message: str
    time_ms: int


@dataclass
class LogSink:
    """Collects an invocation's logs, capped in count and bytes; counts what it dropped."""

    max_records: int = MAX_LOG_RECORDS
    max_bytes: int = MAX_LOG_BYTES
    records: list[LogRecord] = field(default_factory=list)
    size: int = 0
    dropped: int = 0

    def add(self, level: str, message: str) -> None:
        """Append one record unless a cap is reached (then it is counted as dropped)."""
        cost = len(message.encode("utf-8", "replace"))
        if len(self.records) >= self.max_records or self.size + cost > self.max_bytes:
            self.dropped += 1
            return
        self.size += cost
        self.records.append(LogRecord(level, message, int(time.time() * 1000)))


START_KINDS = ("sync", "job", "spawned", "scheduled")


@dataclass(frozen=True)
class CallInfo:
    """How an invocation was started and what its caller asked for (the `invocation` interface)."""

    method: str = "POST"
    path: str = "/"
    query: tuple[tuple[str, str], ...] = ()
    caller: str | None = None  # the API key id; None for public and dev-mode calls
    kind: str = "sync"  # one of START_KINDS
    attempt: int = 1


SYNC_CALL = CallInfo()


@dataclass
class InvocationContext:
    """The state one invocation's host calls see; created per invocation, dropped after."""

    config: FunctionConfig
    invocation_id: str
    deadline: float  # time.monotonic() value after which host calls must not run
    logs: LogSink = field(default_factory=LogSink)
    host_calls: int = 0
    call: CallInfo = SYNC_CALL
    spawns: int = 0  # jobs this invocation started (spawn.job), capped per invocation

    def remaining(self) -> float:
        """Seconds left before the invocation's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())
