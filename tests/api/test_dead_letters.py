"""Dead letters: how each one is described (table tests), the store's paging and bounds on
real Redis, and the routes (list, show, replay, delete) with their scope."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from flotilla.deadletters import DeadLetterStore, describe
from flotilla.envelope import Envelope, Reply
from flotilla.outcomes import Outcome
from tests.api.conftest import Api
from tests.api.test_http_api import assert_problem, deploy
from tests.fleet.fakes import envelope

pytestmark = pytest.mark.integration
JOB_RESULTS = "p.job-results"


def death(reason: str, queue: str = "p.sync") -> dict[str, Any]:
    """Headers as RabbitMQ sets them on a dead-lettered message (strings may be bytes)."""
    return {"x-death": [{"reason": reason, "queue": queue.encode(), "count": 1}],
            "x-first-death-reason": reason}


JOB = envelope("work", b"payload", job=True)
SYNC = envelope("work", b"call", reply_to_queue="p.reply.x")


@pytest.mark.parametrize(
    "body, headers, reason, replayable, error",
    [
        (JOB.encode(), {**death("rejected"), "x-flotilla-reason": "exhausted",
                        "x-flotilla-error": "trap: boom", "x-flotilla-attempts": 3},
         "exhausted", True, "trap: boom"),
        (SYNC.encode(), death("expired"), "expired", True, "expired in the queue"),
        (JOB.encode(), death("rejected"), "poison", True, "each time its worker died"),
        (JOB.encode(), death("delivery_limit"), "delivery_limit", True, "delivery limit"),
        (b"\x00junk", death("rejected"), "malformed", False, "not valid msgpack"),
        (Reply("j1", "j1", Outcome.OK).encode(), death("delivery_limit", JOB_RESULTS),
         "job_result", False, "no dispatcher could record"),
        (JOB.encode(), {**death("rejected"), "x-flotilla-reason": "weird"}, "other", True, ""),
        (JOB.encode(), {}, "other", True, ""),
    ],
)
def test_describe(
    body: bytes, headers: dict[str, Any], reason: str, replayable: bool, error: str
) -> None:
    letter = describe("a" * 32, body, headers, job_results=JOB_RESULTS, now=100.0)
    assert (letter.reason, letter.replayable) == (reason, replayable)
    assert error in letter.last_error
    assert letter.size == len(body) and letter.dead_at == 100.0
    if replayable:
        decoded = Envelope.decode(body)
        assert (letter.function, letter.invocation_id) == ("work", decoded.invocation_id)
    else:
        assert letter.function is None
    if reason == "exhausted":
        assert letter.attempts == 3 and letter.kind == "job"


@pytest.fixture
async def store(api: Api) -> AsyncIterator[DeadLetterStore]:
    yield api.client._transport.app.state.api.dead_letters  # type: ignore[attr-defined]


async def add(store: DeadLetterStore, function: str, n: int, at: float) -> list[str]:
    ids = []
    for i in range(n):
        letter = await store.add(envelope(function, f"{function}{i}".encode(), job=True).encode(),
                                 death("expired"), now=at + i)
        assert letter is not None
        ids.append(letter.id)
    return ids


async def test_pages_newest_first_per_function(store: DeadLetterStore) -> None:
    now = time.time()
    a = await add(store, "alpha", 3, now - 100)
    b = await add(store, "beta", 2, now - 50)
    page, cursor = await store.page(limit=2)
    assert [d.id for d in page] == [b[1], b[0]]
    page, cursor = await store.page(limit=2, cursor=cursor)
    assert [d.id for d in page] == [a[2], a[1]]
    page, cursor = await store.page(limit=2, cursor=cursor)
    assert [d.id for d in page] == [a[0]] and cursor is None
    only, _ = await store.page(function="alpha", limit=10)
    assert [d.id for d in only] == a[::-1]


async def test_a_redelivered_letter_is_stored_once(store: DeadLetterStore) -> None:
    body = envelope("alpha", job=True).encode()
    assert await store.add(body, death("expired")) is not None
    assert await store.add(body, death("expired")) is None
    assert len((await store.page())[0]) == 1


async def test_bounded_by_count_age_and_bytes(api: Api) -> None:
    store = DeadLetterStore(api.jobs.redis, prefix=api.bucket, max_count=3, max_age_s=3600)
    now = time.time()
    old = await add(store, "alpha", 1, now - 7200)  # past the age bound when the next comes
    recent = await add(store, "alpha", 4, now - 10)
    page, _ = await store.page(limit=10)
    assert [d.id for d in page] == recent[:0:-1]  # the newest 3
    assert await store.get(old[0]) is None and await store.get(recent[0]) is None
    assert await api.jobs.redis.zcard(f"{api.bucket}:dl:fn:alpha") == 3
    sizes = sum(d.size for d in page)
    assert int(await api.jobs.redis.get(f"{api.bucket}:dl:bytes")) == sizes
    # A byte budget too: it keeps the newest letters that fit.
    small = DeadLetterStore(api.jobs.redis, prefix=api.bucket, max_bytes=sizes - 1)
    assert await small.prune() == 1
    page, _ = await store.page(limit=10)
    assert [d.id for d in page] == recent[:1:-1]
    assert int(await api.jobs.redis.get(f"{api.bucket}:dl:bytes")) == sum(d.size for d in page)
    for letter in page:
        assert await store.delete(letter.id)
    assert int(await api.jobs.redis.get(f"{api.bucket}:dl:bytes")) == 0


async def test_routes_list_show_replay_delete(api: Api, store: DeadLetterStore) -> None:
    await deploy(api, "work")
    job = envelope("work", b"again please", job=True)
    job = Envelope(**{**job.__dict__, "headers": (("x-a", "1"),)})
    letter = await store.add(job.encode(), {**death("rejected"), "x-flotilla-reason": "exhausted",
                                            "x-flotilla-attempts": 2})
    assert letter is not None
    listed = (await api.client.get("/v1/dead-letters", params={"function": "work"})).json()
    assert [d["id"] for d in listed["dead_letters"]] == [letter.id]
    assert listed["next_cursor"] is None
    shown = (await api.client.get(f"/v1/dead-letters/{letter.id}")).json()
    assert (shown["reason"], shown["attempts"]) == ("exhausted", 2)
    assert base64.b64decode(shown["envelope"]["body_base64"]) == b"again please"
    assert shown["envelope"]["headers"] == [["x-a", "1"]]

    replay = await api.client.post(f"/v1/dead-letters/{letter.id}/replay")
    assert replay.status_code == 202
    job_id = replay.json()["job_id"]
    queued = api.transport.submitted[-1]
    assert (queued.invocation_id, queued.function, queued.body, queued.headers) == (
        job_id, "work", b"again please", (("x-a", "1"),))
    assert job_id != job.invocation_id
    assert (await api.client.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"
    shown = (await api.client.get(f"/v1/dead-letters/{letter.id}")).json()
    assert shown["replayed_job_ids"] == [job_id]

    assert (await api.client.delete(f"/v1/dead-letters/{letter.id}")).status_code == 204
    assert_problem(await api.client.get(f"/v1/dead-letters/{letter.id}"), 404,
                   "dead-letter-not-found")
    assert_problem(await api.client.delete(f"/v1/dead-letters/{letter.id}"), 404,
                   "dead-letter-not-found")
    assert (await api.client.get("/v1/dead-letters")).json()["dead_letters"] == []


async def test_malformed_letters_show_their_bytes_and_cannot_be_replayed(
    api: Api, store: DeadLetterStore
) -> None:
    letter = await store.add(b"\x93not an envelope", death("rejected"))
    assert letter is not None and letter.reason == "malformed"
    shown = (await api.client.get(f"/v1/dead-letters/{letter.id}")).json()
    assert base64.b64decode(shown["raw_base64"]) == b"\x93not an envelope"
    problem = assert_problem(await api.client.post(f"/v1/dead-letters/{letter.id}/replay"),
                             409, "dead-letter-not-replayable")
    assert problem["reason"] == "malformed"
    assert api.transport.submitted == []


async def test_replay_of_a_deleted_function_is_404(api: Api, store: DeadLetterStore) -> None:
    letter = await store.add(envelope("gone", job=True).encode(), death("expired"))
    assert letter is not None
    assert_problem(await api.client.post(f"/v1/dead-letters/{letter.id}/replay"), 404,
                   "function-not-found")
    assert (await store.get(letter.id)).replayed_job_ids == ()  # type: ignore[union-attr]


async def test_dead_letter_scope(redis_url: str, aws_endpoint_url: str, unique: str) -> None:
    import boto3
    import redis.asyncio as aioredis

    from tests.api.conftest import FakeTransport
    from tests.hardening.conftest import auth_app, bearer

    redis = aioredis.from_url(redis_url)
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    app, auth = auth_app(redis, s3, unique, FakeTransport())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    try:
        keys = {}
        for scopes in (("invoke",), ("dead-letters",), ("admin",)):
            _, keys[scopes[0]] = await auth.keys.create("k", scopes)
        statuses = {scope: (await client.get("/v1/dead-letters", headers=bearer(key))).status_code
                    for scope, key in keys.items()}
        assert statuses == {"invoke": 403, "dead-letters": 200, "admin": 200}
        created = await client.post("/v1/keys", headers=bearer(keys["admin"]),
                                    json={"scopes": ["dead-letters"]})
        assert created.status_code == 201 and created.json()["scopes"] == ["dead-letters"]
    finally:
        await client.aclose()
        found = [k async for k in redis.scan_iter(f"{unique}:*")]
        if found:
            await redis.delete(*found)
        await redis.aclose()


async def test_dev_mode_stores_what_its_worker_rejects(store: DeadLetterStore) -> None:
    from flotilla.deadletters import DeadLetterConsumer
    from flotilla.dev.memory import MemoryTransport
    from flotilla.topology import Topology
    from tests.fleet.fakes import FakeRunner
    from worker.handler import EnvelopeHandler

    topology = Topology(store.prefix)
    transport = MemoryTransport(EnvelopeHandler(FakeRunner(), job_results=topology.job_results),
                                topology=topology, concurrency=1)
    consumer = DeadLetterConsumer(store, topology)
    taken = asyncio.Event()

    async def take(body: bytes, headers: dict[str, Any]) -> None:
        await consumer.take(body, headers)
        taken.set()

    transport.on_dead_letter = take
    await transport.start()
    try:
        transport._queue.put_nowait((0, 0, topology.sync, b"\x00junk"))  # what a broken publisher could queue
        await asyncio.wait_for(taken.wait(), 30)
    finally:
        await transport.close()
    page, _ = await store.page()
    assert [(d.reason, d.queue) for d in page] == [("malformed", topology.sync)]
