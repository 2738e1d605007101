"""Fixtures shared by the hardening tests (auth, hostile input, envelopes, guests, faults).

Fixture names are either generic (reusable by every hardening test) or prefixed `auth_`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import boto3
import httpx
import pytest
import redis.asyncio as aioredis

from dispatcher.app import ApiOptions, create_app
from dispatcher.auth import Authenticator
from flotilla.artifacts import ArtifactStore, S3Backend
from flotilla.jobs import JobStore
from flotilla.registry import Deployer, Registry
from tests.api.conftest import WASM, FakeTransport, fake_compile

AUTH_ADMIN_KEY = "hardening-bootstrap-admin-key"


@dataclasses.dataclass
class AuthApi:
    """A dispatcher app with API keys on (real Redis and moto S3, a scripted fake worker)."""

    app: Any
    client: httpx.AsyncClient  # sends no Authorization header unless a test adds one
    auth: Authenticator
    transport: FakeTransport
    registry: Registry
    jobs: JobStore
    redis: Any
    prefix: str

    def admin(self) -> dict[str, str]:
        """Headers carrying the bootstrap admin key (every scope, no rate limit)."""
        return bearer(AUTH_ADMIN_KEY)

    async def deploy(self, name: str, wasm: bytes = WASM) -> None:
        """Deploy `name` with the admin key (a fake component, compiled by fake_compile)."""
        resp = await self.client.put(f"/v1/functions/{name}", headers=self.admin(),
                                     files={"component": ("f.wasm", wasm)})
        assert resp.status_code in (200, 201), resp.text


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of an API key."""
    return {"Authorization": f"Bearer {key}"}


def auth_app(redis: Any, s3: Any, prefix: str, transport: FakeTransport) -> tuple[Any, Authenticator]:
    """One dispatcher replica on shared Redis and S3 (several may share them)."""
    registry = Registry(redis, prefix=prefix)
    auth = Authenticator.on_redis(redis, prefix=prefix, admin_key=AUTH_ADMIN_KEY)
    app = create_app(
        registry=registry,
        deployer=Deployer(registry, ArtifactStore(S3Backend(s3, prefix), "test-key"),
                          compile=fake_compile, engine_fingerprint="eng"),
        jobs=JobStore(redis, prefix=prefix, ttl_s=60),
        transport=transport,
        options=ApiOptions(reply_margin_ms=500, job_ttl_s=60),
        auth=auth,
    )
    return app, auth


@pytest.fixture
async def auth_api(redis_url: str, aws_endpoint_url: str, unique: str) -> AsyncIterator[AuthApi]:
    """The API with keys required, under a unique Redis prefix and S3 bucket."""
    redis = aioredis.from_url(redis_url)
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    transport = FakeTransport()
    app, auth = auth_app(redis, s3, unique, transport)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        yield AuthApi(app, client, auth, transport, Registry(redis, prefix=unique),
                      JobStore(redis, prefix=unique, ttl_s=60), redis, unique)
    finally:
        await client.aclose()
        keys = [k async for k in redis.scan_iter(f"{unique}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
