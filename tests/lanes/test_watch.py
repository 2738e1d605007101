"""worker/lanes.py `FunctionWatch` on the real Redis: the functions deployed before it
started, then a deploy's notice (pub/sub, not the listing: the poll here is an hour), then
a function added while the subscription was down (the listing's backstop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from flotilla.config import FunctionConfig
from flotilla.registry import Registry
from worker.lanes import FunctionWatch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def registry(redis_url: str, unique: str) -> AsyncIterator[Registry]:
    client = aioredis.from_url(redis_url)
    yield Registry(client, prefix=unique)
    keys = [k async for k in client.scan_iter(f"{unique}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _deploy(registry: Registry, name: str) -> None:
    await registry.put_version(FunctionConfig(name=name), wasm_sha256="0" * 64, wasm_size=1,
                               artifact_sha256="1" * 64, engine_fingerprint="e")


class Added:
    """The names a watch reported, and an event per name."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._events: dict[str, asyncio.Event] = {}

    async def __call__(self, name: str) -> None:
        self.names.append(name)
        self._events.setdefault(name, asyncio.Event()).set()

    async def seen(self, name: str) -> None:
        await asyncio.wait_for(self._events.setdefault(name, asyncio.Event()).wait(), 10)


async def test_functions_at_start_then_each_deploy_notice(
    registry: Registry, redis_url: str, unique: str
) -> None:
    await _deploy(registry, "before")
    added = Added()
    watch = FunctionWatch(aioredis.from_url(redis_url), unique, added, poll_s=3600)
    await watch.start()
    try:
        assert added.names == ["before"]  # listed before start() returned
        # The subscription lists once more when it is in place: wait for it, so the deploy
        # below can only reach the watch through its notice.
        while watch.listed < 2:
            await asyncio.sleep(0.01)
        await _deploy(registry, "after")
        await added.seen("after")
        assert watch.listed == 2  # no listing found it: the notice did
    finally:
        await watch.close()


async def test_a_notice_missed_is_found_by_the_next_listing(
    registry: Registry, redis_url: str, unique: str
) -> None:
    added = Added()
    watch = FunctionWatch(aioredis.from_url(redis_url), unique, added, poll_s=0.2)
    await watch.start()
    try:
        # A name in the set without a notice: what a worker misses while unsubscribed.
        await registry.redis.sadd(f"{unique}:functions", "missed")
        await added.seen("missed")
    finally:
        await watch.close()


async def test_a_failing_add_is_tried_again(registry: Registry, redis_url: str,
                                            unique: str) -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def add(name: str) -> None:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("the broker refused the declare")
        done.set()

    await _deploy(registry, "flaky")
    watch = FunctionWatch(aioredis.from_url(redis_url), unique, add, poll_s=0.2)
    await watch.start()
    try:
        await asyncio.wait_for(done.wait(), 10)
        assert calls[:2] == ["flaky", "flaky"]
    finally:
        await watch.close()
