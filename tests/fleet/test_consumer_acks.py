"""The consumer's batched settling: `_Acks` frame by frame with a recording channel, and a
real RabbitMQ channel that must stay open through out-of-order completions and rejects
(a tag acked twice or no longer held would close it with PRECONDITION_FAILED)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aio_pika
import pytest
from pamqp import commands as spec
from pamqp import frame as pamqp_frame

from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.fleet.fakes import FakeRunner, envelope
from tests.services import TEST_FUNCTIONS
from worker.consumer import Consumer, _Acks
from worker.handler import EnvelopeHandler, Settle


class RecordingChannel:
    """What `_Acks` uses of an aiormq channel; `frames()` decodes what was queued."""

    def __init__(self) -> None:
        self.number = 1
        self.is_closed = False
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue()

    def frames(self) -> list[Any]:
        out = []
        while not self.write_queue.empty():
            payload = self.write_queue.get_nowait().payload
            _, _, frame = pamqp_frame.unmarshal(payload)
            out.append(frame)
        return out


async def _turn() -> None:
    await asyncio.sleep(0)  # the flush scheduled in this turn runs
    await asyncio.sleep(0)


def _acks(channel: RecordingChannel, straggler_s: float = 3600) -> _Acks:
    return _Acks(channel, straggler_s)  # type: ignore[arg-type]


async def test_done_prefix_is_acked_once_with_multiple() -> None:
    channel = RecordingChannel()
    acks = _acks(channel)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag)
    acks.ack(2)
    acks.ack(1)
    acks.ack(4)  # 3 still running: 4 waits for it
    await _turn()
    [ack] = channel.frames()
    assert isinstance(ack, spec.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (2, True)
    acks.ack(3)
    await _turn()
    [ack] = channel.frames()
    assert (ack.delivery_tag, ack.multiple) == (4, True)
    assert channel.frames() == []


async def test_a_straggler_behind_a_running_delivery_is_acked_on_its_own() -> None:
    # A long invocation (1) must not keep finished ones (2) holding prefetch slots.
    channel = RecordingChannel()
    acks = _acks(channel, straggler_s=0)
    for tag in (1, 2):
        acks.delivered(tag)
    acks.ack(2)
    for _ in range(4):
        await _turn()
    [ack] = channel.frames()
    assert (ack.delivery_tag, ack.multiple) == (2, False)
    acks.ack(1)
    await _turn()
    [ack] = channel.frames()  # names 1 alone: 2 is not held any more
    assert (ack.delivery_tag, ack.multiple) == (1, False)
    assert channel.frames() == []


async def test_flushing_stragglers_acks_every_finished_delivery() -> None:
    # What drain() and close() do: nothing finished may go back to the queue.
    channel = RecordingChannel()
    acks = _acks(channel)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag)
    acks.ack(1)
    acks.ack(3)
    acks.ack(4)
    acks.flush(stragglers=True)
    assert [(f.delivery_tag, f.multiple) for f in channel.frames()] == [
        (1, False), (3, False), (4, False)
    ]
    acks.ack(2)
    await _turn()
    # 2 closes the gap; 3 and 4 are settled already, so the ack names 2 alone.
    assert [(f.delivery_tag, f.multiple) for f in channel.frames()] == [(2, False)]


async def test_a_lone_ack_is_not_multiple() -> None:
    channel = RecordingChannel()
    acks = _acks(channel)
    acks.delivered(7)
    acks.ack(7)
    await _turn()
    [ack] = channel.frames()
    assert (ack.delivery_tag, ack.multiple) == (7, False)


async def test_rejects_go_out_at_once_and_are_never_named_by_an_ack() -> None:
    channel = RecordingChannel()
    acks = _acks(channel)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag)
    acks.settle_now(2, requeue=False)
    acks.settle_now(4, requeue=True)
    first = channel.frames()  # before the loop turns
    assert [type(f) for f in first] == [spec.Basic.Reject, spec.Basic.Nack]
    assert (first[0].delivery_tag, first[0].requeue) == (2, False)
    assert (first[1].delivery_tag, first[1].requeue) == (4, True)
    acks.ack(1)
    acks.ack(3)
    await _turn()
    # 1..4 settled: the ack names 3 (the last acked tag), never 4 (requeued already).
    [ack] = channel.frames()
    assert (ack.delivery_tag, ack.multiple) == (3, True)


async def test_only_rejected_prefix_sends_no_ack() -> None:
    channel = RecordingChannel()
    acks = _acks(channel)
    acks.delivered(1)
    acks.settle_now(1, requeue=False)
    await _turn()
    assert [type(f) for f in channel.frames()] == [spec.Basic.Reject]
    acks.delivered(2)
    acks.ack(2)
    await _turn()
    [ack] = channel.frames()
    assert (ack.delivery_tag, ack.multiple) == (2, False)


async def test_nothing_is_acked_once_the_channel_closed() -> None:
    channel = RecordingChannel()
    acks = _acks(channel)
    acks.delivered(1)
    acks.ack(1)
    channel.is_closed = True  # the broker requeued it with the channel
    await _turn()
    assert channel.frames() == []


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_channel_survives_out_of_order_completions_and_rejects(
    amqp_url: str, topology: Topology, unique: str
) -> None:
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": f"worker-{unique}"}
    )
    executor = ThreadPoolExecutor(8)
    handler = EnvelopeHandler(FakeRunner(), job_results=topology.job_results)
    consumer = Consumer(connection, topology, handler, executor, concurrency=8, prefetch=16, functions=TEST_FUNCTIONS)
    await consumer.start()
    acks_before = consumer._acks
    try:
        async with AmqpTransport(amqp_url, topology, connection_name=f"c-{unique}") as caller:
            raw = await connection.channel()

            async def malformed() -> None:
                await raw.default_exchange.publish(
                    aio_pika.Message(b"\xc1junk"), routing_key=topology.sync
                )

            async def call(i: int) -> None:
                # Durations vary so completions come out of delivery order.
                env = envelope("sleep", b"%d" % ((i * 7) % 5))
                reply = await caller.call(env, timeout=30)
                assert reply.outcome == "ok"

            jobs: list[Any] = []
            for i in range(200):
                jobs.append(call(i))
                if i % 10 == 3:
                    jobs.append(malformed())
            await asyncio.gather(*jobs)
            await _until(lambda: consumer.settled[Settle.REJECT] == 20)
            await _until(lambda: consumer.settled[Settle.ACK] == 200)
        await consumer.stop_consuming()
        assert await consumer.drain(10)
        # Same aiormq channel throughout: no PRECONDITION_FAILED closed it.
        assert consumer._acks is acks_before
        assert acks_before is not None and not acks_before.channel.is_closed
        await consumer.close()
        # Closed with nothing unacked: nothing went back to the queue.
        check = await connection.channel()
        queue = await check.declare_queue(topology.sync, passive=True)
        assert queue.declaration_result.message_count == 0
    finally:
        await consumer.close()
        await connection.close()
        executor.shutdown()


async def _until(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
