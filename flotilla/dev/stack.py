"""Dev mode wiring: dispatcher and worker in one process, with no services to install.

Stand-ins, each behind the same interface the fleet uses:

- `MemoryTransport` for RabbitMQ (the worker's own `EnvelopeHandler` and `SandboxRunner`);
- fakeredis for Redis (registry and jobs here; the guest cache in `HostClients.for_dev`);
- a local directory (`LocalBackend`) for the S3 artifact store; its HMAC key is generated
  once and kept in `<cache_dir>/dev-artifact-key`, so the worker's disk cache stays valid;
- `MemoryTopics` for the topic exchange (guests publish, /v1/topics/... subscribes).

Jobs spawned by functions, dead letters (envelopes the in-process worker rejects) and cron
schedules, cancellation before a job starts, retries, `max_concurrency` and jobs' rate
limits work as in the fleet, in memory: a delayed job or retry waits on an asyncio timer,
and nothing survives the process.

API keys are off unless FLOTILLA_ADMIN_KEY is set (then that bootstrap key, and keys created
with it through /v1/keys, are required, as in production); startup says which.

At startup the HTTP API starts at once while the examples (`examples/*/app.py` +
`config.json`) are built (cached by content) and deployed in the background; a curl line is
printed for each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatcher.app import create_app
from dispatcher.auth import Authenticator
from dispatcher.service import (
    callback_poster,
    http_server,
    options_from,
    public_limit,
    split_listen,
)
from flotilla.artifacts import ArtifactStore, LocalBackend, artifact_tag
from flotilla.config import FunctionConfig
from flotilla.deadletters import DeadLetterConsumer
from flotilla.jobs import JobStore, ResultRecorder
from flotilla.metrics import DispatcherMetrics, WorkerMetrics
from flotilla.registry import Deployer, FunctionVersion, Registry, ResolveCache
from flotilla.schedules import Scheduler, submit_with
from flotilla.settings import DispatcherSettings, WorkerSettings
from flotilla.spawner import Spawner
from flotilla.tracing import DEV, Tracing

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
KEY_FILE = "dev-artifact-key"


def dev_artifact_key(cache_dir: str | Path) -> str:
    """The dev-mode HMAC key: read from the cache dir, created (mode 0600) on first use."""
    path = Path(cache_dir) / KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def find_examples(root: Path) -> list[Path]:
    """Example directories under `root` holding both app.py and config.json, sorted."""
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "app.py").is_file()
                  and (d / "config.json").is_file())


@dataclass
class DevStack:
    """Everything `flotilla dev` runs, built by `build_dev`, closed by `close`."""

    app: Any
    registry: Registry
    deployer: Deployer
    transport: Any
    recorder: ResultRecorder
    closers: list[Callable[[], Any]] = field(default_factory=list)
    async_closers: list[Callable[[], Any]] = field(default_factory=list)
    aws_endpoint: str | None = None  # the embedded moto server, when dev mode started one
    aws_region: str = "us-east-1"
    scheduler: Scheduler | None = None
    _scheduling: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        """Start the in-memory transport, route job results and dead letters to their
        stores, start the scheduler."""
        await self.transport.start()
        await self.transport.consume_job_results(
            self.recorder.handle, self.recorder.started, self.recorder.retrying
        )
        if self.scheduler is not None:
            self._scheduling = asyncio.create_task(self.scheduler.run(), name="scheduler")

    async def close(self) -> None:
        """Stop the scheduler and the transport (no more invocations), then close clients
        and the sandbox."""
        if self._scheduling is not None:
            self._scheduling.cancel()
            await asyncio.gather(self._scheduling, return_exceptions=True)
        await self.recorder.drain(timeout=2.0)
        await self.transport.close()
        for aclose in reversed(self.async_closers):
            await aclose()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("closing %r failed", close)

    async def deploy_examples(
        self, examples: list[Path], cache_dir: str, print_fn: Callable[[str], None]
    ) -> list[FunctionVersion]:
        """Build the examples two at a time (builds are subprocesses), deploy them in order."""
        from flotilla.build import build_guest

        gate = asyncio.Semaphore(2)

        async def build(example: Path) -> Path:
            async with gate:
                return await asyncio.to_thread(build_guest, example / "app.py",
                                               cache_dir=cache_dir)

        built = await asyncio.gather(*(build(e) for e in examples), return_exceptions=True)
        versions = []
        for example, wasm in zip(examples, built, strict=True):
            try:
                if isinstance(wasm, BaseException):
                    raise wasm
                config = FunctionConfig.from_dict(
                    json.loads((example / "config.json").read_text())
                )
                if self.aws_endpoint and (config.s3_buckets or config.dynamodb_tables):
                    await asyncio.to_thread(
                        create_example_resources, self.aws_endpoint, self.aws_region, [config]
                    )
                version, _ = await self.deployer.deploy(config, wasm.read_bytes())
                versions.append(version)
                print_fn(f"deployed {example.name}")
            except Exception as exc:  # noqa: BLE001 - one broken example must not stop dev mode
                print_fn(f"could not deploy example {example.name}: {exc}")
        return versions


def build_dev(
    settings: DispatcherSettings, *, loop: asyncio.AbstractEventLoop, concurrency: int = 4
) -> DevStack:
    """Build the dev stack on the running `loop` (the worker's registry reads run on it)."""
    import fakeredis
    import httpx
    from prometheus_client import CollectorRegistry

    from flotilla.admission import JobTokens, Leases
    from flotilla.dev.memory import MemoryTransport
    from flotilla.hosts.clients import HostClients
    from flotilla.hosts.secrets import RedisSecrets
    from flotilla.hosts.topics import BusPublisher
    from flotilla.jobstate import JobGate
    from flotilla.sandbox import Sandbox
    from flotilla.secrets import Keyring, SecretBox, SecretStore, new_key
    from flotilla.topics import MemoryTopics
    from flotilla.topology import Topology
    from worker.artifacts import ArtifactCache, StoreArtifactSource
    from worker.flow import JobFlow
    from worker.handler import EnvelopeHandler, Runner
    from worker.runner import SandboxRunner

    cache_dir = settings.cache_dir
    closers: list[Callable[[], Any]] = []
    aws_endpoint = settings.aws_endpoint_url
    if aws_endpoint is None:
        aws_endpoint, stop_aws = start_embedded_aws()
        if stop_aws is not None:
            closers.append(stop_aws)
    # Secrets work out of the box: a per-process key unless one is set (fakeredis forgets all).
    keyring = Keyring.parse(settings.secrets_key or new_key("dev"))
    server = fakeredis.FakeServer()  # shared: the worker's secrets reader sees the API's writes
    redis = fakeredis.FakeAsyncRedis(server=server)
    store = ArtifactStore(
        LocalBackend(Path(cache_dir) / "dev-store"),
        settings.artifact_key or dev_artifact_key(cache_dir),
    )
    registry = Registry(redis, prefix=settings.queue_prefix)
    jobs = JobStore(redis, prefix=settings.queue_prefix, ttl_s=settings.job_ttl_s)
    worker_settings = WorkerSettings(
        cache_dir=cache_dir, concurrency=concurrency, aws_endpoint_url=aws_endpoint,
        aws_region=settings.aws_region,
    )
    # Worker and dispatcher metrics share one registry: the app's /metrics shows both.
    registry_metrics = CollectorRegistry()
    worker_metrics = WorkerMetrics(registry_metrics)
    dispatcher_metrics = DispatcherMetrics(registry_metrics)
    tracing = Tracing.from_env(DEV, settings.tracing)
    observe = worker_metrics.observe_host_call if tracing is None else tracing.observing(
        worker_metrics.observe_host_call)
    if tracing is not None:
        closers.insert(0, tracing.shutdown)  # closed last (closers run in reverse)
    hosts = HostClients.for_dev(worker_settings, observe=observe)
    closers.append(hosts.close)
    secrets_redis = fakeredis.FakeRedis(server=server)
    closers.append(secrets_redis.close)
    hosts = hosts.with_clients(secrets=RedisSecrets(
        secrets_redis, SecretBox(keyring, settings.queue_prefix), observe=observe,
    ))
    topics = MemoryTopics()
    hosts = hosts.with_clients(topics=BusPublisher(topics, loop))
    # Spawned jobs go through the same transport; it is attached once it exists.
    spawner = Spawner(ResolveCache(registry), jobs, loop, job_ttl_s=settings.job_ttl_s,
                      tracing=tracing, observe=observe)
    hosts = hosts.with_clients(spawn=spawner)
    try:
        sandbox = Sandbox(hosts, cache_dir=cache_dir)
        closers.append(sandbox.close)
        fingerprint = sandbox.engine_fingerprint
        source = StoreArtifactSource(registry, store, engine_fingerprint=fingerprint, loop=loop)
        cache = ArtifactCache(
            source, sandbox, cache_dir=cache_dir,
            tag=lambda data: artifact_tag(store.key, fingerprint, data), metrics=worker_metrics,
        )
        topology = Topology(prefix=settings.queue_prefix)
        sandbox_runner = SandboxRunner(sandbox, cache)
        runner: Runner = sandbox_runner if tracing is None else tracing.runner(sandbox_runner)
        # Admission, the start gate and retries, on the same fake Redis as the job store.
        flow_redis = fakeredis.FakeRedis(server=server)
        closers.append(flow_redis.close)
        prefix = settings.queue_prefix
        flow = JobFlow(configs=sandbox_runner.config,
                       gate=JobGate(flow_redis, prefix=prefix, ttl_s=settings.job_ttl_s),
                       leases=Leases(flow_redis, prefix=prefix),
                       tokens=JobTokens(flow_redis, prefix=prefix))
        handler = EnvelopeHandler(
            runner, job_results=topology.job_results, metrics=worker_metrics, flow=flow,
        )
        transport = MemoryTransport(handler, topology=topology, concurrency=concurrency)
        spawner.publisher = transport
        dispatcher_metrics.watch_transport(transport)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    http = httpx.AsyncClient(follow_redirects=False)
    deployer = Deployer(registry, store, compile=sandbox.compile, engine_fingerprint=fingerprint)
    app = create_app(
        registry=registry, deployer=deployer, jobs=jobs, transport=transport,
        options=options_from(settings), metrics=dispatcher_metrics,
        auth=Authenticator.on_redis(redis, prefix=settings.queue_prefix,
                                    admin_key=settings.admin_key,
                                    public_limit=public_limit(settings))
        if settings.admin_key else None,
        secrets=SecretStore(redis, keyring, prefix=settings.queue_prefix),
        topics=topics, tracing=tracing,
    )
    api = app.state.api
    transport.on_dead_letter = DeadLetterConsumer(
        api.dead_letters, topology, metrics=dispatcher_metrics
    ).take
    return DevStack(
        app, registry, deployer, transport, ResultRecorder(jobs, callback_poster(http)),
        closers=closers, async_closers=[http.aclose, redis.aclose, topics.close],
        aws_endpoint=aws_endpoint if settings.aws_endpoint_url is None else None,
        aws_region=settings.aws_region,
        scheduler=Scheduler(api.schedules, submit_with(api.invoker), metrics=dispatcher_metrics),
    )


def start_embedded_aws() -> tuple[str | None, Callable[[], Any] | None]:
    """Start moto's S3/DynamoDB server in-process on a free port, when moto is installed.

    Dev mode only: it gives the s3-dynamodb example something to talk to. Data lives in
    memory and is gone at exit. Without moto, guests' s3/dynamodb calls return `unavailable`.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None, None
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # moto accepts any credentials; set dummies only when none are configured.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "dev")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "dev")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per AWS call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return f"http://127.0.0.1:{port}", server.stop


def create_example_resources(endpoint: str, region: str, configs: list[FunctionConfig]) -> None:
    """Create the buckets and tables (hash key `pk`, a string) the examples name."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region)
    for config in configs:
        for bucket in config.s3_buckets:
            s3.create_bucket(Bucket=bucket)
        for table in config.dynamodb_tables:
            ddb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )


