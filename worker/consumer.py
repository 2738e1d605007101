"""The worker's AMQP consumer: a thin layer between RabbitMQ and `EnvelopeHandler`.

It consumes every lane of the topology (flotilla/topology.py) on one channel: the sync lane
with the deep prefetch the sync round trip needs, and each function's job lane with a small
one (`job_prefetch`), a consumer each (RabbitMQ's prefetch is per consumer). Job lanes are
added while it runs (`add_function`: worker/lanes.py follows the registry). Sandbox slots
(`_Slots`) go to waiting sync deliveries first, then to waiting jobs round-robin over their
functions: a function with thousands of queued jobs holds at most `job_prefetch` deliveries
of a process, and a job of another function takes the next free slot. While jobs hold
slots, a sync call may run in one slot more than `concurrency` (`sync_reserve`), so a sync
call never waits for a job to finish. Given a `job_executor`, jobs run on its threads, which
`job_threads` makes nicer to the CPU than the sync calls' (`JOB_NICE`): on a machine whose
cores jobs keep busy, a sync call, the event loop and the dispatcher still get a core when
they need one (docs/reliability.md has the figures).

Each delivery is handled on a thread of the invocation pool (wasm releases the GIL), then
its reply is published and only then is the delivery settled; every delivery is settled
exactly once, in one `finally`, on every path (ack, reject to the DLQ, or requeue). The one
exception is a forced close after the drain deadline: the channel closes under the delivery
and the broker requeues it. A slot counter bounds the invocations running at once;
deliveries waiting for a slot when shutdown starts are requeued at once for other workers.
Invocations run through an `InvocationPool`: one still blocked in a host call past its
timeout is answered `timeout` and its thread abandoned; while `max_abandoned` threads are
out, no new invocation starts and the consumer reports itself not consuming (the worker's
/readyz answers 503).

The hot path is aiormq's, under aio-pika's robust channel: deliveries are consumed on the
channel's aiormq channel (no aio-pika `IncomingMessage` and callback task per delivery), and
re-consumed whenever the robust channel reopens (reconnect, channel error) or the broker
cancels the consumer. Acks are batched per channel (`_Acks`): the contiguous prefix of
delivery tags whose replies went out is acked with one `multiple=True` frame per event-loop
turn (a finished delivery behind one still running is acked on its own within
`STRAGGLER_ACK_S`); rejects and requeues go out at once, one frame each. A quorum queue
turns every settle frame into a Raft command, so fewer frames also means less broker work.

Stop order (see `WorkerService`): `stop_consuming()` (the broker stops sending),
`drain(timeout)` (in-flight invocations finish, publish their replies and are acked),
`close()` (pending acks go out, then the channel closes; unacked leftovers return to the
queue).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from flotilla import amqp
from flotilla.envelope import STARTED_TYPE, Started
from flotilla.metrics import WorkerMetrics
from flotilla.outcomes import Outcome
from flotilla.topology import Topology
from worker.executor import InvocationPool
from worker.flow import publish_follow_up
from worker.handler import EnvelopeHandler, Handled, Settle

log = logging.getLogger(__name__)

# How long a finished delivery behind a still-running one may wait for a batched ack.
STRAGGLER_ACK_S = 0.002
# Slots a sync call may use beyond `concurrency` while jobs hold slots (module docstring).
SYNC_RESERVE = 1
# The nice value of job threads: Linux gives a thread of nice 10 about a tenth of the CPU
# weight of one of nice 0, so jobs yield the CPU to sync calls and keep every idle cycle.
# Raising a thread's nice needs no privilege; lowering it back would, hence threads of
# their own for jobs.
JOB_NICE = 10


def job_threads(threads: int, nice: int = JOB_NICE) -> ThreadPoolExecutor:
    """An executor for jobs whose threads run at `nice` (where the system lets them)."""

    def lower_priority() -> None:
        try:
            # PRIO_PROCESS with a thread id: Linux applies it to that thread alone.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (OSError, AttributeError) as exc:  # not Linux, or not allowed: run as is
            log.debug("job thread keeps its priority: %s", exc)

    return ThreadPoolExecutor(threads, "flotilla-job", initializer=lower_priority)
# Pauses before publishing a job result again after the broker refused it (Basic.Nack, seen
# while the job-results quorum queue elects a new leader after its node died: ~1-8 s).
RESULT_RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


async def publish_result(
    channel: aiormq.abc.AbstractChannel, body: bytes, route: str,
    properties: aiormq.spec.Basic.Properties,
    delays: tuple[float, ...] = RESULT_RETRY_DELAYS_S,
) -> None:
    """Publish a job result and wait for the broker's confirm; when the broker refuses it
    (a nack), publish it again after each of `delays`. Requeuing the delivery instead would
    run the job again, and quick reruns look like a poison envelope to the run ledger (the
    chaos bench saw innocent jobs dead-lettered that way during a leader election). Results
    are idempotent: the dispatchers keep the first (flotilla.jobs.JobStore.complete).
    A closed channel is not retried here: the delivery returns to the queue with it."""
    for delay in (*delays, None):
        try:
            await channel.basic_publish(  # type: ignore[call-arg]  # `wait`: not in the ABC
                body, routing_key=route, properties=properties, wait=True
            )
            return
        except aiormq.exceptions.DeliveryError as exc:
            if delay is None:
                raise
            log.warning("job result %s refused by the broker (%s); publishing again in %.2f s",
                        properties.message_id, exc, delay)
            await asyncio.sleep(delay)


class Consumer:
    """Consumes the sync lane and every known job lane of one topology with manual acks and
    bounded prefetch."""

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
        job_prefetch: int | None = None,
        functions: Iterable[str] = (),
        sync_reserve: int = SYNC_RESERVE,
        job_executor: Executor | None = None,
    ) -> None:
        """`executor` needs `concurrency + sync_reserve + max_abandoned` threads (abandoned
        ones included), a `job_executor` (jobs run on `executor` without one)
        `concurrency + max_abandoned`. `job_prefetch` (default 2 x concurrency) is each job
        lane's prefetch; `functions` the job lanes consumed from the start."""
        self._connection = connection
        self._topology = topology
        self._handler = handler
        self.pool = InvocationPool(handler, executor, max_abandoned=max_abandoned)
        self.job_pool = self.pool if job_executor is None else InvocationPool(
            handler, job_executor, max_abandoned=max_abandoned)
        self._prefetch = prefetch
        self._job_prefetch = job_prefetch or 2 * concurrency
        self._slots = _Slots(concurrency, sync_reserve)
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None
        self._reply_channel: AbstractChannel | None = None
        # Every lane consumed (the sync lane first), and the consumer tag of each on the
        # current aiormq channel (a lane being declared or re-consumed has none).
        self._queues: dict[str, AbstractQueue] = {}
        self._tags: dict[str, str] = {}
        self._lanes: dict[str, str] = {}  # consumer tag -> lane
        self._functions = list(dict.fromkeys(functions))
        self._consume_lock = asyncio.Lock()  # basic.qos then basic.consume, one lane at a time
        self._acks: _Acks | None = None  # those of the channel consumed now
        # The aiormq channels under the job (True) and reply (False) channels, as last seen.
        self._underlays: dict[bool, aiormq.Channel] = {}
        self._stopping = False
        self._stop = asyncio.Event()
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self.settled = {s: 0 for s in Settle}

    async def start(self) -> None:
        """Open the channel, declare the topology and start consuming every lane."""
        self._loop = asyncio.get_running_loop()
        # The robust channel re-declares the queues after a reconnect; its reopen callback
        # (below) consumes them again.
        channel = await self._connection.channel(publisher_confirms=True)
        self._channel = channel
        # Sync replies go out unconfirmed: their queue is transient anyway, and not waiting
        # for a confirm lets the reply and the ack leave in one write, one broker round trip
        # sooner. Job results use the confirmed channel: acked only once the broker has them.
        self._reply_channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._prefetch)
        sync = await self._topology.declare(channel)
        self._queues[sync.name] = sync
        channel.reopen_callbacks.add(self._on_reopen)  # type: ignore[attr-defined]
        await self._consume(sync.name)
        functions, self._functions = self._functions, []
        for function in functions:
            await self.add_function(function)

    @property
    def functions(self) -> list[str]:
        """The functions whose job lanes are consumed, in the order they were added."""
        return list(self._functions)

    async def add_function(self, function: str) -> None:
        """Declare and consume `function`'s job lane (nothing if it already is, or once
        stopping). Errors propagate: the caller (worker/lanes.py) tries again later."""
        if function in self._functions or self._stopping:
            return
        assert self._channel is not None, "start() first"
        lane = self._topology.job_queue(function)
        if lane not in self._queues:
            self._queues[lane] = await self._topology.declare_jobs(self._channel, function)
        await self._consume(lane)
        self._functions.append(function)

    async def _consume(self, lane: str) -> None:
        """Consume `lane` on the robust channel's current aiormq channel."""
        assert self._channel is not None
        async with self._consume_lock:
            underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
            same = self._acks is not None and self._acks.channel is underlay
            if same and lane in self._tags:
                return  # already consuming it on this one
            if not same:
                # One `_Acks` per aiormq channel, kept across a re-consume on the same
                # channel: tags are the channel's, and a multiple ack must see all of them.
                self._acks = _Acks(underlay)
                self._tags.clear()
                self._lanes.clear()
                underlay.on_consumer_cancel_callbacks.add(self._on_cancelled)
            # The prefetch of consumers started after it (global=False: per consumer).
            prefetch = self._prefetch if lane == self._topology.sync else self._job_prefetch
            await underlay.basic_qos(prefetch_count=prefetch)
            ok = await underlay.basic_consume(lane, self._on_delivery)
            tag = ok.consumer_tag
            assert tag is not None
            if self._stopping:  # stop_consuming() ran meanwhile: undo
                await underlay.basic_cancel(tag)
                return
            self._tags[lane] = tag
            self._lanes[tag] = lane

    async def _on_reopen(self, *_: Any) -> None:
        # The robust channel reopened (reconnect or channel error) and re-declared the queues.
        self._tags.clear()
        self._lanes.clear()
        if self._stopping:
            return
        for lane in list(self._queues):
            try:
                await self._consume(lane)
            except Exception:
                log.exception("consuming %s again after the channel reopened failed", lane)

    def _on_cancelled(self, frame: spec.Basic.Cancel) -> None:
        # The broker cancelled a consumer (its queue was deleted, say): declare and consume
        # again, as aio-pika's robust queue would.
        lane = self._lanes.pop(frame.consumer_tag or "", None)
        if lane is None or self._stopping:
            return
        self._tags.pop(lane, None)
        log.warning("the broker cancelled the consumer of %s; declaring and consuming again",
                    lane)
        task = asyncio.ensure_future(self._resubscribe(lane))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _resubscribe(self, lane: str) -> None:
        assert self._channel is not None
        try:
            function = self._topology.job_function(lane)
            if function is None:
                self._queues[lane] = await self._topology.declare(self._channel)
            else:
                self._queues[lane] = await self._topology.declare_jobs(self._channel, function)
            await self._consume(lane)
        except Exception:
            log.exception("consuming %s again after the broker cancelled it failed", lane)

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet settled."""
        return len(self._tasks)

    async def stop_consuming(self) -> None:
        """Ask the broker to stop sending; deliveries not yet started will be requeued."""
        self._stopping = True
        self._stop.set()
        self._slots.close()
        acks, tags = self._acks, list(self._tags.values())
        self._tags.clear()
        if acks is None or acks.channel.is_closed:
            return
        for tag in tags:
            try:
                await acks.channel.basic_cancel(tag)
            except Exception as exc:  # noqa: BLE001 - the channel may be gone; leftovers requeue
                log.warning("cancelling the consumer %s failed: %s", tag, exc)

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for in-flight deliveries to settle; True if all did."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        else:
            pending = set()
        self._flush_acks()  # the acks of those that finished go out now
        return not pending

    async def close(self) -> None:
        """Send pending acks, then close the channel; unacked deliveries return to the queue."""
        for task in list(self._tasks):
            task.cancel()
        self._flush_acks()
        for channel in (self._reply_channel, self._channel):
            if channel is not None and not channel.is_closed:
                await channel.close()

    def _flush_acks(self) -> None:
        if self._acks is not None:
            self._acks.flush(stragglers=True)

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        # aiormq runs each delivery's callback in a task of its own: track it for drain().
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        tag = int(message.delivery.delivery_tag)  # type: ignore[union-attr,arg-type]
        acks = self._acks
        if acks is None or acks.channel is not message.channel:
            # Not the channel consumed now (cannot happen).
            acks = _Acks(cast(aiormq.Channel, message.channel))
        acks.delivered(tag)
        lane = self._job_lane(self._lanes.get(message.delivery.consumer_tag or ""))  # type: ignore[union-attr]
        decision: Settle | None = Settle.REQUEUE
        try:
            if not await self._acquire_slot(lane):
                return  # stopping: requeue it for another worker
            try:
                decision = await self._run(message, acks, self._pool(lane))
            finally:
                self._slots.release(lane)
        except asyncio.CancelledError:
            # close() cancels after the drain deadline, and aiormq when the channel closes:
            # the broker requeues whatever is unsettled; settling now would race that close.
            decision = None
            raise
        except Exception:
            log.exception("publishing a reply failed; the delivery will be redelivered")
            decision = Settle.REQUEUE
        finally:
            try:
                if decision is not None:
                    self._settle(acks, tag, decision)
            finally:
                # Only now: drain() must not return before the settle is queued (its ack
                # goes out at the latest when drain() returns).
                self._tasks.discard(task)

    def _pool(self, lane: str | None) -> InvocationPool:
        """The pool running deliveries of `lane` (None: the sync lane)."""
        return self.pool if lane is None else self.job_pool

    @property
    def abandoned(self) -> int:
        """Threads abandoned blocked past their timeout, sync and job pools together."""
        return self.pool.abandoned + (self.job_pool.abandoned if self.job_pool is not self.pool
                                      else 0)

    async def _acquire_slot(self, lane: str | None) -> bool:
        """Wait for a free invocation slot for a delivery of `lane`; False (holding none)
        once stopping."""
        if self._stopping:
            return False
        pool = self._pool(lane)
        if pool.saturated:
            room = asyncio.ensure_future(pool.wait_for_room())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({room, stop}, return_when=asyncio.FIRST_COMPLETED)
            room.cancel()
            stop.cancel()
            if self._stopping:
                return False
        return await self._slots.acquire(lane)

    def _job_lane(self, lane: str | None) -> str | None:
        """`lane` if it is a job lane; None for the sync lane (or a lane no longer known,
        which can only be a consumer of a closed channel: treated as sync)."""
        return lane if lane is not None and lane != self._topology.sync else None

    async def _run(self, message: DeliveredMessage, acks: _Acks, pool: InvocationPool) -> Settle:
        loop = asyncio.get_running_loop()
        started = loop.time()
        metrics = self._metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            handled = await pool.handle(message.body, _redeliveries(message), self._announce)
        finally:
            if metrics is not None:
                metrics.in_flight.dec()
        # Arm this turn's ack flush before the reply is queued: it then runs ahead of the
        # connection writer's next step, and the ack leaves in the same write as the reply.
        acks.soon()
        await self._reply(handled)
        if metrics is not None and handled.reply is not None:
            metrics.total.labels(_label(handled)).observe(loop.time() - started)
        return handled.settle

    @property
    def consuming(self) -> bool:
        """True while the broker may send deliveries and they will run (started, not stopping,
        channel open, not at the cap of abandoned threads)."""
        return (
            self._topology.sync in self._tags
            and not self._stopping
            and not self.pool.saturated
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _reply(self, handled: Handled) -> None:
        if handled.follow_up is not None and self._channel is not None:
            # A retry, a deferral or a dead letter (worker/flow.py), confirmed before the reply.
            confirmed = await self._channel.get_underlay_channel()
            await publish_follow_up(confirmed, self._topology, handled.follow_up)
        reply = handled.reply
        if reply is None or not handled.route:
            return
        job = handled.route == self._topology.job_results
        channel = self._channel if job else self._reply_channel
        assert channel is not None
        # aiormq directly: aio-pika's Message/Exchange layers cost more than the publish.
        underlay = self._underlays.get(job)
        if underlay is None or underlay.is_closed:  # first reply, or reopened since
            underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
            self._underlays[job] = underlay
        properties = aiormq.spec.Basic.Properties(
            correlation_id=reply.correlation_id,
            message_id=reply.invocation_id,
            content_type="application/msgpack",
            # Job results must survive a broker restart; a sync caller's queue would not.
            delivery_mode=2 if job else 1,
        )
        body = reply.encode()
        # A sync reply is only queued for the connection's writer, ahead of the delivery's
        # ack; job results wait for the broker's confirm (acked only once it has them).
        if not job and amqp.queue_publish(underlay, body, handled.route, properties):
            return
        if job:
            await publish_result(underlay, body, handled.route, properties)
            return
        await underlay.basic_publish(  # type: ignore[call-arg]  # `wait`: not in aiormq's ABC
            body, routing_key=handled.route, properties=properties, wait=False
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
        # On the channel the job's result will take, so it reaches the queue first.
        try:
            underlay = await channel.get_underlay_channel()
            await underlay.basic_publish(
                started.encode(),
                routing_key=self._topology.job_results,
                properties=aiormq.spec.Basic.Properties(
                    correlation_id=started.invocation_id,
                    message_type=STARTED_TYPE,
                    delivery_mode=2,
                    content_type="application/msgpack",
                ),
            )
        except Exception as exc:  # noqa: BLE001
            log.warning("job %s started notice not published: %s", started.invocation_id, exc)

    def _settle(self, acks: _Acks, tag: int, decision: Settle) -> None:
        if acks.channel.is_closed:
            # The channel died: the broker already returned the delivery to the queue.
            log.warning("could not %s delivery %s: the channel closed", decision.value, tag)
            return
        if decision is Settle.ACK:
            acks.ack(tag)
        else:
            acks.settle_now(tag, requeue=decision is Settle.REQUEUE)
        self.settled[decision] += 1


class _Acks:
    """The delivery tags of one aiormq channel, settled in tag order with as few frames as
    possible.

    `ack(tag)` only marks a delivery done; once per event-loop turn `flush()` acks the
    longest contiguous prefix of delivered tags that are all done or already settled, with
    one `multiple=True` frame on the prefix's last acked tag. RabbitMQ closes the channel
    (PRECONDITION_FAILED, unknown delivery tag) on a tag acked twice or no longer held, so:
    a multiple ack only ever names a tag still outstanding (a done one, never a rejected or
    requeued one), and a tag leaves the prefix exactly once. A multiple ack covers the tags
    still held up to it: those settled on their own earlier (reject, requeue, a straggler's
    single ack) are not held any more, and every other tag up to it is done (the prefix is
    contiguous), so no delivery is acked before its reply went out. Rejects and requeues go
    out at once, one frame each.

    A done tag behind one still running (a straggler: a long invocation holds the prefix)
    waits at most `straggler_s` for the prefix to reach it, then is acked on its own: it
    must not hold a prefetch slot for as long as the slow invocation runs.
    """

    def __init__(self, channel: aiormq.Channel, straggler_s: float = STRAGGLER_ACK_S) -> None:
        self.channel = channel
        self._straggler_s = straggler_s
        self._outstanding: collections.deque[int] = collections.deque()  # in tag order
        self._done: set[int] = set()  # outstanding, reply out: to ack
        self._settled: set[int] = set()  # outstanding here, settled at the broker already
        self._scheduled = False
        self._stragglers: asyncio.TimerHandle | None = None

    def delivered(self, tag: int) -> None:
        """A delivery arrived (aiormq starts the callbacks in tag order)."""
        outstanding = self._outstanding
        if not outstanding or tag > outstanding[-1]:
            outstanding.append(tag)
        else:
            bisect.insort(outstanding, tag)  # type: ignore[type-var]

    def ack(self, tag: int) -> None:
        """`tag` is done: it will be acked by the end of the next loop turn (or, behind a
        running one, within `straggler_s`)."""
        self._done.add(tag)
        self.soon()

    def settle_now(self, tag: int, *, requeue: bool) -> None:
        """Reject (dead-letter) or requeue `tag` with a frame of its own, now."""
        frame = (
            spec.Basic.Nack(delivery_tag=tag, multiple=False, requeue=True)
            if requeue
            else spec.Basic.Reject(delivery_tag=tag, requeue=False)
        )
        self._send(frame)
        self._settled.add(tag)
        self.soon()  # the prefix may advance past it

    def soon(self) -> None:
        """Flush at the next loop turn (once, however many acks come before it)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self, *, stragglers: bool = False) -> None:
        """Ack the contiguous done prefix with one frame, and with `stragglers` every other
        done tag with one frame each (nothing at all if the channel closed)."""
        self._scheduled = False
        outstanding, done, settled = self._outstanding, self._done, self._settled
        if self.channel.is_closed:
            # The broker requeued all of them with the channel: nothing may be acked now.
            outstanding.clear()
            done.clear()
            settled.clear()
            self._cancel_stragglers()
            return
        last = 0
        count = 0
        while outstanding:
            tag = outstanding[0]
            if tag in done:
                done.discard(tag)
                last = tag
                count += 1
            elif tag in settled:
                settled.discard(tag)
            else:
                break
            outstanding.popleft()
        if count:
            self._send(spec.Basic.Ack(delivery_tag=last, multiple=count > 1))
        if not done:
            self._cancel_stragglers()
        elif stragglers:
            self._cancel_stragglers()
            for tag in sorted(done):
                self._send(spec.Basic.Ack(delivery_tag=tag, multiple=False))
            settled.update(done)  # the prefix passes them later without a second ack
            done.clear()
        elif self._stragglers is None:
            self._stragglers = asyncio.get_running_loop().call_later(
                self._straggler_s, self._ack_stragglers
            )

    def _ack_stragglers(self) -> None:
        self._stragglers = None
        self.flush(stragglers=True)

    def _cancel_stragglers(self) -> None:
        if self._stragglers is not None:
            self._stragglers.cancel()
            self._stragglers = None

    def _send(self, frame: spec.Basic.Ack | spec.Basic.Nack | spec.Basic.Reject) -> None:
        # What aiormq's basic_ack/basic_nack/basic_reject(wait=False) do, without a task per
        # frame: behind the replies already queued (one FIFO per connection: replies leave
        # before their acks).
        amqp.send_frames(self.channel, (frame,))


