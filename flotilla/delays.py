"""Delayed delivery in RabbitMQ without the delayed-message plugin: a chain of delay levels.

The broker (3.10.8 here) has no delayed exchange, so a delay is spelled out in binary and
walked down a chain of queues whose messages expire, the "delay levels" scheme of
NServiceBus (RabbitMQ transport, delayed delivery v2):

- level k (0 <= k < LEVELS) is a topic exchange `<prefix>.delay.<k>` and a durable quorum
  queue of the same name with `x-message-ttl = 2**k` seconds. The queue dead-letters
  (`x-dead-letter-strategy: at-least-once`, which needs `x-overflow: reject-publish`) to
  the exchange of level k - 1, keeping the message's routing key; level 0's dead-letters to
  the exchange `<prefix>.delay.deliver`.
- The routing key is the delay in whole seconds as LEVELS bits, most significant first,
  one word each, then the destination queue's name: `0.0. ... .1.0.1.<prefix>.invocations`.
  Exchange k routes a key whose bit k is 1 to its queue (the message waits 2**k s there)
  and one whose bit k is 0 straight on to exchange k - 1; so a message waits exactly the
  sum of its set bits. It enters at the level of its highest set bit.
- `<prefix>.delay.deliver` binds each destination queue with LEVELS `*` words then the
  queue's name (`bind_destination`): the exact word count keeps a destination's name from
  matching as the tail of another one's.
- Sub-second remainders go first through `<prefix>.delay.fine`, one quorum queue with a
  per-message `expiration` (the remainder, < 1 s) that dead-letters into the top level's
  exchange. Messages of that queue expire at its head only, so one with a short remainder
  queued behind a longer one waits for it: a delay is late by less than 1 s at most (and
  by nothing when remainders arrive in increasing order). Whole seconds have no such
  effect: every message of a level queue has that queue's TTL, so its head expires first.

20 levels hold 2**20 - 1 s (12 days); jobs go at most 7 days ahead (flotilla.jobstate).
Everything is durable and quorum-replicated and every publish is persistent and
confirmed, so a delayed message survives restarts of the broker, the dispatchers and the
workers; with at-least-once dead-lettering a level keeps a message until the next one
confirmed it (a broker failure in between may deliver it twice, never zero times).

The arithmetic (`hop`, `routing_key`) is pure and table-tested; `DelayChain.declare`
declares the whole chain (idempotent), `bind_destination` one destination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

LEVELS = 20
MAX_DELAY_S = 2**LEVELS - 1  # 12 days, 3 h, 16 min, 15 s


@dataclass(frozen=True)
class Hop:
    """Where a delayed message is published first: exchange, routing key and, for a
    sub-second remainder, the per-message `expiration` (milliseconds, as AMQP text)."""

    exchange: str
    routing_key: str
    expiration: str | None = None


def routing_key(delay_s: int, destination: str, levels: int = LEVELS) -> str:
    """`delay_s` as `levels` bits (most significant first, one word each), then `destination`."""
    if not 0 <= delay_s < 2**levels:
        raise ValueError(f"a delay must be 0 to {2**levels - 1} s, not {delay_s}")
    if not destination:
        raise ValueError("a delayed message needs a destination queue")
    bits = format(delay_s, f"0{levels}b")
    return ".".join(bits) + "." + destination


def level_pattern(level: int, bit: str, levels: int = LEVELS) -> str:
    """The binding key that matches keys whose bit `level` is `bit` ("0" or "1")."""
    return ".".join(["*"] * (levels - 1 - level) + [bit, "#"])


def destination_pattern(destination: str, levels: int = LEVELS) -> str:
    """The delivery exchange's binding key for `destination`: `levels` words, then its name."""
    return ".".join(["*"] * levels) + "." + destination


