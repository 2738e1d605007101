"""Failover across several broker URLs (`flotilla.amqp.connect_robust`, FailoverConnection).

Two TCP proxies in front of the machine's broker stand for two nodes: a test "kills" one by
cutting its connections and refusing new ones. The machine's broker itself is never stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aio_pika
import pytest

from flotilla.amqp import FailoverConnection, connect_robust, split_urls
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport
from tests.fleet.fakes import FakeRunner, envelope
from tests.fleet.proxy import CuttableProxy
from tests.services import TEST_FUNCTIONS, free_port
from worker.consumer import Consumer
from worker.handler import EnvelopeHandler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Node(CuttableProxy):
    """A proxy that can be down: it refuses new connections and drops open ones."""

    down = False

    def kill(self) -> None:
        """Refuse from now on and reset every open connection."""
        self.down = True
        self.cut()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        await super()._on_client(reader, writer)


@pytest.fixture
async def nodes(amqp_url: str) -> AsyncIterator[tuple[Node, Node]]:
    """Two "nodes": proxies to the machine's broker."""
    a, b = Node("127.0.0.1", 5672), Node("127.0.0.1", 5672)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


def url_of(node: Node) -> str:
    """The AMQP URL of a proxy node."""
    return f"amqp://guest:guest@127.0.0.1:{node.port}/"


def reconnected(connection: Any) -> asyncio.Event:
    """Set the next time `connection` has reconnected (channels and consumers restored)."""
    event = asyncio.Event()
    connection.reconnect_callbacks.add(lambda *_: event.set())
    return event


@pytest.mark.parametrize(("given", "expected"), [
    ("amqp://a/", ["amqp://a/"]),
    ("amqp://a/, amqp://b/,", ["amqp://a/", "amqp://b/"]),
    (["amqp://a/", " amqp://b/ "], ["amqp://a/", "amqp://b/"]),
])  # fmt: skip
def test_urls_are_split_and_stripped(given: Any, expected: list[str]) -> None:
    assert split_urls(given) == expected


async def test_first_reachable_url_is_used(amqp_url: str) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    connection = await connect_robust([dead, amqp_url], shuffle=False)
    try:
        assert isinstance(connection, FailoverConnection)
        assert connection.url.port == 5672
        assert [u.port for u in connection.urls] == [5672, int(dead.split(":")[-1][:-1])]
    finally:
        await connection.close()


async def test_no_reachable_url_is_an_error() -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
    with pytest.raises(ConnectionError):
        await connect_robust(dead)
    with pytest.raises(ValueError, match="no broker URL"):
        await connect_robust(" , ")


async def test_order_is_shuffled_per_connection(nodes: tuple[Node, Node]) -> None:
    # Many processes given the same list spread over the nodes (one connection each here).
    urls = [url_of(n) for n in nodes]
    firsts = set()
    for _ in range(16):  # both orders at least once: all alike with probability 2**-15
        connection = await connect_robust(urls)
        firsts.add(connection.url.port)
        await connection.close()
    assert firsts == {nodes[0].port, nodes[1].port}


async def test_worker_moves_to_the_next_node_and_consumes_again(
    nodes: tuple[Node, Node], amqp_url: str, topology: Topology, unique: str
) -> None:
    a, b = nodes
    # Given a worker connected through node a (its list: a, then b),
    connection = await connect_robust(
        [url_of(a), url_of(b)], shuffle=False, reconnect_interval=0.2,
        client_properties={"connection_name": f"worker-{unique}"},
    )
    executor = ThreadPoolExecutor(2)
    handler = EnvelopeHandler(FakeRunner(), job_results=topology.job_results)
    consumer = Consumer(connection, topology, handler, executor, concurrency=2, prefetch=4, functions=TEST_FUNCTIONS)
    await consumer.start()
    try:
        async with AmqpTransport(amqp_url, topology, connection_name=f"caller-{unique}") as caller:
            assert (await caller.call(envelope("echo", b"before"), timeout=10)).body == b"before"
            # when node a dies,
            back = reconnected(connection)
            a.kill()
            await asyncio.wait_for(back.wait(), 20)
            # the worker is on node b, consuming with its QoS again: exactly one consumer.
            assert connection.url.port == b.port
            replies = await asyncio.gather(
                *(caller.call(envelope("echo", b"%d" % i), timeout=20) for i in range(10))
            )
            assert [r.body for r in replies] == [b"%d" % i for i in range(10)]
            async with await aio_pika.connect(amqp_url) as plain:
                queue = await (await plain.channel()).declare_queue(
                    topology.sync, passive=True
                )
                assert queue.declaration_result.consumer_count == 1
            # And when b dies too while a is back, it returns to a.
            a.down = False
            back = reconnected(connection)
            b.kill()
            await asyncio.wait_for(back.wait(), 20)
            assert connection.url.port == a.port
            assert (await caller.call(envelope("echo", b"after"), timeout=20)).body == b"after"
    finally:
        await consumer.close()
        await connection.close()
        executor.shutdown()


async def test_caller_fails_over_and_gets_replies_again(
    nodes: tuple[Node, Node], amqp_url: str, topology: Topology, unique: str
) -> None:
    a, b = nodes
    worker_conn = await aio_pika.connect_robust(amqp_url)
    executor = ThreadPoolExecutor(2)
    handler = EnvelopeHandler(FakeRunner(), job_results=topology.job_results)
    consumer = Consumer(worker_conn, topology, handler, executor, concurrency=2, prefetch=4, functions=TEST_FUNCTIONS)
    await consumer.start()
    try:
        # A dispatcher-like transport given both nodes (its reply queue lives on its node).
        caller = AmqpTransport([url_of(a), url_of(b)], topology, connection_name=unique)
        await caller.start()
        try:
            connection = caller.connection
            assert connection is not None
            first = a if connection.url.port == a.port else b
            assert (await caller.call(envelope("echo", b"1"), timeout=10)).body == b"1"
            back = reconnected(connection)
            first.kill()
            await asyncio.wait_for(back.wait(), 20)
            assert connection.url.port != first.port
            # The reply queue was declared again on the new connection: replies arrive.
            replies = await asyncio.gather(
                *(caller.call(envelope("echo", b"%d" % i), timeout=20) for i in range(10))
            )
            assert [r.body for r in replies] == [b"%d" % i for i in range(10)]
        finally:
            await caller.close()
    finally:
        await consumer.close()
        await worker_conn.close()
        executor.shutdown()
