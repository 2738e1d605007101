"""Delayed delivery in RabbitMQ without the delayed-message plugin: a chain of delay levels.

The broker (3.10.8 here) has no delayed exchange, so a delay is spelled out in binary and
walked down a chain of queues whose messages expire, the "delay levels" scheme of
NServiceBus (RabbitMQ transport, delayed delivery v2):

- each level is a topic exchange and a durable quorum queue of one name, whose
  `x-message-ttl` is the level's weight: `<prefix>.delay.<k>` weighs 2**k seconds
  (k = 19 .. 0), then six sub-second levels `<prefix>.delay.<n>ms` weigh 512, 256, 128, 64,
  32 and 16 ms. Each queue dead-letters (`x-dead-letter-strategy: at-least-once`, which
  needs `x-overflow: reject-publish`) to the next lighter level's exchange, keeping the
  message's routing key; the lightest one to the exchange `<prefix>.delay.deliver`.
- The routing key is the delay as one bit per level, heaviest first, one word each, then
  the destination queue's name: `0. ... .1.0.1.0.0.0.0.0.1.<prefix>.invocations`. A level's
  exchange routes a key whose bit is 1 to its queue (the message waits the level's weight
  there) and one whose bit is 0 straight on to the next level's exchange, so a message
  waits exactly the sum of its set bits. It enters at its heaviest set bit.
- `<prefix>.delay.deliver` binds each destination queue with one `*` word per level, then
  the queue's name (`bind_destination`): the exact word count keeps a destination's name
  from matching as the tail of another one's.

Every message of a level queue has that queue's TTL, so the queue's head always expires
first and no message waits behind a later-due one (one queue with per-message TTLs would:
a quorum queue, like a classic one, expires messages at its head only). A delay is rounded
up to a multiple of 16 ms and each queue on the way adds a hop through the broker (a few
ms on an idle broker: see `tests/jobs/bench_flow.py`).

20 second levels hold 2**20 - 1 s (12 days); jobs go at most 7 days ahead
(flotilla.jobstate). Everything is durable and quorum-replicated and every publish is
persistent and confirmed, so a delayed message survives restarts of the broker, the
dispatchers and the workers; with at-least-once dead-lettering a level keeps a message
until the next one confirmed it (a broker failure in between may deliver it twice, never
zero times).

The arithmetic (`DelayChain.hop`, `routing_key`) is pure and table-tested;
`DelayChain.declare` declares the whole chain (idempotent), `bind_destination` one
destination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

LEVELS = 20  # second levels: 2**19 s .. 1 s
SUBSECOND_MS = (512, 256, 128, 64, 32, 16)  # then these
TICK_MS = SUBSECOND_MS[-1]  # delays are rounded up to a multiple of this
MAX_DELAY_S = 2**LEVELS - 1  # 12 days, 3 h, 16 min, 15 s


@dataclass(frozen=True)
class Hop:
    """Where a delayed message is published first: exchange and routing key."""

    exchange: str
    routing_key: str


def bits(delay_ms: int, levels: int = LEVELS) -> list[int]:
    """The bit of each level, heaviest first: `levels` second bits, then the sub-second ones
    of the remainder rounded up to a multiple of TICK_MS (a remainder over 1008 ms cannot
    occur: 999 rounds up to 1008 = 63 ticks)."""
    seconds, remainder_ms = divmod(delay_ms, 1000)
    if not 0 <= seconds < 2**levels:
        raise ValueError(f"a delay can be at most {2**levels - 1} s, not {delay_ms} ms")
    ticks = -(-remainder_ms // TICK_MS)
    return [int(b) for b in format(seconds, f"0{levels}b") + format(ticks, "06b")]


def routing_key(delay_ms: int, destination: str, levels: int = LEVELS) -> str:
    """The level bits of `delay_ms` (one word each, heaviest first), then `destination`."""
    if not destination:
        raise ValueError("a delayed message needs a destination queue")
    return ".".join(str(b) for b in bits(delay_ms, levels)) + "." + destination


def level_pattern(position: int, bit: str, count: int) -> str:
    """The binding key matching keys whose bit at `position` (0: heaviest) is `bit`."""
    return ".".join(["*"] * position + [bit, "#"])


def destination_pattern(destination: str, count: int) -> str:
    """The delivery exchange's binding key for `destination`: `count` words, then its name."""
    return ".".join(["*"] * count) + "." + destination


