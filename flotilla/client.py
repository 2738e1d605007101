"""The Python client: invoke functions and submit jobs over RabbitMQ, without the HTTP hop.

    async with Client(amqp_url, queue_prefix="flotilla", redis_url=redis_url) as client:
        response = await client.invoke("echo", b"hi", headers=[("x-a", "1")])
        job_id = await client.submit("echo", b"later")
        status = await client.result(job_id, wait=10)

It speaks the same envelope and topology as the dispatcher and raises the errors the HTTP API
maps to problem documents (`dispatcher.problems`): FunctionNotFound (404), BodyTooLarge
(413), FunctionFailed (502), FunctionTimeout (504), Unavailable (503: queue full, broker
down, worker could not run it).

Function versions are resolved in the registry (Redis) and cached for `resolve_ttl_s`, so a
deploy reaches a client within that time; `version=` pins one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from flotilla.envelope import REPLY_JOB, Envelope, Reply, Started, now_ms
from flotilla.errors import (
    BodyTooLarge,
    FunctionNotFound,
    FunctionTimeout,
    JobNotFound,
    Unavailable,
    error_for_reply,
)
from flotilla.jobs import JobRecord, JobStatus, JobStore, new_id
from flotilla.outcomes import Outcome
from flotilla.registry import FunctionNotDeployed, FunctionVersion, Registry
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport, BrokerUnavailable, CallTimeout, QueueFull

DEFAULT_REPLY_MARGIN_MS = 2_000
DEFAULT_RESOLVE_TTL_S = 1.0
DEFAULT_JOB_TTL_S = 86_400

Resolve = Callable[[str, str], Awaitable[FunctionVersion]]  # (name, selector) -> version


@dataclass(frozen=True)
class Response:
    """A function's response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    invocation_id: str


def raise_for_reply(reply: Reply) -> Response:
    """The response of an `ok` reply; the HTTP API's error for any other outcome."""
    if reply.outcome is Outcome.OK:
        return Response(reply.status, reply.headers, reply.body, reply.invocation_id)
    raise error_for_reply(reply)


