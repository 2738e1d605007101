"""The baseline: a bare aio-pika RPC echo (publish with reply_to + correlation id, a consumer
that replies), measured in the same run as Flotilla so ratios are meaningful on a noisy machine.

`python -m loadtest.bare_echo serve AMQP_URL QUEUE` runs the echo server (a separate process,
as a worker would be); `BareEchoClient` is the caller side.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Self

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def serve(amqp_url: str, queue_name: str, ready: asyncio.Event | None = None) -> None:
    """Consume `queue_name` and echo each body to its reply_to queue until cancelled."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=128)
        queue = await channel.declare_queue(queue_name, auto_delete=True)
        exchange = channel.default_exchange

        async def on_message(message: AbstractIncomingMessage) -> None:
            await exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )
            await message.ack()

        await queue.consume(on_message)
        if ready is not None:
            ready.set()
        print("ready", flush=True)
        await asyncio.Future()


class BareEchoClient:
    """Request/reply over one channel and one exclusive reply queue, futures by correlation id."""

    def __init__(self, amqp_url: str, queue_name: str) -> None:
        self.amqp_url = amqp_url
        self.queue_name = queue_name
        self.futures: dict[str, asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> Self:
        self.connection = await aio_pika.connect_robust(self.amqp_url)
        self.channel = await self.connection.channel()
        self.reply_queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.reply_queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self.futures.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, body: bytes = b"ping") -> bytes:
        """One round trip."""
        cid = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.futures[cid] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, correlation_id=cid, reply_to=self.reply_queue.name),
            routing_key=self.queue_name,
        )
        return await future


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "serve":
        print("usage: python -m loadtest.bare_echo serve AMQP_URL QUEUE", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(serve(sys.argv[2], sys.argv[3]))
    except KeyboardInterrupt:
        pass
