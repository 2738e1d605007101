"""`Invoker`: one invocation or job from a resolved name to a reply or a typed error.

The HTTP API (`dispatcher/invoke.py`, the jobs route) and the Python client
(`flotilla/client.py`) all go through it, so both answer alike:

- `resolve(name, version)`: the function version (through a `ResolveCache` when given one);
  FunctionNotFound (404) when there is none;
- `call(fn, body, headers)`: checks the body against `max_body_bytes` (BodyTooLarge, 413),
  builds the envelope (`Envelope.for_call`), publishes it with the function's timeout plus
  the reply margin and waits: the `ok` reply, or FunctionTimeout (504: no reply in time, or
  the worker answered timeout/expired), Unavailable (503: queue full, broker down, worker
  could not run it) or FunctionFailed (502: the guest failed), via `error_for_reply`;
- `submit(fn, body, headers)`: records the job first (so a fast result finds it), publishes
  it (`Envelope.for_job`) and forgets the record when the publish failed (Unavailable).

With `metrics` (the dispatcher's), it counts publishes by result, the callers waiting for
a reply and the reply latency.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flotilla.envelope import Envelope, Headers, Reply
from flotilla.errors import (
    BodyTooLarge,
    FunctionNotFound,
    FunctionTimeout,
    Unavailable,
    error_for_reply,
)
from flotilla.jobs import JobRecord, JobStore, new_id
from flotilla.outcomes import Outcome
from flotilla.registry import LATEST, FunctionNotDeployed, FunctionVersion, VersionSource
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull, Transport

if TYPE_CHECKING:  # the client runs without prometheus_client's import cost
    from flotilla.metrics import DispatcherMetrics

DEFAULT_REPLY_MARGIN_MS = 2_000
DEFAULT_JOB_TTL_S = 86_400


class Invoker:
    """Resolve, check, build the envelope, publish, map the answer (see the module doc)."""

    def __init__(
        self,
        versions: VersionSource,
        transport: Transport,
        *,
        jobs: JobStore | None = None,
        reply_margin_ms: int = DEFAULT_REPLY_MARGIN_MS,
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        retry_after_s: int = 1,
        metrics: DispatcherMetrics | None = None,
    ) -> None:
        self.versions = versions
        self.transport = transport
        self.jobs = jobs
        self.reply_margin_ms = reply_margin_ms
        self.job_ttl_s = job_ttl_s
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        # Labelled children looked up once (`labels()` takes a lock and builds a key per
        # call), on first use: a result never seen is not exported as a zero.
        self._published: dict[str, Any] = {}

    async def resolve(self, name: str, version: str | None = None) -> FunctionVersion:
        """The function version `version` names (default latest); FunctionNotFound if none."""
        try:
            return await self.versions.get_version(name, version or LATEST)
        except FunctionNotDeployed as exc:
            raise FunctionNotFound(str(exc), function=name) from None

    async def call(
        self,
        fn: FunctionVersion,
        body: bytes,
        headers: Headers = (),
        *,
        invocation_id: str | None = None,
        timeout_ms: int | None = None,
    ) -> Reply:
        """Run `fn` once and return its `ok` reply; the API's error for anything else.

        `timeout_ms` defaults to the function's; the caller waits that plus the reply margin.
        """
        check_body(fn, len(body))
        iid = invocation_id or new_id()
        timeout_ms = fn.config.timeout_ms if timeout_ms is None else timeout_ms
        margin_ms = self.reply_margin_ms
        envelope = Envelope.for_call(
            iid, fn.name, fn.digest, headers, body, timeout_ms=timeout_ms,
            # The transport's own reply queue up front, so its call() need not copy the envelope.
            reply_to=self.transport.reply_queue_name,
        )
        m = self.metrics
        began = time.perf_counter()
        if m is not None:
            m.in_flight.inc()
        try:
            reply = await self.transport.call(envelope, (timeout_ms + margin_ms) / 1000)
        except CallTimeout:
            self._count("confirmed")
            raise FunctionTimeout(
                f"no reply within {timeout_ms} ms (+{margin_ms} ms margin)",
                outcome=Outcome.TIMEOUT, invocation_id=iid,
            ) from None
        except (QueueFull, BrokerUnavailable) as exc:
            raise self._unavailable(exc) from None
        finally:
            if m is not None:
                m.in_flight.dec()
        self._count("confirmed")
        if m is not None:
            m.reply_latency.observe(time.perf_counter() - began)
        if not reply.ok:
            raise error_for_reply(reply, retry_after_s=self.retry_after_s)
        return reply

    async def submit(
        self,
        fn: FunctionVersion,
        body: bytes,
        headers: Headers = (),
        *,
        job_id: str | None = None,
        callback_url: str | None = None,
    ) -> str:
        """Queue `fn` as a job; its id once the broker accepted it (Unavailable otherwise)."""
        if self.jobs is None:
            raise ValueError("jobs need a JobStore")
        check_body(fn, len(body))
        job_id = job_id or new_id()
        await self.jobs.create(JobRecord(job_id, fn.name, fn.digest, time.time(), callback_url))
        envelope = Envelope.for_job(job_id, fn.name, fn.digest, headers, body, ttl_s=self.job_ttl_s)
        try:
            await self.transport.submit(envelope)
        except (QueueFull, BrokerUnavailable) as exc:
            await self.jobs.forget(job_id)  # never queued: do not report it as queued
            raise self._unavailable(exc) from None
        self._count("confirmed")
        return job_id

    def _unavailable(self, exc: Exception) -> Unavailable:
        """The 503 for a transport error, counted as a rejected or failed publish."""
        self._count("rejected" if isinstance(exc, QueueFull) else "failed")
        return Unavailable(str(exc), retry_after_s=self.retry_after_s)

    def _count(self, result: str) -> None:
        if self.metrics is None:
            return
        child = self._published.get(result)
        if child is None:
            child = self._published[result] = self.metrics.publishes.labels(result)
        child.inc()


def check_body(fn: FunctionVersion, size: int) -> None:
    """BodyTooLarge (413) when `size` bytes exceed the function's max_body_bytes."""
    if size > fn.config.max_body_bytes:
        raise BodyTooLarge(
            f"body of {size} bytes exceeds {fn.name}'s max_body_bytes ({fn.config.max_body_bytes})"
        )
