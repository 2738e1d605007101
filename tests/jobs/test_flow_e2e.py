"""The job flow with real processes: one `flotilla dispatcher` and two `flotilla worker`s
(one process of 4 invocation threads each) on the machine's RabbitMQ and Redis, moto for
artifacts (`loadtest.soak.Fleet`).

- retries: a guest failing its first two runs (tests/guests/python/flaky: a cache counter
  it increments) reads `retrying` with `next_attempt_at` and the last error, then
  `succeeded` with `attempts == 3`; one that always fails ends `failed` after
  `max_attempts`, is in /v1/dead-letters as `exhausted`, and its replay runs; a
  synchronous call of the same function is never retried.
- max_concurrency: 20 jobs of a function limited to 2, on 8 invocation threads in two
  processes: every job succeeds, and the guest never sees more than 2 running at once
  (each run increments a counter as it starts and decrements it as it ends).
- rate limit: 8 jobs of a function admitted 4/s in bursts of 2 all succeed, and their start
  times (the guest's clock) never admit more than `burst + rate * span` in any span.
- spawn: a job a function spawns (the production worker's `spawn.job`) is retried by its
  own function's policy, its parent recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from flotilla.hosts.policy import cache_key
from loadtest.soak import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def fleet(amqp_url: str, redis_url: str, aws_endpoint_url: str) -> Iterator[Fleet]:
    fleet = Fleet(amqp_url, redis_url, aws_endpoint_url=aws_endpoint_url)
    try:
        fleet.start_dispatcher()
        for name in ("worker-0", "worker-1"):
            fleet.start_worker(name, concurrency=4, processes=1, wait=False)
        for name in ("worker-0", "worker-1"):
            fleet._wait_log(name, b"worker consuming", 60)
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.api, timeout=60) as client:
        yield client


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def deploy(api: httpx.AsyncClient, fleet: Fleet, name: str, wasm: Path,
                 **config: Any) -> None:
    config = {"cache_namespace": fleet.prefix, **config}  # Fleet.stop deletes fn:<prefix>:*
    resp = await api.put(f"/v1/functions/{name}",
                         files={"component": ("f.wasm", wasm.read_bytes())},
                         data={"config": json.dumps(config)})
    assert resp.status_code in (200, 201), resp.text


async def submit(api: httpx.AsyncClient, function: str, body: Any) -> str:
    resp = await api.post(f"/v1/functions/{function}/jobs", content=json.dumps(body).encode())
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["job_id"]
    return job_id


async def finished(api: httpx.AsyncClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
        if doc["status"] in ("succeeded", "failed", "expired", "cancelled") \
                or time.monotonic() > deadline:
            return doc


def answer(doc: dict[str, Any]) -> Any:
    assert doc["status"] == "succeeded", doc
    return json.loads(base64.b64decode(doc["response"]["body"]))


RETRY = {"max_attempts": 3, "backoff_ms": 600, "backoff_max_ms": 1000, "on": ["trap"]}


async def test_a_job_failing_twice_is_retried_then_succeeds(
    api: httpx.AsyncClient, fleet: Fleet, flaky_wasm: Path, redis: Any
) -> None:
    await deploy(api, fleet, "flaky", flaky_wasm, retry=RETRY)
    key = uuid.uuid4().hex
    job_id = await submit(api, "flaky", {"key": key, "succeed_at": 3})
    # Status only Redis shows: read it while the job goes (each backoff is 300-1000 ms).
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = (await api.get(f"/v1/jobs/{job_id}")).json()
        if not seen or doc["status"] != seen[-1]["status"]:
            seen.append(doc)
        if doc["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.02)
    statuses = [d["status"] for d in seen]
    assert "retrying" in statuses and statuses[-1] == "succeeded", statuses
    retrying = next(d for d in seen if d["status"] == "retrying")
    assert retrying["next_attempt_at"] is not None and retrying["attempts"] in (1, 2)
    assert retrying["last_error"]["outcome"] == "trap"
    assert seen[-1]["attempts"] == 3
    assert answer(seen[-1]) == {"runs": 3, "attempt": 3}
    assert int(await redis.get(cache_key(fleet.prefix, key))) == 3


async def test_a_job_that_always_fails_is_dead_lettered_and_replayed(
    api: httpx.AsyncClient, fleet: Fleet, flaky_wasm: Path, redis: Any
) -> None:
    await deploy(api, fleet, "doomed", flaky_wasm,
                 retry={**RETRY, "backoff_ms": 100, "backoff_max_ms": 200})
    key = uuid.uuid4().hex
    job_id = await submit(api, "doomed", {"key": key, "succeed_at": 5})
    doc = await finished(api, job_id)
    assert (doc["status"], doc["attempts"], doc["error"]["outcome"]) == ("failed", 3, "trap")
    counter = cache_key(fleet.prefix, key)
    assert int(await redis.get(counter)) == 3

    async def letter() -> dict[str, Any] | None:
        page = (await api.get("/v1/dead-letters", params={"function": "doomed"})).json()
        return next((d for d in page["dead_letters"] if d["invocation_id"] == job_id), None)

    found = await letter()
    deadline = time.monotonic() + 30
    while found is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found = await letter()
    assert found is not None
    assert (found["reason"], found["attempts"], found["replayable"]) == ("exhausted", 3, True)
    assert found["last_error"].startswith("trap: ")
    # The downstream recovered: the replay is a new job that runs (and succeeds, run 5).
    await redis.set(counter, 4)
    replay = await api.post(f"/v1/dead-letters/{found['id']}/replay")
    assert replay.status_code == 202, replay.text
    redone = await finished(api, replay.json()["job_id"])
    assert answer(redone) == {"runs": 5, "attempt": 1}


async def test_a_synchronous_call_is_never_retried(
    api: httpx.AsyncClient, fleet: Fleet, flaky_wasm: Path, redis: Any
) -> None:
    await deploy(api, fleet, "flaky-sync", flaky_wasm, retry=RETRY)
    key = uuid.uuid4().hex
    resp = await api.post("/v1/functions/flaky-sync/invoke",
                          content=json.dumps({"key": key, "succeed_at": 2}))
    assert resp.status_code == 502 and resp.json()["outcome"] == "trap"
    marker = await submit(api, "flaky-sync", {"key": key + "-m", "succeed_at": 0})
    await finished(api, marker)
    assert int(await redis.get(cache_key(fleet.prefix, key))) == 1


async def test_max_concurrency_is_never_exceeded(
    api: httpx.AsyncClient, fleet: Fleet, probe_wasm: Path
) -> None:
    await deploy(api, fleet, "narrow", probe_wasm, max_concurrency=2, timeout_ms=5000)
    running = uuid.uuid4().hex
    body = {"op": "batch", "ops": [
        {"op": "cache.increment", "key": running},
        {"op": "sleep", "ms": 200},
        {"op": "cache.increment", "key": running, "delta": -1},
    ]}
    jobs = [await submit(api, "narrow", body) for _ in range(20)]
    docs = await asyncio.gather(*(finished(api, j, timeout=120) for j in jobs))
    at_start = [answer(d)["result"][0]["result"] for d in docs]
    assert max(at_start) == 2, at_start  # 8 threads, yet never more than 2 at once


async def test_rate_limited_jobs_all_run_at_the_rate(
    api: httpx.AsyncClient, fleet: Fleet, probe_wasm: Path
) -> None:
    rate, burst = 4.0, 2
    await deploy(api, fleet, "paced", probe_wasm,
                 rate_limit={"per_second": rate, "burst": burst})
    jobs = [await submit(api, "paced", {"op": "clocks"}) for _ in range(8)]
    docs = await asyncio.gather(*(finished(api, j) for j in jobs))
    starts = sorted(answer(d)["result"]["time"] for d in docs)
    # A token bucket admits at most burst + rate * span in any span (10 ms for the clocks:
    # the guest reads its clock a little after the worker took the token).
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            assert j - i + 1 <= burst + rate * (starts[j] - starts[i] + 0.01), (i, j, starts)
    assert starts[-1] - starts[0] >= (len(starts) - burst) / rate - 0.05


async def test_a_spawned_job_follows_its_own_functions_retry_policy(
    api: httpx.AsyncClient, fleet: Fleet, flaky_wasm: Path, probe_wasm: Path
) -> None:
    await deploy(api, fleet, "flaky-child", flaky_wasm, retry=RETRY)
    await deploy(api, fleet, "spawner", probe_wasm, spawn_functions=["flaky-child"])
    work = json.dumps({"key": uuid.uuid4().hex, "succeed_at": 2})
    resp = await api.post("/v1/functions/spawner/invoke", content=json.dumps(
        {"op": "spawn.job", "function": "flaky-child", "body": work}))
    spawned = resp.json()
    assert spawned["ok"], spawned
    child = await finished(api, spawned["result"])
    assert (child["kind"], child["parent_id"], child["attempts"]) == (
        "spawned", resp.headers["flotilla-invocation-id"], 2)
    assert answer(child) == {"runs": 2, "attempt": 2}
