"""The worker's AMQP consumer: a thin layer between RabbitMQ and `EnvelopeHandler`.

Each delivery is handled on a thread of the invocation pool (wasm releases the GIL), then
its reply is published and only then is the delivery settled; every delivery is settled
exactly once, in one `finally`, on every path (ack, reject to the DLQ, or requeue). The one
exception is a forced close after the drain deadline: the channel closes under the delivery
and the broker requeues it. A semaphore bounds the invocations running at once; deliveries
waiting for it when shutdown starts are requeued at once for other workers. Invocations run
through an `InvocationPool`: one still blocked in a host call past its timeout is answered
`timeout` and its thread abandoned; while `max_abandoned` threads are out, no new invocation
starts and the consumer reports itself not consuming (the worker's /readyz answers 503).

Stop order (see `WorkerService`): `stop_consuming()` (the broker stops sending),
`drain(timeout)` (in-flight invocations finish, publish their replies and are acked),
`close()` (the channel; unacked leftovers return to the queue).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from flotilla.envelope import NOT_FOUND, STARTED_TYPE, Started
from flotilla.metrics import WorkerMetrics
from flotilla.topology import Topology
from worker.executor import InvocationPool
from worker.handler import EnvelopeHandler, Handled, Settle

log = logging.getLogger(__name__)


class Consumer:
    """Consumes the invocations queue of one topology with manual acks and bounded prefetch."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        handler: EnvelopeHandler,
        executor: Executor,
        *,
        concurrency: int,
        prefetch: int,
        metrics: WorkerMetrics | None = None,
        max_abandoned: int = 0,
    ) -> None:
        """`executor` needs `concurrency + max_abandoned` threads (abandoned ones included)."""
        self._connection = connection
        self._topology = topology
        self._handler = handler
        self.pool = InvocationPool(handler, executor, max_abandoned=max_abandoned)
        self._prefetch = prefetch
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None
        self._reply_channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self.settled = {s: 0 for s in Settle}

    async def start(self) -> None:
        """Open the channel, declare the topology and start consuming."""
        self._loop = asyncio.get_running_loop()
        # The robust channel re-applies qos, re-declares and re-consumes after a reconnect.
        self._channel = await self._connection.channel(publisher_confirms=True)
        # Sync replies go out unconfirmed: their queue is transient anyway, and not waiting
        # for a confirm lets the reply and the ack leave in one write, one broker round trip
        # sooner. Job results use the confirmed channel: acked only once the broker has them.
        self._reply_channel = await self._connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._topology.declare(self._channel)
        self._tag = await self._queue.consume(self._on_message)

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet settled."""
        return len(self._tasks)

    async def stop_consuming(self) -> None:
        """Ask the broker to stop sending; deliveries not yet started will be requeued."""
        self._stopping = True
        self._stop.set()
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # noqa: BLE001 - the channel may be gone; leftovers requeue
                log.warning("cancelling the consumer failed: %s", exc)
            self._tag = None

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for in-flight deliveries to settle; True if all did."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def close(self) -> None:
        """Close the channel; unacked deliveries return to the queue."""
        for task in list(self._tasks):
            task.cancel()
        for channel in (self._reply_channel, self._channel):
            if channel is not None and not channel.is_closed:
                await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs each delivery's callback in a task of its own: track it for drain().
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        decision: Settle | None = Settle.REQUEUE
        try:
            if not await self._acquire_slot():
                return  # stopping: requeue it for another worker
            try:
                decision = await self._run(message)
            finally:
                self._slots.release()
        except asyncio.CancelledError:
            # Only close() cancels, after the drain deadline: the channel is closing and the
            # broker requeues whatever is unsettled; settling now would race that close.
            decision = None
            raise
        except Exception:
            log.exception("publishing a reply failed; the delivery will be redelivered")
            decision = Settle.REQUEUE
        finally:
            try:
                if decision is not None:
                    await self._settle(message, decision)
            finally:
                # Only now: drain() must not return before the ack went out.
                self._tasks.discard(task)

    async def _acquire_slot(self) -> bool:
        """Wait for a free invocation slot; False (holding none) once stopping."""
        if self._stopping:
            return False
        if self.pool.saturated:
            room = asyncio.ensure_future(self.pool.wait_for_room())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({room, stop}, return_when=asyncio.FIRST_COMPLETED)
            room.cancel()
            stop.cancel()
            if self._stopping:
                return False
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns without suspending
            return True
        acquire = asyncio.ensure_future(self._slots.acquire())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if acquire.done() and not acquire.cancelled():
            if not self._stopping:
                return True
            self._slots.release()
            return False
        acquire.cancel()
        return False

    async def _run(self, message: AbstractIncomingMessage) -> Settle:
        loop = asyncio.get_running_loop()
        started = loop.time()
        metrics = self._metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            handled = await self.pool.handle(message.body, _redeliveries(message), self._announce)
        finally:
            if metrics is not None:
                metrics.in_flight.dec()
        await self._reply(handled)
        if metrics is not None and handled.reply is not None:
            metrics.total.labels(_label(handled)).observe(loop.time() - started)
        return handled.settle

    @property
    def consuming(self) -> bool:
        """True while the broker may send deliveries and they will run (started, not stopping,
        channel open, not at the cap of abandoned threads)."""
        return (
            self._tag is not None
            and not self._stopping
            and not self.pool.saturated
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _reply(self, handled: Handled) -> None:
        reply = handled.reply
        if reply is None or not handled.route:
            return
        job = handled.route == self._topology.job_results
        channel = self._channel if job else self._reply_channel
        assert channel is not None
        # aiormq directly: aio-pika's Message/Exchange layers cost more than the publish.
        underlay = await channel.get_underlay_channel()
        properties = aiormq.spec.Basic.Properties(
            correlation_id=reply.correlation_id,
            message_id=reply.invocation_id,
            content_type="application/msgpack",
            # Job results must survive a broker restart; a sync caller's queue would not.
            delivery_mode=2 if job else 1,
        )
        # Job results wait for the broker's confirm (acked only once it has them); a sync
        # reply is only queued for the connection's writer, ahead of the delivery's ack.
        await underlay.basic_publish(  # type: ignore[call-arg]  # `wait`: not in aiormq's ABC
            reply.encode(),
            routing_key=handled.route,
            properties=properties,
            wait=job,
        )

    def _announce(self, started: Started) -> None:
        # Called on an invocation thread just before a job runs.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._publish_started, started)

    def _publish_started(self, started: Started) -> None:
        # Fire and forget on the job results' (confirmed) channel, ahead of the reply; a
        # notice that is lost only leaves the job reading `queued` until its result.
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        task = asyncio.create_task(self._send_started(channel, started))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _send_started(self, channel: AbstractChannel, started: Started) -> None:
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    started.encode(),
                    correlation_id=started.invocation_id,
                    type=STARTED_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/msgpack",
                ),
                routing_key=self._topology.job_results,
            )
        except Exception as exc:  # noqa: BLE001
            log.warning("job %s started notice not published: %s", started.invocation_id, exc)

    async def _settle(self, message: AbstractIncomingMessage, decision: Settle) -> None:
        try:
            if decision is Settle.ACK:
                await _ack(message)
            elif decision is Settle.REJECT:
                await message.reject(requeue=False)
            else:
                await message.nack(requeue=True)
            self.settled[decision] += 1
        except Exception as exc:  # noqa: BLE001
            # The channel died: the broker already returned the delivery to the queue.
            log.warning("could not %s delivery %s: %s", decision.value, message.delivery_tag, exc)


async def _ack(message: AbstractIncomingMessage) -> None:
    """Ack on the delivery's aiormq channel without waiting for the writer to drain: the
    frame is queued behind the reply on the same connection (aio-pika's `ack` waits)."""
    if message.delivery_tag is None:
        await message.ack()
        return
    await message.channel.basic_ack(message.delivery_tag, wait=False)


def _redeliveries(message: AbstractIncomingMessage) -> int:
    """Earlier deliveries of `message`: the quorum queue's `x-delivery-count` (absent at first)."""
    headers = message.headers
    count = headers.get("x-delivery-count") if headers else None
    return count if isinstance(count, int) and count > 0 else 0


def _label(handled: Handled) -> str:
    # Unknown functions would make the label set unbounded.
    assert handled.reply is not None
    return handled.function if handled.reply.outcome != NOT_FOUND else "-"
