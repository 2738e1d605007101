"""AmqpTransport against a real RabbitMQ: full queue, unreachable broker, declared topology."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from flotilla.envelope import Envelope
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport, BrokerUnavailable, CallTimeout, QueueFull
from tests.fleet.fakes import envelope
from tests.services import TEST_FUNCTIONS, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_full_queue_rejects_publishes(amqp_url: str, unique: str) -> None:
    topology = Topology(unique, max_length=2)
    try:
        async with AmqpTransport(amqp_url, topology) as t:
            # Quorum queues check the limit before enqueueing, so one publish may overshoot.
            accepted = 0
            with pytest.raises(QueueFull):
                for _ in range(4):
                    await t.submit(envelope(job=True))
                    accepted += 1
            assert accepted in (2, 3)
            # The sync lane is a queue apart: a full job lane refuses no call (nobody answers)
            queued = 0
            with pytest.raises(QueueFull):
                for _ in range(4):
                    with pytest.raises(CallTimeout):
                        await t.call(envelope(), timeout=0.3)
                    queued += 1
            # until the sync lane itself is full
            assert queued in (2, 3)
            assert t.pending == 0
    finally:
        await _delete(amqp_url, topology)


async def test_unreachable_broker_is_broker_unavailable() -> None:
    t = AmqpTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}/", Topology("nobroker"))
    with pytest.raises(BrokerUnavailable):
        await t.start()


async def test_publish_before_start_is_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable):
        await AmqpTransport("amqp://unused/", Topology("x")).submit(envelope(job=True))


async def test_declared_queues_have_the_topology_arguments(amqp_url: str, topology: Topology) -> None:
    async with AmqpTransport(amqp_url, topology):
        pass
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        # Re-declaring with the same arguments succeeds; different ones would be refused.
        queue = await channel.declare_queue(
            topology.sync, durable=True, arguments=topology.sync_arguments()
        )
        assert queue.declaration_result.message_count == 0
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(
                topology.sync, durable=True, arguments={"x-queue-type": "classic"}
            )


async def _delete(amqp_url: str, topology: Topology) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await topology.delete(await connection.channel(), TEST_FUNCTIONS)


async def test_expired_sync_envelope_is_dead_lettered_by_the_broker(
    amqp_url: str, topology: Topology
) -> None:
    async with AmqpTransport(amqp_url, topology) as t:
        env = envelope("echo", deadline_in_ms=-5_000)  # TTL: the 1 s grace minus 5 s -> 1 ms
        with pytest.raises(CallTimeout):
            await t.call(env, timeout=0.5)  # no worker: nobody answers
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.dead_letters)
        async with queue.iterator() as messages:
            message = await asyncio.wait_for(anext(aiter(messages)), 10)
            await message.ack()
    assert Envelope.decode(message.body).invocation_id == env.invocation_id
    death = message.headers["x-death"][0]  # type: ignore[index]
    assert death["reason"] == "expired"  # type: ignore[index]


async def test_a_sync_lane_of_the_other_type_is_used_as_it_is(
    amqp_url: str, topology: Topology
) -> None:
    # Given a deployment whose sync lane is classic (its workers and dispatchers say so)
    classic = Topology(topology.prefix, delivery_limit=topology.delivery_limit,
                       max_length=topology.max_length, sync_lane="classic")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await classic.declare(await connection.channel())
        # When a transport of the default type (a Python client) starts
        async with AmqpTransport(amqp_url, topology) as t:
            # Then it publishes to the lane there is: a call is queued there (nobody answers)
            with pytest.raises(CallTimeout):
                await t.call(envelope(), timeout=0.3)
        queue = await (await connection.channel()).declare_queue(topology.sync, passive=True)
        assert queue.declaration_result.message_count == 1
        # and the lane is still the classic one: re-declaring it as classic succeeds
        await classic.declare(await connection.channel())
