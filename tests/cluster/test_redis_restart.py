"""A Redis that restarts empty (no persistence): the dispatcher stays closed, says loudly that
the API keys are gone (readiness, metric, log), does not hang callers, and is ready again once
a key exists. A private redis-server on a free port: never the machine's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from dispatcher.auth import KeyStore
from loadtest.chaos import RedisServer
from loadtest.cluster import ClusterError
from loadtest.soak import Fleet
from tests import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ADMIN = "redis-restart-bootstrap-admin-key"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, with the machine's flags (nothing on disk)."""
    server = RedisServer()
    try:
        server.start()
    except ClusterError as exc:
        services.unavailable(str(exc))
    try:
        yield server
    finally:
        server.close()


async def readiness(url: str, *, until: int, timeout: float = 20) -> httpx.Response:
    """Poll /readyz until it answers `until` (the watch checks every few seconds)."""
    end = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            r = await client.get(f"{url}/readyz")
            if r.status_code == until or time.monotonic() > end:
                return r
            await asyncio.sleep(0.2)


async def test_restarted_redis_keeps_the_dispatcher_closed_and_says_keys_are_missing(
    private_redis: RedisServer, amqp_url: str, aws_endpoint_url: str
) -> None:
    fleet = Fleet(amqp_url, private_redis.url, aws_endpoint_url=aws_endpoint_url)
    redis = aioredis.from_url(private_redis.url)
    try:
        # Given a dispatcher with API keys on, a bootstrap admin key and one stored key,
        keys = KeyStore(redis, prefix=fleet.prefix)
        _, key = await keys.create("caller", ["deploy", "invoke"])
        url = await asyncio.to_thread(
            fleet.start_dispatcher, extra=("--no-insecure", "--admin-key", ADMIN)
        )
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            stored = {"Authorization": f"Bearer {key}"}
            admin = {"Authorization": f"Bearer {ADMIN}"}
            assert (await client.get("/v1/functions", headers=stored)).status_code == 200
            assert (await readiness(url, until=200)).status_code == 200
            # when Redis restarts empty,
            await asyncio.to_thread(private_redis.restart)
            # the stored key is refused and nobody gets in without a key (never open); the
            # answers come at once, nobody hangs;
            began = time.monotonic()
            assert (await client.get("/v1/functions", headers=stored)).status_code == 401
            assert (await client.get("/v1/functions")).status_code == 401
            assert time.monotonic() - began < 5
            # readiness fails naming the missing keys, the metric counts the loss, a log says so;
            r = await readiness(url, until=503)
            assert r.status_code == 503 and "API keys missing" in r.text, r.text
            metrics = (await client.get("/metrics")).text
            assert "flotilla_redis_data_lost_total 1.0" in metrics
            assert "flotilla_api_keys 0.0" in metrics
            log = fleet.log_tail("dispatcher", 20_000)
            assert "Redis lost its data" in log and "API keys missing" in log
            # the bootstrap key still works (to recover), and once a key is created again the
            # dispatcher is ready and the new key works.
            assert (await client.get("/v1/functions", headers=admin)).status_code == 200
            _, again = await KeyStore(redis, prefix=fleet.prefix).create("again", ["invoke"])
            assert (await readiness(url, until=200)).status_code == 200
            headers = {"Authorization": f"Bearer {again}"}
            assert (await client.get("/v1/jobs/01a2430000000000000000000000000", headers=headers)
                    ).status_code in (404, 422)  # authenticated: past the key check
    finally:
        await redis.aclose()
        await asyncio.to_thread(fleet.stop)
