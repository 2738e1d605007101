"""RabbitMQ at the frame level: coalesced socket writes, and frames queued for aiormq's
writer without aiormq's per-call machinery.

Coalesced writes. aiormq hands every AMQP frame to `transport.write` on its own, and an idle asyncio socket
transport sends each write at once: one `send()` syscall per frame (a publish, an ack, a
confirm each). Under load the profiles of the worker, the dispatcher and the Python client
showed 20-30% of their event loop in that syscall. `connect_robust` gives aiormq a transport
factory (its own extension point) whose transport buffers the writes made during one loop
iteration and sends them with one `write` at the start of the next: the frames of many
messages leave in one syscall, and a lone frame waits one loop turn (microseconds).

Failover. A process is given the URLs of every node of a cluster. `connect_robust` shuffles
them (per process, so a fleet spreads over the nodes) and connects to the first that answers;
afterwards, whenever the connection is lost or a reconnect attempt fails, the next attempt goes
to the next URL of that order. aio-pika's robust connection reconnects to one URL only, but
every loss and every failed attempt passes through its `_on_connection_close`, and each
attempt reads `self.url`: `FailoverConnection` moves `url` along the ring there, so
everything else (channels re-opened, QoS, consumers and queues re-declared, the reconnect
callbacks) is aio-pika's own recovery, unchanged.

Frame writing. aiormq's `basic_publish`, `basic_ack` and friends take a lock, a timeout
scope and a close watcher per call (a third of a reply's cost on the worker's event loop),
and make the caller wait for the confirm. The hot paths (the worker's replies and acks, the
dispatcher's publishes) instead marshal their frames and queue them on the connection's
write queue themselves, keeping aiormq's books (delivery tag, confirmation future, message id
for returns) exactly as `basic_publish` does. That relies on `aiormq.Channel` internals:
`number`, `is_closed`, `publisher_confirms`, `max_content_size`, `write_queue` (one FIFO per
connection, so frames leave in the order they were queued), `delivery_tag`, `confirmations`,
`message_id_delivery_tag`, `create_future`, and `ChannelFrame`. Every use of them is in this
module, and tests/fleet/test_amqp_frames.py pins them against a real broker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from functools import partial
from typing import Any

import aio_pika
import aiormq
import pamqp.frame
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import ChannelFrame
from aiormq.connection import TCPTransportFactory
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from yarl import URL

log = logging.getLogger(__name__)

# One frame's worth of anything aiormq marshals (methods, content headers and bodies).
Frame = Any


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


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection over several broker URLs: after a loss or a failed attempt, the
    next attempt goes to the next URL; with `coalesce`, writes use
    `CoalescingTransportFactory` (plain amqp:// only)."""

    def __init__(
        self, url: URL, *args: Any, urls: Sequence[URL] = (), coalesce: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, *args, **kwargs)
        self.urls: tuple[URL, ...] = tuple(urls) or (self.url,)
        self._at = self.urls.index(self.url) if self.url in self.urls else 0
        if coalesce:
            # self.kwargs is what every (re)connect passes on to aiormq.connect().
            self.kwargs["transport_factory"] = CoalescingTransportFactory()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Called once per lost connection and once per failed attempt (aio-pika's
        # UnderlayConnection.connect reports those here too): the next attempt, which reads
        # self.url, goes to the next node.
        # Rotated after aio-pika's own handling (which only sets the reconnect event: no
        # attempt can start before this returns), so its log line names the lost URL.
        await super()._on_connection_close(closing)
        if len(self.urls) > 1 and not self.close_called and not self.is_closed:
            lost = str(self)
            self._at = (self._at + 1) % len(self.urls)
            self.url = self.urls[self._at]
            log.warning("broker %s lost or unreachable; next attempt: %s", lost, self)


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """Broker URLs from "url,url" or a sequence of them (blanks dropped)."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    return [u.strip() for u in parts if u.strip()]


async def connect_robust(
    urls: str | Sequence[str], *, shuffle: bool = True, timeout: float | None = None,
    **kwargs: Any,
) -> AbstractRobustConnection:
    """A robust connection to the first reachable of `urls` (comma-separated or a sequence;
    tried in an order shuffled per call unless `shuffle` is False) that fails over along that
    order afterwards; coalesced writes for amqp:// URLs. `kwargs` are aio-pika's
    (`client_properties`, `reconnect_interval`...). Raises the last attempt's error when no
    URL answers."""
    order = split_urls(urls)
    if not order:
        raise ValueError("no broker URL given")
    if shuffle:
        random.shuffle(order)
    client_properties = kwargs.pop("client_properties", None)
    # make_url is what aio_pika.connect_robust does to its URL: kwargs join its query.
    ring = [make_url(u, client_properties=client_properties, **kwargs) for u in order]
    coalesce = ring[0].scheme == "amqp"
    error: BaseException | None = None
    for first in range(len(ring)):
        connection = FailoverConnection(
            ring[first], urls=ring[first:] + ring[:first], coalesce=coalesce,
            client_properties=client_properties, **kwargs,
        )
        try:
            await connection.connect(timeout=timeout)
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            error = exc
            await connection.close()
            continue
        return connection
    assert error is not None
    raise error


def send_frames(channel: aiormq.Channel, frames: Sequence[Frame]) -> None:
    """Queue `frames` (acks, nacks, rejects: nothing awaits them) for the connection's writer
    now, behind everything queued before; when its queue is full, a task waits for room."""
    payload = ChannelFrame.marshall(channel_number=channel.number, frames=frames)
    try:
        channel.write_queue.put_nowait(payload)
    except asyncio.QueueFull:  # the writer is behind: wait for room in a task
        task = asyncio.ensure_future(channel.write_queue.put(payload))
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Future[None]] = set()


def queue_publish(
    channel: aiormq.Channel, body: bytes, routing_key: str, properties: spec.Basic.Properties
) -> bool:
    """Queue an unconfirmed publish of a one-frame body to the default exchange, as aiormq's
    `basic_publish(wait=False)` does without publisher confirms. False when this fast path
    does not apply (confirms on, a body needing several frames, a long routing key, the
    writer's queue full): use `basic_publish` then. ChannelInvalidStateError when closed.
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    if (
        channel.publisher_confirms
        or len(body) >= channel.max_content_size
        or len(routing_key) > 255
    ):
        return False
    frames: list[Frame] = [
        spec.Basic.Publish(exchange="", routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    if body:
        frames.append(ContentBody(body))
    return queue_frame(channel, ChannelFrame.marshall(channel_number=channel.number, frames=frames))


def marshal(frame: Frame, channel: aiormq.Channel) -> bytes:
    """One frame's bytes on `channel` (e.g. a `Basic.Publish` to marshal once and reuse)."""
    return pamqp.frame.marshal(frame, channel.number)


def publish_frame(
    channel: aiormq.Channel, method: bytes, body: bytes, properties: spec.Basic.Properties
) -> ChannelFrame:
    """A whole publish as one write: `method` (a `Basic.Publish` marshalled for this channel),
    the content header, and the body cut into frames of the channel's largest size."""
    number = channel.number
    parts = [
        method,
        pamqp.frame.marshal(ContentHeader(body_size=len(body), properties=properties), number),
    ]
    size = channel.max_content_size
    for at in range(0, len(body), size):
        parts.append(pamqp.frame.marshal(ContentBody(body[at:at + size]), number))
    return ChannelFrame(payload=b"".join(parts), should_close=False)


def queue_frame(channel: aiormq.Channel, frame: ChannelFrame) -> bool:
    """Queue `frame` for the connection's writer now; False (nothing queued) when full."""
    try:
        channel.write_queue.put_nowait(frame)
    except asyncio.QueueFull:
        return False
    return True


async def put_frame(channel: aiormq.Channel, frame: ChannelFrame) -> None:
    """Queue `frame` for the connection's writer, waiting for room (bound it with a timeout)."""
    await channel.write_queue.put(frame)


def expect_confirm(channel: aiormq.Channel, message_id: str) -> asyncio.Future[Any]:
    """The confirmation future of the publish just queued on a confirming `channel`, booked
    as aiormq's `basic_publish` books it (settled with `Basic.Ack`, `Basic.Nack` or the
    returned message). Call it with no await since the frame was queued: the broker numbers
    a channel's publishes in the order they reach it, and that is the queue's order."""
    channel.delivery_tag += 1
    tag = channel.delivery_tag
    confirmation = channel.create_future()
    channel.confirmations[tag] = confirmation
    # aiormq matches a returned (unroutable) message to its confirmation by message id.
    channel.message_id_delivery_tag[message_id] = tag
    confirmation.add_done_callback(partial(_forget_message_id, channel, message_id, tag))
    return confirmation


def _forget_message_id(
    channel: aiormq.Channel, message_id: str, tag: int, _: asyncio.Future[Any]
) -> None:
    # What aiormq's basic_publish does once a publish is settled.
    if channel.message_id_delivery_tag.get(message_id) == tag:
        del channel.message_id_delivery_tag[message_id]
