"""Jobs scheduled ahead, idempotent submissions, cancellation and retry progress, through the
HTTP API (real Redis, the scripted fake transport) and the job store's Lua transitions.

The race "a worker starts the job" against "a caller cancels it" runs many times with real
threads against real Redis: exactly one side wins each time.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from flotilla.envelope import Reply, Retrying
from flotilla.jobs import MAX_DELAY_MS, JobGate, job_delay_ms, new_id
from flotilla.jobstate import START_CANCELLED, STARTED
from flotilla.outcomes import Outcome
from flotilla.transport import QueueFull
from tests.api.conftest import Api
from tests.api.test_http_api import assert_problem, deploy

pytestmark = pytest.mark.integration


# -- delays ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delay_ms, run_at, expected",
    [
        (None, None, 0),
        (1500, None, 1500),
        (None, "2030-01-01T00:00:10Z", 10_000),
        (None, "2030-01-01T01:00:10+01:00", 10_000),
        (None, "2029-12-31T23:00:00Z", 0),  # in the past: at once
        (MAX_DELAY_MS, None, MAX_DELAY_MS),
    ],
)
def test_job_delay(delay_ms: int | None, run_at: str | None, expected: int) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert job_delay_ms(delay_ms, run_at, now=now) == expected


@pytest.mark.parametrize(
    "delay_ms, run_at, says",
    [
        (1, "2030-01-01T00:00:10Z", "not both"),
        (MAX_DELAY_MS + 1, None, "at most 7 days"),
        (None, "2030-01-08T00:00:01Z", "at most 7 days"),
        (None, "2030-01-01T00:00:10", "time zone"),
        (None, "tomorrow", "RFC 3339"),
        (-1, None, ">= 0"),
    ],
)
def test_job_delay_refuses(delay_ms: int | None, run_at: str | None, says: str) -> None:
    from flotilla.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match=says):
        job_delay_ms(delay_ms, run_at, now=datetime(2030, 1, 1, tzinfo=UTC).timestamp())


async def test_delayed_job_is_scheduled_until_due(api: Api) -> None:
    await deploy(api, "echo")
    before = time.time()
    resp = await api.client.post("/v1/functions/echo/jobs", params={"delay_ms": 60_000},
                                 content=b"later")
    assert resp.status_code == 202
    job_id = resp.json()["job_id"]
    envelope = api.transport.submitted[-1]
    assert api.transport.delays[job_id] == 60_000
    assert envelope.kind == "scheduled"
    # It must not expire while it waits: its deadline covers the delay plus the job TTL (60 s).
    assert envelope.deadline_ms >= (before + 60 + 60) * 1000
    doc = (await api.client.get(f"/v1/jobs/{job_id}")).json()
    assert doc["status"] == "scheduled" and doc["kind"] == "scheduled"
    assert before + 60 <= doc["run_at"] <= time.time() + 60
    assert await api.jobs.redis.ttl(f"{api.bucket}:job:{job_id}") > 60


async def test_run_at_and_bad_delays_over_http(api: Api) -> None:
    await deploy(api, "echo")
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    resp = await api.client.post("/v1/functions/echo/jobs", params={"run_at": soon})
    assert resp.status_code == 202
    assert 290_000 <= api.transport.delays[resp.json()["job_id"]] <= 300_000
    for params in ({"run_at": soon, "delay_ms": 5}, {"run_at": "2030-01-01 10:00"},
                   {"delay_ms": MAX_DELAY_MS + 1}, {"delay_ms": -5}):
        assert_problem(await api.client.post("/v1/functions/echo/jobs", params=params), 422,
                       "invalid-request")
    assert len(api.transport.submitted) == 1


async def test_an_undelayed_job_is_queued_as_before(api: Api) -> None:
    await deploy(api, "echo")
    job_id = (await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
    assert job_id not in api.transport.delays
    assert api.transport.submitted[-1].kind == ""  # plain jobs keep their bytes
    doc = (await api.client.get(f"/v1/jobs/{job_id}")).json()
    assert (doc["status"], doc["kind"], doc["run_at"], doc["attempts"]) == (
        "queued", "job", None, 0)


# -- idempotency keys --------------------------------------------------------------------


async def test_repeated_idempotency_key_returns_the_first_job(api: Api) -> None:
    await deploy(api, "echo")
    key = {"Idempotency-Key": "order-17"}
    first = await api.client.post("/v1/functions/echo/jobs", headers=key, content=b"pay")
    again = await api.client.post("/v1/functions/echo/jobs", headers=key, content=b"pay")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(api.transport.submitted) == 1  # nothing new was queued


async def test_same_key_with_another_body_is_a_conflict(api: Api) -> None:
    await deploy(api, "echo")
    key = {"Idempotency-Key": "order-18"}
    first = await api.client.post("/v1/functions/echo/jobs", headers=key, content=b"pay 10")
    other = await api.client.post("/v1/functions/echo/jobs", headers=key, content=b"pay 99")
    problem = assert_problem(other, 409, "idempotency-conflict")
    assert problem["job_id"] == first.json()["job_id"]
    assert len(api.transport.submitted) == 1


async def test_keys_are_per_function(api: Api) -> None:
    await deploy(api, "echo")
    await deploy(api, "other")
    key = {"Idempotency-Key": "shared"}
    a = await api.client.post("/v1/functions/echo/jobs", headers=key)
    b = await api.client.post("/v1/functions/other/jobs", headers=key)
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["job_id"] != b.json()["job_id"]


async def test_a_failed_submission_releases_its_key(api: Api) -> None:
    await deploy(api, "echo")
    key = {"Idempotency-Key": "retry-me"}
    api.transport.fail = QueueFull("full")
    assert_problem(await api.client.post("/v1/functions/echo/jobs", headers=key), 503,
                   "unavailable")
    api.transport.fail = None
    resp = await api.client.post("/v1/functions/echo/jobs", headers=key)
    assert resp.status_code == 202  # a real submission, not the failed one's ghost
    assert (await api.client.get(resp.json()["status_url"])).json()["status"] == "queued"


async def test_malformed_idempotency_keys_are_422(api: Api) -> None:
    await deploy(api, "echo")
    for bad in ("has space", "x" * 256):
        resp = await api.client.post("/v1/functions/echo/jobs", headers={"Idempotency-Key": bad})
        assert_problem(resp, 422, "invalid-request")


# -- cancel ------------------------------------------------------------------------------


async def test_cancel_a_queued_job(api: Api) -> None:
    await deploy(api, "echo")
    job_id = (await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
    resp = await api.client.delete(f"/v1/jobs/{job_id}")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert await api.jobs.redis.exists(f"{api.bucket}:job:{job_id}:cancelled")
    # A worker that ran it anyway (no admission check) does not change the outcome.
    envelope = api.transport.submitted[-1]
    await api.recorder.handle(Reply(envelope.invocation_id, envelope.correlation_id,
                                    Outcome.OK, 200, (), b"ran"))
    assert (await api.client.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"
    again = assert_problem(await api.client.delete(f"/v1/jobs/{job_id}"), 409,
                           "job-not-cancellable")
    assert again["job_status"] == "cancelled"


async def test_cancel_a_scheduled_job(api: Api) -> None:
    await deploy(api, "echo")
    job_id = (await api.client.post("/v1/functions/echo/jobs",
                                    params={"delay_ms": 3_600_000})).json()["job_id"]
    assert (await api.client.delete(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"
    # The cancel flag outlives the delay, so the delivery an hour from now is refused.
    assert await api.jobs.redis.ttl(f"{api.bucket}:job:{job_id}:cancelled") > 3600


async def test_running_and_finished_jobs_cannot_be_cancelled(api: Api) -> None:
    await deploy(api, "echo")
    running = (await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
    assert await api.jobs.mark_running(running)
    problem = assert_problem(await api.client.delete(f"/v1/jobs/{running}"), 409,
                             "job-not-cancellable")
    assert problem["job_status"] == "running"
    done = (await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
    await api.recorder.handle(Reply(done, done, Outcome.OK, 200))
    problem = assert_problem(await api.client.delete(f"/v1/jobs/{done}"), 409,
                             "job-not-cancellable")
    assert problem["job_status"] == "succeeded"
    assert_problem(await api.client.delete(f"/v1/jobs/{new_id()}"), 404, "job-not-found")


# -- retries -----------------------------------------------------------------------------


async def test_retry_progress_reads_in_the_status(api: Api) -> None:
    await deploy(api, "echo")
    job_id = (await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
    assert await api.jobs.mark_running(job_id, 1)
    due_ms = int((time.time() + 30) * 1000)
    await api.recorder.retrying(Retrying(job_id, 1, due_ms, "guest trapped", "trap"))
    doc = (await api.client.get(f"/v1/jobs/{job_id}")).json()
    assert (doc["status"], doc["attempts"]) == ("retrying", 1)
    assert doc["next_attempt_at"] == due_ms / 1000
    assert doc["last_error"] == {"outcome": "trap", "message": "guest trapped"}
    far = int((time.time() + 3600) * 1000)  # a long backoff keeps the record alive past it
    await api.recorder.retrying(Retrying(job_id, 1, far, "guest trapped", "trap"))
    assert await api.jobs.redis.ttl(f"{api.bucket}:job:{job_id}") > 3600
    assert await api.jobs.mark_running(job_id, 2)
    # A late notice about attempt 1 does not turn the running attempt 2 back.
    assert not await api.jobs.retrying(Retrying(job_id, 1, due_ms, "late", "trap"))
    doc = (await api.client.get(f"/v1/jobs/{job_id}")).json()
    assert (doc["status"], doc["attempts"], doc["next_attempt_at"]) == ("running", 2, None)
    await api.recorder.handle(Reply(job_id, job_id, Outcome.OK, 200))
    doc = (await api.client.get(f"/v1/jobs/{job_id}")).json()
    assert (doc["status"], doc["attempts"]) == ("succeeded", 2)


async def test_a_retrying_job_can_be_cancelled(api: Api, redis_url: str) -> None:
    await deploy(api, "echo")
    job_id = (await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
    assert await api.jobs.mark_running(job_id, 1)
    await api.jobs.retrying(Retrying(job_id, 1, int(time.time() * 1000) + 5000, "t", "timeout"))
    assert (await api.client.delete(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"
    with redis.Redis.from_url(redis_url) as sync:
        # The delayed attempt 2 arrives at a worker: its gate refuses it.
        assert JobGate(sync, prefix=api.bucket).start(job_id, 2) == START_CANCELLED


# -- the race ----------------------------------------------------------------------------


async def test_start_against_cancel_has_exactly_one_winner(api: Api, redis_url: str) -> None:
    """Real threads start jobs (the worker's sync gate) while the loop cancels them."""
    await deploy(api, "echo")
    jobs = [(await api.client.post("/v1/functions/echo/jobs")).json()["job_id"]
            for _ in range(60)]
    sync = redis.Redis.from_url(redis_url)
    gate = JobGate(sync, prefix=api.bucket, ttl_s=60)
    loop = asyncio.get_running_loop()
    results: list[tuple[str, str, bool]] = []
    try:
        for job_id in jobs:
            ready = threading.Barrier(2)

            def start(job_id: str = job_id, ready: threading.Barrier = ready) -> str:
                ready.wait()
                time.sleep(random.random() / 1000)  # spread the winners
                return gate.start(job_id)

            started = loop.run_in_executor(None, start)
            await loop.run_in_executor(None, ready.wait)
            cancelled, _ = await api.jobs.cancel(job_id)
            results.append((job_id, await started, cancelled))
    finally:
        sync.close()
    for job_id, start, cancelled in results:
        assert (start == STARTED) != cancelled, (job_id, start, cancelled)
        status = (await api.jobs.get(job_id))
        assert status is not None
        assert status.status == ("cancelled" if cancelled else "running")
