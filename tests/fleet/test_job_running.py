"""Jobs read `running` once a worker started them; redeliveries keep the envelope's attempt.

The worker publishes a `Started` notice to the job-results queue before running a job; the
dispatcher's job consumer turns it into `JobStore.mark_running` unless a result exists.
`attempt` counts retries, not redeliveries (a worker crash is not an attempt).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis

from flotilla.dev.memory import MemoryTransport
from flotilla.envelope import Envelope, Reply, Started
from flotilla.jobs import JobRecord, JobStore, ResultRecorder
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.fleet.fakes import FakeRunner, envelope
from tests.services import TEST_FUNCTIONS
from worker.consumer import Consumer
from worker.handler import EnvelopeHandler

pytestmark = [pytest.mark.timeout(60)]


class AttemptRunner(FakeRunner):
    """FakeRunner that also records each run's attempt number."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[int] = []

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        self.attempts.append(envelope.attempt)
        return super().run(envelope, timeout_ms)


async def _no_post(url: str, document: dict[str, Any]) -> int:
    raise AssertionError("no callback expected")


@pytest.fixture
async def jobs(redis_url: str, unique: str) -> AsyncIterator[JobStore]:
    redis = aioredis.from_url(redis_url)
    yield JobStore(redis, prefix=unique, ttl_s=60)
    keys = [k async for k in redis.scan_iter(f"{unique}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def _consumer(amqp_url: str, topology: Topology, runner: FakeRunner, name: str) -> tuple[
    Consumer, aio_pika.abc.AbstractRobustConnection, ThreadPoolExecutor
]:
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": name}
    )
    executor = ThreadPoolExecutor(2)
    handler = EnvelopeHandler(runner, job_results=topology.job_results)
    consumer = Consumer(connection, topology, handler, executor, concurrency=2, prefetch=2, functions=TEST_FUNCTIONS)
    await consumer.start()
    return consumer, connection, executor


async def _stop(parts: tuple[Consumer, aio_pika.abc.AbstractRobustConnection, ThreadPoolExecutor]) -> None:
    consumer, connection, executor = parts
    await consumer.stop_consuming()
    await consumer.close()
    await connection.close()
    executor.shutdown(wait=False)


# -- the handler (no broker) ------------------------------------------------------------


def test_redeliveries_keep_the_attempt_and_jobs_announce_their_start() -> None:
    # A crash is not an attempt (issue 12): only retries raise it (worker/flow.py).
    runner = AttemptRunner()
    handler = EnvelopeHandler(runner, job_results="results")
    notices: list[Started] = []
    job = envelope("echo", job=True)
    handler.handle(job.encode(), 2, notices.append)
    assert runner.attempts == [1]
    assert notices == [Started(job.invocation_id, 1)]


def test_sync_and_expired_envelopes_announce_nothing() -> None:
    handler = EnvelopeHandler(AttemptRunner(), job_results="results")
    notices: list[Started] = []
    handler.handle(envelope("echo", reply_to_queue="q").encode(), 0, notices.append)
    handler.handle(envelope("echo", job=True, deadline_in_ms=-1).encode(), 0, notices.append)
    handler.handle(b"junk", 0, notices.append)
    assert notices == []


def test_started_notice_round_trips() -> None:
    assert Started.decode(Started("abc", 4).encode()) == Started("abc", 4)


# -- through real RabbitMQ and Redis ----------------------------------------------------


@pytest.mark.integration
async def test_job_reads_running_while_it_runs_then_succeeded(
    amqp_url: str, topology: Topology, jobs: JobStore, unique: str
) -> None:
    runner = AttemptRunner()
    worker = await _consumer(amqp_url, topology, runner, f"worker-{unique}")
    recorder = ResultRecorder(jobs, _no_post)
    marked = asyncio.Event()

    async def started(notice: Started) -> None:
        await recorder.started(notice)
        marked.set()

    try:
        async with AmqpTransport(amqp_url, topology, connection_name=f"d-{unique}") as t:
            await t.consume_job_results(recorder.handle, started)
            job = envelope("block", job=True)
            await jobs.create(JobRecord(job.invocation_id, "block", job.digest, 0.0))
            assert (await jobs.get(job.invocation_id)).status == "queued"  # type: ignore[union-attr]
            await t.submit(job)
            await asyncio.wait_for(marked.wait(), 10)
            status = await jobs.get(job.invocation_id)
            assert status is not None and status.status == "running"
            runner.release.set()
            done = await jobs.wait(job.invocation_id, 10)
            assert done is not None and done.status == "succeeded"
            # A late or duplicate notice does not turn a finished job back to running.
            assert not await jobs.mark_running(job.invocation_id)
            assert (await jobs.get(job.invocation_id)).status == "succeeded"  # type: ignore[union-attr]
    finally:
        runner.release.set()
        await _stop(worker)


@pytest.mark.integration
async def test_redelivered_job_runs_again_as_the_same_attempt(
    amqp_url: str, topology: Topology, unique: str
) -> None:
    notices: asyncio.Queue[Started] = asyncio.Queue()
    results: asyncio.Queue[Reply] = asyncio.Queue()

    async def started(notice: Started) -> None:
        await notices.put(notice)

    first_runner = AttemptRunner()
    first = await _consumer(amqp_url, topology, first_runner, f"w1-{unique}")
    async with AmqpTransport(amqp_url, topology, connection_name=f"d-{unique}") as t:
        await t.consume_job_results(results.put, started)
        job = envelope("block", job=True)
        await t.submit(job)
        assert (await asyncio.wait_for(notices.get(), 10)) == Started(job.invocation_id, 1)
        # The first worker dies mid-invocation: its channel closes, the broker requeues.
        await _stop(first)
        second_runner = AttemptRunner()
        second_runner.release.set()
        second = await _consumer(amqp_url, topology, second_runner, f"w2-{unique}")
        try:
            # Run again, and still attempt 1: a worker dying is not an attempt.
            assert (await asyncio.wait_for(notices.get(), 10)) == Started(job.invocation_id, 1)
            reply = await asyncio.wait_for(results.get(), 10)
            assert (reply.invocation_id, reply.outcome) == (job.invocation_id, "ok")
            assert second_runner.attempts == [1]
        finally:
            first_runner.release.set()
            await _stop(second)


async def test_memory_transport_reports_started_jobs() -> None:
    runner = AttemptRunner()
    handler = EnvelopeHandler(runner, job_results=Topology().job_results)
    notices: asyncio.Queue[Started] = asyncio.Queue()
    results: asyncio.Queue[Reply] = asyncio.Queue()

    async def started(notice: Started) -> None:
        await notices.put(notice)

    async with MemoryTransport(handler, concurrency=1) as t:
        await t.consume_job_results(results.put, started)
        job = envelope("block", job=True)
        await t.submit(job)
        notice = await asyncio.wait_for(notices.get(), 5)
        assert notice == Started(job.invocation_id, 1)
        assert results.empty()  # still running: the notice came first
        runner.release.set()
        assert (await asyncio.wait_for(results.get(), 5)).ok


