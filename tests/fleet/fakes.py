"""A fake `Runner` for consumer and transport tests: behaviour chosen by function name."""

from __future__ import annotations

import threading
import time
import uuid

from flotilla.envelope import REPLY_JOB, Envelope, Reply, now_ms, reply_to
from flotilla.outcomes import Outcome


class FakeRunner:
    """`echo` echoes, `fail` returns a function error, `block` waits for `release`,
    `boom` raises, anything else is `not_found`. Counts runs per invocation id."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.runs: dict[str, int] = {}
        self._lock = threading.Lock()

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        with self._lock:
            self.runs[envelope.invocation_id] = self.runs.get(envelope.invocation_id, 0) + 1
        if envelope.function == "echo":
            return Reply(
                envelope.invocation_id, envelope.correlation_id, Outcome.OK, 200,
                (("x-echo", "1"),), envelope.body,
            )
        if envelope.function == "fail":
            return reply_to(envelope, Outcome.FUNCTION_ERROR, "guest said no")
        if envelope.function == "block":
            self.started.release()
            self.release.wait(30)
            return Reply(
                envelope.invocation_id, envelope.correlation_id, Outcome.OK, 200, (), b"done"
            )
        if envelope.function == "sleep":
            time.sleep(int(envelope.body or b"0") / 1000)
            return Reply(
                envelope.invocation_id, envelope.correlation_id, Outcome.OK, 200, (), b"slept"
            )
        if envelope.function == "boom":
            raise RuntimeError("worker bug")
        return reply_to(envelope, Outcome.NOT_FOUND, f"no {envelope.function}@{envelope.digest}")


def envelope(
    function: str = "echo",
    body: bytes = b"hi",
    *,
    deadline_in_ms: int = 30_000,
    job: bool = False,
    reply_to_queue: str = "",
) -> Envelope:
    """A fresh envelope with unique ids."""
    iid = uuid.uuid4().hex
    return Envelope(
        invocation_id=iid,
        correlation_id=iid,
        function=function,
        digest="d" * 64,
        headers=(),
        body=body,
        deadline_ms=now_ms() + deadline_in_ms,
        reply_mode=REPLY_JOB if job else "reply",
        reply_to=reply_to_queue,
    )