class _Slots:
    """At most `n` invocations at once, plus `reserve` sync ones while jobs hold slots.

    A delivery asks for a slot with its job lane, or None for the sync lane. A job starts
    while fewer than `n` invocations run; a sync call too, and also while jobs run and fewer
    than `n + reserve` do (it never waits for a job to finish). When a slot frees, waiting
    sync calls go first, in order; then waiting jobs, round-robin over their lanes (the lane
    served moves behind the others). Every waiter, now and later, gets False once
    `close()`d. One future per waiting delivery, no task."""

    def __init__(self, n: int, reserve: int = 0) -> None:
        self._n = n
        self._reserve = reserve
        self._running = 0
        self._jobs_running = 0
        self._sync: collections.deque[asyncio.Future[bool]] = collections.deque()
        # Lanes with waiting jobs, the next to be served first.
        self._jobs: collections.OrderedDict[str, collections.deque[asyncio.Future[bool]]] = (
            collections.OrderedDict()
        )
        self._closed = False

    def _may_start(self, lane: str | None) -> bool:
        if self._running < self._n:
            return True
        return lane is None and self._jobs_running > 0 and self._running < self._n + self._reserve

    def _take(self, lane: str | None) -> None:
        self._running += 1
        if lane is not None:
            self._jobs_running += 1

    async def acquire(self, lane: str | None = None) -> bool:
        """A slot for a delivery of job lane `lane` (None: the sync lane): True, or False
        once closed (holding none)."""
        if self._closed:
            return False
        waiting = self._sync if lane is None else self._jobs.get(lane)
        if not waiting and (lane is None or not self._jobs) and self._may_start(lane):
            self._take(lane)
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if lane is None:
            self._sync.append(waiter)
        else:
            self._jobs.setdefault(lane, collections.deque()).append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release(lane)  # handed a slot just as it was cancelled: pass it on
            raise

    def release(self, lane: str | None = None) -> None:
        """Give back a slot taken for `lane`, then hand free slots to waiters."""
        self._running -= 1
        if lane is not None:
            self._jobs_running -= 1
        while self._sync and self._may_start(None):
            if self._hand(self._sync.popleft(), None):
                continue
        while self._jobs and self._may_start(next(iter(self._jobs))):
            lane_next, waiters = next(iter(self._jobs.items()))
            waiter = waiters.popleft()
            if waiters:
                self._jobs.move_to_end(lane_next)
            else:
                del self._jobs[lane_next]
            self._hand(waiter, lane_next)

    def _hand(self, waiter: asyncio.Future[bool], lane: str | None) -> bool:
        if waiter.done():
            return False
        self._take(lane)
        waiter.set_result(True)
        return True

    @property
    def running(self) -> int:
        """Invocations holding a slot."""
        return self._running

    def close(self) -> None:
        """Every waiter, now and later, gets False."""
        self._closed = True
        waiters = [*self._sync, *(w for q in self._jobs.values() for w in q)]
        self._sync.clear()
        self._jobs.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)


def _redeliveries(message: DeliveredMessage) -> int:
    """Earlier deliveries of `message`: a quorum queue's `x-delivery-count` (absent at first);
    a classic queue (a classic sync lane) counts nothing, so a redelivered message counts as
    one earlier delivery there (enough for the run ledger to look for a poison envelope)."""
    headers = message.header.properties.headers
    count = headers.get("x-delivery-count") if headers else None
    if isinstance(count, int) and count > 0:
        return count
    return 1 if message.delivery.redelivered else 0  # type: ignore[union-attr]


def _label(handled: Handled) -> str:
    # Unknown functions would make the label set unbounded.
    assert handled.reply is not None
    return handled.function if handled.reply.outcome is not Outcome.NOT_FOUND else "-"
