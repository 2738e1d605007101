"""Dev mode's transport (`MemoryTransport`) carries the job flow like the broker does: a
retry is queued again after its backoff with a `Retrying` notice, an exhausted job keeps
its result and reaches the dead letters with reason `exhausted`."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest

from flotilla.admission import JobTokens, Leases
from flotilla.config import FunctionConfig, RetryPolicy
from flotilla.deadletters import describe
from flotilla.dev.memory import MemoryTransport
from flotilla.envelope import Reply, Retrying
from flotilla.jobstate import JobGate
from flotilla.outcomes import Outcome
from tests.fleet.fakes import envelope
from tests.jobs.test_flow import ConfiguredRunner
from worker.flow import JobFlow
from worker.handler import EnvelopeHandler

pytestmark = [pytest.mark.timeout(30)]


async def test_retries_and_exhaustion_in_dev_mode() -> None:
    runner = ConfiguredRunner({"fail": FunctionConfig("fail", retry=RetryPolicy(
        max_attempts=3, backoff_ms=20, backoff_max_ms=40, on=("function_error",)))})
    redis = fakeredis.FakeRedis()
    flow = JobFlow(configs=runner.config, gate=JobGate(redis, prefix="p"),
                   leases=Leases(redis, prefix="p"), tokens=JobTokens(redis, prefix="p"))
    transport = MemoryTransport(EnvelopeHandler(runner, job_results="flotilla.job-results",
                                                flow=flow), concurrency=2)
    replies: list[Reply] = []
    notices: list[Retrying] = []
    letters: list[tuple[bytes, dict[str, Any]]] = []
    dead = asyncio.Event()

    async def on_reply(reply: Reply) -> None:
        replies.append(reply)

    async def on_retrying(notice: Retrying) -> None:
        notices.append(notice)

    async def on_dead_letter(body: bytes, headers: dict[str, Any]) -> None:
        letters.append((body, headers))
        dead.set()

    transport.on_dead_letter = on_dead_letter
    async with transport:
        await transport.consume_job_results(on_reply, None, on_retrying)
        job = envelope("fail", job=True)
        await transport.submit(job)
        await asyncio.wait_for(dead.wait(), 10)
    assert [n.attempt for n in notices] == [1, 2]
    assert [r.outcome for r in replies] == [Outcome.FUNCTION_ERROR]  # the last attempt's
    assert runner.runs == {job.invocation_id: 3}
    (body, headers), = letters
    letter = describe("x" * 32, body, headers, job_results="flotilla.job-results")
    assert (letter.reason, letter.attempts, letter.invocation_id, letter.replayable) == (
        "exhausted", 3, job.invocation_id, True)
