"""The Python client end to end: Client -> RabbitMQ -> a `flotilla worker` process running the
real sandbox, with the registry in Redis and HMAC-tagged artifacts in the moto S3 server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.client import Client
from flotilla.config import FunctionConfig
from flotilla.errors import BodyTooLarge, FunctionNotFound, JobNotFound, Unavailable
from flotilla.hosts.clients import HostClients
from flotilla.registry import Deployer, FunctionVersion, Registry
from flotilla.sandbox import Sandbox
from flotilla.settings import WorkerSettings
from flotilla.topology import Topology
from tests.guests.wat import build_wat
from tests.services import lane_functions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parents[2]
KEY = "client-test-key"


@dataclasses.dataclass
class Fleet:
    prefix: str
    redis_url: str
    amqp_url: str
    registry: Registry
    deployer: Deployer
    store: ArtifactStore
    echo: FunctionVersion
    worker: asyncio.subprocess.Process


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    amqp_url: str, redis_url: str, aws_endpoint_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    prefix = f"c{uuid.uuid4().hex[:10]}"
    bucket = f"{prefix}-artifacts"
    redis = aioredis.from_url(redis_url)
    registry = Registry(redis, prefix=prefix)
    store = ArtifactStore(
        S3Backend.from_settings(bucket=bucket, endpoint_url=aws_endpoint_url, region="us-east-1"),
        KEY,
    )
    deploy_dir = tmp_path_factory.mktemp("deploy")
    hosts = HostClients.for_dev(WorkerSettings(cache_dir=str(deploy_dir)))
    sandbox = Sandbox(hosts, cache_dir=deploy_dir)
    deployer = Deployer(
        registry, store, compile=sandbox.compile, engine_fingerprint=sandbox.engine_fingerprint
    )
    echo, _ = await deployer.deploy(FunctionConfig("echo", timeout_ms=5_000), build_wat("echo"))
    env = dict(os.environ, FLOTILLA_LOG_LEVEL="INFO")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flotilla", "worker",
        "--amqp-url", amqp_url, "--redis-url", redis_url,
        "--aws-endpoint-url", aws_endpoint_url, "--artifact-bucket", bucket,
        "--artifact-key", KEY, "--queue-prefix", prefix,
        "--cache-dir", str(tmp_path_factory.mktemp("worker-cache")),
        "--concurrency", "2", "--metrics-port", "0",
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stderr is not None
    async def consuming() -> None:
        assert worker.stderr is not None
        async for line in worker.stderr:
            if b"worker processes consuming" in line:
                return
        raise AssertionError("the worker exited before consuming")
    await asyncio.wait_for(consuming(), 60)
    drain = asyncio.create_task(_drain(worker.stderr))
    yield Fleet(prefix, redis_url, amqp_url, registry, deployer, store, echo, worker)
    worker.terminate()
    assert await asyncio.wait_for(worker.wait(), 30) == 0  # a clean drain
    drain.cancel()
    sandbox.close()
    hosts.close()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await Topology(prefix).delete(
            await connection.channel(), await lane_functions(redis_url, prefix))
    await redis.aclose()


async def _drain(stream: asyncio.StreamReader) -> None:
    async for line in stream:
        sys.stderr.write("worker: " + line.decode())


@pytest_asyncio.fixture(loop_scope="module")
async def client(fleet: Fleet) -> AsyncIterator[Client]:
    async with Client(
        fleet.amqp_url, queue_prefix=fleet.prefix, redis_url=fleet.redis_url,
        record_job_results=True,
    ) as c:
        yield c


async def test_invoke_returns_the_response(client: Client) -> None:
    response = await client.invoke("echo", b"hello", headers=[("x-a", "1")])
    assert (response.status, response.body) == (200, b"hello")
    assert ("x-a", "1") in response.headers


async def test_many_concurrent_invocations(client: Client) -> None:
    bodies = [f"body-{i}".encode() for i in range(200)]
    responses = await asyncio.gather(*(client.invoke("echo", b) for b in bodies))
    assert [r.body for r in responses] == bodies


async def test_unknown_function_is_not_found(client: Client) -> None:
    with pytest.raises(FunctionNotFound):
        await client.invoke("nosuch", b"")


async def test_body_over_the_limit_is_refused(fleet: Fleet, client: Client) -> None:
    with pytest.raises(BodyTooLarge):
        await client.invoke("echo", b"x" * (fleet.echo.config.max_body_bytes + 1))


async def test_digest_the_worker_cannot_find_is_unavailable(fleet: Fleet) -> None:
    ghost = dataclasses.replace(fleet.echo, digest="0" * 64)

    async def resolve(name: str, version: str | None) -> FunctionVersion:
        return ghost

    async with Client(fleet.amqp_url, queue_prefix=fleet.prefix, resolve=resolve, redis_url=None) as c:
        with pytest.raises(Unavailable) as info:
            await c.invoke("echo", b"")
    assert info.value.extra["outcome"] == "not_found"


async def test_tampered_artifact_is_refused(fleet: Fleet, client: Client) -> None:
    # An artifact tagged with another key (an attacker without the real key) must not load.
    forged_store = ArtifactStore(fleet.store.backend, "not-the-key")
    config = FunctionConfig("forged", timeout_ms=5_000)
    wasm = build_wat("echo")
    native = (await fleet.registry.get_version("echo")).artifact_sha256
    artifact = fleet.store.get_artifact(native, fleet.echo.engine_fingerprint)
    forged_sha = forged_store.put_artifact(artifact + b"\0", fleet.echo.engine_fingerprint)
    await fleet.registry.put_version(
        config, wasm_sha256=fleet.echo.wasm_sha256, wasm_size=len(wasm),
        artifact_sha256=forged_sha, engine_fingerprint=fleet.echo.engine_fingerprint,
    )
    with pytest.raises(Unavailable) as info:
        await client.invoke("forged", b"")
    assert info.value.extra["outcome"] == "internal"
    assert "HMAC" in str(info.value)


async def test_job_submit_and_result(client: Client) -> None:
    job_id = await client.submit("echo", b"job body")
    status = await client.result(job_id, wait=20)
    assert status.status == "succeeded"
    assert status.result is not None
    assert base64.b64decode(status.result["response"]["body"]) == b"job body"


async def test_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(JobNotFound):
        await client.result(f"{int(time.time() * 1000):x}-nosuch")


