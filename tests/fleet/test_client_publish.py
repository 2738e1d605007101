"""AmqpTransport's publishing against a real RabbitMQ: its own delivery-tag bookkeeping must
match the broker's numbering (confirms and nacks reach the right callers), and a publish
nobody can route fails fast and typed."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from flotilla.topology import Topology
from flotilla.transport import AmqpTransport, BrokerUnavailable, CallTimeout, QueueFull
from tests.fleet.fakes import envelope

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_confirms_and_nacks_reach_the_publishes_they_answer(
    amqp_url: str, unique: str
) -> None:
    # Given a queue one envelope short of its limit, then a burst of 60 concurrent jobs:
    # more than the connection's write queue holds (10 frames), so some publishes wait
    topology = Topology(unique, max_length=20)
    try:
        async with AmqpTransport(amqp_url, topology) as t:
            for _ in range(19):
                await t.submit(envelope(job=True))
            jobs = [envelope(job=True) for _ in range(60)]
            results = await asyncio.gather(*(t.submit(j) for j in jobs), return_exceptions=True)
            # Then every publish is either confirmed or refused as QueueFull (usually some of
            # each: quorum queues check the limit against a length that may lag a burst)
            assert all(r is None or isinstance(r, QueueFull) for r in results), results
            accepted = {j.invocation_id for j, r in zip(jobs, results, strict=True) if r is None}
            # and the confirmed ones are exactly the burst's envelopes the queue holds
            queued = await _drain(amqp_url, topology)
            assert accepted == queued & {j.invocation_id for j in jobs}
            assert t.pending == 0
    finally:
        await _delete(amqp_url, topology)


async def test_unroutable_publish_is_broker_unavailable(amqp_url: str, unique: str) -> None:
    # Given a transport told not to declare, for a prefix whose queues do not exist
    topology = Topology(unique)
    async with AmqpTransport(amqp_url, topology, declare=False) as t:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Then a call fails as soon as the broker returns the envelope, not at its timeout
        with pytest.raises(BrokerUnavailable, match="not routable"):
            await t.call(envelope(), timeout=30)
        assert loop.time() - started < 10
        assert t.pending == 0
        try:
            # but a job is not: the transport declares its function's lane before its first
            # job of the function, and again when the lane was deleted since
            job = envelope(job=True)
            await t.submit(job)
            assert await _drain(amqp_url, topology, job.function) == {job.invocation_id}
            await _delete(amqp_url, topology, [job.function])
            await t.submit(job)
            assert await _drain(amqp_url, topology, job.function) == {job.invocation_id}
            # and calls go through once the sync lane exists
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                await topology.declare(await connection.channel())
            with pytest.raises(CallTimeout):
                await t.call(envelope(), timeout=0.3)  # routed: nobody answers
        finally:
            await _delete(amqp_url, topology, [job.function])


async def _drain(amqp_url: str, topology: Topology, function: str = "echo") -> set[str]:
    """The message ids of every envelope in `function`'s job lane (consumed)."""
    ids: set[str] = set()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await topology.declare_jobs(channel, function)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            assert message.message_id is not None
            ids.add(message.message_id)
    return ids


async def _delete(amqp_url: str, topology: Topology, functions: list[str] | None = None) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await topology.delete(await connection.channel(), functions or ["echo"])
