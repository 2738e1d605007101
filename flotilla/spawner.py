"""`Spawner`: the worker's `JobSpawner`, behind the guest's `spawn.job(function, headers, body)`.

The call runs on the invocation's thread. In order:

1. the target's name is a function name (else `invalid-argument`) and is in the caller's
   `spawn_functions` (else `denied`);
2. the invocation has started fewer than MAX_SPAWNS_PER_INVOCATION (16) jobs
   (`ctx.spawns`; else `invalid-argument`), and the headers are within bounds;
3. on the worker's event loop (`asyncio.run_coroutine_threadsafe`): the target's latest
   version is resolved (none: `invalid-argument`), the body checked against its
   `max_body_bytes` (`invalid-argument`), the job recorded with the invocation as its
   `parent_id` and published with kind `spawned` (`Invoker.submit`: the record first, then
   the confirmed publish; the record is forgotten when the publish fails);
4. the job id comes back at once; the job runs later with its own function's config (its
   retry policy, limits and timeout), in the spawning invocation's trace (its envelope
   carries the run span's traceparent, flotilla/tracing.py).

The thread waits at most `timeout_s`, and never past its invocation's deadline; a queue or
job store that cannot be reached is `unavailable`. A spawn that failed is not counted
against the 16.

The publisher is anything with the transports' async `submit(envelope, *, delay_ms=0)`: the
worker's own confirmed publisher, or a `Transport`. It may be attached after the spawner was
built (`publisher`), since host clients are built before the broker connection; until then
spawns answer `unavailable`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

from redis.exceptions import RedisError

from flotilla.config import NAME_RE
from flotilla.envelope import KIND_SPAWNED, Envelope
from flotilla.errors import BodyTooLarge, FunctionNotFound, Unavailable
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.observe import Meter, Observe
from flotilla.hosts.spawn import MAX_SPAWNS_PER_INVOCATION
from flotilla.invoker import DEFAULT_JOB_TTL_S, Invoker
from flotilla.jobs import JobStore
from flotilla.registry import VersionSource
from flotilla.tracing import current_traceparent
from flotilla.transport import Transport

if TYPE_CHECKING:
    from flotilla.tracing import Tracing

log = logging.getLogger(__name__)

MAX_SPAWN_HEADERS = 64
MAX_SPAWN_HEADER_BYTES = 16 * 1024
DEFAULT_TIMEOUT_S = 5.0


class JobPublisher(Protocol):
    """Publishes a job envelope; returns once the broker confirmed it."""

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        """Queue `envelope` (QueueFull / BrokerUnavailable when it cannot)."""


class _Attached:
    """The spawner's current publisher, as the one thing of a transport the invoker uses."""

    reply_queue_name = ""

    def __init__(self, spawner: Spawner) -> None:
        self._spawner = spawner

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        publisher = self._spawner.publisher
        if publisher is None:
            raise Unavailable("this worker has no job publisher yet")
        if delay_ms > 0:
            await publisher.submit(envelope, delay_ms=delay_ms)
        else:
            await publisher.submit(envelope)


class Spawner:
    """The `spawn` host client of a worker: checks, records and queues jobs (module doc)."""

    def __init__(
        self,
        versions: VersionSource,
        jobs: JobStore,
        loop: asyncio.AbstractEventLoop,
        *,
        publisher: JobPublisher | None = None,
        job_ttl_s: int = DEFAULT_JOB_TTL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tracing: Tracing | None = None,
        observe: Observe | None = None,
    ) -> None:
        """`versions`: the registry (or a ResolveCache over it); `loop`: the worker's event
        loop, where `jobs` and `publisher` live; `tracing`: a publish span per spawn;
        `observe`: the host-call hook (metrics, trace spans) as the other hosts have it."""
        self._meter = Meter("spawn", observe)
        self.loop = loop
        self.publisher = publisher
        self.timeout_s = timeout_s
        # The invoker only publishes jobs here: `submit` is all it asks of its transport.
        self._invoker = Invoker(versions, cast(Transport, _Attached(self)), jobs=jobs,
                                job_ttl_s=job_ttl_s, tracing=tracing)

    def job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:
        """Queue a job of `function` for the invocation `ctx`; its id (HostError otherwise)."""
        with self._meter.measure("job"):
            return self._job(ctx, function, headers, body)

    def _job(
        self, ctx: InvocationContext, function: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> str:
        if not NAME_RE.match(function):
            raise HostError("invalid-argument", f"{function!r} is not a function name")
        if function not in ctx.config.spawn_functions:
            raise HostError("denied", f"{function!r} is not in {ctx.config.name}'s "
                                      "spawn_functions")
        if ctx.spawns >= MAX_SPAWNS_PER_INVOCATION:
            raise HostError("invalid-argument", f"an invocation may spawn at most "
                                                f"{MAX_SPAWNS_PER_INVOCATION} jobs")
        pairs = tuple((str(k), str(v)) for k, v in headers)
        if len(pairs) > MAX_SPAWN_HEADERS or \
                sum(len(k) + len(v) for k, v in pairs) > MAX_SPAWN_HEADER_BYTES:
            raise HostError("invalid-argument", f"at most {MAX_SPAWN_HEADERS} headers of "
                                                f"{MAX_SPAWN_HEADER_BYTES} bytes in all")
        wait_s = min(self.timeout_s, ctx.remaining())
        if wait_s <= 0:
            raise HostError("unavailable", "the invocation has no time left")
        if _on_loop(self.loop):
            raise HostError("unavailable", "spawn called on the worker's event loop")
        ctx.spawns += 1
        future = asyncio.run_coroutine_threadsafe(
            # The trace context is read here, on the invocation's thread, not on the loop.
            self._submit(ctx.invocation_id, function, pairs, bytes(body),
                         current_traceparent()),
            self.loop,
        )
        try:
            return future.result(wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            ctx.spawns -= 1
            raise HostError("unavailable", f"the job was not queued within {wait_s:.3f}s") \
                from None
        except BaseException:
            ctx.spawns -= 1
            raise

    async def _submit(
        self, parent_id: str, function: str, headers: tuple[tuple[str, str], ...], body: bytes,
        traceparent: str,
    ) -> str:
        try:
            fn = await self._invoker.resolve(function)
            return await self._invoker.submit(
                fn, body, headers, kind=KIND_SPAWNED, parent_id=parent_id,
                traceparent=traceparent,
            )
        except FunctionNotFound:
            raise HostError("invalid-argument", f"no function {function!r} is deployed") \
                from None
        except BodyTooLarge as exc:
            raise HostError("invalid-argument", exc.detail) from None
        except Unavailable as exc:
            raise HostError("unavailable", exc.detail) from None
        except (RedisError, OSError) as exc:
            raise HostError("unavailable", f"the job store is unavailable: {exc}") from None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called on `loop`'s own thread (waiting for it there would deadlock)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
