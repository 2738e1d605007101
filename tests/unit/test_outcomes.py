"""`Outcome`: one enum whose members are the wire strings, wherever an outcome goes (reply,
job result JSON, problem document, metric label), and the API error each one maps to."""

from __future__ import annotations

import json

import msgpack
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from flotilla.envelope import EnvelopeError, Reply
from flotilla.errors import FunctionFailed, FunctionTimeout, Unavailable, error_for_reply
from flotilla.outcomes import Outcome
from flotilla.sandbox import Outcome as SandboxOutcome

WIRE = ["ok", "timeout", "memory_limit", "trap", "function_error", "bad_response",
        "expired", "not_found", "internal"]


def test_members_are_the_wire_strings() -> None:
    assert [o.value for o in Outcome] == WIRE
    assert SandboxOutcome is Outcome  # the sandbox has no enum of its own


@pytest.mark.parametrize("outcome", list(Outcome))
def test_an_outcome_reads_as_its_string_everywhere(outcome: Outcome) -> None:
    assert (str(outcome), f"{outcome}", outcome) == (outcome.value,) * 3
    assert json.dumps({"o": outcome}) == json.dumps({"o": outcome.value})
    assert msgpack.packb(outcome) == msgpack.packb(outcome.value)
    registry = CollectorRegistry()
    counter = Counter("calls", "calls", ["outcome"], registry=registry)
    counter.labels(outcome).inc()
    assert f'calls_total{{outcome="{outcome.value}"}} 1.0' in generate_latest(registry).decode()


@pytest.mark.parametrize("outcome", WIRE)
def test_replies_carry_members_however_they_were_made(outcome: str) -> None:
    made = Reply("i", "c", outcome)
    decoded = Reply.decode(made.encode())
    assert made.outcome is decoded.outcome is Outcome(outcome)


def test_an_unknown_outcome_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="outcome must be one of ok, timeout"):
        Reply("i", "c", "exploded")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcome", "error", "status"),
    [
        (Outcome.TIMEOUT, FunctionTimeout, 504),
        (Outcome.EXPIRED, FunctionTimeout, 504),
        (Outcome.NOT_FOUND, Unavailable, 503),
        (Outcome.INTERNAL, Unavailable, 503),
        (Outcome.TRAP, FunctionFailed, 502),
        (Outcome.MEMORY_LIMIT, FunctionFailed, 502),
        (Outcome.FUNCTION_ERROR, FunctionFailed, 502),
        (Outcome.BAD_RESPONSE, FunctionFailed, 502),
    ],
)
def test_each_failure_maps_to_its_api_error(
    outcome: Outcome, error: type[Exception], status: int
) -> None:
    problem = error_for_reply(Reply("i", "c", outcome, error="why"))
    assert type(problem) is error and problem.status == status
    assert json.loads(json.dumps(problem.to_problem()))["outcome"] == outcome.value
