"""The dead-letter doctor (flotilla/brokerheal.py) on real RabbitMQ nodes: messages a quorum
queue dead-lettered at-least-once and holds are forwarded once it moves the queue's
leadership, minutes before the stopped worker would have tried again (the broker's
`dead_letter_worker_publisher_confirm_timeout` is 120 s).

The held messages are made deterministically: the source queue dead-letters to an exchange
that does not exist yet, so its worker keeps them; the exchange and the target queue are
then declared, and only a new worker (the doctor's move) forwards them at once. The chaos
bench (tests/cluster/test_chaos.py) runs the doctor against the real fault: a killed leader.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from flotilla.brokerheal import DeadLetterDoctor
from tests.cluster.nodes import extra_nodes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PREFIX = "heal"
HELD = 5


async def _until(doctor: DeadLetterDoctor, queue: str, held: int, timeout: float = 30) -> int:
    """Ask the broker until `queue` holds `held` dead-lettered messages; what it holds."""
    deadline = time.monotonic() + timeout
    now = 0
    while time.monotonic() < deadline:
        state = (await asyncio.to_thread(doctor.queues)).get(queue)
        now = state.held if state else 0
        if now == held:
            return now
        await asyncio.sleep(0.2)  # polling the broker's counters: there is no event for them
    return now


async def test_moving_the_leadership_forwards_held_dead_letters() -> None:
    with extra_nodes(2) as cluster:
        doctor = cluster.doctor(PREFIX, settle_s=0.5)
        source, target = f"{PREFIX}.source", f"{PREFIX}.target"
        connection = await aio_pika.connect(cluster.urls[0])
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(source, durable=True, arguments={
                "x-queue-type": "quorum", "x-dead-letter-exchange": f"{PREFIX}.dlx",
                "x-dead-letter-routing-key": "to-target",
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
            for i in range(HELD):
                await channel.default_exchange.publish(
                    aio_pika.Message(f"m{i}".encode(), delivery_mode=2), routing_key=source)
            for _ in range(HELD):
                message = await queue.get(timeout=10)
                assert message is not None
                await message.reject(requeue=False)
            assert await _until(doctor, source, HELD) == HELD

            dlx = await channel.declare_exchange(f"{PREFIX}.dlx", aio_pika.ExchangeType.DIRECT,
                                                 durable=True)
            landed = await channel.declare_queue(target, durable=True,
                                                 arguments={"x-queue-type": "quorum"})
            await landed.bind(dlx, "to-target")
            # The worker does not look again for minutes: still held after the doctor's
            # two looks, so it moves the queue.
            leader = (await asyncio.to_thread(doctor.queues))[source].leader
            moves = await asyncio.to_thread(doctor.sweep)
            assert [(m.queue, m.held, m.leader, m.moved) for m in moves] == [
                (source, HELD, leader, True)], moves
            assert moves[0].to != leader
            assert (await asyncio.to_thread(doctor.queues))[source].leader == moves[0].to

            bodies = []
            async with landed.iterator(timeout=20) as messages:
                async for message in messages:
                    bodies.append(message.body)
                    await message.ack()
                    if len(bodies) == HELD:
                        break
            assert sorted(bodies) == [f"m{i}".encode() for i in range(HELD)]
            assert await _until(doctor, source, 0) == 0
            assert await asyncio.to_thread(doctor.sweep) == []
