"""What `secrets.get` costs a guest: one Redis HGET plus an AES-GCM open, against the plain
`cache.get` (one Redis GET) as the baseline, in one run (the probe guest's `hammer` op in a
real Sandbox; real Redis must be running: `python -m tests.hardening.bench_secrets [N]`).

Prints the median and p90 microseconds per host call over rounds (each round one invocation
running the op N times), interleaved so drift in machine load hits all of them alike, and
the median of the bare HGET from Python (the floor of the round trip).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from flotilla.config import FunctionConfig
from flotilla.hosts.base import CallInfo, InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.hosts.secrets import RedisSecrets
from flotilla.sandbox import Sandbox
from flotilla.sandbox.results import Request
from flotilla.secrets import Keyring, SecretStore, new_key
from flotilla.settings import WorkerSettings
from tests.guests.build import python_guest

ROUNDS = 15


async def put(redis_url: str, keys: str, prefix: str, function: str, values: dict[str, str]
              ) -> None:
    """Store the secrets through the async store (as the dispatcher does)."""
    import redis.asyncio as aioredis

    redis = aioredis.from_url(redis_url)
    store = SecretStore(redis, Keyring.parse(keys), prefix=prefix)
    for name, value in values.items():
        await store.put(function, name, value)
    await redis.aclose()


def main(n: int) -> None:
    redis_url = os.environ.get("FLOTILLA_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix, function, keys = f"bench{uuid.uuid4().hex[:8]}", "bench-secrets", new_key()
    settings = WorkerSettings(redis_url=redis_url, queue_prefix=prefix, secrets_key=keys)
    hosts = HostClients.from_settings(settings)
    hosts = hosts.with_clients(secrets=RedisSecrets.from_settings(settings, hosts.redis))
    cache_dir = os.environ.get("FLOTILLA_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "fl")
    sandbox = Sandbox(hosts, cache_dir=cache_dir)
    probe = sandbox.load(python_guest("probe").read_bytes())
    config = FunctionConfig(name=function, timeout_ms=60_000, cache_namespace=prefix)
    asyncio.run(put(redis_url, keys, prefix, function,
                    {"small": "s" * 32, "large": "l" * 64 * 1024}))
    ctx = InvocationContext(config, "bench", time.monotonic() + 60)
    hosts.cache.set(ctx, "small", b"s" * 32, 0)
    hosts.cache.set(ctx, "large", b"l" * 64 * 1024, 0)
    calls = {
        "cache.get 32 B (baseline)": {"op": "cache.get", "key": "small"},
        "secrets.get 32 B": {"op": "secrets.get", "name": "small"},
        "secrets.get missing": {"op": "secrets.get", "name": "missing"},
        "cache.get 64 KiB": {"op": "cache.get", "key": "large"},
        "secrets.get 64 KiB": {"op": "secrets.get", "name": "large"},
    }
    samples: dict[str, list[float]] = {k: [] for k in calls}
    try:
        for _ in range(ROUNDS):
            for label, call in calls.items():
                body = json.dumps({"op": "hammer", "call": call, "n": n}).encode()
                result = sandbox.invoke(probe, config, Request("bench", function, (), body,
                                                               CallInfo()))
                assert result.response is not None, result
                answer = json.loads(result.response.body)["result"]
                assert answer["errors"] == 0, answer
                samples[label].append(answer["ms"] * 1000 / n)
        floor = []
        for _ in range(n):
            began = time.perf_counter()
            hosts.redis.hget(f"{prefix}:secrets:{function}", "small")
            floor.append((time.perf_counter() - began) * 1e6)
    finally:
        hosts.redis.delete(f"{prefix}:secrets:{function}", f"{prefix}:secrets",
                           f"fn:{prefix}:small", f"fn:{prefix}:large")
        sandbox.close()
        hosts.close()
    base = statistics.median(samples["cache.get 32 B (baseline)"])
    print(f"{n} calls per invocation, {ROUNDS} rounds; us per call (median, p90, vs baseline)")
    for label, values in samples.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"  {label:<28} {med:8.1f} {p90:8.1f}   x{med / base:.2f}")
    print(f"  {'bare HGET from Python':<28} {statistics.median(floor):8.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
