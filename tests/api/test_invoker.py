"""`Invoker` (flotilla/invoker.py), the one path from a name to a reply or typed error that
the HTTP invoke route, the jobs route and the Python client share: resolution, the body
limit, the envelopes it builds, the errors it maps and the metrics it keeps. A scripted
transport stands in for the broker; jobs live in a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from flotilla.config import FunctionConfig
from flotilla.envelope import REPLY_JOB, REPLY_QUEUE, Envelope, Reply, now_ms
from flotilla.errors import (
    ApiError,
    BodyTooLarge,
    FunctionFailed,
    FunctionNotFound,
    FunctionTimeout,
    Unavailable,
)
from flotilla.invoker import Invoker
from flotilla.jobs import JobStore
from flotilla.metrics import DispatcherMetrics
from flotilla.outcomes import Outcome
from flotilla.registry import FunctionNotDeployed, FunctionVersion, ResolveCache
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull
from tests.api.conftest import FakeTransport

FN = FunctionVersion(
    name="echo", digest="d" * 64, number=1,
    config=FunctionConfig("echo", timeout_ms=1_500, max_body_bytes=8),
    wasm_sha256="w" * 64, wasm_size=1, artifact_sha256="a" * 64, engine_fingerprint="e",
    created_at=0.0,
)


class Versions:
    """A VersionSource that knows FN and counts its reads."""

    def __init__(self) -> None:
        self.reads = 0

    async def get_version(self, name: str, selector: str | int = "latest") -> FunctionVersion:
        self.reads += 1
        if name != FN.name or selector not in ("latest", "1"):
            raise FunctionNotDeployed(f"function {name!r} has no version {selector!r}")
        return FN


@pytest.fixture
async def jobs(redis_url: str, unique: str) -> AsyncIterator[JobStore]:
    redis = aioredis.from_url(redis_url)
    yield JobStore(redis, prefix=unique, ttl_s=60)
    keys = [k async for k in redis.scan_iter(f"{unique}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def _invoker(transport: FakeTransport, **kwargs: Any) -> Invoker:
    """An invoker with a 500 ms reply margin and Retry-After 7 over `Versions`."""
    return Invoker(Versions(), transport, reply_margin_ms=500, retry_after_s=7, **kwargs)


def _value(metrics: DispatcherMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_call_publishes_one_envelope_and_returns_the_ok_reply() -> None:
    transport = FakeTransport()
    metrics = DispatcherMetrics()
    waiting: list[float] = []

    def worker(e: Envelope) -> Reply:
        waiting.append(_value(metrics, "flotilla_callers_in_flight"))
        return Reply(e.invocation_id, e.correlation_id, "ok", status=201, body=e.body)

    transport.worker = worker
    invoker = _invoker(transport, metrics=metrics)
    # When a function is called with the defaults
    reply = await invoker.call(FN, b"hi", (("x-a", "1"),), invocation_id="inv-1")
    # Then one envelope went out: addressed to the transport's reply queue, with the
    # function's timeout plus the margin, correlated by the invocation id
    assert (reply.status, reply.body) == (201, b"hi")
    [(envelope, timeout)] = transport.calls
    assert timeout == pytest.approx(2.0)
    assert (envelope.invocation_id, envelope.correlation_id) == ("inv-1", "inv-1")
    assert (envelope.function, envelope.digest, envelope.headers) == ("echo", FN.digest,
                                                                      (("x-a", "1"),))
    assert (envelope.reply_mode, envelope.reply_to) == (REPLY_QUEUE, "fake.reply")
    # and the caller was counted as waiting, then not, with one confirmed publish
    assert waiting == [1.0]
    assert _value(metrics, "flotilla_callers_in_flight") == 0
    assert _value(metrics, "flotilla_publishes_total", result="confirmed") == 1
    assert _value(metrics, "flotilla_reply_latency_seconds_count") == 1


async def test_call_with_a_timeout_of_its_own_and_a_fresh_id() -> None:
    transport = FakeTransport()
    await _invoker(transport).call(FN, b"", timeout_ms=100)
    await _invoker(transport).call(FN, b"", timeout_ms=100)
    (first, timeout), (second, _) = transport.calls
    assert timeout == pytest.approx(0.6)
    assert first.invocation_id != second.invocation_id


async def test_body_over_the_limit_is_refused_before_publishing() -> None:
    transport = FakeTransport()
    with pytest.raises(BodyTooLarge, match="9 bytes exceeds echo's max_body_bytes"):
        await _invoker(transport).call(FN, b"x" * 9)
    assert transport.calls == []


@pytest.mark.parametrize(
    ("failure", "error", "result"),
    [
        (QueueFull("full"), Unavailable, "rejected"),
        (BrokerUnavailable("down"), Unavailable, "failed"),
        (CallTimeout("late"), FunctionTimeout, "confirmed"),
    ],
)
async def test_transport_errors_become_api_errors(
    failure: Exception, error: type[ApiError], result: str
) -> None:
    transport = FakeTransport()
    transport.fail = failure
    metrics = DispatcherMetrics()
    with pytest.raises(error) as info:
        await _invoker(transport, metrics=metrics).call(FN, b"", invocation_id="inv-2")
    assert _value(metrics, "flotilla_publishes_total", result=result) == 1
    assert _value(metrics, "flotilla_callers_in_flight") == 0
    assert _value(metrics, "flotilla_reply_latency_seconds_count") == 0
    if isinstance(info.value, Unavailable):
        assert info.value.headers == {"Retry-After": "7"}
    else:
        assert str(info.value) == "no reply within 1500 ms (+500 ms margin)"
        assert info.value.extra == {"outcome": Outcome.TIMEOUT, "invocation_id": "inv-2"}


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (Outcome.FUNCTION_ERROR, FunctionFailed),
        (Outcome.TIMEOUT, FunctionTimeout),
        (Outcome.INTERNAL, Unavailable),
    ],
)
async def test_failed_replies_become_api_errors(outcome: str, error: type[ApiError]) -> None:
    transport = FakeTransport()
    transport.worker = lambda e: Reply(e.invocation_id, e.correlation_id, outcome, error="no")
    with pytest.raises(error) as info:
        await _invoker(transport).call(FN, b"", invocation_id="inv-3")
    assert info.value.extra == {"outcome": outcome, "invocation_id": "inv-3"}


async def test_resolve_names_the_missing_function() -> None:
    invoker = _invoker(FakeTransport())
    assert await invoker.resolve("echo") is FN
    assert await invoker.resolve("echo", "1") is FN
    with pytest.raises(FunctionNotFound) as info:
        await invoker.resolve("echo", "2")
    assert info.value.extra == {"function": "echo"}


async def test_resolve_through_a_cache_reads_once() -> None:
    versions = Versions()
    invoker = Invoker(ResolveCache(versions, ttl_s=60), FakeTransport())
    for _ in range(3):
        await invoker.resolve("echo")
    assert versions.reads == 1


async def test_submit_records_the_job_then_publishes_it(jobs: JobStore) -> None:
    transport = FakeTransport()
    metrics = DispatcherMetrics()
    invoker = _invoker(transport, jobs=jobs, job_ttl_s=60, metrics=metrics)
    job_id = await invoker.submit(FN, b"later", callback_url="http://hooks.example.com/x")
    [envelope] = transport.submitted
    assert (envelope.invocation_id, envelope.correlation_id) == (job_id, job_id)
    assert (envelope.reply_mode, envelope.body) == (REPLY_JOB, b"later")
    assert 55_000 < envelope.remaining_ms(now_ms()) <= 60_000
    record = await jobs.record(job_id)
    assert record is not None
    assert (record.function, record.digest, record.callback_url) == (
        "echo", FN.digest, "http://hooks.example.com/x"
    )
    assert _value(metrics, "flotilla_publishes_total", result="confirmed") == 1


async def test_a_job_the_broker_refused_is_forgotten(jobs: JobStore) -> None:
    transport = FakeTransport()
    transport.fail = QueueFull("full")
    with pytest.raises(Unavailable):
        await _invoker(transport, jobs=jobs).submit(FN, b"", job_id="job-1")
    assert await jobs.record("job-1") is None


async def test_envelope_constructors_keep_the_wire_format(monkeypatch: pytest.MonkeyPatch) -> None:
    import flotilla.envelope as envelope_module

    monkeypatch.setattr(envelope_module, "now_ms", lambda: 1_000)
    call = Envelope.for_call("i", "echo", "d", (("a", "b"),), b"x", timeout_ms=5, reply_to="q")
    job = Envelope.for_job("j", "echo", "d", (), b"y", ttl_s=2)
    assert call.encode(published_ms=7) == Envelope(
        invocation_id="i", correlation_id="i", function="echo", digest="d",
        headers=(("a", "b"),), body=b"x", deadline_ms=1_005, reply_to="q",
    ).encode(published_ms=7)
    assert job.encode(published_ms=7) == Envelope(
        invocation_id="j", correlation_id="j", function="echo", digest="d", headers=(),
        body=b"y", deadline_ms=3_000, reply_mode=REPLY_JOB,
    ).encode(published_ms=7)
