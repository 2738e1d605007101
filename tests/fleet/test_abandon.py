"""Runs blocked past their timeout (a guest asleep in a WASI poll): `InvocationPool` answers
`timeout` at the due time, abandons the thread, keeps serving others, and stops taking work at
the cap of abandoned threads. Fake runner; the real guest is in tests/hardening."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from flotilla.dev.memory import MemoryTransport
from flotilla.envelope import Envelope, Reply, now_ms
from flotilla.metrics import WorkerMetrics
from flotilla.topology import Topology
from tests.fleet.fakes import FakeRunner, envelope
from worker.executor import InvocationPool
from worker.handler import EnvelopeHandler, Settle, arm_watch

pytestmark = pytest.mark.timeout(30)

TOPOLOGY = Topology("unit-abandon")


@pytest.fixture
def runner() -> Iterator[FakeRunner]:
    r = FakeRunner()
    yield r
    r.release.set()  # let abandoned threads end with the test


def _handler(runner: FakeRunner, metrics: WorkerMetrics | None = None) -> EnvelopeHandler:
    # No slack: a run is due at its deadline (the sandbox runner's slack is a second).
    return EnvelopeHandler(
        runner, job_results=TOPOLOGY.job_results, metrics=metrics, run_slack_ms=0
    )


def _value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_blocked_run_is_answered_timeout_and_its_thread_abandoned(
    runner: FakeRunner,
) -> None:
    metrics = WorkerMetrics()
    with ThreadPoolExecutor(2) as executor:
        pool = InvocationPool(_handler(runner, metrics), executor, max_abandoned=1, grace_ms=50)
        env = envelope("block", deadline_in_ms=200, reply_to_queue="q.reply")
        started = now_ms()
        handled = await pool.handle(env.encode())
        answered = now_ms()
        assert handled.reply is not None
        assert (handled.settle, handled.route) == (Settle.ACK, "q.reply")
        assert handled.reply.outcome == "timeout"
        assert "host call" in handled.reply.error
        assert handled.reply.correlation_id == env.correlation_id
        assert answered - started >= 200  # not before its deadline
        assert (pool.abandoned, pool.saturated) == (1, True)  # the thread still blocks
        assert _value(metrics, "flotilla_invocations_abandoned_total") == 1
        assert (
            _value(metrics, "flotilla_invocations_total", function="block", outcome="timeout") == 1
        )

        runner.release.set()
        await pool.wait_for_room()  # the thread came back
        assert (pool.abandoned, pool.saturated) == (0, False)
        # Its late result was discarded, not counted a second time.
        assert _value(metrics, "flotilla_invocations_total", function="block", outcome="ok") == 0


async def test_a_normal_run_beside_a_blocked_one_completes(runner: FakeRunner) -> None:
    with ThreadPoolExecutor(2) as executor:
        pool = InvocationPool(_handler(runner), executor, max_abandoned=1, grace_ms=50)
        blocked = asyncio.ensure_future(
            pool.handle(envelope("block", deadline_in_ms=300, reply_to_queue="q").encode())
        )
        await asyncio.to_thread(runner.started.acquire)
        normal = await pool.handle(envelope("echo", reply_to_queue="q").encode())
        assert normal.reply is not None and normal.reply.outcome == "ok"
        assert not blocked.done()  # answered while the other one still runs
        assert (await blocked).reply.outcome == "timeout"  # type: ignore[union-attr]
        # Headroom: the abandoned thread does not take the only slot of a 1-slot worker.
        again = await pool.handle(envelope("echo", reply_to_queue="q").encode())
        assert again.reply is not None and again.reply.outcome == "ok"
        runner.release.set()  # before the executor joins its threads


async def test_run_that_finishes_in_time_is_not_abandoned(runner: FakeRunner) -> None:
    metrics = WorkerMetrics()
    with ThreadPoolExecutor(1) as executor:
        pool = InvocationPool(_handler(runner, metrics), executor, max_abandoned=1, grace_ms=50)
        env = envelope("sleep", b"100", deadline_in_ms=2_000, reply_to_queue="q")
        handled = await pool.handle(env.encode())
        assert handled.reply is not None and handled.reply.body == b"slept"
        assert pool.abandoned == 0
        assert _value(metrics, "flotilla_invocations_abandoned_total") == 0


async def test_memory_transport_answers_timeout_and_waits_at_the_cap(runner: FakeRunner) -> None:
    # Dev mode: one slot, at most one abandoned thread.
    async with MemoryTransport(
        _handler(runner), topology=TOPOLOGY, concurrency=1, max_abandoned=1
    ) as t:
        reply = await t.call(envelope("block", deadline_in_ms=300), timeout=10)
        assert reply.outcome == "timeout"
        assert t.pool.saturated
        # At the cap the worker takes no new work until the blocked thread comes back ...
        echo = asyncio.ensure_future(t.call(envelope("echo", b"later"), timeout=10))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not echo.done()
        runner.release.set()
        # ... and then serves it.
        assert (await echo).body == b"later"
        assert not t.pool.saturated


class _ArmingRunner(FakeRunner):
    """Arms the watch with the function's own timeout, as `SandboxRunner` does once loaded."""

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        arm_watch(100)
        return super().run(envelope, timeout_ms)


async def test_job_is_abandoned_at_the_functions_timeout_not_its_ttl() -> None:
    # A job's deadline is its TTL (an hour here): the runner's own timeout decides.
    runner = _ArmingRunner()
    try:
        with ThreadPoolExecutor(1) as executor:
            pool = InvocationPool(_handler(runner), executor, max_abandoned=1, grace_ms=50)
            env = envelope("block", deadline_in_ms=3_600_000, job=True)
            handled = await pool.handle(env.encode())
            assert handled.reply is not None and handled.reply.outcome == "timeout"
            assert handled.route == TOPOLOGY.job_results
            runner.release.set()
    finally:
        runner.release.set()
