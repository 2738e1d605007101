"""Process wiring of `flotilla dispatcher`: build the collaborators, serve, shut down in order.

Startup: the Redis client, artifact store (S3, bucket created when missing), a sandbox used
only to validate and precompile deploys, a check that API keys exist (no key in Redis and no
bootstrap FLOTILLA_ADMIN_KEY means nobody could call the API: refused unless `insecure`),
the AMQP transport (declares the topology), the job results consumer, the dead-letter
consumer, the cron scheduler, the topics connection (subscribers' queues), then the HTTP
server. Shutdown (SIGINT/SIGTERM handled by uvicorn): stop serving, stop the scheduler, let
pending callbacks finish briefly, end topic subscriptions, close the transport (fails waiting
callers, stops the consumers), then the clients.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from dispatcher.app import ApiOptions, create_app
from dispatcher.auth import Authenticator
from dispatcher.redis_watch import RedisWatch
from flotilla import logs
from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.deadletters import DeadLetterConsumer, DeadLetterStore
from flotilla.errors import SettingsError
from flotilla.jobs import JobStore, PostFn, ResultRecorder, parse_hosts
from flotilla.metrics import DispatcherMetrics
from flotilla.ratelimit import Limit
from flotilla.registry import Deployer, Registry
from flotilla.schedules import Scheduler, ScheduleStore, submit_with
from flotilla.secrets import SecretStore
from flotilla.settings import DispatcherSettings, split_listen
from flotilla.topics import AmqpTopics
from flotilla.tracing import DISPATCHER, Tracing

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT_S = 10.0


def options_from(settings: DispatcherSettings) -> ApiOptions:
    """The API options from the process settings."""
    return ApiOptions(
        reply_margin_ms=settings.reply_margin_ms,
        job_ttl_s=settings.job_ttl_s,
        callback_hosts=parse_hosts(settings.callback_hosts),
    )


def callback_poster(client: httpx.AsyncClient) -> PostFn:
    """A PostFn sending the job document as JSON with `client`; returns the HTTP status."""

    async def post(url: str, document: dict[str, Any]) -> int:
        headers = {"flotilla-job-id": str(document.get("job_id", ""))}
        response = await client.post(
            url, json=document, headers=headers, timeout=CALLBACK_TIMEOUT_S
        )
        return response.status_code

    return post


def compile_step(cache_dir: str) -> tuple[Any, Any]:
    """A sandbox used only to validate and precompile deploys: (sandbox, compile function).

    It links the host interfaces (a component that imports them must link) but never runs
    guest code, so it has no host clients at all.
    """
    from flotilla.sandbox import Sandbox

    sandbox = Sandbox(None, cache_dir=cache_dir)
    return sandbox, sandbox.compile


@dataclass
class Dispatcher:
    """The collaborators of one dispatcher process (built by `build`, closed by `close`)."""

    app: Any
    redis: Any
    transport: Any
    recorder: ResultRecorder
    http: httpx.AsyncClient
    sandbox: Any
    auth: Authenticator | None = None
    watch: RedisWatch | None = None
    topics: AmqpTopics | None = None
    dead_letters: DeadLetterConsumer | None = None
    scheduler: Scheduler | None = None
    tracing: Tracing | None = None
    _scheduling: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        """Check API keys exist (unless insecure), connect the transport, consume job results
        and dead letters, start the scheduler, watch Redis for a loss of its data, connect
        for topics."""
        await self.check_auth()
        await self.transport.start()
        await self.transport.consume_job_results(
            self.recorder.handle, self.recorder.started, self.recorder.retrying
        )
        if self.dead_letters is not None:
            await self.dead_letters.start(self.transport.connection)
        if self.scheduler is not None:
            self._scheduling = asyncio.create_task(self.scheduler.run(), name="scheduler")
        if self.watch is not None:
            self.watch.start()
        if self.topics is not None:
            await self.topics.start()

    async def check_auth(self) -> None:
        """SettingsError when auth is on but no key could ever authenticate."""
        if self.auth is None:
            log.warning("serving WITHOUT API keys (--insecure): any caller may deploy and invoke")
        elif not await self.auth.configured():
            raise SettingsError(
                "no API keys exist: create one with `flotilla keys create --scope admin` (same "
                "FLOTILLA_REDIS_URL and FLOTILLA_QUEUE_PREFIX), or set FLOTILLA_ADMIN_KEY, or "
                "serve without keys with --insecure (never in production)"
            )

    async def close(self) -> None:
        """Stop the scheduler, finish callbacks briefly, then close transport and clients."""
        if self._scheduling is not None:
            self._scheduling.cancel()
            await asyncio.gather(self._scheduling, return_exceptions=True)
        if self.watch is not None:
            await self.watch.close()
        await self.recorder.drain(timeout=5.0)
        if self.topics is not None:
            await self.topics.close()
        await self.transport.close()
        await self.http.aclose()
        await self.redis.aclose()
        if self.sandbox is not None:
            self.sandbox.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the last spans


def build(settings: DispatcherSettings) -> Dispatcher:
    """Build (without connecting) everything a dispatcher process needs."""
    import redis.asyncio as aioredis

    from flotilla.topology import Topology
    from flotilla.transport import AmqpTransport

    if not settings.artifact_key:
        raise SettingsError(
            "FLOTILLA_ARTIFACT_KEY (--artifact-key) is required: it authenticates compiled "
            "artifacts, which workers load as native code"
        )
    redis = aioredis.from_url(settings.redis_url)
    backend = S3Backend.from_settings(
        bucket=settings.artifact_bucket,
        endpoint_url=settings.aws_endpoint_url,
        region=settings.aws_region,
    )
    artifacts = ArtifactStore(backend, settings.artifact_key)
    registry = Registry(redis, prefix=settings.queue_prefix)
    jobs = JobStore(redis, prefix=settings.queue_prefix, ttl_s=settings.job_ttl_s)
    sandbox, compile = compile_step(settings.cache_dir)
    topology = Topology(prefix=settings.queue_prefix, max_length=settings.queue_max_length,
                        quorum_size=settings.quorum_size, sync_lane=settings.sync_lane)
    transport = AmqpTransport(settings.amqp_url, topology)
    http = httpx.AsyncClient(follow_redirects=False)
    metrics = DispatcherMetrics()
    tracing = Tracing.from_env(DISPATCHER, settings.tracing)
    auth = None if settings.insecure else Authenticator.on_redis(
        redis, prefix=settings.queue_prefix, admin_key=settings.admin_key,
        public_limit=public_limit(settings),
    )
    topics = AmqpTopics(settings.amqp_url, topology.topics,
                        connection_name=f"flotilla-dispatcher-topics-{settings.queue_prefix}")
    app = create_app(
        registry=registry,
        deployer=Deployer(
            registry, artifacts, compile=compile, engine_fingerprint=sandbox.engine_fingerprint
        ),
        jobs=jobs,
        transport=transport,
        options=options_from(settings),
        metrics=metrics,
        auth=auth,
        dead_letters=DeadLetterStore(redis, prefix=settings.queue_prefix,
                                     job_results=topology.job_results),
        schedules=ScheduleStore(redis, prefix=settings.queue_prefix),
        secrets=SecretStore.from_settings(settings, redis),
        topics=topics,
        tracing=tracing,
    )
    metrics.watch_transport(transport)
    watch = RedisWatch(redis, settings.queue_prefix, auth=auth, metrics=metrics)
    app.state.redis_watch = watch  # /readyz reads it
    api = app.state.api
    consumer = DeadLetterConsumer(api.dead_letters, topology, metrics=metrics)
    scheduler = Scheduler(api.schedules, submit_with(api.invoker), metrics=metrics)
    return Dispatcher(app, redis, transport, ResultRecorder(jobs, callback_poster(http)), http,
                      sandbox, auth, watch, topics, consumer, scheduler, tracing)


def public_limit(settings: DispatcherSettings) -> Limit | None:
    """The per-address limit of calls without an API key (None: unlimited)."""
    return Limit(settings.public_rate, settings.public_burst) if settings.public_rate else None


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with coalesced socket writes (see flotilla/amqp.py).

    uvicorn writes a response's head and body separately, and an idle asyncio transport
    sends each write at once: two `send()` syscalls per response, which profiles showed as
    the largest single cost of the dispatcher's event loop under load. Buffered until the
    loop's next turn, they leave in one.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from flotilla.amqp import coalesce_writes

    class CoalescingHttpProtocol(HttpToolsProtocol):
        """HttpToolsProtocol whose transport coalesces the writes of one loop turn."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            coalesce_writes(transport)  # type: ignore[arg-type]
            super().connection_made(transport)  # type: ignore[arg-type]

    return CoalescingHttpProtocol