@dataclass(frozen=True)
class DelayChain:
    """The delay levels of one prefix: names, arguments, declaration, first hops."""

    prefix: str = "flotilla"
    quorum_size: int = 0  # as Topology.quorum_size: every declarer must repeat it
    levels: int = LEVELS

    def weights_ms(self) -> tuple[int, ...]:
        """Each level's TTL, heaviest first (its position in the routing key)."""
        return (*(2**k * 1000 for k in reversed(range(self.levels))), *SUBSECOND_MS)

    def level(self, position: int) -> str:
        """Name of the exchange and queue at `position` (0: heaviest)."""
        weight = self.weights_ms()[position]
        if weight >= 1000:
            return f"{self.prefix}.delay.{(weight // 1000).bit_length() - 1}"
        return f"{self.prefix}.delay.{weight}ms"

    @property
    def deliver(self) -> str:
        """The exchange the last level hands messages to their destinations through."""
        return f"{self.prefix}.delay.deliver"

    @property
    def count(self) -> int:
        """How many levels (and words of bits in a routing key)."""
        return self.levels + len(SUBSECOND_MS)

    def queue_names(self) -> tuple[str, ...]:
        """Every queue of the chain."""
        return tuple(self.level(i) for i in range(self.count))

    def exchange_names(self) -> tuple[str, ...]:
        """Every exchange of the chain."""
        return (*self.queue_names(), self.deliver)

    def level_arguments(self, position: int) -> dict[str, Any]:
        """`x-` arguments of the queue at `position`."""
        lighter = self.level(position + 1) if position + 1 < self.count else self.deliver
        args: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-message-ttl": self.weights_ms()[position],
            "x-dead-letter-exchange": lighter,
            # Held until the next hop confirmed it (needs reject-publish): never dropped.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if self.quorum_size:
            args["x-quorum-initial-group-size"] = self.quorum_size
        return args

    def hop(self, delay_ms: int, destination: str) -> Hop:
        """Where to publish a message due at `destination` in `delay_ms` (> 0)."""
        if delay_ms <= 0:
            raise ValueError(f"a delayed message needs delay_ms > 0, not {delay_ms}")
        key = routing_key(delay_ms, destination, self.levels)
        first = bits(delay_ms, self.levels).index(1)  # delay_ms > 0 sets one
        return Hop(self.level(first), key)

    async def declare(self, channel: AbstractChannel, destinations: tuple[str, ...] = ()) -> None:
        """Declare the chain (idempotent), lightest level first, and bind `destinations`."""
        topic = aio_pika.ExchangeType.TOPIC
        lighter = await channel.declare_exchange(self.deliver, topic, durable=True)
        for position in reversed(range(self.count)):
            name = self.level(position)
            exchange = await channel.declare_exchange(name, topic, durable=True)
            queue = await channel.declare_queue(
                name, durable=True, arguments=self.level_arguments(position)
            )
            await queue.bind(exchange, level_pattern(position, "1", self.count))
            await lighter.bind(exchange, level_pattern(position, "0", self.count))
            lighter = exchange
        for destination in destinations:
            await self.bind_destination(channel, destination)

    async def bind_destination(self, channel: AbstractChannel, queue: str) -> None:
        """Let delayed messages reach `queue` (idempotent; the queue must exist)."""
        underlay = await channel.get_underlay_channel()
        await underlay.queue_bind(queue, self.deliver, destination_pattern(queue, self.count))

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete the chain's queues and exchanges (tests and teardown)."""
        for name in self.queue_names():
            await channel.queue_delete(name)
        for name in self.exchange_names():
            await channel.exchange_delete(name)
