"""Workload control end to end: two real dispatchers (`dispatcher.service.build`), a real
worker (`WorkerService`, its sandbox running the probe and echo guests, `spawn` wired to a
`Spawner`), real RabbitMQ, Redis and the moto S3 server.

Covered: an idempotent double submit runs once; a dead letter (a malformed envelope the
worker rejects, an exhausted job as the worker will publish it) is stored by the
dispatchers' consumer and replayed as a job that runs; a cron tick submits exactly one job
with two dispatchers running the scheduler, and none again after a restart; spawn allowed,
denied and capped, the spawned job running with its parent recorded; a function's
rate_limit answers 429 on HTTP and in the Python client; a job cancelled before it starts
never runs (the worker's start gate), and a delayed job runs when due (the delay chain).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from dispatcher import service
from flotilla.client import Client
from flotilla.envelope import Envelope
from flotilla.errors import FunctionRateLimited
from flotilla.hosts.policy import cache_key
from flotilla.jobs import JobStore
from flotilla.metrics import WorkerMetrics
from flotilla.registry import Registry, ResolveCache
from flotilla.settings import DispatcherSettings, WorkerSettings
from flotilla.spawner import Spawner
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.services import lane_functions
from worker.service import Runtime, WorkerService

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]
ADMIN_KEY = "jobs-e2e-bootstrap-admin-key"


@dataclass
class Fleet:
    clients: list[httpx.AsyncClient]  # one per dispatcher
    dispatchers: list[service.Dispatcher]
    settings: DispatcherSettings
    prefix: str
    redis: Any
    amqp_url: str
    redis_url: str

    @property
    def client(self) -> httpx.AsyncClient:
        return self.clients[0]

    async def count(self, key: str) -> int:
        """A counter the probe guest increments (`cache.increment`)."""
        raw = await self.redis.get(cache_key("probe", key))
        return int(raw or 0)

    async def finished(self, job_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/v1/jobs/{job_id}", params={"wait": 20})
        doc: dict[str, Any] = resp.json()
        assert doc["status"] in ("succeeded", "failed", "cancelled"), doc
        return doc


def spawning_runtime(publisher: AmqpTransport) -> Callable[..., Runtime]:
    """The worker's production runtime (worker.service.sandbox_runtime) with `spawn` wired:
    a `Spawner` over the registry and job store, publishing through `publisher`."""

    def factory(settings: WorkerSettings, loop: asyncio.AbstractEventLoop,
                metrics: WorkerMetrics) -> Runtime:
        from flotilla.artifacts import ArtifactStore, S3Backend, artifact_tag
        from flotilla.hosts.clients import HostClients
        from flotilla.sandbox import Sandbox
        from worker.artifacts import ArtifactCache, StoreArtifactSource
        from worker.runner import SandboxRunner

        redis_client = aioredis.from_url(settings.redis_url)
        registry = Registry(redis_client, prefix=settings.queue_prefix)
        jobs = JobStore(redis_client, prefix=settings.queue_prefix, ttl_s=300)
        spawner = Spawner(ResolveCache(registry), jobs, loop, publisher=publisher)
        hosts = HostClients.from_settings(settings, observe=metrics.observe_host_call)
        hosts = hosts.with_clients(spawn=spawner)
        sandbox = Sandbox(hosts, cache_dir=settings.cache_dir)
        store = ArtifactStore(S3Backend.from_settings(
            bucket=settings.artifact_bucket, endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region), settings.artifact_key)
        fingerprint = sandbox.engine_fingerprint
        cache = ArtifactCache(
            StoreArtifactSource(registry, store, engine_fingerprint=fingerprint, loop=loop),
            sandbox, cache_dir=settings.cache_dir,
            tag=lambda data: artifact_tag(store.key, fingerprint, data), metrics=metrics,
        )
        runner = SandboxRunner(sandbox, cache)
        return Runtime(runner, [hosts.close, sandbox.close], ping=redis_client.ping,
                       configs=runner.config)

    return factory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    redis_url: str, amqp_url: str, aws_endpoint_url: str, echo_wasm: Path, probe_wasm: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    prefix = f"jobs{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "amqp_url": amqp_url, "redis_url": redis_url, "aws_endpoint_url": aws_endpoint_url,
        "artifact_bucket": prefix, "artifact_key": "e2e-key", "queue_prefix": prefix,
    }
    settings = DispatcherSettings(**common, reply_margin_ms=1000, job_ttl_s=300,
                                  admin_key=ADMIN_KEY)
    dispatchers = [service.build(settings) for _ in range(2)]
    for d in dispatchers:
        await d.start()
    publisher = AmqpTransport(amqp_url, Topology(prefix), connection_name="worker-spawn")
    await publisher.start()
    worker = WorkerService(
        WorkerSettings(**common, cache_dir=str(tmp_path_factory.mktemp("worker-cache")),
                       concurrency=2, drain_timeout_s=5),
        runtime_factory=spawning_runtime(publisher),
    )
    worker_task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 30)
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=d.app),
                                 base_url="http://dispatcher", timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"})
               for d in dispatchers]
    for name, wasm, config in (
        ("echo", echo_wasm, {}),
        ("probe", probe_wasm, {"timeout_ms": 5000, "spawn_functions": ["echo"]}),
        ("limited", echo_wasm, {"rate_limit": {"per_second": 0.2, "burst": 2}}),
    ):
        resp = await clients[0].put(f"/v1/functions/{name}",
                                    files={"component": ("f.wasm", wasm.read_bytes())},
                                    data={"config": json.dumps(config)})
        assert resp.status_code == 201, resp.text
    redis = aioredis.from_url(redis_url)
    try:
        yield Fleet(clients, dispatchers, settings, prefix, redis, amqp_url, redis_url)
    finally:
        for c in clients:
            await c.aclose()
        worker.stop()
        await asyncio.wait_for(worker_task, 30)
        await publisher.close()
        for d in dispatchers:
            await d.close()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await Topology(prefix=prefix).delete(
                await connection.channel(), await lane_functions(redis_url, prefix))
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def submit(fleet: Fleet, function: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await fleet.client.post(f"/v1/functions/{function}/jobs", content=content, **kw)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
    """Poll `check` until it returns something truthy (for state only Redis shows)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


