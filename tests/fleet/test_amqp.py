"""Coalesced socket writes of AMQP connections (`flotilla.amqp`)."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from flotilla.amqp import (
    CoalescingTransportFactory,
    FailoverConnection,
    coalesce_writes,
    connect_robust,
)


class RecordingTransport(asyncio.WriteTransport):
    """Records each write that reaches the "socket"."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

async def test_writes_of_one_loop_turn_leave_in_one_write_in_order() -> None:
    transport = RecordingTransport()
    coalesce_writes(transport)
    transport.write(b"a")
    transport.write(b"b")
    transport.write(memoryview(b"c"))
    assert transport.sent == []
    await asyncio.sleep(0)  # one loop turn: the flush runs
    assert transport.sent == [b"abc"]
    transport.write(b"d")
    await asyncio.sleep(0)
    assert transport.sent == [b"abc", b"d"]

async def test_close_flushes_pending_writes_first() -> None:
    transport = RecordingTransport()
    coalesce_writes(transport)
    transport.write(b"close-frame")
    transport.close()
    assert transport.sent == [b"close-frame"] and transport.closed
    await asyncio.sleep(0)
    assert transport.sent == [b"close-frame"]  # nothing sent twice

@pytest.mark.integration
async def test_connection_round_trips_through_rabbitmq(amqp_url: str, unique: str) -> None:
    connection = await connect_robust(amqp_url, client_properties={"connection_name": unique})
    assert isinstance(connection, FailoverConnection)
    assert isinstance(connection.kwargs["transport_factory"], CoalescingTransportFactory)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)

        for i in range(20):
            await channel.default_exchange.publish(
                aio_pika.Message(str(i).encode()), routing_key=queue.name
            )
        got = []
        async with queue.iterator() as it:
            async for message in it:
                got.append(message.body)
                await message.ack()
                if len(got) == 20:
                    break
        assert got == [str(i).encode() for i in range(20)]