def curl_line(base_url: str, version: FunctionVersion) -> str:
    """How to call one deployed example."""
    return f"  curl -s -X POST {base_url}/v1/functions/{version.name}/invoke -d 'hello'"


async def serve_dev(
    settings: DispatcherSettings,
    *,
    examples: Path | None = EXAMPLES_DIR,
    concurrency: int = 4,
    print_fn: Callable[[str], None] = print,
) -> None:
    """Run dev mode until interrupted: serve HTTP at once, deploy the examples meanwhile.

    On a fresh machine the examples take a while (componentize-py builds, then compiles);
    the API is usable from the start and each example's curl line is printed when it is in.
    """
    import uvicorn

    host, port = split_listen(settings.listen)
    base = f"http://{settings.listen}"
    stack = build_dev(settings, loop=asyncio.get_running_loop(), concurrency=concurrency)
    await stack.start()
    found = find_examples(examples) if examples is not None else []
    print_fn(f"Flotilla dev mode on {base}  (OpenAPI docs: {base}/docs)")
    if stack.app.state.api.auth is None:
        print_fn("  API keys: OFF (dev mode: any caller may deploy and invoke; "
                 "set FLOTILLA_ADMIN_KEY to require keys)")
    else:
        print_fn("  API keys: ON (send `Authorization: Bearer $FLOTILLA_ADMIN_KEY`)")
    print_fn(f"  curl -s {base}/v1/functions")
    if found:
        print_fn(f"deploying {len(found)} examples (built once, then cached)...")

    async def deploy_all() -> None:
        versions = await stack.deploy_examples(found, settings.cache_dir, print_fn)
        for version in versions:
            print_fn(curl_line(base, version))
        print_fn("examples ready")

    deploying = asyncio.create_task(deploy_all())
    try:
        server = http_server(
            uvicorn.Config(stack.app, host=host, port=port, log_level=settings.log_level.lower(),
                           lifespan="off"),
            stack.app.state.api.topics,
        )
        await server.serve()
    finally:
        deploying.cancel()
        await asyncio.gather(deploying, return_exceptions=True)
        await stack.close()
