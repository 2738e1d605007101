"""EnvelopeHandler: bytes in, (reply, settle decision) out, for every path; MemoryTransport."""

from __future__ import annotations

import asyncio

import pytest

from flotilla.dev.memory import MemoryTransport
from flotilla.envelope import Reply, now_ms
from flotilla.topology import Topology
from flotilla.transport import CallTimeout, QueueFull
from tests.fleet.fakes import FakeRunner, envelope
from worker.handler import EnvelopeHandler, Settle, run_timeout_ms
from worker.runner import capped_timeout_ms

TOPOLOGY = Topology("unit")


def _handler(offset_ms: int = 0) -> tuple[EnvelopeHandler, FakeRunner]:
    runner = FakeRunner()
    handler = EnvelopeHandler(
        runner, job_results=TOPOLOGY.job_results, clock=lambda: now_ms() + offset_ms
    )
    return handler, runner


@pytest.mark.parametrize(
    ("function", "job", "offset_ms", "settle", "outcome", "route", "ran"),
    [
        ("echo", False, 0, Settle.ACK, "ok", "q.reply", True),
        ("echo", True, 0, Settle.ACK, "ok", "unit.job-results", True),
        ("fail", False, 0, Settle.ACK, "function_error", "q.reply", True),
        ("nosuch", False, 0, Settle.ACK, "not_found", "q.reply", True),
        ("boom", False, 0, Settle.ACK, "internal", "q.reply", True),
        ("echo", False, 60_000, Settle.ACK, "expired", "q.reply", False),
        ("echo", True, 60_000, Settle.ACK, "expired", "unit.job-results", False),
    ],
)
def test_handle_paths(
    function: str, job: bool, offset_ms: int, settle: Settle, outcome: str, route: str, ran: bool
) -> None:
    handler, runner = _handler(offset_ms)
    env = envelope(function, job=job, reply_to_queue="" if job else "q.reply")
    handled = handler.handle(env.encode())
    assert handled.settle is settle
    assert handled.reply is not None
    assert (handled.reply.outcome, handled.route) == (outcome, route)
    assert handled.reply.correlation_id == env.correlation_id
    assert (env.invocation_id in runner.runs) is ran


@pytest.mark.parametrize("body", [b"", b"junk", b"\x81\xa1v\x01"])
def test_malformed_is_rejected_without_reply(body: bytes) -> None:
    handler, runner = _handler()
    handled = handler.handle(body)
    assert (handled.settle, handled.reply, handled.route) == (Settle.REJECT, None, "")
    assert runner.runs == {}


@pytest.mark.parametrize(("remaining", "expected"), [(1, 1), (5_000, 5_000), (0, None), (-3, None)])
def test_run_timeout(remaining: int, expected: int | None) -> None:
    assert run_timeout_ms(remaining) == expected


@pytest.mark.parametrize(
    ("config_ms", "budget_ms", "expected"),
    [
        (30_000, 5_000, 5_000),
        (30_000, 29_500, 30_000),  # a short queue wait keeps the function's own timeout
        (30_000, 28_999, 28_999),
        (100, 5_000, 100),
        (100, 0, 100),
        (5_000, 0, 1),
    ],
)
def test_capped_timeout(config_ms: int, budget_ms: int, expected: int) -> None:
    assert capped_timeout_ms(config_ms, budget_ms) == expected


async def test_memory_transport_call_and_jobs() -> None:
    handler, _ = _handler()
    results: asyncio.Queue[Reply] = asyncio.Queue()
    async with MemoryTransport(handler, topology=TOPOLOGY, concurrency=4) as t:
        await t.consume_job_results(results.put)
        replies = await asyncio.gather(
            *(t.call(envelope("echo", str(i).encode()), timeout=5) for i in range(50))
        )
        assert [r.body for r in replies] == [str(i).encode() for i in range(50)]
        job = envelope("fail", job=True)
        await t.submit(job)
        result = await asyncio.wait_for(results.get(), 5)
        assert (result.invocation_id, result.outcome) == (job.invocation_id, "function_error")


