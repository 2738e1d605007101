"""`InvocationPool` answers before the sandbox is torn down: a run's reply reaches the event
loop while its thread still deletes the invocation's store (deferred by `teardowns_after`),
and the thread is done only after. Fake runner; tests/sandbox/test_teardown.py has the
sandbox's side."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from flotilla.envelope import Envelope, Reply
from flotilla.sandbox.sandbox import defer_teardown
from flotilla.topology import Topology
from tests.fleet.fakes import FakeRunner, envelope
from worker.executor import InvocationPool
from worker.handler import EnvelopeHandler

pytestmark = pytest.mark.timeout(30)


class SlowTeardown(FakeRunner):
    """Echoes; each run leaves a teardown that waits for `torn` to be allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.allow = threading.Event()
        self.torn = threading.Event()

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        reply = super().run(envelope, timeout_ms)

        def teardown() -> None:
            self.allow.wait(10)
            self.torn.set()

        defer_teardown(teardown)
        return reply


async def test_the_answer_comes_before_the_teardown() -> None:
    runner = SlowTeardown()
    handler = EnvelopeHandler(runner, job_results=Topology("unit-answer").job_results)
    with ThreadPoolExecutor(2) as executor:
        pool = InvocationPool(handler, executor, max_abandoned=1)
        handled = await pool.handle(envelope("echo", b"hi", reply_to_queue="q").encode())
        # Answered while the teardown still waits
        assert handled.reply is not None and handled.reply.body == b"hi"
        assert not runner.torn.is_set()
        runner.allow.set()
        assert await asyncio.to_thread(runner.torn.wait, 10)


async def test_a_teardown_outside_the_pool_runs_at_once() -> None:
    runner = SlowTeardown()
    runner.allow.set()
    runner.run(envelope("echo", b"x"), 1000)
    assert runner.torn.is_set()