# -- idempotency ---------------------------------------------------------------------------


async def test_idempotent_double_submit_runs_once(fleet: Fleet) -> None:
    key = uuid.uuid4().hex
    op = {"op": "cache.increment", "key": key}
    headers = {"Idempotency-Key": f"pay-{key}"}
    first = await submit(fleet, "probe", op, headers=headers)
    second = await fleet.clients[1].post("/v1/functions/probe/jobs", headers=headers,
                                         content=json.dumps(op).encode())
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["job_id"] == second.json()["job_id"]
    assert (await fleet.finished(first.json()["job_id"]))["status"] == "succeeded"
    # Another job of the same function after it, on the same worker: still one increment.
    marker = await submit(fleet, "probe", {"op": "cache.increment", "key": key + "-m"})
    await fleet.finished(marker.json()["job_id"])
    assert await fleet.count(key) == 1


# -- dead letters ----------------------------------------------------------------------------


async def publish_to(fleet: Fleet, exchange: str, routing_key: str, body: bytes,
                     headers: dict[str, Any] | None = None) -> None:
    connection = await aio_pika.connect(fleet.amqp_url)
    async with connection:
        channel = await connection.channel()
        target = (await channel.get_exchange(exchange)) if exchange else channel.default_exchange
        await target.publish(aio_pika.Message(body, headers=headers or {}, delivery_mode=2),
                             routing_key=routing_key)


async def letters(fleet: Fleet, **params: str) -> list[dict[str, Any]]:
    resp = await fleet.client.get("/v1/dead-letters", params=params)
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["dead_letters"]
    return found


