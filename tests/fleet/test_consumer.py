"""The AMQP consumer against a real RabbitMQ: every delivery path, with a fake runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aio_pika
import pytest

from flotilla.envelope import Reply, now_ms
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport, CallTimeout
from tests.fleet.fakes import FakeRunner, envelope
from tests.services import TEST_FUNCTIONS
from worker.consumer import Consumer
from worker.handler import EnvelopeHandler, Settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass
class Worker:
    runner: FakeRunner
    consumer: Consumer
    clock_offset_ms: list[int]


@pytest.fixture
async def worker(amqp_url: str, topology: Topology, unique: str) -> AsyncIterator[Worker]:
    runner = FakeRunner()
    offset = [0]
    handler = EnvelopeHandler(
        runner, job_results=topology.job_results, clock=lambda: now_ms() + offset[0]
    )
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": f"worker-{unique}"}
    )
    executor = ThreadPoolExecutor(4)
    consumer = Consumer(connection, topology, handler, executor, concurrency=4, prefetch=8, functions=TEST_FUNCTIONS)
    await consumer.start()
    yield Worker(runner, consumer, offset)
    runner.release.set()
    await consumer.stop_consuming()
    await consumer.drain(5)
    await consumer.close()
    await connection.close()
    executor.shutdown()


@pytest.fixture
async def transport(amqp_url: str, topology: Topology, unique: str) -> AsyncIterator[AmqpTransport]:
    async with AmqpTransport(amqp_url, topology, connection_name=f"caller-{unique}") as t:
        yield t


async def _next_message(amqp_url: str, queue_name: str, timeout: float = 10) -> aio_pika.abc.AbstractIncomingMessage:
    """Wait for one message on `queue_name` (consumed with ack), by event, not by polling."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        async with queue.iterator() as it:
            async def first() -> aio_pika.abc.AbstractIncomingMessage:
                async for message in it:
                    await message.ack()
                    return message
                raise AssertionError("queue iterator ended")
            return await asyncio.wait_for(first(), timeout)


async def test_ok_reply_then_ack(worker: Worker, transport: AmqpTransport) -> None:
    env = envelope("echo", b"payload")
    reply = await transport.call(env, timeout=10)
    assert (reply.outcome, reply.status, reply.body) == ("ok", 200, b"payload")
    assert reply.headers == (("x-echo", "1"),)
    assert reply.correlation_id == env.correlation_id
    await _until(lambda: worker.consumer.settled[Settle.ACK] == 1)


async def test_reply_larger_than_a_frame(worker: Worker, transport: AmqpTransport) -> None:
    # Replies of one frame are queued directly; larger ones go through basic_publish.
    body = bytes(range(256)) * 2_000  # 512000 bytes: several 128 KiB frames
    reply = await transport.call(envelope("echo", body), timeout=10)
    assert reply.body == body
    await _until(lambda: worker.consumer.settled[Settle.ACK] == 1)


async def test_a_long_invocation_does_not_hold_back_the_acks_of_later_ones(
    worker: Worker, transport: AmqpTransport
) -> None:
    # Acks are batched over contiguous delivery tags; finished deliveries behind one still
    # running are acked on their own soon after, or they would fill the prefetch window (8)
    # and the broker would stop delivering until the long one ends.
    blocked = asyncio.create_task(transport.call(envelope("block"), timeout=30))
    await asyncio.to_thread(worker.runner.started.acquire, True, 10)
    for i in range(20):
        reply = await transport.call(envelope("echo", b"%d" % i), timeout=10)
        assert reply.body == b"%d" % i
    await _until(lambda: worker.consumer.settled[Settle.ACK] == 20)
    worker.runner.release.set()
    assert (await blocked).body == b"done"


async def test_guest_failure_is_replied_and_acked(worker: Worker, transport: AmqpTransport) -> None:
    reply = await transport.call(envelope("fail"), timeout=10)
    assert (reply.outcome, reply.error) == ("function_error", "guest said no")
    await _until(lambda: worker.consumer.settled[Settle.ACK] == 1)


async def test_worker_exception_becomes_internal_reply(worker: Worker, transport: AmqpTransport) -> None:
    reply = await transport.call(envelope("boom"), timeout=10)
    assert reply.outcome == "internal"
    assert "worker bug" in reply.error


async def test_unknown_digest_is_not_found(worker: Worker, transport: AmqpTransport) -> None:
    reply = await transport.call(envelope("nosuch"), timeout=10)
    assert reply.outcome == "not_found"
    await _until(lambda: worker.consumer.settled[Settle.ACK] == 1)


async def test_expired_envelope_is_not_run(worker: Worker, transport: AmqpTransport) -> None:
    # The worker's clock runs a minute ahead, so a 30 s deadline has already passed for it.
    worker.clock_offset_ms[0] = 60_000
    env = envelope("echo")
    reply = await transport.call(env, timeout=10)
    assert reply.outcome == "expired"
    assert env.invocation_id not in worker.runner.runs
    await _until(lambda: worker.consumer.settled[Settle.ACK] == 1)


