"""The delay chain (flotilla/delays.py): its arithmetic, and delayed publishes on the real broker.

The unit tests walk a message through the chain's bindings with a small AMQP topic matcher
(the broker's rules: `*` one word, `#` any number), so a wrong binding pattern shows up as
a wrong wait or a wrong destination, not only a wrong string.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest

from flotilla.delays import (
    LEVELS,
    MAX_DELAY_S,
    DelayChain,
    destination_pattern,
    level_pattern,
    routing_key,
)
from flotilla.envelope import Envelope
from flotilla.jobstate import MAX_DELAY_MS
from flotilla.topology import Topology
from flotilla.transport import AmqpTransport


def topic_match(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def walk(chain: DelayChain, delay_ms: int, destination: str, queues: list[str]) -> tuple[int, str]:
    """Follow a message from its first hop through the chain's bindings as declared:
    (milliseconds it waits in all, the queue it ends in)."""
    hop = chain.hop(delay_ms, destination)
    waited = 0
    exchange = hop.exchange
    if exchange == chain.fine:
        waited += int(hop.expiration or 0)
        exchange = chain.level(chain.levels - 1)  # the fine queue's dead-letter exchange
    while True:
        if exchange == chain.deliver:
            found = [q for q in queues if topic_match(destination_pattern(q, chain.levels),
                                                      hop.routing_key)]
            assert len(found) == 1, found
            return waited, found[0]
        k = int(exchange.rsplit(".", 1)[1])
        to_queue = topic_match(level_pattern(k, "1", chain.levels), hop.routing_key)
        passes = topic_match(level_pattern(k, "0", chain.levels), hop.routing_key)
        assert to_queue != passes  # exactly one binding of each level matches
        if to_queue:
            waited += chain.level_arguments(k)["x-message-ttl"]
        exchange = chain.level(k - 1) if k > 0 else chain.deliver


@pytest.mark.parametrize("delay_ms", [
    1, 999, 1000, 1001, 1500, 2000, 3000, 4095_000, 65_537_250, MAX_DELAY_MS,
    MAX_DELAY_S * 1000, MAX_DELAY_S * 1000 + 999,
])
def test_a_message_waits_its_delay_and_reaches_its_destination(delay_ms: int) -> None:
    chain = DelayChain("p")
    queues = ["p.invocations", "x.p.invocations", "p.jobs.a", "p.jobs.a-b"]
    for destination in queues:
        assert walk(chain, delay_ms, destination, queues) == (delay_ms, destination)


@pytest.mark.parametrize(("delay_ms", "exchange", "expiration"), [
    (1000, "p.delay.0", None),
    (2000, "p.delay.1", None),
    (3000, "p.delay.1", None),  # enters at its highest set bit
    (4000, "p.delay.2", None),
    (1, "p.delay.fine", "1"),
    (2500, "p.delay.fine", "500"),
])
def test_first_hop(delay_ms: int, exchange: str, expiration: str | None) -> None:
    hop = DelayChain("p").hop(delay_ms, "p.invocations")
    assert (hop.exchange, hop.expiration) == (exchange, expiration)


def test_routing_key_spells_the_seconds_in_binary_then_the_destination() -> None:
    assert routing_key(5, "q.a", levels=4) == "0.1.0.1.q.a"
    assert routing_key(0, "q", levels=3) == "0.0.0.q"
    assert level_pattern(0, "1", levels=4) == "*.*.*.1.#"
    assert level_pattern(3, "0", levels=4) == "0.#"
    with pytest.raises(ValueError, match="at most"):
        DelayChain("p").hop((MAX_DELAY_S + 1) * 1000, "q")
    with pytest.raises(ValueError, match="delay_ms > 0"):
        DelayChain("p").hop(0, "q")
    with pytest.raises(ValueError, match="destination"):
        routing_key(1, "")


def test_chain_arguments() -> None:
    chain = DelayChain("p", quorum_size=3)
    top = chain.level_arguments(LEVELS - 1)
    assert top["x-message-ttl"] == 2 ** (LEVELS - 1) * 1000
    assert top["x-dead-letter-exchange"] == f"p.delay.{LEVELS - 2}"
    assert chain.level_arguments(0)["x-dead-letter-exchange"] == "p.delay.deliver"
    assert chain.fine_arguments()["x-dead-letter-exchange"] == f"p.delay.{LEVELS - 1}"
    for args in (top, chain.fine_arguments()):
        assert (args["x-dead-letter-strategy"], args["x-overflow"], args["x-queue-type"],
                args["x-quorum-initial-group-size"]) == ("at-least-once", "reject-publish",
                                                         "quorum", 3)
    assert MAX_DELAY_MS <= MAX_DELAY_S * 1000  # 7 days fit in 20 levels
    assert len(chain.queue_names()) == LEVELS + 1
    assert set(chain.queue_names()) <= set(Topology("p").queue_names())


# -- on the real broker ------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_delayed_jobs_arrive_after_their_delay_and_within_a_second(
    amqp_url: str, topology: Topology
) -> None:
    delays_ms = [1300, 2000, 700, 3000]
    async with AmqpTransport(amqp_url, topology, connection_name="delays-test") as transport:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(topology.invocations)
            arrived: dict[str, float] = {}
            done = asyncio.Event()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                arrived[Envelope.decode(message.body).invocation_id] = time.monotonic()
                await message.ack()
                if len(arrived) == len(delays_ms):
                    done.set()

            await queue.consume(on_message)
            sent: dict[str, tuple[float, int]] = {}
            for delay_ms in delays_ms:
                envelope = Envelope.for_job(uuid.uuid4().hex, "echo", "d", (), b"x", ttl_s=60)
                sent[envelope.invocation_id] = (time.monotonic(), delay_ms)
                await transport.submit(envelope, delay_ms=delay_ms)
            await asyncio.wait_for(done.wait(), 20)
    for job_id, (at, delay_ms) in sent.items():
        waited_ms = (arrived[job_id] - at) * 1000
        assert delay_ms <= waited_ms < delay_ms + 1000, (delay_ms, waited_ms)