async def test_a_malformed_envelope_is_stored_and_not_replayable(fleet: Fleet) -> None:
    junk = b"\x81\xa1v\x07 not an envelope " + uuid.uuid4().bytes
    topology = Topology(fleet.prefix)
    await publish_to(fleet, "", topology.job_queue("echo"), junk)  # the real worker rejects it

    async def stored() -> list[dict[str, Any]]:
        return [d for d in await letters(fleet) if d["size"] == len(junk)
                and d["reason"] == "malformed"]

    (letter,) = await eventually(stored)
    assert letter["queue"] == topology.job_queue("echo") and not letter["replayable"]
    shown = (await fleet.client.get(f"/v1/dead-letters/{letter['id']}")).json()
    assert base64.b64decode(shown["raw_base64"]) == junk
    replay = await fleet.client.post(f"/v1/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 409


async def test_an_exhausted_job_is_replayed_and_runs(fleet: Fleet) -> None:
    key = uuid.uuid4().hex
    job = Envelope.for_job(uuid.uuid4().hex, "probe", "stale-digest", (("x-k", "v"),),
                           json.dumps({"op": "cache.increment", "key": key}).encode(),
                           ttl_s=60, attempt=3)
    # What the worker publishes for a job that used up its retries (design-workload.md).
    await publish_to(fleet, Topology(fleet.prefix).dead_letter_exchange, "", job.encode(), {
        "x-flotilla-reason": "exhausted", "x-flotilla-error": "trap: wasm unreachable",
        "x-flotilla-attempts": 3,
    })

    async def stored() -> list[dict[str, Any]]:
        return [d for d in await letters(fleet, function="probe")
                if d["invocation_id"] == job.invocation_id]

    (letter,) = await eventually(stored)
    assert (letter["reason"], letter["attempts"], letter["last_error"]) == (
        "exhausted", 3, "trap: wasm unreachable")
    replay = await fleet.clients[1].post(f"/v1/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 202, replay.text
    job_id = replay.json()["job_id"]
    assert (await fleet.finished(job_id))["status"] == "succeeded"
    assert await fleet.count(key) == 1
    shown = (await fleet.client.get(f"/v1/dead-letters/{letter['id']}")).json()
    assert shown["replayed_job_ids"] == [job_id]
    assert (await fleet.client.delete(f"/v1/dead-letters/{letter['id']}")).status_code == 204


# -- schedules -------------------------------------------------------------------------------


async def test_cron_tick_runs_exactly_once_with_two_dispatchers(fleet: Fleet) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    body = base64.b64encode(json.dumps({"op": "invocation"}).encode()).decode()
    # New Year only: the dispatchers' own loops (on the real clock) never reach a tick.
    resp = await fleet.client.put(f"/v1/schedules/{name}", json={
        "function": "probe", "cron": "0 0 1 1 *", "timezone": "UTC", "body_base64": body})
    assert resp.status_code == 201, resp.text
    tick = resp.json()["next_run_at"]
    schedulers = [d.scheduler for d in fleet.dispatchers]
    assert all(schedulers)
    done = await asyncio.gather(*(s.run_once(tick + 1) for s in schedulers if s))
    ticks = [t for ts in done for t in ts]
    assert len(ticks) == 1 and ticks[0].job_id is not None, done
    result = await fleet.finished(ticks[0].job_id)
    answer = json.loads(base64.b64decode(result["response"]["body"]))
    assert answer["result"]["kind"] == "scheduled"
    # A dispatcher started afterwards (a restart) does not run that tick again.
    restarted = service.build(fleet.settings)
    try:
        assert restarted.scheduler is not None
        assert await restarted.scheduler.run_once(tick + 2) == []
    finally:
        await restarted.close()
    shown = (await fleet.client.get(f"/v1/schedules/{name}")).json()
    assert shown["last_job"] == {"tick": tick, "job_id": ticks[0].job_id}
    assert (await fleet.client.delete(f"/v1/schedules/{name}")).status_code == 204


# -- spawn -----------------------------------------------------------------------------------


async def test_spawn_allowed_denied_and_capped(fleet: Fleet) -> None:
    spawn = {"op": "spawn.job", "function": "echo", "headers": [["x-from", "parent"]],
             "body": "child work"}
    resp = await fleet.client.post("/v1/functions/probe/invoke", content=json.dumps(spawn))
    answer = resp.json()
    assert answer["ok"], answer
    parent = resp.headers["flotilla-invocation-id"]
    child = await fleet.finished(answer["result"])
    assert (child["status"], child["kind"], child["parent_id"]) == ("succeeded", "spawned", parent)
    assert base64.b64decode(child["response"]["body"]) == b"child work"

    denied = {"op": "spawn.job", "function": "limited"}
    answer = (await fleet.client.post("/v1/functions/probe/invoke",
                                      content=json.dumps(denied))).json()
    assert not answer["ok"] and answer["error"]["case"] == "denied"

    many = {"op": "batch", "ops": [{"op": "spawn.job", "function": "echo"}] * 17}
    results = (await fleet.client.post("/v1/functions/probe/invoke",
                                       content=json.dumps(many))).json()["result"]
    assert [r["ok"] for r in results] == [True] * 16 + [False]
    assert results[-1]["error"]["case"] == "invalid-argument"


# -- rate limit ------------------------------------------------------------------------------


async def test_function_rate_limit_over_http_and_the_client(fleet: Fleet) -> None:
    statuses = [(await fleet.clients[i % 2].post("/v1/functions/limited/invoke")).status_code
                for i in range(3)]
    assert statuses == [200, 200, 429]
    async with Client(fleet.amqp_url, queue_prefix=fleet.prefix,
                      redis_url=fleet.redis_url) as client:
        with pytest.raises(FunctionRateLimited) as refused:
            await client.invoke("limited", b"x")
    assert int(refused.value.headers["Retry-After"]) >= 1


# -- the start gate and the delay chain -------------------------------------------------------


async def test_a_job_cancelled_before_it_starts_never_runs(fleet: Fleet) -> None:
    busy = [await submit(fleet, "probe", {"op": "sleep", "ms": 1500}) for _ in range(2)]
    key = uuid.uuid4().hex
    target = await submit(fleet, "probe", {"op": "cache.increment", "key": key})
    cancel = await fleet.client.delete(target.headers["Location"])
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    for resp in busy:
        await fleet.finished(resp.json()["job_id"])
    marker = await submit(fleet, "probe", {"op": "cache.increment", "key": key + "-m"})
    await fleet.finished(marker.json()["job_id"])
    assert await fleet.count(key) == 0


async def test_a_delayed_job_runs_when_due(fleet: Fleet) -> None:
    began = time.time()
    resp = await submit(fleet, "echo", b"later", params={"delay_ms": 1500})
    assert resp.status_code == 202, resp.text
    status = (await fleet.client.get(resp.headers["Location"])).json()
    assert status["status"] == "scheduled"
    done = await fleet.finished(resp.json()["job_id"])
    assert done["status"] == "succeeded" and done["finished_at"] >= began + 1.5
