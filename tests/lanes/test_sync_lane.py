"""The sync lane on the real broker, and how it shares a worker with job lanes
(worker/consumer.py with a fake runner): a classic lane carries transient messages and is
answered like a quorum one; a sync call is answered while every slot runs a job; a job lane
deleted under a worker is declared and consumed again; a redelivery from a classic queue
counts as one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import aio_pika
import pytest

from flotilla.client import Client
from flotilla.config import FunctionConfig
from flotilla.envelope import Reply
from flotilla.registry import FunctionVersion
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.fleet.fakes import FakeRunner, envelope
from tests.services import lane_functions
from worker.consumer import Consumer, _redeliveries, job_threads
from worker.handler import EnvelopeHandler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def classic(amqp_url: str, redis_url: str, unique: str) -> AsyncIterator[Topology]:
    topo = Topology(unique, max_length=1_000, sync_lane="classic")
    yield topo
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await topo.delete(await connection.channel(), await lane_functions(redis_url, unique))


async def _worker(amqp_url: str, topology: Topology, runner: FakeRunner, concurrency: int
                  ) -> tuple[Consumer, aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    consumer = Consumer(
        connection, topology, EnvelopeHandler(runner, job_results=topology.job_results),
        ThreadPoolExecutor(concurrency + 2), concurrency=concurrency, prefetch=8,
        functions=["block", "echo"], job_executor=job_threads(concurrency + 1),
    )
    await consumer.start()
    return consumer, connection


async def _delivery_mode_waiting(amqp_url: str, queue_name: str) -> aio_pika.DeliveryMode:
    """The delivery mode of the first message to wait in `queue_name` (put back after)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        while queue.declaration_result.message_count == 0:
            await asyncio.sleep(0.01)
            queue = await channel.declare_queue(queue_name, passive=True)
        peeked = await queue.get(no_ack=False)
        assert peeked is not None
        await peeked.nack(requeue=True)
        return peeked.delivery_mode


async def test_a_classic_lane_carries_transient_calls_and_answers_them(
    amqp_url: str, classic: Topology
) -> None:
    runner = FakeRunner()
    async with AmqpTransport(amqp_url, classic) as caller:
        # Given no worker yet: a call waits in the lane as a transient message
        call = asyncio.ensure_future(caller.call(envelope("echo", b"hi"), timeout=20))
        mode = await _delivery_mode_waiting(amqp_url, classic.sync)
        assert mode == aio_pika.DeliveryMode.NOT_PERSISTENT
        # When a worker of the same topology starts, then it is answered
        consumer, worker = await _worker(amqp_url, classic, runner, 2)
        try:
            reply = await call
            assert (reply.outcome, reply.body) == ("ok", b"hi")
        finally:
            await consumer.stop_consuming()
            await consumer.close()
            await worker.close()


async def test_the_client_publishes_to_a_classic_lane_as_the_fleet_does(
    amqp_url: str, classic: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the fleet's FLOTILLA_SYNC_LANE=classic in the client's environment
    monkeypatch.setenv("FLOTILLA_SYNC_LANE", "classic")
    version = FunctionVersion("echo", "d" * 64, 1, FunctionConfig(name="echo"), "0" * 64, 0, "0" * 64,
                              "", 0.0)

    async def resolve(name: str, selector: str | None) -> FunctionVersion:
        return version

    async with Client(amqp_url, queue_prefix=classic.prefix, resolve=resolve,
                      redis_url=None) as client:
        call = asyncio.ensure_future(client.invoke("echo", b"hi", timeout=20))
        mode = await _delivery_mode_waiting(amqp_url, classic.sync)
        # Then the call is transient, as the classic lane keeps them (no fsync, no wait)
        assert mode == aio_pika.DeliveryMode.NOT_PERSISTENT
        call.cancel()
    with pytest.raises(ValueError, match="sync_lane must be one of"):
        Client(amqp_url, queue_prefix=classic.prefix, resolve=resolve, redis_url=None,
               sync_lane="mirrored")


async def test_a_sync_call_runs_while_jobs_fill_every_slot(
    amqp_url: str, classic: Topology
) -> None:
    runner = FakeRunner()
    consumer, worker = await _worker(amqp_url, classic, runner, 1)
    try:
        async with AmqpTransport(amqp_url, classic) as caller:
            # Given a job blocking the worker's only slot, and two more queued behind it
            for _ in range(3):
                await caller.submit(envelope("block", job=True))
            await asyncio.to_thread(runner.started.acquire, True, 10)
            # Then a sync call is answered while the job still blocks
            reply = await caller.call(envelope("echo", b"now"), timeout=10)
            assert reply.body == b"now"
            assert not runner.release.is_set() and len(runner.runs) == 2
    finally:
        runner.release.set()
        await consumer.stop_consuming()
        await consumer.drain(5)
        await consumer.close()
        await worker.close()


async def test_a_job_lane_deleted_under_the_worker_is_consumed_again(
    amqp_url: str, classic: Topology
) -> None:
    consumer, worker = await _worker(amqp_url, classic, FakeRunner(), 2)
    lane = classic.job_queue("echo")
    results: asyncio.Queue[Reply] = asyncio.Queue()
    try:
        async with AmqpTransport(amqp_url, classic) as caller:
            await caller.consume_job_results(results.put)
            admin = await aio_pika.connect(amqp_url)
            async with admin:
                # When the lane is deleted (the broker cancels the worker's consumer)
                await (await admin.channel()).queue_delete(lane)

                async def consumers() -> int:
                    channel = await admin.channel()
                    try:
                        queue = await channel.declare_queue(lane, passive=True)
                    except aio_pika.exceptions.ChannelNotFoundEntity:
                        return 0
                    count = queue.declaration_result.consumer_count or 0
                    await channel.close()
                    return count

                end = asyncio.get_running_loop().time() + 20
                while await consumers() != 1:  # the broker offers no event for this: poll
                    assert asyncio.get_running_loop().time() < end, "no consumer again"
                    await asyncio.sleep(0.05)
            # Then the worker declared it again and runs its jobs
            job = envelope("echo", b"again", job=True)
            await caller.submit(job)
            reply = await asyncio.wait_for(results.get(), 10)
            assert (reply.invocation_id, reply.body) == (job.invocation_id, b"again")
            assert consumer.functions == ["block", "echo"]
    finally:
        await consumer.stop_consuming()
        await consumer.close()
        await worker.close()


def test_a_classic_redelivery_counts_as_one_earlier_delivery() -> None:
    def message(headers: dict[str, object] | None, redelivered: bool) -> object:
        return SimpleNamespace(header=SimpleNamespace(properties=SimpleNamespace(
            headers=headers)), delivery=SimpleNamespace(redelivered=redelivered))

    assert _redeliveries(message(None, False)) == 0  # type: ignore[arg-type]
    assert _redeliveries(message(None, True)) == 1  # type: ignore[arg-type]
    assert _redeliveries(message({"x-delivery-count": 3}, True)) == 3  # type: ignore[arg-type]
