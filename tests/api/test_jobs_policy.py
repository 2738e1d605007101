"""Pure job policies: callback backoff, allowed callback hosts, id timestamps."""

from __future__ import annotations

import os

import pytest

from flotilla.jobs import (
    callback_allowed,
    deliver_callback,
    id_time_ms,
    new_id,
    next_delay,
    parse_hosts,
)


@pytest.mark.parametrize(
    "attempt, delay",
    [(0, None), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, None), (99, None)],
)
def test_next_delay(attempt: int, delay: float | None) -> None:
    assert next_delay(attempt) == delay


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://hooks.example.com/x", True),
        ("http://HOOKS.example.com:80/x", True),
        ("http://local:8080/cb", True),
        ("http://local:9090/cb", False),
        ("http://local/cb", False),
        ("https://evil.com/?hooks.example.com", False),
        ("https://hooks.example.com.evil.com/", False),
        ("ftp://hooks.example.com/", False),
        ("https://user@hooks.example.com/", True),
        ("http://[::1", False),
        ("", False),
    ],
)
def test_callback_allowed(url: str, allowed: bool) -> None:
    hosts = parse_hosts(" hooks.example.com, local:8080 ,")
    assert hosts == ("hooks.example.com", "local:8080")
    assert callback_allowed(url, hosts) is allowed


def test_ids_embed_their_time() -> None:
    assert id_time_ms(new_id(now_ms=123_456)) == 123_456
    assert id_time_ms("xyz") is None
    assert id_time_ms("g" * 32) is None
    assert new_id() != new_id()


def test_ids_stay_unique_across_random_batches_and_forks() -> None:
    # Given ids drawn across several os.urandom batches (200 ids each)
    ids = [new_id(now_ms=1) for _ in range(1_000)]
    # Then none repeats and each has 20 random hex digits
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # and a forked child does not reuse the digits its parent had left in its batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, then leave without running pytest's exit
        os.write(write, new_id(now_ms=1).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child != new_id(now_ms=1)


async def test_deliver_callback_retries_then_gives_up() -> None:
    statuses = [500, 503]
    sleeps: list[float] = []

    async def post(url: str, doc: dict) -> int:
        if statuses:
            return statuses.pop(0)
        raise ConnectionError("refused")

    async def sleep(s: float) -> None:
        sleeps.append(s)

    assert await deliver_callback("http://x", {}, post, sleep=sleep) is False
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


async def test_deliver_callback_stops_on_success() -> None:
    statuses = [502, 204]
    sleeps: list[float] = []

    async def post(url: str, doc: dict) -> int:
        return statuses.pop(0)

    async def sleep(s: float) -> None:
        sleeps.append(s)

    assert await deliver_callback("http://x", {}, post, sleep=sleep) is True
    assert sleeps == [0.5]


async def test_wait_wakes_on_result_with_fakeredis() -> None:
    """Dev mode runs the job store on fakeredis: its pub/sub must wake waiters too."""
    import asyncio

    import fakeredis

    from flotilla.envelope import Reply
    from flotilla.jobs import JobRecord, JobStore
    from flotilla.outcomes import Outcome

    store = JobStore(fakeredis.FakeAsyncRedis(), prefix="t", ttl_s=60)
    job_id = new_id()
    await store.create(JobRecord(job_id, "echo", "d" * 64, 0.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(store.wait(job_id, 10))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    assert await store.complete(Reply(job_id, job_id, Outcome.OK, status=200, body=b"x")) is not None
    status = await asyncio.wait_for(waiter, 5)
    assert status is not None and status.status == "succeeded"
    assert loop.time() - started < 2
    # The first result wins.
    assert await store.complete(Reply(job_id, job_id, Outcome.OK, status=500)) is None
