"""The worker process: settings -> HostClients -> Sandbox -> artifact cache -> consumer.

`WorkerService.run()` consumes until `stop()` is called (the SIGTERM/SIGINT handler only
calls it), then shuts down in this order, each step for a reason:

1. stop consuming: the broker sends nothing new; prefetched deliveries not yet started are
   requeued for other workers;
2. drain: in-flight invocations finish (within `drain_timeout_s`), publish their replies and
   are acked, so callers get answers and nothing runs twice;
3. close the channel and the connection: anything still unacked returns to the queue;
4. close the runtime (host clients, sandbox), which no invocation uses any more.

A second signal (`stop()` again) skips what is left of the drain: the process exits at once
and the broker redelivers its unacked work to other workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from flotilla.admission import JobTokens, Leases
from flotilla.amqp import connect_robust
from flotilla.hosts.cache import connect_redis
from flotilla.jobstate import JobGate
from flotilla.metrics import WorkerMetrics
from flotilla.settings import WorkerSettings
from flotilla.topology import RECONNECT_INTERVAL_S, Topology
from flotilla.tracing import WORKER, Tracing
from worker.consumer import SYNC_RESERVE, Consumer, job_threads
from worker.flow import ConfigLookup, JobFlow
from worker.handler import EnvelopeHandler, RunLedger, Runner
from worker.lanes import FunctionWatch
from worker.probes import ProbeServer

log = logging.getLogger(__name__)
# How long /readyz waits for Redis before saying "not ready".
READY_TIMEOUT_S = 1.0


@dataclass
class Runtime:
    """What runs envelopes, plus what to close once the last invocation finished."""

    runner: Runner
    closers: list[Callable[[], Any]] = field(default_factory=list)
    # Connected once the loop runs, closed after the consumer (e.g. the topics bus):
    # objects with `async start()` and `async close()`.
    services: list[Any] = field(default_factory=list)
    # Answers when the worker's Redis does (part of /readyz); None: nothing to check.
    ping: Callable[[], Awaitable[Any]] | None = None
    # Function configs for the job flow (admission limits, retry policy; worker/flow.py):
    # the SandboxRunner's `config`. None: no limits, no retries.
    configs: ConfigLookup | None = None

    def close(self) -> None:
        """Close in reverse order of construction."""
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("closing %r failed", close)


RuntimeFactory = Callable[[WorkerSettings, asyncio.AbstractEventLoop, WorkerMetrics], Runtime]


def sandbox_runtime(
    settings: WorkerSettings, loop: asyncio.AbstractEventLoop, metrics: WorkerMetrics
) -> Runtime:
    """The production runtime: host clients, sandbox, registry + S3 artifact store, cache."""
    import redis.asyncio

    from flotilla.artifacts import ArtifactStore, S3Backend, artifact_tag
    from flotilla.hosts.clients import HostClients
    from flotilla.hosts.secrets import RedisSecrets
    from flotilla.hosts.topics import BusPublisher
    from flotilla.registry import Registry
    from flotilla.sandbox import Sandbox
    from flotilla.topics import AmqpTopics
    from worker.artifacts import ArtifactCache, StoreArtifactSource
    from worker.runner import SandboxRunner

    tracing = Tracing.from_env(WORKER, settings.tracing)
    observe = metrics.observe_host_call if tracing is None else tracing.observing(
        metrics.observe_host_call)
    hosts = HostClients.from_settings(settings, observe=observe)
    topics = AmqpTopics(settings.amqp_url, Topology(settings.queue_prefix).topics,
                        connection_name=f"flotilla-worker-topics-{settings.queue_prefix}")
    hosts = hosts.with_clients(topics=BusPublisher(topics, loop))
    runtime = Runtime(runner=None, closers=[hosts.close], services=[topics])  # type: ignore[arg-type]
    if tracing is not None:
        runtime.closers.insert(0, tracing.shutdown)  # last: after the last invocation
    try:
        reader = RedisSecrets.from_settings(settings, hosts.redis, observe=observe)
        hosts = hosts.with_clients(secrets=reader)  # None (no FLOTILLA_SECRETS_KEY): unavailable
        hosts = hosts.with_clients(spawn=job_spawner(settings, loop, runtime))
        sandbox = Sandbox(hosts, cache_dir=settings.cache_dir)
        runtime.closers.append(sandbox.close)
        redis_client = redis.asyncio.from_url(settings.redis_url)
        runtime.ping = redis_client.ping
        registry = Registry(redis_client, prefix=settings.queue_prefix)
        backend = S3Backend.from_settings(
            bucket=settings.artifact_bucket,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region,
        )
        store = ArtifactStore(backend, settings.artifact_key)
        fingerprint = sandbox.engine_fingerprint
        source = StoreArtifactSource(
            registry, store, engine_fingerprint=fingerprint, loop=loop
        )
        cache = ArtifactCache(
            source,
            sandbox,
            cache_dir=settings.cache_dir,
            tag=lambda data: artifact_tag(store.key, fingerprint, data),
            metrics=metrics,
        )
        runtime.runner = sandbox_runner = SandboxRunner(sandbox, cache)
        runtime.configs = sandbox_runner.config
        if tracing is not None:
            runtime.runner = tracing.runner(runtime.runner)
    except BaseException:
        runtime.close()
        raise
    return runtime


def job_spawner(
    settings: WorkerSettings, loop: asyncio.AbstractEventLoop, runtime: Runtime
) -> Any:
    """The guest's `spawn.job`: a `Spawner` over the registry and the job store, publishing
    through a confirmed transport of its own (a runtime service, connected with the rest)."""
    import redis.asyncio

    from flotilla.jobs import JobStore
    from flotilla.registry import Registry, ResolveCache
    from flotilla.spawner import Spawner
    from flotilla.transport import AmqpTransport

    prefix = settings.queue_prefix
    topology = Topology(prefix, max_length=settings.queue_max_length,
                        quorum_size=settings.quorum_size)
    publisher = AmqpTransport(settings.amqp_url, topology, declare=False,
                              connection_name=f"flotilla-worker-spawn-{prefix}")
    runtime.services.append(publisher)
    client = redis.asyncio.from_url(settings.redis_url)
    return Spawner(ResolveCache(Registry(client, prefix=prefix)), JobStore(client, prefix=prefix),
                   loop, publisher=publisher)


def job_flow(
    configs: ConfigLookup | None, settings: WorkerSettings, closers: list[Callable[[], Any]]
) -> JobFlow:
    """Admission, the start gate and retries (worker/flow.py) over the function configs
    `configs` looks up, on a Redis pool of their own (one connection per invocation thread
    at most)."""
    redis = connect_redis(settings.redis_url, max_connections=settings.effective_concurrency()
                          + settings.effective_max_abandoned() + 2)
    closers.append(redis.close)
    prefix = settings.queue_prefix
    return JobFlow(configs=configs, gate=JobGate(redis, prefix=prefix),
                   leases=Leases(redis, prefix=prefix), tokens=JobTokens(redis, prefix=prefix))


class WorkerService:
    """One worker process's lifecycle; `run()` returns the exit status."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        runtime_factory: RuntimeFactory = sandbox_runtime,
        topology: Topology | None = None,
        serve_probes: bool = True,
    ) -> None:
        self.settings = settings
        # False under a supervisor, which serves the probes for all its processes.
        self._serve_probes = serve_probes
        self.topology = topology or Topology(
            settings.queue_prefix, max_length=settings.queue_max_length,
            quorum_size=settings.quorum_size, sync_lane=settings.sync_lane,
        )
        self._runtime_factory = runtime_factory
        self.stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self.ready = asyncio.Event()
        self.consumer: Consumer | None = None
        self.metrics = WorkerMetrics()
        self.probes: ProbeServer | None = None
        self._runtime: Runtime | None = None
        self.watch: FunctionWatch | None = None

    @property
    def forced(self) -> bool:
        """True once a second stop request asked to skip the drain."""
        return self._force.is_set()

    def stop(self) -> None:
        """Begin a graceful shutdown; called a second time, skip the rest of the drain."""
        if self.stop_requested.is_set():
            self._force.set()
        self.stop_requested.set()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM and SIGINT call `stop()` (and do nothing else)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> int:
        """Consume until stopped, then shut down in order; 0 on a clean drain."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        runtime = self._runtime = self._runtime_factory(settings, loop, self.metrics)
        # Headroom for the sync reserve (worker/consumer.py) and for threads abandoned
        # blocked in a host call (see worker/executor.py).
        executor = ThreadPoolExecutor(
            settings.effective_concurrency() + SYNC_RESERVE + settings.effective_max_abandoned(),
            "flotilla-invoke",
        )
        # Jobs on threads of their own, nicer to the CPU than sync calls (worker/consumer.py).
        jobs_executor = job_threads(
            settings.effective_concurrency() + settings.effective_max_abandoned())
        connection = None
        try:
            if self._serve_probes:
                await self._start_probes()
            await self._start_services(runtime)
            ledger = connect_redis(settings.redis_url, max_connections=4)
            runtime.closers.append(ledger.close)
            handler = EnvelopeHandler(
                runtime.runner,
                job_results=self.topology.job_results,
                metrics=self.metrics,
                runs=RunLedger(ledger, settings.queue_prefix),
                poison_runs=settings.poison_runs,
                flow=job_flow(runtime.configs, settings, runtime.closers),
            )
            connection = await connect_robust(
                settings.amqp_url,
                client_properties={"connection_name": f"flotilla-worker-{settings.queue_prefix}"},
                reconnect_interval=RECONNECT_INTERVAL_S,
            )
            self.consumer = Consumer(
                connection,
                self.topology,
                handler,
                executor,
                concurrency=settings.effective_concurrency(),
                prefetch=settings.effective_prefetch(),
                metrics=self.metrics,
                max_abandoned=settings.effective_max_abandoned(),
                job_executor=jobs_executor,
            )
            await self.consumer.start()
            # Its own client: the subscription holds a connection for good.
            watch_redis = redis.asyncio.from_url(settings.redis_url, socket_connect_timeout=2.0)
            self.watch = FunctionWatch(watch_redis, settings.queue_prefix,
                                       self.consumer.add_function)
            await self.watch.start()
            self.ready.set()
            log.info("worker consuming %s and the job lanes of %d functions",
                     self.topology.sync, len(self.consumer.functions))
            await self.stop_requested.wait()
            status = await self._shutdown()
            return status
        finally:
            if self.probes is not None:
                await self.probes.close()
            if self.watch is not None:
                await self.watch.close()
            if self.consumer is not None:
                await self.consumer.close()
            if connection is not None:
                await connection.close()
            for service in reversed(runtime.services):
                await _close_service(service)
            # After a forced exit or a drain timeout, threads still running guest code are
            # abandoned rather than joined (each is bounded by its function's timeout anyway).
            drained = self.consumer is None or (
                self.consumer.in_flight == 0 and self.consumer.abandoned == 0
            )
            for pool in (executor, jobs_executor):
                pool.shutdown(wait=drained and not self._force.is_set(), cancel_futures=True)
            runtime.close()

    def is_ready(self) -> bool:
        """Ready for work: consuming, connected, not stopping (the /readyz answer)."""
        return (
            self.consumer is not None
            and self.consumer.consuming
            and not self.stop_requested.is_set()
        )

    async def readiness(self) -> bool:
        """The /readyz answer: consuming (broker channel open) and Redis answers a PING."""
        if not self.is_ready():
            return False
        ping = self._runtime.ping if self._runtime is not None else None
        if ping is None:
            return True
        try:
            await asyncio.wait_for(ping(), READY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in the log
            log.warning("not ready: Redis did not answer a PING: %r", exc)
            return False
        return True

    async def _start_services(self, runtime: Runtime) -> None:
        for service in runtime.services:
            try:
                await service.start()
            except Exception as exc:  # noqa: BLE001 - optional: it connects again on first use
                log.warning("%s did not start (it tries again when used): %s",
                            type(service).__name__, exc)

    async def _start_probes(self) -> None:
        probes = ProbeServer(self.metrics.registry, self.readiness, port=self.settings.metrics_port)
        try:
            await probes.start()
        except OSError as exc:
            # Probes are for the orchestrator; a busy port must not stop the worker working.
            log.warning("cannot serve /metrics on port %s: %s", self.settings.metrics_port, exc)
            return
        self.probes = probes
        log.info("serving /metrics, /healthz, /readyz on port %d", probes.port)

    async def _shutdown(self) -> int:
        assert self.consumer is not None
        log.info("stopping: %d deliveries in flight", self.consumer.in_flight)
        await self.consumer.stop_consuming()
        if self._force.is_set():
            return 1
        drain = asyncio.create_task(self.consumer.drain(self.settings.drain_timeout_s))
        force = asyncio.create_task(self._force.wait())
        await asyncio.wait({drain, force}, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        if drain.done() and drain.result():
            log.info("drained; exiting")
            return 0
        drain.cancel()
        log.warning("exiting with %d deliveries unsettled", self.consumer.in_flight)
        return 1


async def _close_service(service: Any) -> None:
    try:
        await service.close()
    except Exception:
        log.exception("closing %r failed", service)


def run_process(
    settings: WorkerSettings,
    runtime_factory: RuntimeFactory = sandbox_runtime,
    *,
    link: Callable[[WorkerService], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """Run a worker in this process until SIGTERM/SIGINT; returns the exit status.

    With `link` (a supervised child, worker/supervisor.py), the process serves no probes and
    `link(service)` runs beside it: the supervisor's line to this process."""

    service: WorkerService | None = None

    async def main() -> int:
        nonlocal service
        service = WorkerService(settings, runtime_factory=runtime_factory,
                                serve_probes=link is None)
        service.install_signal_handlers(asyncio.get_running_loop())
        if link is None:
            return await service.run()
        linked = asyncio.create_task(link(service))
        try:
            return await service.run()
        finally:
            linked.cancel()

    status = asyncio.run(main())
    # Python would join threads still blocked in a guest's host call at exit (a guest may
    # sleep for hours): a forced stop, or abandoned threads still out, exit without them.
    if service is not None and (
        service.forced or (service.consumer is not None and service.consumer.abandoned)
    ):
        exit_now(status)
    return status


def exit_now(status: int) -> None:
    """Exit without joining invocation threads (Python would wait for running guests)."""
    logging.shutdown()
    os._exit(status)