def http_server(config: Any, topics: Any = None) -> Any:
    """A uvicorn server that, when it shuts down, first ends the topic subscriptions of
    `topics` (a TopicBus): uvicorn waits for every response to finish, and an event stream
    only finishes once its subscription ended."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn.Server, ending event streams before waiting for responses."""

        async def shutdown(self, sockets: Any = None) -> None:
            if topics is not None:
                await topics.close()
            await super().shutdown(sockets)

    return Server(config)


async def serve(dispatcher: Dispatcher, listen: str, *, log_level: str = "info") -> None:
    """Start the dispatcher, serve HTTP on `listen` until a signal, then close everything."""
    import uvicorn

    host, port = split_listen(listen)
    await dispatcher.start()
    try:
        server = http_server(
            # log_config=None: uvicorn's loggers propagate to ours (JSON like the rest).
            uvicorn.Config(dispatcher.app, host=host, port=port, log_level=log_level.lower(),
                           lifespan="off", log_config=None, http=http_protocol()),
            dispatcher.topics,
        )
        await server.serve()
    finally:
        await dispatcher.close()


def run(settings: DispatcherSettings) -> int:
    """Entry point of `flotilla dispatcher`: serve until SIGINT/SIGTERM; the exit status."""
    logs.configure(settings.log_level, settings.log_format)
    dispatcher = build(settings)
    asyncio.run(serve(dispatcher, settings.listen, log_level=settings.log_level))
    return 0
