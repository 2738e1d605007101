"""RabbitMQ connections whose socket writes are coalesced per event-loop iteration.

aiormq hands every AMQP frame to `transport.write` on its own, and an idle asyncio socket
transport sends each write at once: one `send()` syscall per frame (a publish, an ack, a
confirm each). Under load the profiles of the worker, the dispatcher and the Python client
showed 20-30% of their event loop in that syscall. `connect_robust` gives aiormq a transport
factory (its own extension point) whose transport buffers the writes made during one loop
iteration and sends them with one `write` at the start of the next: the frames of many
messages leave in one syscall, and a lone frame waits one loop turn (microseconds).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aiormq.connection import TCPTransportFactory
from yarl import URL


def coalesce_writes(transport: asyncio.WriteTransport) -> None:
    """Make `transport.write` buffer until the loop's next turn; `close` flushes first."""
    loop = asyncio.get_running_loop()
    raw_write = transport.write
    raw_close = transport.close
    chunks: list[bytes] = []

    def flush() -> None:
        if not chunks:
            return
        data = b"".join(chunks)
        chunks.clear()
        if not transport.is_closing():
            raw_write(data)

    def write(data: bytes | bytearray | memoryview) -> None:
        if not chunks:
            loop.call_soon(flush)
        chunks.append(bytes(data))

    def close() -> None:
        flush()
        raw_close()

    # Instance attributes shadow the class's methods: StreamWriter calls these.
    transport.write = write  # type: ignore[method-assign]
    transport.close = close  # type: ignore[method-assign]


class CoalescingTransportFactory(TCPTransportFactory):
    """aiormq's plain TCP transport factory, with `coalesce_writes` applied."""

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the TCP connection and coalesce its writes."""
        reader, writer = await super().create(url, **kwargs)
        coalesce_writes(writer.transport)  # type: ignore[arg-type]
        return reader, writer


class CoalescingRobustConnection(aio_pika.RobustConnection):
    """A robust connection whose (re)connects use `CoalescingTransportFactory`."""

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        # self.kwargs is what every (re)connect passes on to aiormq.connect().
        self.kwargs["transport_factory"] = CoalescingTransportFactory()


async def connect_robust(url: str, **kwargs: Any) -> AbstractRobustConnection:
    """`aio_pika.connect_robust` with coalesced writes (plain amqp:// URLs; amqps:// as is)."""
    if URL(url).scheme != "amqp":
        return await aio_pika.connect_robust(url, **kwargs)
    return await aio_pika.connect_robust(
        url, connection_class=CoalescingRobustConnection, **kwargs
    )
