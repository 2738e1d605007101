"""`Invoker`: one invocation or job from a resolved name to a reply or a typed error.

The HTTP API (`dispatcher/invoke.py`, the jobs route) and the Python client
(`flotilla/client.py`) all go through it, so both answer alike:

- `resolve(name, version)`: the function version (through a `ResolveCache` when given one);
  FunctionNotFound (404) when there is none;
- `call(fn, body, headers, request=...)`: checks the body against `max_body_bytes`
  (BodyTooLarge, 413) and the `WebRequest` (method, sub-path, query, caller the guest's
  `invocation` interface reports; InvalidRequest, 422), builds the envelope
  (`Envelope.for_call`), publishes it with the function's timeout plus
  the reply margin and waits: the `ok` reply, or FunctionTimeout (504: no reply in time, or
  the worker answered timeout/expired), Unavailable (503: queue full, broker down, worker
  could not run it) or FunctionFailed (502: the guest failed), via `error_for_reply`;
- `submit(fn, body, headers, request=...)`: the same checks; records the job first (so a fast result finds it), publishes
  it (`Envelope.for_job`; through the transport's delay when `delay_ms` > 0, as a
  `scheduled` job) and forgets the record when the publish failed (Unavailable);
- `submit_job(...)`: `submit` behind an optional idempotency key (flotilla/idempotency.py):
  a repeated key answers the first submission's job, a different body under it is
  IdempotencyConflict (409);
- `admit(fn)`: before a synchronous call is published, a token from the function's
  fleet-wide `rate_limit` bucket (flotilla/ratelimit.py, `function_bucket`), else
  FunctionRateLimited (429 with Retry-After). Jobs are not admitted here: they wait for
  their token on the worker, which does not count synchronous calls again.

The rate limiter and the idempotency keys live in the job store's Redis unless given.

With `metrics` (the dispatcher's), it counts publishes by result, the callers waiting for
a reply and the reply latency. With `tracing` (flotilla/tracing.py), each publish is a span
(a call's lasts until its reply) whose traceparent the envelope carries; without it the
only cost is a `with` over a shared null context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from flotilla.envelope import (
    DEFAULT_METHOD,
    DEFAULT_PATH,
    KIND_JOB,
    KIND_SCHEDULED,
    KIND_SYNC,
    Envelope,
    Headers,
    Reply,
)
from flotilla.errors import (
    BodyTooLarge,
    FunctionNotFound,
    FunctionRateLimited,
    FunctionTimeout,
    IdempotencyConflict,
    InvalidRequest,
    Unavailable,
    error_for_reply,
)
from flotilla.idempotency import IdempotencyKeys, fingerprint
from flotilla.jobs import JobRecord, JobStore, new_id
from flotilla.outcomes import Outcome
from flotilla.ratelimit import Limit, RateLimiter, function_bucket, retry_after_s
from flotilla.registry import LATEST, FunctionNotDeployed, FunctionVersion, VersionSource
from flotilla.tracing import NO_TRACEPARENT
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull, Transport

if TYPE_CHECKING:  # the client runs without prometheus_client's import cost
    from flotilla.metrics import DispatcherMetrics
    from flotilla.tracing import Tracing

DEFAULT_REPLY_MARGIN_MS = 2_000
DEFAULT_JOB_TTL_S = 86_400
# The methods the invoke route takes (and a job or the client may name).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_PATH_BYTES = 8192


@dataclass(frozen=True)
class WebRequest:
    """What the caller asked for beyond body and headers (the guest's `invocation`)."""

    method: str = DEFAULT_METHOD
    path: str = DEFAULT_PATH  # the sub-path below the function's URL, "/" when none
    query: Headers = ()  # decoded, in order, repeats kept; never Flotilla's own parameters
    caller: str | None = None  # the API key id; None for public and dev-mode calls

    def envelope_fields(self) -> dict[str, Any]:
        """The envelope's optional fields that differ from their defaults."""
        fields: dict[str, Any] = {}
        if self.method != DEFAULT_METHOD:
            fields["method"] = self.method
        if self.path != DEFAULT_PATH:
            fields["path"] = self.path
        if self.query:
            fields["query"] = self.query
        if self.caller is not None:
            fields["caller"] = self.caller
        return fields


PLAIN_POST = WebRequest()


def check_target(
    method: str, path: str, *, method_name: str = "method", path_name: str = "path"
) -> None:
    """InvalidRequest (422) unless `method` is one of METHODS and `path` is a sub-path
    ("/" and up, at most MAX_PATH_BYTES, no control characters)."""
    if method not in METHODS:
        raise InvalidRequest(f"{method_name}: must be one of {', '.join(METHODS)}, got {method!r}")
    if (
        not path.startswith("/") or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES
        or not path.isprintable()
    ):
        raise InvalidRequest(
            f"{path_name}: must start with '/', be printable and at most {MAX_PATH_BYTES} "
            f"bytes, got {path[:80]!r}"
        )


@dataclass(frozen=True)
class Submitted:
    """A job submission's answer: the job id, and whether an earlier submission with the
    same idempotency key made it (then nothing new was queued)."""

    job_id: str
    replayed: bool = False


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
        limiter: RateLimiter | None = None,
        idempotency: IdempotencyKeys | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.versions = versions
        self.tracing = tracing
        self.transport = transport
        self.jobs = jobs
        self.reply_margin_ms = reply_margin_ms
        self.job_ttl_s = job_ttl_s
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        if jobs is not None:
            limiter = limiter or RateLimiter(jobs.redis, prefix=jobs.prefix)
            idempotency = idempotency or IdempotencyKeys(jobs.redis, prefix=jobs.prefix)
        self.limiter = limiter
        self.idempotency = idempotency
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
        request: WebRequest = PLAIN_POST,
    ) -> Reply:
        """Run `fn` once and return its `ok` reply; the API's error for anything else.

        `timeout_ms` defaults to the function's; the caller waits that plus the reply margin.
        `request` is passed on as it is: its makers check it (`check_target`).
        """
        check_body(fn, len(body))
        iid = invocation_id or new_id()
        timeout_ms = fn.config.timeout_ms if timeout_ms is None else timeout_ms
        margin_ms = self.reply_margin_ms
        tracing = self.tracing
        with (NO_TRACEPARENT if tracing is None
              else tracing.publishing(fn.name, fn.digest, iid, KIND_SYNC)) as traceparent:
            fields = request.envelope_fields() if request is not PLAIN_POST else {}
            if traceparent:
                fields["traceparent"] = traceparent
            envelope = Envelope.for_call(
                iid, fn.name, fn.digest, headers, body, timeout_ms=timeout_ms,
                # The transport's own reply queue up front, so its call() need not copy it.
                reply_to=self.transport.reply_queue_name, **fields,
            )
            if fn.config.rate_limit is not None:
                await self.admit(fn)
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

    async def admit(self, fn: FunctionVersion) -> None:
        """Take a token from `fn`'s fleet-wide rate-limit bucket (synchronous calls only);
        FunctionRateLimited (429) when it is empty, Unavailable when Redis is down."""
        limit = fn.config.rate_limit
        if limit is None or self.limiter is None:
            return
        try:
            wait_ms = await self.limiter.take(
                function_bucket(fn.name), Limit(limit.per_second, limit.burst)
            )
        except RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {exc}",
                              retry_after_s=self.retry_after_s) from None
        if wait_ms:
            if self.metrics is not None:
                self.metrics.function_rate_limited.labels(fn.name).inc()
            raise FunctionRateLimited(
                f"{fn.name} admits {limit.per_second:g} invocations/s across the fleet "
                f"(bursts of {limit.burst})",
                retry_after_s=retry_after_s(wait_ms), function=fn.name,
            )

    async def submit(
        self,
        fn: FunctionVersion,
        body: bytes,
        headers: Headers = (),
        *,
        job_id: str | None = None,
        callback_url: str | None = None,
        request: WebRequest = PLAIN_POST,
        delay_ms: int = 0,
        kind: str | None = None,
        parent_id: str | None = None,
        traceparent: str = "",
    ) -> str:
        """Queue `fn` as a job (due in `delay_ms`); its id once the broker accepted it
        (Unavailable otherwise). `kind` defaults to `scheduled` with a delay, else `job`.
        `traceparent`: the trace context of whoever asked for it (a spawning invocation's
        run; default: the current span, when tracing)."""
        if self.jobs is None:
            raise ValueError("jobs need a JobStore")
        check_body(fn, len(body))
        job_id = job_id or new_id()
        now = time.time()
        kind = kind or (KIND_SCHEDULED if delay_ms > 0 else KIND_JOB)
        # A delayed job must outlive its delay: record and envelope live that much longer.
        ttl_s = self.jobs.ttl_for(delay_ms)
        run_at = now + delay_ms / 1000 if delay_ms > 0 else None
        await self.jobs.create(
            JobRecord(job_id, fn.name, fn.digest, now, callback_url, kind, run_at, parent_id),
            ttl_s=ttl_s,
        )
        tracing = self.tracing
        with (NO_TRACEPARENT if tracing is None
              else tracing.publishing(fn.name, fn.digest, job_id, kind, traceparent)) as parent:
            envelope = Envelope.for_job(
                job_id, fn.name, fn.digest, headers, body, ttl_s=ttl_s,
                kind="" if kind == KIND_JOB else kind, parent_id=parent_id or "",
                # Without tracing here, the caller's trace context still travels on.
                traceparent=parent or traceparent, **request.envelope_fields(),
            )
            try:
                if delay_ms > 0:
                    await self.transport.submit(envelope, delay_ms=delay_ms)
                else:
                    await self.transport.submit(envelope)
            except (QueueFull, BrokerUnavailable) as exc:
                await self.jobs.forget(job_id)  # never queued: do not report it as queued
                raise self._unavailable(exc) from None
            except BaseException:
                await self.jobs.forget(job_id)
                raise
        self._count("confirmed")
        return job_id

    async def submit_job(
        self,
        fn: FunctionVersion,
        body: bytes,
        headers: Headers = (),
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Submitted:
        """`submit`, or with `idempotency_key` the first submission's job when the key was
        used for `fn` before (IdempotencyConflict when that one had another body)."""
        if idempotency_key is None:
            return Submitted(await self.submit(fn, body, headers, **options))
        if self.idempotency is None:
            raise ValueError("idempotency keys need a JobStore (or IdempotencyKeys)")
        check_body(fn, len(body))
        job_id = options.pop("job_id", None) or new_id()
        print_ = fingerprint(body)
        earlier = await self.idempotency.claim(fn.name, idempotency_key, print_, job_id)
        if earlier is not None:
            if earlier.fingerprint != print_:
                raise IdempotencyConflict(
                    f"Idempotency-Key was used for {fn.name} with another body (job "
                    f"{earlier.job_id}); use a new key for a new request",
                    job_id=earlier.job_id,
                )
            return Submitted(earlier.job_id, replayed=True)
        try:
            return Submitted(await self.submit(fn, body, headers, job_id=job_id, **options))
        except BaseException:
            await self.idempotency.release(fn.name, idempotency_key, print_, job_id)
            raise

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
