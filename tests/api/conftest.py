"""Fixtures for the HTTP API tests: real Redis and moto S3, a scripted fake transport."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import boto3
import httpx
import pytest
import redis.asyncio as aioredis

from dispatcher.app import ApiOptions, create_app
from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.envelope import Envelope, Reply
from flotilla.errors import ComponentError
from flotilla.jobs import JobStore, ResultRecorder
from flotilla.metrics import DispatcherMetrics
from flotilla.outcomes import Outcome
from flotilla.registry import Deployer, Registry
from tests.guests.build import echo_wasm, probe_wasm  # noqa: F401 - fixtures

WASM = b"\0asm\x0d\x00\x01\x00fake component"


def fake_compile(wasm: bytes) -> bytes:
    """Stands in for Sandbox.compile: accepts anything starting with the component magic."""
    if not wasm.startswith(b"\0asm"):
        raise ComponentError("not a WebAssembly component (bad magic)")
    return b"native:" + wasm


def echo(envelope: Envelope) -> Reply:
    """The default scripted worker: echoes body and headers, names the digest it ran."""
    return Reply(
        invocation_id=envelope.invocation_id,
        correlation_id=envelope.correlation_id,
        outcome=Outcome.OK,
        status=200,
        headers=(("content-type", "application/octet-stream"), ("x-digest", envelope.digest))
        + tuple((f"x-echo-{k}", v) for k, v in envelope.headers if k.startswith("x-")),
        body=envelope.body,
    )


class FakeTransport:
    """A Transport whose worker is a Python function; exceptions it raises propagate."""

    def __init__(self) -> None:
        self.worker: Callable[[Envelope], Reply] = echo
        self.calls: list[tuple[Envelope, float]] = []
        self.submitted: list[Envelope] = []
        self.delays: dict[str, int] = {}  # job id -> delay_ms, for delayed submits
        self.fail: Exception | None = None
        self.reply_queue_name = "fake.reply"
        self.is_connected = True

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, envelope: Envelope, timeout: float) -> Reply:
        self.calls.append((envelope, timeout))
        if self.fail is not None:
            raise self.fail
        return self.worker(envelope)

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        if self.fail is not None:
            raise self.fail
        self.submitted.append(envelope)
        if delay_ms:
            self.delays[envelope.invocation_id] = delay_ms

    async def consume_job_results(self, handler: Any, *notices: Any) -> None: ...


@dataclasses.dataclass
class Api:
    client: httpx.AsyncClient
    transport: FakeTransport
    registry: Registry
    jobs: JobStore
    recorder: ResultRecorder
    posted: list[tuple[str, dict[str, Any]]]
    artifacts: ArtifactStore
    bucket: str


@pytest.fixture
async def api(redis_url: str, aws_endpoint_url: str, unique: str) -> AsyncIterator[Api]:
    redis = aioredis.from_url(redis_url)
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    artifacts = ArtifactStore(S3Backend(s3, unique), "test-key")
    registry = Registry(redis, prefix=unique)
    jobs = JobStore(redis, prefix=unique, ttl_s=60)
    posted: list[tuple[str, dict[str, Any]]] = []

    async def post(url: str, document: dict[str, Any]) -> int:
        posted.append((url, document))
        return 200

    transport = FakeTransport()
    app = create_app(
        registry=registry,
        deployer=Deployer(registry, artifacts, compile=fake_compile, engine_fingerprint="eng"),
        jobs=jobs,
        transport=transport,
        options=ApiOptions(reply_margin_ms=500, job_ttl_s=60, callback_hosts=("hooks.example.com",)),
        metrics=DispatcherMetrics(),
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        yield Api(client, transport, registry, jobs, ResultRecorder(jobs, post), posted,
                  artifacts, unique)
    finally:
        await client.aclose()
        keys = [k async for k in redis.scan_iter(f"{unique}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await asyncio.sleep(0)