class Client:
    """Invoke functions and submit jobs; one AMQP connection, one Redis client."""

    def __init__(
        self,
        amqp_url: str,
        *,
        queue_prefix: str = "flotilla",
        redis_url: str | None = "redis://127.0.0.1:6379/0",
        registry: Registry | None = None,
        jobs: JobStore | None = None,
        resolve: Resolve | None = None,
        reply_margin_ms: int = DEFAULT_REPLY_MARGIN_MS,
        resolve_ttl_s: float = DEFAULT_RESOLVE_TTL_S,
        record_job_results: bool = False,
    ) -> None:
        self._redis: Any = None
        needs_redis = (registry is None and resolve is None) or jobs is None
        if needs_redis and redis_url is not None:
            import redis.asyncio

            self._redis = redis.asyncio.from_url(redis_url)
        if registry is None and self._redis is not None:
            registry = Registry(self._redis, prefix=queue_prefix)
        if jobs is None and self._redis is not None:
            jobs = JobStore(self._redis, prefix=queue_prefix, ttl_s=DEFAULT_JOB_TTL_S)
        if resolve is None:
            if registry is None:
                raise ValueError("Client needs a registry, a redis_url or a resolve function")
            resolve = registry.get_version
        self._resolve: Resolve = resolve
        self._jobs = jobs
        self._transport = AmqpTransport(
            amqp_url, Topology(queue_prefix), connection_name="flotilla-client"
        )
        self._margin_ms = reply_margin_ms
        self._ttl = resolve_ttl_s
        self._versions: dict[
            tuple[str, str | None], tuple[float, asyncio.Future[FunctionVersion]]
        ] = {}
        self._record_job_results = record_job_results

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect to RabbitMQ (Unavailable when it is down)."""
        try:
            await self._transport.start()
        except BrokerUnavailable as exc:
            raise Unavailable(str(exc)) from None
        if self._record_job_results and self._jobs is not None:
            jobs = self._jobs

            async def record(reply: Reply) -> None:
                await jobs.complete(reply)

            async def running(notice: Started) -> None:
                await jobs.mark_running(notice.invocation_id)

            await self._transport.consume_job_results(record, running)

    async def close(self) -> None:
        """Close the connection and the Redis client (if this client made it)."""
        await self._transport.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def invoke(
        self,
        name: str,
        body: bytes = b"",
        *,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        version: str | None = None,
    ) -> Response:
        """Run `name` and return its response; `timeout` (s) defaults to the function's."""
        fn = await self.version(name, version)
        _check_body(body, fn)
        timeout_ms = fn.config.timeout_ms if timeout is None else max(1, int(timeout * 1000))
        invocation_id = new_id()
        envelope = Envelope(
            invocation_id=invocation_id,
            correlation_id=invocation_id,
            function=name,
            digest=fn.digest,
            headers=tuple(headers),
            body=body,
            deadline_ms=now_ms() + timeout_ms,
            reply_to=self._transport.reply_queue_name,  # so call() need not copy it
        )
        try:
            reply = await self._transport.call(envelope, (timeout_ms + self._margin_ms) / 1000)
        except CallTimeout:
            raise FunctionTimeout(
                f"no reply within {timeout_ms} ms (+{self._margin_ms} ms margin)",
                outcome=Outcome.TIMEOUT,
                invocation_id=invocation_id,
            ) from None
        except (QueueFull, BrokerUnavailable) as exc:
            raise Unavailable(str(exc)) from None
        return raise_for_reply(reply)

    async def submit(
        self,
        name: str,
        body: bytes = b"",
        *,
        headers: Sequence[tuple[str, str]] = (),
        version: str | None = None,
    ) -> str:
        """Queue a job; returns its id once the broker accepted it."""
        jobs = self._require_jobs()
        fn = await self.version(name, version)
        _check_body(body, fn)
        job_id = new_id()
        await jobs.create(JobRecord(job_id, name, fn.digest, time.time()))
        envelope = Envelope(
            invocation_id=job_id,
            correlation_id=job_id,
            function=name,
            digest=fn.digest,
            headers=tuple(headers),
            body=body,
            deadline_ms=now_ms() + jobs.ttl_s * 1000,
            reply_mode=REPLY_JOB,
        )
        try:
            await self._transport.submit(envelope)
        except (QueueFull, BrokerUnavailable) as exc:
            raise Unavailable(str(exc)) from None
        return job_id

    async def result(self, job_id: str, *, wait: float = 0) -> JobStatus:
        """The job's status (with its result once finished), waiting up to `wait` s for it."""
        status = await self._require_jobs().wait(job_id, wait)
        if status is None:
            raise JobNotFound(f"no job {job_id!r}")
        return status

    async def version(self, name: str, version: str | None = None) -> FunctionVersion:
        """The function version an invocation would use (cached for `resolve_ttl_s`).

        Concurrent callers share one registry read (a burst must not open a Redis
        connection per call).
        """
        key = (name, version)
        now = time.monotonic()
        hit = self._versions.get(key)
        if hit is None or hit[0] <= now:
            future = asyncio.ensure_future(self._resolve(name, version or "latest"))
            hit = (now + self._ttl, future)
            self._versions[key] = hit
            future.add_done_callback(lambda f: self._forget_failure(key, f))
        try:
            return await asyncio.shield(hit[1])
        except FunctionNotDeployed as exc:
            raise FunctionNotFound(str(exc)) from None

    def _forget_failure(
        self, key: tuple[str, str | None], future: asyncio.Future[FunctionVersion]
    ) -> None:
        # Failures are not cached: the next call asks the registry again.
        if not future.cancelled() and future.exception() is None:
            return
        if (entry := self._versions.get(key)) is not None and entry[1] is future:
            del self._versions[key]

    def _require_jobs(self) -> JobStore:
        if self._jobs is None:
            raise ValueError("jobs need Redis: pass redis_url or jobs to Client")
        return self._jobs


def _check_body(body: bytes, fn: FunctionVersion) -> None:
    if len(body) > fn.config.max_body_bytes:
        raise BodyTooLarge(
            f"body of {len(body)} bytes exceeds {fn.name}'s max_body_bytes "
            f"({fn.config.max_body_bytes})"
        )
