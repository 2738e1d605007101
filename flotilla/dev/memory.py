"""`MemoryTransport`: the `Transport` protocol in one process, for dev mode and unit tests.

Envelopes go through an asyncio priority queue (bounded: a full queue raises `QueueFull`,
like the broker's `reject-publish`; sync calls ahead of jobs, as the workers' slots order
the broker's lanes) to worker tasks that run the same `EnvelopeHandler` the AMQP
consumer runs, on a thread pool, through the same `InvocationPool` (a run blocked in a host
call past its timeout is answered `timeout` and its thread abandoned). Replies are routed the way the consumer routes them: to the
waiting caller's future, or to the job-results handler. Envelopes still travel as bytes, so
dev mode exercises the real wire format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Self

from flotilla.envelope import REPLY_JOB, REPLY_QUEUE, Envelope, Reply, Started, now_ms
from flotilla.topology import Topology
from flotilla.transport import (
    BrokerUnavailable,
    CallTimeout,
    JobResultHandler,
    JobRetryingHandler,
    JobStartedHandler,
    QueueFull,
)
from worker.executor import InvocationPool
from worker.flow import Exhausted, FollowUp
from worker.handler import EnvelopeHandler, Handled, Settle

log = logging.getLogger(__name__)

REPLY_QUEUE_NAME = "memory.reply"


class MemoryTransport:
    """In-process transport driving an `EnvelopeHandler` with `concurrency` worker tasks."""

    def __init__(
        self,
        handler: EnvelopeHandler,
        *,
        topology: Topology | None = None,
        concurrency: int = 4,
        max_length: int = 10_000,
        executor: Executor | None = None,
        max_abandoned: int | None = None,
    ) -> None:
        """`max_abandoned`: threads left blocked past their timeout before the workers wait
        (default 2 x concurrency; an `executor` passed in needs that much headroom)."""
        if max_abandoned is None:
            max_abandoned = 2 * concurrency
        self._handler = handler
        self._topology = topology or Topology()
        self._concurrency = concurrency
        # (0 for sync calls, 1 for jobs; publish order; the lane a broker would hold it in; body)
        self._queue: asyncio.PriorityQueue[tuple[int, int, str, bytes]] = asyncio.PriorityQueue(
            maxsize=max_length
        )
        self._order = itertools.count()
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            concurrency + max_abandoned, "flotilla-memory"
        )
        self.pool = InvocationPool(handler, self._executor, max_abandoned=max_abandoned)
        self._futures: dict[str, asyncio.Future[Reply]] = {}
        self._job_handler: JobResultHandler | None = None
        self._started_handler: JobStartedHandler | None = None
        self._retrying_handler: JobRetryingHandler | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.reply_queue_name = REPLY_QUEUE_NAME
        self.dead_letters: list[bytes] = []
        # Called with each dead letter's bytes and the headers the broker would add.
        self.on_dead_letter: Callable[[bytes, dict[str, Any]], Awaitable[Any]] | None = None
        self.stray_replies = 0

    async def start(self) -> None:
        """Start the worker tasks."""
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def close(self) -> None:
        """Stop the worker tasks and fail pending calls."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable("transport closed"))
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        """True between start and close (there is no broker to lose)."""
        return bool(self._tasks)

    async def call(self, envelope: Envelope, timeout: float) -> Reply:
        """Queue `envelope` and wait for its reply."""
        envelope = dataclasses.replace(
            envelope, reply_mode=REPLY_QUEUE, reply_to=self.reply_queue_name
        )
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._futures[envelope.correlation_id] = fut
        try:
            self._publish(envelope)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise CallTimeout(
                f"no reply for invocation {envelope.invocation_id} within {timeout:.3f}s"
            ) from None
        finally:
            self._futures.pop(envelope.correlation_id, None)

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        """Queue a job envelope, after `delay_ms` (an asyncio timer: lost with the process)."""
        if envelope.reply_mode != REPLY_JOB:
            raise ValueError("submit() needs an envelope with reply_mode='job'")
        if delay_ms > 0:
            if not self._tasks:
                raise BrokerUnavailable("memory transport not started")
            asyncio.get_running_loop().call_later(delay_ms / 1000, self._publish_due, envelope)
            return
        self._publish(envelope)

    def _publish_due(self, envelope: Envelope) -> None:
        try:
            self._publish(envelope)
        except (QueueFull, BrokerUnavailable) as exc:
            log.error("dropping delayed job %s: %s", envelope.invocation_id, exc)

    async def consume_job_results(
        self, handler: JobResultHandler, on_started: JobStartedHandler | None = None,
        on_retrying: JobRetryingHandler | None = None,
    ) -> None:
        """Send every job reply to `handler` (and notices that a job started to `on_started`)."""
        self._job_handler = handler
        self._started_handler = on_started
        self._retrying_handler = on_retrying

    def _publish(self, envelope: Envelope) -> None:
        if not self._tasks:
            raise BrokerUnavailable("memory transport not started")
        job = envelope.reply_mode == REPLY_JOB
        lane = self._topology.job_queue(envelope.function) if job else self._topology.sync
        item = (int(job), next(self._order), lane, envelope.encode(published_ms=now_ms()))
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull("the in-memory queue is full; retry later") from None

    async def _work(self) -> None:
        while True:
            await self.pool.wait_for_room()
            _, _, lane, body = await self._queue.get()
            handled = await self.pool.handle(body, 0, self._announce)
            try:
                if handled.follow_up is not None:
                    await self._follow_up(handled.follow_up)
                await self._route(handled)
            except Exception:
                log.exception("routing a reply failed")
            if handled.settle is Settle.REJECT:
                self.dead_letters.append(body)
                await self._dead_letter(body, lane)

    async def _follow_up(self, follow_up: FollowUp) -> None:
        # What the AMQP consumer publishes (worker/flow.py), in process: a delay on a timer.
        if isinstance(follow_up, Exhausted):
            self.dead_letters.append(follow_up.body)
            await self._dead_letter(follow_up.body, "", dict(follow_up.headers))
            return
        lane = self._topology.job_queue(follow_up.function)
        if follow_up.delay_ms > 0:
            asyncio.get_running_loop().call_later(
                follow_up.delay_ms / 1000, self._publish_bytes_due, follow_up.body, lane
            )
        else:
            self._publish_bytes(follow_up.body, lane)
        if follow_up.notice is not None and self._retrying_handler is not None:
            await self._retrying_handler(follow_up.notice)

    def _publish_bytes_due(self, body: bytes, lane: str) -> None:
        try:
            self._publish_bytes(body, lane)
        except (QueueFull, BrokerUnavailable) as exc:
            log.error("dropping a delayed envelope: %s", exc)

    def _publish_bytes(self, body: bytes, lane: str) -> None:
        """Queue an encoded job envelope (a retry) in `lane`."""
        if not self._tasks:
            raise BrokerUnavailable("memory transport not started")
        try:
            self._queue.put_nowait((1, next(self._order), lane, body))
        except asyncio.QueueFull:
            raise QueueFull("the in-memory queue is full; retry later") from None

    async def _dead_letter(
        self, body: bytes, lane: str, headers: dict[str, Any] | None = None
    ) -> None:
        if self.on_dead_letter is None:
            return
        if headers is None:
            headers = {"x-death": [{"reason": "rejected", "queue": lane}]}
        try:
            await self.on_dead_letter(body, headers)
        except Exception:
            log.exception("storing a dead letter failed")

    def _announce(self, started: Started) -> None:
        # On an invocation thread, just before a job runs.
        if self._started_handler is not None and self._tasks:
            self._tasks[0].get_loop().call_soon_threadsafe(self._notify, started)

    def _notify(self, started: Started) -> None:
        task = asyncio.ensure_future(self._mark_started(started))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _mark_started(self, started: Started) -> None:
        assert self._started_handler is not None
        try:
            await self._started_handler(started)
        except Exception:
            log.exception("job started handler failed")

    async def _route(self, handled: Handled) -> None:
        reply = handled.reply
        if reply is None or not handled.route:
            return
        if handled.route == self._topology.job_results:
            if self._job_handler is not None:
                await self._job_handler(reply)
            else:
                log.warning("no job-result handler; dropping result %s", reply.invocation_id)
            return
        fut = self._futures.pop(reply.correlation_id, None)
        if fut is None or fut.done():
            self.stray_replies += 1
            log.info("dropping late or stray reply %s", reply.correlation_id)
            return
        fut.set_result(reply)
