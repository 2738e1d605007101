"""How a dispatcher hands envelopes to workers: the `Transport` protocol and `AmqpTransport`.

A transport does three things:

- `call(envelope, timeout) -> Reply`: publish a synchronous invocation to the sync lane and
  wait for its reply on the caller's own reply queue, matched by correlation id;
- `submit(envelope, delay_ms=0)`: publish a job to its function's job lane
  (publisher-confirmed: once it returns, the broker has it; the lane is declared by the
  transport's first job of the function, so a job is never published to a queue that does
  not exist); a delayed one goes into the delay chain (flotilla/delays.py), which hands it
  to the lane when due;
- `consume_job_results(handler, on_started)`: feed job replies to an async callback (and
  workers' `Started` notices to `on_started`); a result is acked only after the callback
  returned, so it survives a dispatcher dying mid-way.

Publishing errors are typed: `QueueFull` (the lane is at `x-max-length` and rejected the
publish) and `BrokerUnavailable` (no connection); both become 503 upstream.
`CallTimeout` means no reply came in time (504 upstream).

`flotilla/dev/memory.py` implements the same protocol in-process for dev mode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, Self, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import ChannelFrame

from flotilla import amqp
from flotilla.delays import Hop
from flotilla.envelope import (
    REPLY_JOB,
    REPLY_QUEUE,
    RETRYING_TYPE,
    STARTED_TYPE,
    Envelope,
    EnvelopeError,
    Reply,
    Retrying,
    Started,
    now_ms,
)
from flotilla.errors import FlotillaError
from flotilla.topology import RECONNECT_INTERVAL_S, Topology, message_ttl_ms

log = logging.getLogger(__name__)

JobResultHandler = Callable[[Reply], Awaitable[None]]
JobStartedHandler = Callable[[Started], Awaitable[None]]
JobRetryingHandler = Callable[[Retrying], Awaitable[None]]


class TransportError(FlotillaError):
    """Base class of the errors a transport raises."""


class BrokerUnavailable(TransportError):
    """The broker cannot be reached (or the connection broke while publishing); retry later."""


class QueueFull(TransportError):
    """The lane (sync or the function's job queue) is full and rejected the envelope; retry
    later."""


class Unroutable(BrokerUnavailable):
    """The lane the envelope was published to does not exist (the broker returned it)."""


class CallTimeout(TransportError):
    """No reply arrived within the caller's timeout (the invocation may still run)."""


class Transport(Protocol):
    """What the dispatcher (and the Python client) need from a message transport."""

    @property
    def reply_queue_name(self) -> str:
        """The queue this transport's calls are answered on (fixed for its lifetime): an
        envelope built with it as `reply_to` goes out as it is, without a copy."""

    @property
    def is_connected(self) -> bool:
        """True while envelopes can be published (started, and the connection is open)."""

    async def start(self) -> None:
        """Connect and declare what is needed; call once before anything else."""

    async def close(self) -> None:
        """Fail pending calls with BrokerUnavailable and release connections."""

    async def call(self, envelope: Envelope, timeout: float) -> Reply:
        """Run `envelope` synchronously; its `reply_to` is replaced by this transport's own."""

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        """Queue `envelope` as a job (reply mode must be "job"), due in `delay_ms`; returns
        once accepted."""

    async def consume_job_results(
        self, handler: JobResultHandler, on_started: JobStartedHandler | None = None,
        on_retrying: JobRetryingHandler | None = None,
    ) -> None:
        """Start feeding job replies to `handler` (each acked after `handler` returns),
        workers' notices that a job started to `on_started` and that it will be retried to
        `on_retrying`."""


class AmqpTransport:
    """`Transport` over RabbitMQ: one robust connection, one confirmed publishing channel,
    one exclusive reply queue per transport, futures keyed by correlation id."""

    def __init__(
        self,
        amqp_url: str | Sequence[str],
        topology: Topology,
        *,
        connection_name: str = "flotilla-dispatcher",
        declare: bool = True,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self._url = amqp_url
        self._publish_timeout = publish_timeout_s
        self._topology = topology
        self._connection_name = connection_name
        self._declare = declare
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._job_channel: AbstractChannel | None = None
        self._futures: dict[str, asyncio.Future[Reply]] = {}
        self._publisher: aiormq.Channel | None = None  # the confirmed channel's aiormq channel
        # Basic.Publish frames marshalled once per route, for the channel numbered first.
        self._method_frames: tuple[int, dict[str, bytes]] = (-1, {})
        # Job lanes this transport declared (a job's publish would be unroutable before).
        self._job_lanes: set[str] = set()
        # A stable name, so the robust connection re-declares the same queue after a reconnect.
        self.reply_queue_name = f"{topology.prefix}.reply.{uuid.uuid4().hex}"
        self.stray_replies = 0
        self.malformed_replies = 0

    async def start(self) -> None:
        """Connect, declare the topology (unless told not to) and the reply queue."""
        try:
            self._connection = await amqp.connect_robust(
                self._url,
                client_properties={"connection_name": self._connection_name},
                reconnect_interval=RECONNECT_INTERVAL_S,
            )
            self._channel = await self._connection.channel(publisher_confirms=True)
            if self._declare:
                await self._declare_topology()
            reply_channel: AbstractRobustChannel = await self._connection.channel(
                publisher_confirms=False
            )
            self._reply_queue = await reply_channel.declare_queue(
                self.reply_queue_name, exclusive=True, auto_delete=True
            )
            # Replies are consumed on the aiormq channel itself (no aio-pika message or task
            # per reply); aio-pika re-declares the queue after a reconnect, then this
            # callback consumes it again on the new channel.
            reply_channel.reopen_callbacks.add(self._consume_replies)  # type: ignore[arg-type]
            await self._consume_replies(reply_channel)
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError) as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc}") from exc

    async def _declare_topology(self) -> None:
        """Declare the topology; a sync lane that exists with other arguments (another
        FLOTILLA_SYNC_LANE: a Python client does not know the deployment's) is used as it
        is, with a warning: publishing to it works whatever its type."""
        assert self._connection is not None and self._channel is not None
        try:
            await self._topology.declare(self._channel)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            if self._topology.sync not in str(exc):
                raise
            log.warning("the sync lane %s exists with other arguments than this process's "
                        "(FLOTILLA_SYNC_LANE=%s, queue max length, quorum size): using it as "
                        "it is; set them as the deployment's", self._topology.sync,
                        self._topology.sync_lane)
            self._channel = await self._connection.channel(publisher_confirms=True)
            await self._topology.declare(self._channel, adopt_sync=True)

    async def _consume_replies(self, channel: AbstractRobustChannel) -> None:
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(self.reply_queue_name, self._on_reply, no_ack=True)

    async def close(self) -> None:
        """Fail pending calls, then close the connection."""
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable("transport closed"))
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, envelope: Envelope, timeout: float) -> Reply:
        """Publish with reply_to + correlation id, then await the matching reply."""
        if envelope.reply_mode != REPLY_QUEUE or envelope.reply_to != self.reply_queue_name:
            envelope = dataclasses.replace(
                envelope, reply_mode=REPLY_QUEUE, reply_to=self.reply_queue_name
            )
        cid = envelope.correlation_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fut: asyncio.Future[Reply] = loop.create_future()
        self._futures[cid] = fut
        timer = None
        try:
            # One deadline over both steps: a confirm that never comes (a silent network
            # partition) must not hold the caller longer than the reply could.
            try:
                confirmation = await self._send(envelope, deadline)
            except TimeoutError:
                raise self._unconfirmed("invocation", envelope, timeout) from None
            # The caller waits for the reply only: the confirm settles `fut` when it is a
            # refusal, and the timer when neither came in time.
            confirmation.add_done_callback(partial(_on_confirmed, fut))
            timer = loop.call_at(deadline, self._expire, fut, confirmation, envelope, timeout)
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._futures.pop(cid, None)

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        """Publish a job envelope to its function's job lane and wait (up to
        `publish_timeout_s`) for the broker's confirm."""
        if envelope.reply_mode != REPLY_JOB:
            raise ValueError("submit() needs an envelope with reply_mode='job'")
        lane = self._topology.job_queue(envelope.function)
        # Delayed: into the delay chain (flotilla/delays.py), which hands it to the lane.
        hop = self._topology.delays.hop(delay_ms, lane) if delay_ms > 0 else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        for again in (True, False):
            try:
                if lane not in self._job_lanes:
                    async with asyncio.timeout_at(deadline):
                        await self._declare_jobs(envelope.function)
                confirmation = await self._send(envelope, deadline, hop)
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(confirmation)
            except TimeoutError:
                raise self._unconfirmed("job", envelope, self._publish_timeout) from None
            except Exception as exc:
                raise _publish_error(exc) from exc
            if (error := _refusal(confirmation.result())) is None:
                return
            if not (again and isinstance(error, Unroutable)):
                raise error
            # The lane was deleted since this transport declared it: declare it again.
            self._job_lanes.discard(lane)

    async def _declare_jobs(self, function: str) -> None:
        """Declare `function`'s job lane on a channel of its own (a refused declare closes
        its channel: it must not be the publishing one)."""
        if self._connection is None:
            raise BrokerUnavailable("transport not started")
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await self._topology.declare_jobs(channel, function)
        finally:
            if not channel.is_closed:
                await channel.close()
        self._job_lanes.add(self._topology.job_queue(function))

    def _expire(
        self, fut: asyncio.Future[Reply], confirmation: asyncio.Future[Any], envelope: Envelope,
        timeout: float,
    ) -> None:
        if fut.done():
            return
        if not confirmation.done():
            fut.set_exception(self._unconfirmed("invocation", envelope, timeout))
            return
        fut.set_exception(
            CallTimeout(f"no reply for invocation {envelope.invocation_id} within {timeout:.3f}s")
        )

    @staticmethod
    def _unconfirmed(what: str, envelope: Envelope, timeout: float) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"the broker did not confirm {what} {envelope.invocation_id} within {timeout:.3f}s"
        )

    async def consume_job_results(
        self, handler: JobResultHandler, on_started: JobStartedHandler | None = None,
        on_retrying: JobRetryingHandler | None = None,
    ) -> None:
        """Consume the durable job-results queue on a channel of its own."""
        if self._connection is None:
            raise BrokerUnavailable("transport not started")
        self._job_channel = await self._connection.channel()
        await self._job_channel.set_qos(prefetch_count=64)
        queue = await self._job_channel.declare_queue(
            self._topology.job_results,
            durable=True,
            arguments=self._topology.job_result_arguments(),
        )

        async def on_message(message: AbstractIncomingMessage) -> None:
            if message.type == STARTED_TYPE:
                await _on_notice(message, Started.decode, on_started)
                return
            if message.type == RETRYING_TYPE:
                await _on_notice(message, Retrying.decode, on_retrying)
                return
            try:
                reply = Reply.decode(message.body)
            except EnvelopeError as exc:
                log.warning("dropping malformed job result to the DLQ: %s", exc)
                await message.reject(requeue=False)
                return
            try:
                await handler(reply)
            except Exception:
                # Requeued; the queue's delivery limit parks a result that always fails.
                log.exception("job result handler failed for %s", reply.invocation_id)
                await message.nack(requeue=True)
                return
            await message.ack()

        await queue.consume(on_message)

    @property
    def is_connected(self) -> bool:
        """True while the broker connection is open (False before start and after close)."""
        return self._connection is not None and not self._connection.is_closed

    @property
    def connection(self) -> AbstractRobustConnection | None:
        """The robust connection (e.g. to watch `reconnect_callbacks`); None before start."""
        return self._connection

    @property
    def pending(self) -> int:
        """Calls waiting for a reply."""
        return len(self._futures)

    async def _send(
        self, envelope: Envelope, deadline: float, hop: Hop | None = None
    ) -> asyncio.Future[Any]:
        """Queue the envelope's publish on the confirmed channel; its confirmation future.

        aiormq's own `basic_publish` keeps the same books (delivery tag, confirmation
        future, message id for returns) but under a lock, a timeout and two context
        managers per call, and it makes its caller wait for the confirm. Here the frames
        go to the connection's write queue first, and the delivery tag is taken right
        after, in the same step (`flotilla.amqp`): the broker numbers a channel's publishes
        in the order they reach it, which is this order. Every publish on this channel
        comes here.
        TimeoutError when the channel or the write queue could not take it by `deadline`.
        """
        channel = self._publisher
        if channel is None or channel.is_closed:
            async with asyncio.timeout_at(deadline):
                channel = await self._reopened_channel()
        frame = self._publish_frame(channel, envelope, hop)
        if not amqp.queue_frame(channel, frame):  # the writer is behind: wait for room (rare)
            async with asyncio.timeout_at(deadline):
                await amqp.put_frame(channel, frame)
            if channel.is_closed:
                raise BrokerUnavailable("publish failed: the channel closed")
        # No await since the frame went in: the tag is this publish's.
        return amqp.expect_confirm(channel, envelope.invocation_id)

    async def _reopened_channel(self) -> aiormq.Channel:
        # Before the first publish and after a reconnect: wait for the (new) channel.
        if self._channel is None:
            raise BrokerUnavailable("transport not started")
        try:
            channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError) as exc:
            raise BrokerUnavailable(f"publish failed: {exc}") from exc
        self._publisher = channel
        return channel

    def _publish_frame(
        self, channel: aiormq.Channel, envelope: Envelope, hop: Hop | None = None
    ) -> ChannelFrame:
        now = now_ms()
        ttl = message_ttl_ms(envelope.reply_mode, envelope.remaining_ms(now))
        if hop is not None:  # a delayed job: its delay levels' TTLs are the only ones
            ttl = None
        body = envelope.encode(published_ms=now)
        job = envelope.reply_mode == REPLY_JOB
        route = self._topology.job_queue(envelope.function) if job else self._topology.sync
        properties = aiormq.spec.Basic.Properties(
            content_type="application/msgpack",
            # Jobs are persistent; sync calls as their lane keeps them (Topology.sync_lane).
            delivery_mode=2 if job or self._topology.sync_persistent else 1,
            correlation_id=envelope.correlation_id,
            # Unique per publish: aiormq matches a returned message to its confirm by it.
            message_id=envelope.invocation_id,
            reply_to=envelope.reply_to or None,
            expiration=str(ttl) if ttl is not None else None,
        )
        if hop is not None:
            publish = aiormq.spec.Basic.Publish(
                exchange=hop.exchange, routing_key=hop.routing_key, mandatory=True
            )
            return amqp.publish_frame(channel, amqp.marshal(publish, channel), body, properties)
        number, frames = self._method_frames
        if number != channel.number:
            frames = {}
            self._method_frames = (channel.number, frames)
        method = frames.get(route)
        if method is None:
            if len(frames) >= MAX_CACHED_FRAMES:
                frames.clear()
            publish = aiormq.spec.Basic.Publish(exchange="", routing_key=route, mandatory=True)
            method = frames[route] = amqp.marshal(publish, channel)
        return amqp.publish_frame(channel, method, body, properties)

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        try:
            reply = Reply.decode(message.body)
        except EnvelopeError as exc:
            self.malformed_replies += 1
            log.warning("dropping malformed reply: %s", exc)
            return
        fut = self._futures.pop(reply.correlation_id, None)
        if fut is None or fut.done():
            self.stray_replies += 1
            log.info("dropping late or stray reply %s", reply.correlation_id)
            return
        fut.set_result(reply)


