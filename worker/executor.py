"""`InvocationPool`: runs `EnvelopeHandler.handle` on an executor's threads and answers for
runs that outlive their timeout blocked in a host call.

wasmtime's epoch deadline interrupts wasm code, not a thread blocked inside a WASI host call
(Python's `time.sleep` is a wasi:io/poll on a monotonic-clock pollable, run inside wasmtime).
Such a run would hold its thread, and its caller, until the guest's sleep ends. So the pool
watches every run: once one is `grace_ms` past its due time (`Watch.due_ms`), the transport
gets a `timeout` answer for it at once (`EnvelopeHandler.abandon`) and the thread is left to
finish on its own (its store is dropped when it returns; its late result is discarded).

A run's answer goes to the event loop before its sandbox is torn down
(`flotilla.sandbox.sandbox.teardowns_after`): the reply is published and the delivery
settled while the thread deletes the invocation's store (a memory reset, ~0.4-0.9 ms for a
Python guest), so callers do not wait for it. The thread takes new work only after.

Transports size their executor `concurrency + max_abandoned` threads, so abandoned threads do
not starve the others; at the cap, `saturated` is true and they take no new work (the worker
reports not ready) until an abandoned thread comes back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from flotilla.envelope import Started, now_ms
from flotilla.sandbox.sandbox import teardowns_after
from worker.handler import EnvelopeHandler, Handled, Watch

log = logging.getLogger(__name__)

GRACE_MS = 250  # past a run's due time before it is abandoned (the epoch cut-off comes first)
TICK_S = 0.05  # how often the watchdog looks, while runs are in flight


@dataclass(eq=False)
class _WatchedRun:
    """A delivery running on a pool thread, watched by the pool until it is due."""

    watch: Watch
    result: asyncio.Future[Handled]
    thread: concurrent.futures.Future[Handled]


class InvocationPool:
    """Runs deliveries on `executor`; abandons runs stuck past their timeout (at most
    `max_abandoned` threads at once before `saturated`)."""

    def __init__(
        self,
        handler: EnvelopeHandler,
        executor: Executor,
        *,
        max_abandoned: int,
        grace_ms: int = GRACE_MS,
        tick_s: float = TICK_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._handler = handler
        self._executor = executor
        self._max_abandoned = max_abandoned
        self._grace_ms = grace_ms
        self._tick_s = tick_s
        self._clock = clock
        self._runs: set[_WatchedRun] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self.abandoned = 0  # threads abandoned and still running
        self.abandoned_total = 0

    @property
    def saturated(self) -> bool:
        """True while `max_abandoned` threads are still blocked: take no new work."""
        return self.abandoned > 0 and self.abandoned >= self._max_abandoned

    async def wait_for_room(self) -> None:
        """Return once fewer than `max_abandoned` threads are abandoned."""
        while self.saturated:
            self._room.clear()
            await self._room.wait()

    async def handle(
        self,
        body: bytes,
        redeliveries: int = 0,
        on_start: Callable[[Started], None] | None = None,
    ) -> Handled:
        """`EnvelopeHandler.handle` on a thread, or its `timeout` answer if the run is stuck."""
        loop = asyncio.get_running_loop()
        watch = Watch()
        result: asyncio.Future[Handled] = loop.create_future()
        thread = self._executor.submit(self._run, loop, result, body, redeliveries, on_start,
                                       watch)
        run = _WatchedRun(watch, result, thread)
        thread.add_done_callback(lambda _: _call_soon(loop, self._finished, run))
        self._runs.add(run)
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch())
        try:
            return await result
        finally:
            self._runs.discard(run)

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        result: asyncio.Future[Handled],
        body: bytes,
        redeliveries: int,
        on_start: Callable[[Started], None] | None,
        watch: Watch,
    ) -> Handled:
        # On a pool thread: answer first, then delete the invocation's store.
        with teardowns_after() as tear_down:
            handled = self._handler.handle(body, redeliveries, on_start, watch)
            _call_soon(loop, _answer, result, handled)
            tear_down()
        return handled

    def _finished(self, run: _WatchedRun) -> None:
        # On the loop, once the thread returned (maybe long after it was abandoned).
        if run.watch.abandoned:
            self.abandoned -= 1
            log.info("an abandoned invocation thread returned (%d still out)", self.abandoned)
            if not self.saturated:
                self._room.set()
            return
        if run.result.done():  # answered already, or the awaiting task was cancelled
            return
        if run.thread.cancelled():  # never started: the executor shut down first
            run.result.cancel()
            return
        exc = run.thread.exception()
        if exc is not None:
            run.result.set_exception(exc)
        else:
            run.result.set_result(run.thread.result())

    async def _watch(self) -> None:
        # Runs while invocations are in flight; the next `handle` starts it again.
        try:
            while self._runs:
                await asyncio.sleep(self._tick_s)
                now = self._clock()
                for run in list(self._runs):
                    due = run.watch.due_ms
                    if due is None or run.result.done() or run.thread.done():
                        continue
                    if now - due >= self._grace_ms:
                        self._abandon(run, now - due)
        finally:
            self._watchdog = None

    def _abandon(self, run: _WatchedRun, late_ms: int) -> None:
        envelope = run.watch.envelope
        log.warning(
            "invocation %s of %s still blocked %d ms past its timeout: answering timeout and "
            "abandoning its thread",
            envelope.invocation_id if envelope else "?",
            envelope.function if envelope else "?",
            late_ms,
        )
        self.abandoned += 1
        self.abandoned_total += 1
        run.result.set_result(self._handler.abandon(run.watch, late_ms))


def _answer(result: asyncio.Future[Handled], handled: Handled) -> None:
    # On the loop: a run's answer, unless it was abandoned (answered) or its task cancelled.
    if not result.done():
        result.set_result(handled)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object
               ) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed first: nobody waits for this run any more
        pass