@dataclass(frozen=True)
class DelayChain:
    """The delay levels of one prefix: names, arguments, declaration, first hops."""

    prefix: str = "flotilla"
    quorum_size: int = 0  # as Topology.quorum_size: every declarer must repeat it
    levels: int = LEVELS

    def level(self, k: int) -> str:
        """Name of level k's exchange and queue."""
        return f"{self.prefix}.delay.{k}"

    @property
    def fine(self) -> str:
        """Name of the sub-second stage's exchange and queue."""
        return f"{self.prefix}.delay.fine"

    @property
    def deliver(self) -> str:
        """The exchange the last level hands messages to their destinations through."""
        return f"{self.prefix}.delay.deliver"

    def queue_names(self) -> tuple[str, ...]:
        """Every queue of the chain."""
        return (*(self.level(k) for k in range(self.levels)), self.fine)

    def exchange_names(self) -> tuple[str, ...]:
        """Every exchange of the chain."""
        return (*(self.level(k) for k in range(self.levels)), self.fine, self.deliver)

    def _quorum(self, dead_letter_exchange: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": dead_letter_exchange,
            # Held until the next hop confirmed it (needs reject-publish): never dropped.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if self.quorum_size:
            args["x-quorum-initial-group-size"] = self.quorum_size
        return args

    def level_arguments(self, k: int) -> dict[str, Any]:
        """`x-` arguments of level k's queue."""
        below = self.level(k - 1) if k > 0 else self.deliver
        return {**self._quorum(below), "x-message-ttl": 2**k * 1000}

    def fine_arguments(self) -> dict[str, Any]:
        """`x-` arguments of the sub-second stage (each message carries its expiration)."""
        return self._quorum(self.level(self.levels - 1))

    def hop(self, delay_ms: int, destination: str) -> Hop:
        """Where to publish a message due at `destination` in `delay_ms` (> 0)."""
        if delay_ms <= 0:
            raise ValueError(f"a delayed message needs delay_ms > 0, not {delay_ms}")
        seconds, remainder_ms = divmod(delay_ms, 1000)
        if seconds > MAX_DELAY_S or seconds >= 2**self.levels:
            raise ValueError(
                f"a delay can be at most {2**self.levels - 1} s, not {math.ceil(delay_ms / 1000)} s"
            )
        key = routing_key(seconds, destination, self.levels)
        if remainder_ms:
            return Hop(self.fine, key, str(remainder_ms))
        return Hop(self.level(seconds.bit_length() - 1), key)

    async def declare(self, channel: AbstractChannel, destinations: tuple[str, ...] = ()) -> None:
        """Declare the chain (idempotent), bottom up, and bind `destinations`."""
        topic = aio_pika.ExchangeType.TOPIC
        deliver = await channel.declare_exchange(self.deliver, topic, durable=True)
        below = deliver
        for k in range(self.levels):
            exchange = await channel.declare_exchange(self.level(k), topic, durable=True)
            queue = await channel.declare_queue(
                self.level(k), durable=True, arguments=self.level_arguments(k)
            )
            await queue.bind(exchange, level_pattern(k, "1", self.levels))
            await below.bind(exchange, level_pattern(k, "0", self.levels))
            below = exchange
        fine = await channel.declare_exchange(self.fine, topic, durable=True)
        fine_queue = await channel.declare_queue(
            self.fine, durable=True, arguments=self.fine_arguments()
        )
        await fine_queue.bind(fine, "#")
        for destination in destinations:
            await self.bind_destination(channel, destination)

    async def bind_destination(self, channel: AbstractChannel, queue: str) -> None:
        """Let delayed messages reach `queue` (idempotent; the queue must exist)."""
        underlay = await channel.get_underlay_channel()
        await underlay.queue_bind(queue, self.deliver, destination_pattern(queue, self.levels))

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete the chain's queues and exchanges (tests and teardown)."""
        for name in self.queue_names():
            await channel.queue_delete(name)
        for name in self.exchange_names():
            await channel.exchange_delete(name)
