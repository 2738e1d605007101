"""The job flow around a run, without a broker: retry policy tables, and the handler with
a `JobFlow` on fakeredis (admission, the start gate, retries, exhaustion).

The Lua scripts run in fakeredis (lupa), the same text real Redis runs; the real-Redis and
real-fleet versions are in tests/jobs/test_flow_e2e.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import fakeredis
import pytest

from flotilla.admission import JobTokens, Leases
from flotilla.config import FunctionConfig, RateLimit, RetryPolicy
from flotilla.envelope import Envelope, Retrying
from flotilla.jobstate import CANCEL_LUA, JobGate, JobKeys
from flotilla.outcomes import Outcome
from flotilla.retries import Verdict, backoff_ms, verdict
from tests.fleet.fakes import FakeRunner, envelope
from worker.flow import Again, Exhausted, JobFlow
from worker.handler import EnvelopeHandler, Settle

RETRY = RetryPolicy(max_attempts=3, backoff_ms=100, backoff_max_ms=300,
                    on=("function_error", "trap"))


@pytest.mark.parametrize(("policy", "attempt", "outcome", "expected"), [
    (RETRY, 1, Outcome.FUNCTION_ERROR, Verdict.RETRY),
    (RETRY, 2, Outcome.TRAP, Verdict.RETRY),
    (RETRY, 3, Outcome.TRAP, Verdict.EXHAUSTED),
    (RETRY, 7, Outcome.TRAP, Verdict.EXHAUSTED),
    (RETRY, 1, Outcome.TIMEOUT, Verdict.DONE),  # not in `on`
    (RETRY, 1, Outcome.OK, Verdict.DONE),
    (RETRY, 1, Outcome.NOT_FOUND, Verdict.DONE),
    (RetryPolicy(), 1, Outcome.TRAP, Verdict.DONE),  # no retries: no dead letter either
    (RetryPolicy(max_attempts=2), 1, Outcome.TIMEOUT, Verdict.RETRY),
    (RetryPolicy(max_attempts=2), 2, Outcome.TIMEOUT, Verdict.EXHAUSTED),
])
def test_verdict(policy: RetryPolicy, attempt: int, outcome: Outcome, expected: Verdict) -> None:
    assert verdict(policy, attempt, outcome) is expected


@pytest.mark.parametrize(("attempt", "low", "high"), [
    (1, 50, 100), (2, 100, 200), (3, 150, 300), (4, 150, 300), (60, 150, 300), (10_000, 150, 300),
])
def test_backoff_is_exponential_capped_with_equal_jitter(attempt: int, low: int, high: int) -> None:
    assert backoff_ms(RETRY, attempt, lambda a, b: a) == low
    assert backoff_ms(RETRY, attempt, lambda a, b: b) == high


def test_zero_backoff_retries_at_once() -> None:
    assert backoff_ms(RetryPolicy(max_attempts=2, backoff_ms=0), 1) == 0


class ConfiguredRunner(FakeRunner):
    """FakeRunner whose functions have configs (`fail` fails with function_error)."""

    def __init__(self, configs: dict[str, FunctionConfig]) -> None:
        super().__init__()
        self.configs = configs

    def config(self, env: Envelope) -> FunctionConfig:
        return self.configs[env.function]


def make(configs: dict[str, FunctionConfig], **flow: Any) -> tuple[EnvelopeHandler, Any]:
    redis = fakeredis.FakeRedis()
    runner = ConfiguredRunner(configs)
    parts: dict[str, Any] = {"gate": JobGate(redis, prefix="p"),
                             "leases": Leases(redis, prefix="p"),
                             "tokens": JobTokens(redis, prefix="p"),
                             "uniform": lambda a, b: a, **flow}
    handler = EnvelopeHandler(runner, job_results="results",
                              flow=JobFlow(configs=runner.config, **parts))
    return handler, (runner, redis)


def record(redis: Any, env: Envelope) -> None:
    """What the dispatcher writes at submit time (the gate knows the job then)."""
    redis.set(JobKeys.of("p", env.invocation_id).record, json.dumps({"job_id": env.invocation_id}))


def test_a_failed_attempt_is_published_again_with_a_notice_and_no_reply() -> None:
    handler, (_runner, redis) = make({"fail": FunctionConfig("fail", retry=RETRY)})
    job = envelope("fail", job=True)
    record(redis, job)
    handled = handler.handle(job.encode())
    assert handled.settle is Settle.ACK and handled.route == ""  # no reply published
    assert handled.reply is not None and handled.reply.outcome is Outcome.FUNCTION_ERROR
    again = handled.follow_up
    assert isinstance(again, Again) and again.delay_ms == 50
    assert Envelope.decode(again.body).attempt == 2
    assert isinstance(again.notice, Retrying)
    assert (again.notice.attempt, again.notice.outcome, again.notice.error) == (
        1, "function_error", "guest said no")
    # Attempt 3 of 3: the reply stands and the envelope is dead-lettered.
    last = dataclasses.replace(Envelope.decode(again.body), attempt=3)
    handled = handler.handle(last.encode())
    assert handled.route == "results" and handled.reply is not None
    dead = handled.follow_up
    assert isinstance(dead, Exhausted)
    assert dict(dead.headers) == {"x-flotilla-reason": "exhausted",
                                  "x-flotilla-error": "function_error: guest said no",
                                  "x-flotilla-attempts": 3}
    assert Envelope.decode(dead.body).invocation_id == job.invocation_id


def test_a_redelivery_is_not_an_attempt() -> None:
    handler, (_, redis) = make({"fail": FunctionConfig("fail", retry=RETRY)})
    job = envelope("fail", job=True)
    record(redis, job)
    handled = handler.handle(job.encode(), redeliveries=2)  # the worker crashed twice
    assert isinstance(handled.follow_up, Again)
    assert Envelope.decode(handled.follow_up.body).attempt == 2


def test_sync_calls_and_successes_are_never_retried() -> None:
    handler, _ = make({"fail": FunctionConfig("fail", retry=RETRY),
                       "echo": FunctionConfig("echo", retry=RETRY)})
    handled = handler.handle(envelope("fail", reply_to_queue="q").encode())
    assert handled.follow_up is None and handled.route == "q"
    assert handler.handle(envelope("echo", job=True).encode()).follow_up is None


def test_a_cancelled_job_is_acked_and_never_runs() -> None:
    handler, (runner, redis) = make({"echo": FunctionConfig("echo")})
    job = envelope("echo", job=True)
    record(redis, job)
    keys = JobKeys.of("p", job.invocation_id)
    assert redis.register_script(CANCEL_LUA)(
        keys=keys.gate(), args=['{"status": "cancelled"}', 60, keys.channel])[0] == b"cancelled"
    handled = handler.handle(job.encode())
    assert (handled.settle, handled.reply, handled.follow_up) == (Settle.ACK, None, None)
    assert runner.runs == {}
    # A finished job's redelivery is not run again either.
    done = envelope("echo", job=True)
    record(redis, done)
    redis.set(JobKeys.of("p", done.invocation_id).result, "{}")
    assert handler.handle(done.encode(), redeliveries=1).reply is None
    assert runner.runs == {}


def test_a_job_over_max_concurrency_is_deferred_and_a_sync_call_waits() -> None:
    sleeps: list[float] = []
    handler, (runner, redis) = make({"echo": FunctionConfig("echo", max_concurrency=1)},
                                    sleep=sleeps.append)
    leases = Leases(redis, prefix="p")
    assert leases.acquire("echo", "someone-else", 1, 60_000) == 0
    job = envelope("echo", job=True)
    handled = handler.handle(job.encode())
    assert isinstance(handled.follow_up, Again) and handled.reply is None
    assert handled.follow_up.body == job.encode() and handled.follow_up.delay_ms == 250
    assert runner.runs == {}
    # A synchronous call polls until its deadline, then answers timeout, never run.
    call = envelope("echo", reply_to_queue="q", deadline_in_ms=60)
    handled = handler.handle(call.encode())
    assert handled.reply is not None and handled.reply.outcome is Outcome.TIMEOUT
    assert "at most 1 at once" in handled.reply.error and sleeps and runner.runs == {}
    # Once the lease is given back, both run, and give their own lease back.
    leases.release("echo", "someone-else")
    assert handler.handle(job.encode()).reply is not None
    assert handler.handle(envelope("echo", reply_to_queue="q").encode()).reply is not None
    assert leases.held("echo") == 0 and len(runner.runs) == 2


def test_a_rate_limited_job_waits_for_its_token() -> None:
    handler, (_runner, _) = make({"echo": FunctionConfig(
        "echo", rate_limit=RateLimit(per_second=1, burst=1))})
    assert handler.handle(envelope("echo", job=True).encode()).reply is not None
    deferred = handler.handle(envelope("echo", job=True).encode()).follow_up
    assert isinstance(deferred, Again) and 900 <= deferred.delay_ms <= 1000
    # Synchronous calls took their token in the dispatcher: not again here.
    assert handler.handle(envelope("echo", reply_to_queue="q").encode()).reply is not None


def test_redis_down_fails_open() -> None:
    class Down:
        def register_script(self, _: str) -> Any:
            def script(**_: Any) -> Any:
                raise ConnectionError("redis is down")
            return script

        def zrem(self, *_: Any) -> None:
            raise ConnectionError("redis is down")

    handler, (_runner, _) = make(
        {"echo": FunctionConfig("echo", max_concurrency=1,
                                rate_limit=RateLimit(per_second=1, burst=1))},
        gate=JobGate(Down()), leases=Leases(Down(), prefix="p"),
        tokens=JobTokens(Down(), prefix="p"))
    handled = handler.handle(envelope("echo", job=True).encode())
    assert handled.reply is not None and handled.reply.ok and handled.follow_up is None
