"""The `Spawner` (the worker's `spawn.job`), called from an invocation thread while its event
loop runs in another, as in a worker: allowed, denied, the 16-spawn cap, unknown targets,
bodies over the target's limit, and a publisher that fails or hangs. Real Redis holds the
job records; the publisher is a fake (tests/api/test_jobs_e2e.py publishes through RabbitMQ
to a real worker)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from flotilla.config import FunctionConfig
from flotilla.envelope import Envelope
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.jobs import JobStore, new_id
from flotilla.registry import FunctionVersion
from flotilla.spawner import Spawner
from flotilla.transport import QueueFull

pytestmark = pytest.mark.integration


class Publisher:
    """Records published envelopes; `fail` raises, `hang` never confirms."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.fail: Exception | None = None
        self.hang = False

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(envelope)


class Versions:
    """Two deployed functions: `target` (max body 8 bytes) and `other`."""

    async def get_version(self, name: str, selector: str | int = "latest") -> FunctionVersion:
        from flotilla.registry import FunctionNotDeployed

        if name not in ("target", "other"):
            raise FunctionNotDeployed(f"no function {name!r}")
        config = FunctionConfig(name=name, max_body_bytes=8 if name == "target" else 1024)
        return FunctionVersion(name, f"{name}-digest", 1, config, "w", 1, "a", "e", 0.0)


class Loop:
    """An event loop running in its own thread (the worker's), with a JobStore on it."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.redis = self.run(self._connect(redis_url))
        self.jobs = JobStore(self.redis, prefix=prefix, ttl_s=60)
        self.prefix = prefix

    async def _connect(self, url: str) -> Any:
        return aioredis.from_url(url)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        async def cleanup() -> None:
            keys = [k async for k in self.redis.scan_iter(f"{self.prefix}:*")]
            if keys:
                await self.redis.delete(*keys)
            await self.redis.aclose()

        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def worker_loop(redis_url: str, unique: str) -> Iterator[Loop]:
    loop = Loop(redis_url, unique)
    yield loop
    loop.close()


def context(spawn_functions: tuple[str, ...] = ("target",), seconds: float = 5.0) -> InvocationContext:
    config = FunctionConfig(name="parent", spawn_functions=spawn_functions)
    return InvocationContext(config, new_id(), time.monotonic() + seconds)


def case_of(call: Any) -> tuple[str, str | None]:
    with pytest.raises(HostError) as caught:
        call()
    return caught.value.case, caught.value.detail


def test_allowed_spawn_records_and_queues_the_job(worker_loop: Loop) -> None:
    publisher = Publisher()
    spawner = Spawner(Versions(), worker_loop.jobs, worker_loop.loop, publisher=publisher)
    ctx = context()
    job_id = spawner.job(ctx, "target", [("x-a", "1")], b"body")
    (envelope,) = publisher.sent
    assert (envelope.invocation_id, envelope.function, envelope.digest) == (
        job_id, "target", "target-digest")
    assert (envelope.kind, envelope.parent_id, envelope.headers, envelope.body) == (
        "spawned", ctx.invocation_id, (("x-a", "1"),), b"body")
    status = worker_loop.run(worker_loop.jobs.get(job_id))
    assert (status.status, status.kind, status.parent_id) == (
        "queued", "spawned", ctx.invocation_id)
    assert ctx.spawns == 1


def test_a_target_not_in_spawn_functions_is_denied(worker_loop: Loop) -> None:
    publisher = Publisher()
    spawner = Spawner(Versions(), worker_loop.jobs, worker_loop.loop, publisher=publisher)
    case, detail = case_of(lambda: spawner.job(context(), "other", [], b""))
    assert case == "denied" and "spawn_functions" in (detail or "")
    assert case_of(lambda: spawner.job(context(), "Not A Name", [], b""))[0] == \
        "invalid-argument"
    assert publisher.sent == []


def test_at_most_16_spawns_per_invocation(worker_loop: Loop) -> None:
    publisher = Publisher()
    spawner = Spawner(Versions(), worker_loop.jobs, worker_loop.loop, publisher=publisher)
    ctx = context()
    publisher.fail = QueueFull("full")
    assert case_of(lambda: spawner.job(ctx, "target", [], b""))[0] == "unavailable"
    publisher.fail = None
    ids = {spawner.job(ctx, "target", [], b"") for _ in range(16)}  # failures do not count
    assert len(ids) == 16
    case, detail = case_of(lambda: spawner.job(ctx, "target", [], b""))
    assert case == "invalid-argument" and "16" in (detail or "")
    assert len(publisher.sent) == 16
    assert spawner.job(context(), "target", [], b"") not in ids  # the next invocation may


def test_unknown_target_and_body_over_its_limit(worker_loop: Loop) -> None:
    publisher = Publisher()
    spawner = Spawner(Versions(), worker_loop.jobs, worker_loop.loop, publisher=publisher)
    ctx = context(("target", "missing"))
    case, detail = case_of(lambda: spawner.job(ctx, "missing", [], b""))
    assert case == "invalid-argument" and "missing" in (detail or "")
    case, detail = case_of(lambda: spawner.job(ctx, "target", [], b"123456789"))
    assert case == "invalid-argument" and "max_body_bytes" in (detail or "")
    case, _ = case_of(lambda: spawner.job(ctx, "target", [("h", "v")] * 65, b""))
    assert case == "invalid-argument"
    assert publisher.sent == [] and ctx.spawns == 0


def test_queue_trouble_is_unavailable_and_leaves_no_record(worker_loop: Loop) -> None:
    publisher = Publisher()
    spawner = Spawner(Versions(), worker_loop.jobs, worker_loop.loop, timeout_s=0.3)
    assert case_of(lambda: spawner.job(context(), "target", [], b""))[0] == "unavailable"
    spawner.publisher = publisher
    publisher.hang = True
    began = time.monotonic()
    case, detail = case_of(lambda: spawner.job(context(), "target", [], b""))
    assert case == "unavailable" and "not queued within" in (detail or "")
    assert time.monotonic() - began < 2
    # The cancelled submit forgets its record (on the loop, just after): no job reads as
    # queued that never was.
    async def records_left() -> list[bytes]:
        for _ in range(100):
            keys: list[bytes] = await worker_loop.redis.keys(f"{worker_loop.prefix}:job:*")
            if not keys:
                break
            await asyncio.sleep(0.01)
        return keys

    assert worker_loop.run(records_left()) == []