async def test_expired_job_gets_an_expired_result(
    amqp_url: str, worker: Worker, transport: AmqpTransport, topology: Topology
) -> None:
    worker.clock_offset_ms[0] = 60_000
    env = envelope("echo", job=True)
    await transport.submit(env)
    message = await _next_message(amqp_url, topology.job_results)
    reply = Reply.decode(message.body)
    assert (reply.invocation_id, reply.outcome) == (env.invocation_id, "expired")


async def test_malformed_envelope_goes_to_the_dlq(
    amqp_url: str, worker: Worker, topology: Topology
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"\x00not msgpack"), routing_key=topology.sync
        )
    message = await _next_message(amqp_url, topology.dead_letters)
    assert message.body == b"\x00not msgpack"
    assert worker.consumer.settled[Settle.REJECT] == 1


async def test_job_result_reaches_the_job_handler(worker: Worker, transport: AmqpTransport) -> None:
    got: asyncio.Queue[Reply] = asyncio.Queue()
    await transport.consume_job_results(got.put)
    env = envelope("echo", b"job body", job=True)
    await transport.submit(env)
    reply = await asyncio.wait_for(got.get(), 10)
    assert (reply.invocation_id, reply.body) == (env.invocation_id, b"job body")


async def test_many_concurrent_callers_never_cross_replies(
    worker: Worker, amqp_url: str, topology: Topology, unique: str
) -> None:
    # Two callers (two reply queues) with 64 calls in flight each.
    async with AmqpTransport(amqp_url, topology, connection_name=f"a-{unique}") as a, \
            AmqpTransport(amqp_url, topology, connection_name=f"b-{unique}") as b:
        sem = asyncio.Semaphore(128)

        async def one(t: AmqpTransport, i: int) -> None:
            async with sem:
                body = f"{id(t)}-{i}".encode()
                env = envelope("echo", body)
                reply = await t.call(env, timeout=20)
                assert (reply.correlation_id, reply.body) == (env.correlation_id, body)

        await asyncio.gather(*(one(t, i) for i in range(300) for t in (a, b)))
        assert a.stray_replies == b.stray_replies == 0
        assert a.pending == b.pending == 0


async def test_late_reply_is_dropped_and_counted(worker: Worker, transport: AmqpTransport) -> None:
    env = envelope("block")
    with pytest.raises(CallTimeout):
        await transport.call(env, timeout=0.3)
    worker.runner.release.set()
    await _until(lambda: transport.stray_replies == 1)
    assert transport.pending == 0


async def test_shutdown_drains_in_flight_and_requeues_waiting(
    worker: Worker, transport: AmqpTransport
) -> None:
    # 4 slots: 4 invocations block in the runner, 2 more wait for a slot.
    calls = [asyncio.create_task(transport.call(envelope("block"), timeout=20)) for _ in range(6)]
    for _ in range(4):
        await asyncio.to_thread(worker.runner.started.acquire, True, 10)
    await _until(lambda: worker.consumer.in_flight == 6)
    await worker.consumer.stop_consuming()
    # The two waiting for a slot go back to the queue at once, before in-flight work ends.
    await _until(lambda: worker.consumer.settled[Settle.REQUEUE] == 2)
    assert worker.consumer.settled[Settle.ACK] == 0
    worker.runner.release.set()
    assert await worker.consumer.drain(10)
    assert worker.consumer.settled[Settle.ACK] == 4
    assert worker.consumer.settled[Settle.REQUEUE] == 2
    done = [c for c in calls if c.done()]
    await asyncio.gather(*done)
    assert all(c.result().body == b"done" for c in done)
    for c in calls:
        c.cancel()


async def _until(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    """Wait for a condition the event loop will make true (checked after each loop turn)."""
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_job_result_survives_a_dispatcher_dying_mid_handling(
    amqp_url: str, worker: Worker, topology: Topology, unique: str
) -> None:
    env = envelope("echo", b"precious", job=True)
    entered = asyncio.Event()

    async def dying_handler(reply: Reply) -> None:
        entered.set()
        await asyncio.Event().wait()  # never returns: the dispatcher dies first

    first = AmqpTransport(amqp_url, topology, connection_name=f"d1-{unique}")
    await first.start()
    await first.consume_job_results(dying_handler)
    await first.submit(env)
    await asyncio.wait_for(entered.wait(), 10)
    await first.close()  # unacked: the broker keeps the result for another dispatcher

    got: asyncio.Queue[Reply] = asyncio.Queue()
    async with AmqpTransport(amqp_url, topology, connection_name=f"d2-{unique}") as second:
        await second.consume_job_results(got.put)
        reply = await asyncio.wait_for(got.get(), 10)
    assert (reply.invocation_id, reply.body) == (env.invocation_id, b"precious")


async def test_failing_job_handler_gets_the_result_again(
    worker: Worker, transport: AmqpTransport
) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def flaky(reply: Reply) -> None:
        seen.append(reply.invocation_id)
        if len(seen) == 1:
            raise RuntimeError("redis blipped")
        done.set()

    await transport.consume_job_results(flaky)
    env = envelope("echo", job=True)
    await transport.submit(env)
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [env.invocation_id, env.invocation_id]
