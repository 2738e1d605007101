"""The Python client: invoke functions and submit jobs over RabbitMQ, without the HTTP hop.

    async with Client(amqp_url, queue_prefix="flotilla", redis_url=redis_url) as client:
        response = await client.invoke("echo", b"hi", headers=[("x-a", "1")])
        page = await client.invoke("site", method="GET", path="/docs/a", query=[("q", "x")])
        job_id = await client.submit("echo", b"later")
        status = await client.result(job_id, wait=10)
        async with client.subscribe("orders.created") as messages:
            async for message in messages:  # TopicMessage(topic, data)
                ...
        later = await client.submit("echo", b"x", delay_ms=60_000, idempotency_key="order-17")
        await client.cancel(later)

It goes through the dispatcher's own `Invoker` (`flotilla/invoker.py`: same envelope, same
topology) and raises the errors the HTTP API answers as problem documents:
FunctionNotFound (404), BodyTooLarge (413), FunctionFailed (502), FunctionTimeout (504),
Unavailable (503: queue full, broker down, worker could not run it), FunctionRateLimited
(429: the function's rate_limit), JobNotCancellable and IdempotencyConflict (409); InvalidRequest
(422) for a method or path the invoke route would not take.

`subscribe(topic)` reads a topic straight from RabbitMQ, as `GET /v1/topics/{topic}/events`
does (flotilla/topics.py): at most once, only while subscribed; iterating raises
SubscriptionOverflow when the client fell behind and SubscriptionLost when the connection
broke, after the messages that arrived before.

Function versions are resolved in the registry (Redis) and cached for `resolve_ttl_s`, so a
deploy reaches a client within that time; `version=` pins one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from flotilla.envelope import DEFAULT_METHOD, DEFAULT_PATH, Reply, Started
from flotilla.errors import InvalidRequest, JobNotCancellable, JobNotFound, Unavailable
from flotilla.idempotency import check_key
from flotilla.invoker import (
    DEFAULT_JOB_TTL_S,
    DEFAULT_REPLY_MARGIN_MS,
    PLAIN_POST,
    Invoker,
    WebRequest,
    check_target,
)
from flotilla.jobs import JobStatus, JobStore, job_delay_ms
from flotilla.registry import LATEST, FunctionVersion, Registry, ResolveCache, VersionSource
from flotilla.topics import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    AmqpTopics,
    Subscription,
    TopicMessage,
    TopicsUnavailable,
    valid_topic,
)
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport, BrokerUnavailable

if TYPE_CHECKING:
    from flotilla.tracing import Tracing

DEFAULT_RESOLVE_TTL_S = 1.0

Resolve = Callable[[str, str], Awaitable[FunctionVersion]]  # (name, selector) -> version


@dataclass(frozen=True)
class Response:
    """A function's response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    invocation_id: str


