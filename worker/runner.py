"""`SandboxRunner`: the `Runner` that runs envelopes in the wasm sandbox.

Looks the function up in the artifact cache, caps its timeout by the envelope's deadline,
invokes it, and turns the `InvocationResult` into a `Reply`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from flotilla.envelope import (
    DEFAULT_METHOD,
    DEFAULT_PATH,
    KIND_SYNC,
    Envelope,
    Reply,
    reply_to,
)
from flotilla.hosts.base import SYNC_CALL, CallInfo
from flotilla.outcomes import Outcome
from worker.artifacts import ArtifactCache, ArtifactNotFound
from worker.handler import arm_watch

DEADLINE_SLACK_MS = 1_000


def capped_timeout_ms(config_timeout_ms: int, budget_ms: int, slack_ms: int = DEADLINE_SLACK_MS) -> int:
    """The invocation's timeout: the function's own, cut to the time left before the deadline
    once less than `config_timeout_ms - slack_ms` is left.

    Dispatchers set deadline = publish time + the function's timeout and wait a margin longer,
    so a short queue wait keeps the function's own timeout: the sandbox then reuses the same
    config object (and its prepared limits) for every invocation.
    """
    if budget_ms >= config_timeout_ms - slack_ms:
        return config_timeout_ms
    return max(1, budget_ms)


def call_info(envelope: Envelope) -> CallInfo:
    """What the guest's `invocation` interface reports for `envelope` (shared when default)."""
    kind = envelope.start_kind
    if (
        envelope.method == DEFAULT_METHOD and envelope.path == DEFAULT_PATH
        and not envelope.query and envelope.caller is None and envelope.attempt == 1
        and kind == KIND_SYNC
    ):
        return SYNC_CALL
    return CallInfo(
        method=envelope.method,
        path=envelope.path,
        query=envelope.query,
        caller=envelope.caller,
        kind=kind,
        attempt=envelope.attempt,
    )


class SandboxRunner:
    """Runs envelopes in a `Sandbox` with code from an `ArtifactCache` (thread-safe)."""

    def __init__(self, sandbox: Any, artifacts: ArtifactCache) -> None:
        self._sandbox = sandbox
        self._artifacts = artifacts

    def config(self, envelope: Envelope) -> Any:
        """The `FunctionConfig` of the envelope's version (retry policy, limits); raises
        ArtifactNotFound like `run` answers not_found (the artifact stays cached for it)."""
        return self._artifacts.get(envelope.function, envelope.digest)[1]

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        """Invoke the envelope's function version; `not_found` when it does not exist."""
        from flotilla.sandbox.results import Request

        started = time.perf_counter()
        try:
            fn, config = self._artifacts.get(envelope.function, envelope.digest)
        except ArtifactNotFound as exc:
            return reply_to(envelope, Outcome.NOT_FOUND, str(exc))
        load_ms = (time.perf_counter() - started) * 1000
        timeout = capped_timeout_ms(config.timeout_ms, timeout_ms)
        if timeout != config.timeout_ms:
            config = dataclasses.replace(config, timeout_ms=timeout)
        request = Request(
            invocation_id=envelope.invocation_id,
            function_name=envelope.function,
            headers=envelope.headers,
            body=envelope.body,
            call=call_info(envelope),
        )
        arm_watch(timeout)  # due from now: loading did not count, a job's TTL does not either
        result = self._sandbox.invoke(fn, config, request)
        response = result.response
        timings = {
            "load_ms": load_ms,
            "instantiate_ms": result.timings.instantiate_us / 1000,
            "call_ms": result.timings.call_us / 1000,
            "total_ms": (time.perf_counter() - started) * 1000,
        }
        return Reply(
            invocation_id=envelope.invocation_id,
            correlation_id=envelope.correlation_id,
            outcome=result.outcome,
            status=response.status if response is not None else 0,
            headers=tuple(response.headers) if response is not None else (),
            body=bytes(response.body) if response is not None else b"",
            error=result.error or "",
            logs=tuple((r.level, r.message, r.time_ms) for r in result.logs),
            timings=timings,
        )
