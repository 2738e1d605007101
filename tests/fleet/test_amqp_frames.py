"""Frame writing in `flotilla.amqp` against a real RabbitMQ: the aiormq internals it uses are
where it expects them, and what it queues is what the broker takes (publishes delivered,
confirms and nacks and returns reaching the right futures, acks settling deliveries)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec
from pamqp import frame as pamqp_frame

from flotilla import amqp


@pytest.fixture
async def connection(amqp_url: str, unique: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A coalescing robust connection named after the test."""
    conn = await amqp.connect_robust(amqp_url, client_properties={"connection_name": unique})
    async with conn:
        yield conn


async def _channel(
    connection: aio_pika.abc.AbstractRobustConnection, *, confirms: bool
) -> tuple[aio_pika.abc.AbstractChannel, aiormq.Channel]:
    channel = await connection.channel(publisher_confirms=confirms)
    return channel, cast(aiormq.Channel, await channel.get_underlay_channel())


async def _get(channel: aiormq.Channel, queue: str) -> DeliveredMessage:
    """The next message of `queue` (waiting for it to arrive)."""
    for _ in range(200):
        got = await channel.basic_get(queue, no_ack=True)
        if got.delivery is not None and isinstance(got.delivery, spec.Basic.GetOk):
            return got
        await asyncio.sleep(0.01)  # basic_get does not wait: poll briefly
    raise AssertionError(f"nothing arrived in {queue}")