class Client:
    """Invoke functions and submit jobs; one AMQP connection, one Redis client."""

    def __init__(
        self,
        amqp_url: str | Sequence[str],
        *,
        queue_prefix: str = "flotilla",
        redis_url: str | None = "redis://127.0.0.1:6379/0",
        registry: Registry | None = None,
        jobs: JobStore | None = None,
        resolve: Resolve | None = None,
        reply_margin_ms: int = DEFAULT_REPLY_MARGIN_MS,
        resolve_ttl_s: float = DEFAULT_RESOLVE_TTL_S,
        record_job_results: bool = False,
        tracing: Tracing | None = None,
        sync_lane: str | None = None,
    ) -> None:
        """`tracing` (flotilla/tracing.py, e.g. `Tracing.from_env("my-app")`): each call and
        job a publish span under the caller's current span, the workers' spans under it.
        `sync_lane`: the fleet's FLOTILLA_SYNC_LANE, `quorum` or `classic` (default: that
        variable, else `quorum`); synchronous calls are published as that lane keeps them
        (persistent and confirmed by a quorum, or transient to a classic queue)."""
        self._redis: Any = None
        needs_redis = (registry is None and resolve is None) or jobs is None
        if needs_redis and redis_url is not None:
            import redis.asyncio

            self._redis = redis.asyncio.from_url(redis_url)
        if registry is None and self._redis is not None:
            registry = Registry(self._redis, prefix=queue_prefix)
        if jobs is None and self._redis is not None:
            jobs = JobStore(self._redis, prefix=queue_prefix, ttl_s=DEFAULT_JOB_TTL_S)
        source: VersionSource
        if resolve is not None:
            source = _ResolveFunction(resolve)
        elif registry is not None:
            source = registry
        else:
            raise ValueError("Client needs a registry, a redis_url or a resolve function")
        self._jobs = jobs
        lane = sync_lane or os.environ.get("FLOTILLA_SYNC_LANE", "").strip() or "quorum"
        topology = Topology(queue_prefix, sync_lane=lane)
        self._transport = AmqpTransport(amqp_url, topology, connection_name="flotilla-client")
        # Its own connection, opened by the first subscribe (most clients never subscribe).
        self._topics = AmqpTopics(amqp_url, topology.topics,
                                  connection_name="flotilla-client-topics")
        # Concurrent callers share one registry read (a burst must not open a Redis
        # connection per call); a deploy reaches the client within resolve_ttl_s.
        self._invoker = Invoker(
            ResolveCache(source, ttl_s=resolve_ttl_s), self._transport, jobs=jobs,
            reply_margin_ms=reply_margin_ms,
            job_ttl_s=jobs.ttl_s if jobs is not None else DEFAULT_JOB_TTL_S, tracing=tracing,
        )
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
                await jobs.mark_running(notice.invocation_id, notice.attempt)

            await self._transport.consume_job_results(record, running)

    async def close(self) -> None:
        """Close the connections and the Redis client (if this client made it)."""
        await self._topics.close()
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
        method: str = DEFAULT_METHOD,
        path: str = DEFAULT_PATH,
        query: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Run `name` and return its response; `timeout` (s) defaults to the function's.

        The guest sees `method`, `path` (its sub-path, "/" and up) and `query` (decoded
        pairs, in order) as an HTTP caller's; the caller (`invocation.caller`) is none.
        """
        request = web_request(method, path, query)
        fn = await self._invoker.resolve(name, version)
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        reply = await self._invoker.call(
            fn, body, tuple(headers), timeout_ms=timeout_ms, request=request
        )
        return Response(reply.status, reply.headers, reply.body, reply.invocation_id)

    async def submit(
        self,
        name: str,
        body: bytes = b"",
        *,
        headers: Sequence[tuple[str, str]] = (),
        version: str | None = None,
        method: str = DEFAULT_METHOD,
        path: str = DEFAULT_PATH,
        query: Sequence[tuple[str, str]] = (),
        delay_ms: int | None = None,
        run_at: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a job (run with `method`, `path`, `query` as `invoke` does); returns its id
        once the broker accepted it.

        `delay_ms` or `run_at` (an aware datetime or RFC 3339 text; not both) run it up to
        7 days later. With `idempotency_key`, a second submission of `name` with the same
        key within 24 h returns the first one's id and queues nothing (IdempotencyConflict
        when its body differs)."""
        request = web_request(method, path, query)
        self._require_jobs()
        delay = job_delay_ms(delay_ms, run_at)
        key = check_key(idempotency_key) if idempotency_key is not None else None
        fn = await self._invoker.resolve(name, version)
        submitted = await self._invoker.submit_job(
            fn, body, tuple(headers), idempotency_key=key, delay_ms=delay, request=request
        )
        return submitted.job_id

    async def cancel(self, job_id: str) -> JobStatus:
        """Cancel a scheduled, queued or retrying job (it never runs); its status.
        JobNotCancellable when it runs or has finished, JobNotFound when there is none."""
        cancelled, status = await self._require_jobs().cancel(job_id)
        if status is None:
            raise JobNotFound(f"no job {job_id!r}")
        if not cancelled:
            raise JobNotCancellable(f"job {job_id} is {status.status}", job_status=status.status)
        return status

    async def result(self, job_id: str, *, wait: float = 0) -> JobStatus:
        """The job's status (with its result once finished), waiting up to `wait` s for it."""
        status = await self._require_jobs().wait(job_id, wait)
        if status is None:
            raise JobNotFound(f"no job {job_id!r}")
        return status

    async def version(self, name: str, version: str | None = None) -> FunctionVersion:
        """The function version an invocation would use (cached for `resolve_ttl_s`)."""
        return await self._invoker.resolve(name, version)

    def subscribe(
        self, topic: str, *, max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> ClientSubscription:
        """The messages of `topic` (an exact name) published from now on, at most once.

        `async for message in client.subscribe(topic)` subscribes when the loop starts;
        `async with client.subscribe(topic) as messages:` subscribes on entering, so what is
        published inside the block is received, and unsubscribes on leaving. Falling more
        than `max_messages` or `max_bytes` behind ends it with SubscriptionOverflow.
        """
        if not valid_topic(topic):
            raise InvalidRequest(f"{topic[:300]!r} is not a topic name")
        return ClientSubscription(self._topics, topic, max_messages, max_bytes)

    def _require_jobs(self) -> JobStore:
        if self._jobs is None:
            raise ValueError("jobs need Redis: pass redis_url or jobs to Client")
        return self._jobs


def web_request(method: str, path: str, query: Sequence[tuple[str, str]]) -> WebRequest:
    """The checked WebRequest of a client call (InvalidRequest for a bad method or path)."""
    method = method.upper()
    if method == DEFAULT_METHOD and path == DEFAULT_PATH and not query:
        return PLAIN_POST
    check_target(method, path)
    pairs = tuple((k, v) for k, v in query)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise InvalidRequest("query: must be pairs of strings")
    return WebRequest(method, path, pairs)


class ClientSubscription:
    """A subscription of the client: an async iterator of `TopicMessage`s and an async
    context manager (see `Client.subscribe`)."""

    def __init__(self, topics: AmqpTopics, topic: str, max_messages: int, max_bytes: int) -> None:
        self._topics = topics
        self.topic = topic
        self._limits = (max_messages, max_bytes)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe now (Unavailable when the broker cannot be reached)."""
        if self._sub is None:
            max_messages, max_bytes = self._limits
            try:
                self._sub = await self._topics.subscribe(
                    self.topic, max_messages=max_messages, max_bytes=max_bytes
                )
            except TopicsUnavailable as exc:
                raise Unavailable(str(exc)) from None

    async def close(self) -> None:
        """Unsubscribe (idempotent)."""
        if self._sub is not None:
            await self._sub.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[TopicMessage]:
        return self

    async def __anext__(self) -> TopicMessage:
        if self._sub is None:
            await self.start()
        assert self._sub is not None
        return await self._sub.__anext__()


class _ResolveFunction:
    """A caller's `resolve(name, selector)` function as a `VersionSource`."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve

    async def get_version(self, name: str, selector: str | int = LATEST) -> FunctionVersion:
        """The version `resolve` returns for (name, selector)."""
        return await self._resolve(name, str(selector))
