"""Connections cut or closed by the broker: worker and caller reconnect and work continues."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from flotilla.topology import Topology
from flotilla.transport import AmqpTransport, BrokerUnavailable, CallTimeout
from tests.fleet.fakes import FakeRunner, envelope
from tests.fleet.proxy import CuttableProxy
from tests.services import TEST_FUNCTIONS
from worker.consumer import Consumer
from worker.handler import EnvelopeHandler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def reconnected(connection: Any) -> asyncio.Event:
    """An event set the next time `connection` (robust) has reconnected."""
    event = asyncio.Event()
    connection.reconnect_callbacks.add(lambda *_: event.set())
    return event


@pytest.fixture
async def worker_connection(amqp_url: str, topology: Topology, unique: str) -> AsyncIterator[Any]:
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": f"worker-{unique}"}
    )
    executor = ThreadPoolExecutor(2)
    handler = EnvelopeHandler(FakeRunner(), job_results=topology.job_results)
    consumer = Consumer(connection, topology, handler, executor, concurrency=2, prefetch=4, functions=TEST_FUNCTIONS)
    await consumer.start()
    yield connection
    await consumer.close()
    await connection.close()
    executor.shutdown()


def _close_from_broker(connection_name: str) -> None:
    """`rabbitmqctl close_connection` for the connection with that name (only ours)."""
    out = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    marker = f'{{"connection_name","{connection_name}"}}'
    pids = [line.split("\t", 1)[0] for line in out.splitlines() if marker in line]
    assert len(pids) == 1, f"expected one connection named {connection_name}, found {pids}"
    subprocess.run(
        ["rabbitmqctl", "close_connection", pids[0], "test: closed by the broker"],
        check=True, capture_output=True, timeout=60,
    )


async def test_worker_recovers_when_the_broker_closes_its_connection(
    amqp_url: str, topology: Topology, unique: str, worker_connection: Any
) -> None:
    async with AmqpTransport(amqp_url, topology, connection_name=f"caller-{unique}") as caller:
        assert (await caller.call(envelope("echo", b"1"), timeout=10)).body == b"1"
        back = reconnected(worker_connection)
        await asyncio.to_thread(_close_from_broker, f"worker-{unique}")
        await asyncio.wait_for(back.wait(), 30)
        assert (await caller.call(envelope("echo", b"2"), timeout=20)).body == b"2"


async def test_caller_recovers_after_a_network_cut(
    amqp_url: str, topology: Topology, worker_connection: Any
) -> None:
    url = urlsplit(amqp_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5672)
    await proxy.start()
    proxied = amqp_url.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    try:
        async with AmqpTransport(proxied, topology) as caller:
            assert (await caller.call(envelope("echo", b"before"), timeout=10)).body == b"before"
            assert caller.connection is not None
            back = reconnected(caller.connection)
            proxy.cut()
            await asyncio.wait_for(back.wait(), 30)
            # Same reply queue name, re-declared: replies reach this caller again.
            replies = await asyncio.gather(
                *(caller.call(envelope("echo", b"%d" % i), timeout=20) for i in range(20))
            )
            assert [r.body for r in replies] == [b"%d" % i for i in range(20)]
    finally:
        await proxy.close()


async def test_call_during_an_outage_fails_fast_and_typed(
    amqp_url: str, topology: Topology, worker_connection: Any
) -> None:
    url = urlsplit(amqp_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5672)
    await proxy.start()
    proxied = amqp_url.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    async with AmqpTransport(proxied, topology) as caller:
        assert (await caller.call(envelope("echo"), timeout=10)).ok
        await proxy.close()  # cut, and refuse new connections: the broker is "down"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises((BrokerUnavailable, CallTimeout)):
            await caller.call(envelope("echo"), timeout=1)
        assert loop.time() - started < 3
        assert caller.pending == 0


async def test_silent_partition_does_not_hold_callers(
    amqp_url: str, topology: Topology, worker_connection: Any
) -> None:
    url = urlsplit(amqp_url)
    proxy = CuttableProxy(url.hostname or "127.0.0.1", url.port or 5672)
    await proxy.start()
    proxied = amqp_url.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    try:
        async with AmqpTransport(proxied, topology, publish_timeout_s=1) as caller:
            assert (await caller.call(envelope("echo"), timeout=10)).ok
            proxy.freeze()  # no RST, no FIN: only a timeout can tell
            with pytest.raises(BrokerUnavailable):
                await caller.call(envelope("echo"), timeout=1)
            with pytest.raises(BrokerUnavailable):
                await caller.submit(envelope(job=True))
            proxy.cut()  # let close() finish quickly
    finally:
        await proxy.close()


async def test_worker_consumes_again_after_its_queue_was_deleted(
    amqp_url: str, topology: Topology, unique: str, worker_connection: Any
) -> None:
    # The broker cancels the consumer of a deleted queue; the worker declares it again and
    # consumes again (as aio-pika's robust queue would for its own consumers).
    async with AmqpTransport(amqp_url, topology, connection_name=f"caller-{unique}") as caller:
        assert (await caller.call(envelope("echo", b"1"), timeout=10)).body == b"1"
        admin = await aio_pika.connect(amqp_url)
        async with admin:
            await (await admin.channel()).queue_delete(topology.sync)

            async def consumers() -> int:
                channel = await admin.channel()
                try:
                    queue = await channel.declare_queue(topology.sync, passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    return 0
                count = queue.declaration_result.consumer_count or 0
                await channel.close()
                return count

            end = asyncio.get_running_loop().time() + 20
            while await consumers() != 1:  # the broker offers no event for this: poll
                assert asyncio.get_running_loop().time() < end, "the worker did not consume again"
                await asyncio.sleep(0.05)
        assert (await caller.call(envelope("echo", b"2"), timeout=10)).body == b"2"