@pytest.mark.integration
async def test_aiormq_channel_has_the_internals_the_helpers_use(
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    _, confirmed = await _channel(connection, confirms=True)
    _, plain = await _channel(connection, confirms=False)
    for ch in (confirmed, plain):
        assert isinstance(ch, aiormq.Channel)
        assert isinstance(ch.number, int) and ch.number > 0
        assert ch.is_closed is False
        assert isinstance(ch.write_queue, asyncio.Queue)
        assert isinstance(ch.max_content_size, int) and ch.max_content_size > 0
        assert isinstance(ch.delivery_tag, int)
        assert isinstance(ch.confirmations, dict)
        assert isinstance(ch.message_id_delivery_tag, dict)
        assert isinstance(ch.create_future(), asyncio.Future)
    assert (confirmed.publisher_confirms, plain.publisher_confirms) == (True, False)
    frame = ChannelFrame(payload=b"x", should_close=False)
    assert (frame.payload, frame.should_close, frame.should_drain) == (b"x", False, False)


@pytest.mark.integration
async def test_queue_publish_is_delivered_with_its_properties(
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    aio_channel, ch = await _channel(connection, confirms=False)
    queue = await aio_channel.declare_queue(exclusive=True, auto_delete=True)
    props = spec.Basic.Properties(correlation_id="c1", message_id="m1", delivery_mode=1)
    assert amqp.queue_publish(ch, b"reply", queue.name, props)
    assert amqp.queue_publish(ch, b"", queue.name, props)  # no body frame at all
    first, second = await _get(ch, queue.name), await _get(ch, queue.name)
    assert (first.body, first.header.properties.correlation_id) == (b"reply", "c1")
    assert (second.body, second.header.properties.message_id) == (b"", "m1")
    # Where the fast path does not apply, nothing is queued and the caller is told so.
    too_big = b"x" * ch.max_content_size
    assert not amqp.queue_publish(ch, too_big, queue.name, props)
    assert not amqp.queue_publish(ch, b"x", "q" * 256, props)
    _, confirmed = await _channel(connection, confirms=True)
    assert not amqp.queue_publish(confirmed, b"x", queue.name, props)


@pytest.mark.integration
async def test_confirmed_publishes_interleaved_with_aiormqs_own_stay_in_step(
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    # Given a confirming channel used by the helpers and by aiormq's basic_publish in turn
    aio_channel, ch = await _channel(connection, confirms=True)
    queue = await aio_channel.declare_queue(exclusive=True, auto_delete=True)
    method = amqp.marshal(
        spec.Basic.Publish(exchange="", routing_key=queue.name, mandatory=True), ch
    )
    big = bytes(range(256)) * (ch.max_content_size // 128)  # three body frames
    ours: list[asyncio.Future[Any]] = []
    theirs = []
    for i in range(5):
        props = spec.Basic.Properties(message_id=f"ours-{i}", delivery_mode=2)
        assert amqp.queue_frame(ch, amqp.publish_frame(ch, method, big + bytes([i]), props))
        ours.append(amqp.expect_confirm(ch, f"ours-{i}"))
        theirs.append(await ch.basic_publish(b"theirs", routing_key=queue.name))
    # Then every confirm is an ack for the publish it books (tags in step with the broker)
    confirms = [*await asyncio.gather(*ours), *theirs]
    assert all(isinstance(c, spec.Basic.Ack) for c in confirms), confirms
    # and the message ids are forgotten once settled, as basic_publish does
    assert not any(k.startswith("ours-") for k in ch.message_id_delivery_tag)
    bodies = [(await _get(ch, queue.name)).body for _ in range(10)]
    assert bodies[0::2] == [big + bytes([i]) for i in range(5)]
    assert bodies[1::2] == [b"theirs"] * 5


@pytest.mark.integration
async def test_nack_and_return_reach_their_confirmations(
    connection: aio_pika.abc.AbstractRobustConnection, unique: str
) -> None:
    aio_channel, ch = await _channel(connection, confirms=True)
    full = await aio_channel.declare_queue(
        exclusive=True, auto_delete=True,
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    )
    results: list[Any] = []
    for routing_key, mid in ((full.name, "a"), (full.name, "b"), (f"{unique}-nowhere", "c")):
        method = amqp.marshal(
            spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True), ch
        )
        props = spec.Basic.Properties(message_id=mid)
        assert amqp.queue_frame(ch, amqp.publish_frame(ch, method, b"x", props))
        try:
            results.append(await amqp.expect_confirm(ch, mid))
        except aiormq.exceptions.DeliveryError as exc:  # how aiormq settles a nack
            results.append(exc.frame)
    accepted, refused, unroutable = results
    assert isinstance(accepted, spec.Basic.Ack)
    assert isinstance(refused, spec.Basic.Nack)  # the queue is full
    # A returned (unroutable) publish: settled with the returned message (or its frame)
    assert isinstance(unroutable, (spec.Basic.Return, DeliveredMessage))
    assert ch.message_id_delivery_tag == {}


@pytest.mark.integration
async def test_sent_acks_settle_deliveries_and_keep_the_channel_open(
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    aio_channel, ch = await _channel(connection, confirms=False)
    queue = await aio_channel.declare_queue(exclusive=True, auto_delete=True)
    for i in range(3):
        assert amqp.queue_publish(ch, b"%d" % i, queue.name, spec.Basic.Properties())
    tags = []
    for _ in range(3):
        for _ in range(200):
            got = await ch.basic_get(queue.name, no_ack=False)
            if isinstance(got.delivery, spec.Basic.GetOk):
                tags.append(got.delivery.delivery_tag)
                break
            await asyncio.sleep(0.01)
    assert len(tags) == 3
    # One multiple ack for the first two, a reject of the third: each tag settled once.
    amqp.send_frames(ch, (spec.Basic.Ack(delivery_tag=tags[1], multiple=True),))
    amqp.send_frames(ch, (spec.Basic.Reject(delivery_tag=tags[2], requeue=False),))
    declared = await ch.queue_declare(queue.name, passive=True)  # a round trip after them
    assert not ch.is_closed  # no PRECONDITION_FAILED: every tag was outstanding
    assert (declared.message_count, declared.consumer_count) == (0, 0)
    await aio_channel.close()
    check, _ = await _channel(connection, confirms=False)
    again = await check.declare_queue(queue.name, passive=True)
    assert again.declaration_result.message_count == 0  # nothing went back to the queue


class _FullWriter:
    """`number` and a `write_queue` of one slot: what `send_frames` touches."""

    def __init__(self) -> None:
        self.number = 3
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=1)


async def test_send_frames_waits_for_room_in_a_task_when_the_writer_is_behind() -> None:
    channel = _FullWriter()
    ch = cast(aiormq.Channel, channel)
    amqp.send_frames(ch, (spec.Basic.Ack(delivery_tag=1),))
    amqp.send_frames(ch, (spec.Basic.Ack(delivery_tag=2),))  # full: queued by a task
    first = await channel.write_queue.get()  # room: the task puts the second
    second = await asyncio.wait_for(channel.write_queue.get(), 5)
    decoded = [pamqp_frame.unmarshal(f.payload) for f in (first, second)]
    assert [(n, f.delivery_tag) for _, n, f in decoded] == [(3, 1), (3, 2)]
    # queue_frame never waits: True while there is room, False (nothing queued) when full.
    assert amqp.queue_frame(ch, first)
    assert not amqp.queue_frame(ch, second)
    assert channel.write_queue.qsize() == 1 and channel.write_queue.get_nowait() is first
