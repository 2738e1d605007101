"""What API keys cost per request: the same invoke with auth off, a bootstrap key, a stored
unlimited key and a stored rate-limited key, in one run (in-process ASGI, fake worker, real
Redis and moto S3 must be running: `python -m tests.hardening.bench_auth [N]`).

Prints the median and p90 microseconds per request of each, interleaved in rounds so drift
in machine load hits all of them alike, and the median of a bare Redis PING (the floor of
the one round trip a stored key costs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

import httpx
import redis.asyncio as aioredis

from dispatcher.app import ApiOptions, create_app
from dispatcher.auth import INVOKE, Authenticator
from flotilla.artifacts import ArtifactStore, LocalBackend
from flotilla.jobs import JobStore
from flotilla.ratelimit import Limit
from flotilla.registry import Deployer, Registry
from tests.api.conftest import WASM, FakeTransport, fake_compile

ADMIN = "bench-admin-key"


async def main(n: int) -> None:
    redis = aioredis.from_url(os.environ.get("FLOTILLA_REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(LocalBackend(f"/tmp/{prefix}"), "k")

    def app(auth: Authenticator | None) -> httpx.AsyncClient:
        registry = Registry(redis, prefix=prefix)
        a = create_app(registry=registry,
                       deployer=Deployer(registry, store, compile=fake_compile,
                                         engine_fingerprint="eng"),
                       jobs=JobStore(redis, prefix=prefix, ttl_s=60), transport=FakeTransport(),
                       options=ApiOptions(), auth=auth)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://b")

    auth = Authenticator.on_redis(redis, prefix=prefix, admin_key=ADMIN)
    off, on = app(None), app(auth)
    _, unlimited = await auth.keys.create("bench", [INVOKE], limit=None)
    _, limited = await auth.keys.create("bench", [INVOKE], limit=Limit(1e6, 1_000_000))
    variants = {
        "auth off (baseline)": (off, {}),
        "bootstrap admin key": (on, {"Authorization": f"Bearer {ADMIN}"}),
        "stored key, unlimited": (on, {"Authorization": f"Bearer {unlimited}"}),
        "stored key, rate-limited": (on, {"Authorization": f"Bearer {limited}"}),
    }
    resp = await off.put("/v1/functions/echo", files={"component": ("f.wasm", WASM)})
    assert resp.status_code == 201, resp.text
    samples: dict[str, list[float]] = {k: [] for k in variants}
    pings: list[float] = []
    try:
        for _ in range(n):
            began = time.perf_counter()
            await redis.ping()
            pings.append((time.perf_counter() - began) * 1e6)
            for label, (client, headers) in variants.items():
                began = time.perf_counter()
                r = await client.post("/v1/functions/echo/invoke", headers=headers, content=b"x")
                samples[label].append((time.perf_counter() - began) * 1e6)
                assert r.status_code == 200, r.text
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    base = statistics.median(samples["auth off (baseline)"])
    print(f"load average {os.getloadavg()[0]:.2f}, {n} requests each; one Redis PING "
          f"alone: median {statistics.median(pings):.0f} us")
    for label, xs in samples.items():
        med = statistics.median(xs)
        p90 = statistics.quantiles(xs, n=10)[-1]
        print(f"{label:28} median {med:7.0f} us  p90 {p90:7.0f} us  x{med / base:.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