async def _on_notice(
    message: AbstractIncomingMessage, decode: Callable[[bytes], Any],
    on_notice: Callable[[Any], Awaitable[None]] | None,
) -> None:
    # A notice is informative: failures are logged and the notice dropped, never retried.
    try:
        notice = decode(message.body)
        if on_notice is not None:
            await on_notice(notice)
    except EnvelopeError as exc:
        log.warning("dropping malformed job notice (%s): %s", message.type, exc)
    except Exception:
        log.exception("job notice handler failed (%s)", message.type)
    await message.ack()


# Marshalled Basic.Publish frames kept (one per lane published to) before starting afresh.
MAX_CACHED_FRAMES = 1024

# A nack: the queue is at x-max-length, or (on a cluster) its quorum queue has no leader yet
# after a node died; either way nothing was enqueued and a retry may succeed.
REFUSED = ("the broker refused the envelope: its lane (the sync queue or the function's job "
           "queue) is full or electing a leader after a node loss; retry later")


def _refusal(result: Any) -> TransportError | None:
    """The error a settled confirmation means, or None for an ack."""
    if isinstance(result, aiormq.spec.Basic.Nack):
        return QueueFull(REFUSED)
    if isinstance(result, (aiormq.spec.Basic.Return, aiormq.abc.DeliveredMessage)):
        return Unroutable("the envelope's lane does not exist (envelope not routable)")
    return None


def _publish_error(exc: BaseException) -> TransportError:
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, aio_pika.exceptions.DeliveryError):
        return _delivery_error(exc)
    return BrokerUnavailable(f"publish failed: {exc!r}")


def _on_confirmed(fut: asyncio.Future[Reply], confirmation: asyncio.Future[Any]) -> None:
    """Settle a caller's reply future with the error a refused or failed publish means."""
    if fut.done():
        return
    if confirmation.cancelled():
        fut.set_exception(BrokerUnavailable("publish failed: cancelled"))
    elif (exc := confirmation.exception()) is not None:
        fut.set_exception(_publish_error(exc))
    elif (error := _refusal(confirmation.result())) is not None:
        fut.set_exception(error)


def _delivery_error(exc: aio_pika.exceptions.DeliveryError) -> TransportError:
    frame = getattr(exc, "frame", None)
    if isinstance(frame, aiormq.spec.Basic.Return):
        return Unroutable(f"envelope was not routable: {frame.reply_text}")
    return QueueFull(REFUSED)