async def test_memory_transport_dead_letters_malformed() -> None:
    handler, _ = _handler()
    # One worker task: deliveries are handled strictly in order, so the junk is settled
    # (dead-lettered) before the echo behind it is even dequeued.
    async with MemoryTransport(handler, topology=TOPOLOGY, concurrency=1) as t:
        t._queue.put_nowait((0, 0, TOPOLOGY.sync, b"junk"))  # a corrupted publish, sync lane
        reply = await t.call(envelope("echo"), timeout=5)  # FIFO: junk was handled first
        assert reply.ok
        assert t.dead_letters == [b"junk"]


async def test_memory_transport_queue_full() -> None:
    handler, runner = _handler()
    async with MemoryTransport(handler, topology=TOPOLOGY, concurrency=1, max_length=1) as t:
        blocked = asyncio.create_task(t.call(envelope("block"), timeout=10))
        await asyncio.to_thread(runner.started.acquire, True, 5)
        queued = asyncio.create_task(t.call(envelope("echo"), timeout=10))
        await asyncio.sleep(0)  # the task runs up to its first await: the envelope is queued
        assert t._queue.full()
        with pytest.raises(QueueFull):
            await t.call(envelope("echo"), timeout=1)
        runner.release.set()
        assert (await blocked).body == b"done"
        assert (await queued).ok


async def test_memory_transport_timeout_then_stray_reply() -> None:
    handler, runner = _handler()
    async with MemoryTransport(handler, topology=TOPOLOGY, concurrency=1) as t:
        with pytest.raises(CallTimeout):
            await t.call(envelope("block"), timeout=0.05)
        runner.release.set()
        assert (await t.call(envelope("echo"), timeout=5)).ok  # FIFO: the late reply came first
        assert t.stray_replies == 1


def _ledger_handler(redis: object) -> tuple[EnvelopeHandler, FakeRunner]:
    from worker.handler import RunLedger

    runner = FakeRunner()
    ledger = RunLedger(redis, "unit")
    return EnvelopeHandler(runner, job_results=TOPOLOGY.job_results, runs=ledger), runner


def test_redelivered_envelopes_are_counted_and_dead_lettered_at_poison_runs() -> None:
    import fakeredis

    redis = fakeredis.FakeRedis()
    handler, runner = _ledger_handler(redis)
    env = envelope("echo", reply_to_queue="q.reply")
    assert handler.handle(env.encode(), redeliveries=0).settle is Settle.ACK
    assert redis.get(f"unit:runs:{env.invocation_id}") is None  # first deliveries cost nothing
    for expected_runs in (1, 2):  # a worker died under it twice more
        assert handler.handle(env.encode(), redeliveries=expected_runs).settle is Settle.ACK
        assert int(redis.get(f"unit:runs:{env.invocation_id}")) == expected_runs
    dead = handler.handle(env.encode(), redeliveries=3)
    assert dead.settle is Settle.REJECT
    assert dead.reply is not None and dead.reply.outcome == "internal"
    assert "started 3 times" in dead.reply.error
    assert runner.runs[env.invocation_id] == 3
    # An envelope only ever held (prefetched) by dying workers has no runs counted: it runs.
    held = envelope("echo", reply_to_queue="q.reply")
    assert handler.handle(held.encode(), redeliveries=7).settle is Settle.ACK


def test_without_redis_the_delivery_count_decides() -> None:
    class Down:
        def pipeline(self, **_: object) -> object:
            raise ConnectionError("redis is down")

    handler, runner = _ledger_handler(Down())
    env = envelope("echo", reply_to_queue="q.reply")
    assert handler.handle(env.encode(), redeliveries=2).settle is Settle.ACK
    assert handler.handle(env.encode(), redeliveries=3).settle is Settle.REJECT
    assert runner.runs[env.invocation_id] == 1


def test_call_info_carries_the_envelopes_call() -> None:
    from flotilla.envelope import Envelope
    from flotilla.hosts.base import SYNC_CALL, CallInfo
    from worker.runner import call_info

    plain = Envelope.for_call("i", "fn", "d", (), b"", timeout_ms=10, reply_to="r")
    assert call_info(plain) is SYNC_CALL
    job = Envelope.for_job(
        "j", "fn", "d", (), b"", ttl_s=5, method="PUT", path="/p", query=(("a", "1"),),
        caller="k", kind="spawned", attempt=2,
    )
    assert call_info(job) == CallInfo("PUT", "/p", (("a", "1"),), "k", "spawned", 2)
    assert call_info(Envelope.for_job("j", "fn", "d", (), b"", ttl_s=5)).kind == "job"
