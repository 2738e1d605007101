"""`flotilla.tracing`: when it is on, the spans each hook makes (into an in-memory exporter),
their parents and attributes; when it is off, that nothing of OpenTelemetry is imported.
Collaborators are in-memory fakes; tests/ops/test_tracing.py runs the real fleet."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from flotilla.config import FunctionConfig
from flotilla.envelope import Envelope, Reply, now_ms
from flotilla.errors import FunctionTimeout
from flotilla.invoker import Invoker
from flotilla.outcomes import Outcome
from flotilla.registry import FunctionVersion
from flotilla.tracing import (
    DISPATCHER,
    Tracing,
    current_traceparent,
    enabled,
    traceparent_of,
)
from flotilla.transport import CallTimeout

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
FN = FunctionVersion(
    name="echo", digest="d" * 64, number=1,
    config=FunctionConfig("echo", timeout_ms=1_500, max_body_bytes=64),
    wasm_sha256="w" * 64, wasm_size=1, artifact_sha256="a" * 64, engine_fingerprint="e",
    created_at=0.0,
)


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    """A Tracing whose spans end up, as they end, in an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider.get_tracer("test")), exporter
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


class Versions:
    async def get_version(self, name: str, selector: str | int = "latest") -> FunctionVersion:
        return FN


class Transport:
    """Answers each call with `reply(envelope)`, keeps submitted jobs."""

    reply_queue_name = "fake.reply"

    def __init__(self) -> None:
        self.calls: list[Envelope] = []
        self.submitted: list[Envelope] = []
        self.fail: Exception | None = None

    async def call(self, envelope: Envelope, timeout: float) -> Reply:
        self.calls.append(envelope)
        if self.fail is not None:
            raise self.fail
        return Reply(envelope.invocation_id, envelope.correlation_id, Outcome.OK, status=200)

    async def submit(self, envelope: Envelope, *, delay_ms: int = 0) -> None:
        self.submitted.append(envelope)


@pytest.mark.parametrize(("switch", "environ", "on"), [
    (None, {}, False),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),  # empty counts as unset
    (True, {}, True),
    (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
    (True, {"OTEL_SDK_DISABLED": "true"}, False),
])
def test_tracing_is_on_when_switched_on_or_an_endpoint_is_set(
    switch: bool | None, environ: dict[str, str], on: bool
) -> None:
    assert enabled(switch, environ) is on
    tracing = Tracing.from_env(DISPATCHER, switch, environ)
    assert (tracing is not None) is on
    if tracing is not None:
        tracing.shutdown()  # nothing buffered: nothing is sent


def test_with_tracing_off_flotilla_imports_nothing_of_opentelemetry() -> None:
    # fastapi depends on opentelemetry-api and redis loads parts of it when installed: what
    # they import is theirs. A fresh interpreter loads them first, then Flotilla's wiring of
    # both processes and dev mode, and runs one call through the invoker: Flotilla must add
    # no opentelemetry module, and the trace SDK and the exporter stay unloaded.
    code = """
import asyncio, json, sys
import aio_pika, boto3, fastapi, httpx, prometheus_client, redis.asyncio, uvicorn, wasmtime
theirs = {m for m in sys.modules if m.startswith("opentelemetry")}
from dispatcher import service as dispatcher_service, invoke
from worker import service as worker_service
from flotilla import spawner
from flotilla.dev import stack
from flotilla.config import FunctionConfig
from flotilla.envelope import Reply
from flotilla.invoker import Invoker
from flotilla.registry import FunctionVersion
from flotilla.tracing import DISPATCHER, Tracing, current_traceparent
FN = FunctionVersion("echo", "d" * 64, 1, FunctionConfig("echo"), "w", 1, "a", "e", 0.0)
class Versions:
    async def get_version(self, name, selector="latest"):
        return FN
class Transport:
    reply_queue_name = "q"
    async def call(self, envelope, timeout):
        assert envelope.traceparent == ""
        return Reply(envelope.invocation_id, envelope.correlation_id, "ok")
assert Tracing.from_env(DISPATCHER, None, {}) is None
assert current_traceparent() == ""
assert asyncio.run(Invoker(Versions(), Transport()).call(FN, b"x")).ok
ours = {m for m in sys.modules if m.startswith("opentelemetry")} - theirs
sdk = [m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter"))]
print(json.dumps(sorted(ours | set(sdk))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(done.stdout) == []


async def test_a_call_publishes_under_the_current_span_and_the_envelope_names_it(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    transport = Transport()
    invoker = Invoker(Versions(), transport, tracing=tracing)
    scope = {"type": "http", "method": "POST", "path": "/v1/functions/echo/invoke",
             "headers": [(b"traceparent", CALLER.encode()), (b"x-other", b"v")]}
    with tracing.serving(scope, "/v1/functions/{name}/invoke") as http:
        await invoker.call(FN, b"body", invocation_id="inv-1")
        tracing.responded(http, 200)
    spans = by_name(exporter)
    server, publish = spans["POST /v1/functions/{name}/invoke"], spans["publish echo"]
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert parent_of(server) == int(CALLER_SPAN, 16)
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert parent_of(publish) == server.context.span_id
    assert publish.kind is SpanKind.PRODUCER
    assert dict(publish.attributes or {}) == {
        "flotilla.function": "echo", "flotilla.digest": FN.digest,
        "flotilla.invocation_id": "inv-1", "flotilla.kind": "sync",
    }
    (envelope,) = transport.calls
    assert envelope.traceparent == f"00-{CALLER_TRACE}-{publish.context.span_id:016x}-01"


async def test_a_failed_call_marks_its_publish_span_with_the_error_type_only(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    transport = Transport()
    transport.fail = CallTimeout("secret detail")
    with pytest.raises(FunctionTimeout):
        await Invoker(Versions(), transport, tracing=tracing).call(FN, b"x")
    publish = by_name(exporter)["publish echo"]
    assert publish.status.status_code is StatusCode.ERROR
    assert publish.status.description == "FunctionTimeout"
    assert (publish.attributes or {})["error.type"] == "FunctionTimeout"
    assert "secret" not in repr(dict(publish.attributes or {}))


async def test_a_spawned_job_is_published_under_the_spawning_run(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    import fakeredis

    from flotilla.jobs import JobStore

    transport = Transport()
    redis = fakeredis.FakeAsyncRedis()
    invoker = Invoker(Versions(), transport, jobs=JobStore(redis, prefix="t", ttl_s=60),
                      tracing=tracing)
    await invoker.submit(FN, b"x", job_id="job-1", kind="spawned", traceparent=CALLER)
    await redis.aclose()
    publish = by_name(exporter)["publish echo"]
    assert format(publish.context.trace_id, "032x") == CALLER_TRACE
    assert parent_of(publish) == int(CALLER_SPAN, 16)
    assert (publish.attributes or {})["flotilla.kind"] == "spawned"
    (envelope,) = transport.submitted
    assert envelope.traceparent == traceparent_of_readable(publish)


async def test_without_tracing_a_job_still_carries_the_callers_trace_context() -> None:
    import fakeredis

    from flotilla.jobs import JobStore

    transport = Transport()
    redis = fakeredis.FakeAsyncRedis()
    invoker = Invoker(Versions(), transport, jobs=JobStore(redis, prefix="t", ttl_s=60))
    await invoker.submit(FN, b"x", traceparent=CALLER)
    await redis.aclose()
    assert transport.submitted[0].traceparent == CALLER


def traceparent_of_readable(span: ReadableSpan) -> str:
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


class Runner:
    """Makes host calls through `observe` while it runs, then answers with timings."""

    def __init__(self, observe: Any, outcome: Outcome = Outcome.OK) -> None:
        self.observe = observe
        self.outcome = outcome
        self.traceparent = ""

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        self.traceparent = current_traceparent()
        self.observe("cache", "set", "ok", 0.002)
        self.observe("cache", "get", "not-found", 0.001)
        return Reply(envelope.invocation_id, envelope.correlation_id, self.outcome,
                     timings={"load_ms": 0.01, "instantiate_ms": 0.5, "call_ms": 3.0,
                              "total_ms": 3.6})


def test_a_run_is_traced_under_the_envelopes_publish_with_its_phases_and_host_calls(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    metrics: list[tuple[str, str, str, float]] = []
    observe = tracing.observing(lambda *call: metrics.append(call))
    runner = Runner(observe)
    envelope = Envelope.for_job("job-1", "echo", "d" * 64, (), b"", ttl_s=60, attempt=2,
                                published_ms=now_ms() - 50, traceparent=CALLER)
    reply = tracing.runner(runner).run(envelope, 1000)
    assert reply.ok
    spans = by_name(exporter)
    assert set(spans) == {"queue wait", "run echo", "instantiate", "call", "cache.set",
                          "cache.get"}  # no load span: the code was in memory
    run = spans["run echo"]
    assert run.kind is SpanKind.CONSUMER
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {CALLER_TRACE}
    assert parent_of(run) == parent_of(spans["queue wait"]) == int(CALLER_SPAN, 16)
    for child in ("instantiate", "call", "cache.set", "cache.get"):
        assert parent_of(spans[child]) == run.context.span_id, child
    assert dict(run.attributes or {}) == {
        "flotilla.function": "echo", "flotilla.digest": "d" * 64,
        "flotilla.invocation_id": "job-1", "flotilla.kind": "job", "flotilla.attempt": 2,
        "flotilla.outcome": "ok",
    }
    wait = spans["queue wait"]
    assert wait.start_time is not None and wait.end_time is not None
    assert 40e6 <= wait.end_time - wait.start_time <= 5e9
    instantiate, call = spans["instantiate"], spans["call"]
    assert instantiate.end_time == call.start_time
    assert call.end_time is not None and call.start_time is not None
    assert call.end_time - call.start_time == 3_000_000
    host = spans["cache.get"]
    assert host.kind is SpanKind.CLIENT
    assert dict(host.attributes or {}) == {
        "flotilla.host.interface": "cache", "flotilla.host.operation": "get",
        "flotilla.host.outcome": "not-found",
    }
    assert host.status.status_code is StatusCode.ERROR
    assert spans["cache.set"].status.status_code is StatusCode.UNSET
    assert metrics == [("cache", "set", "ok", 0.002), ("cache", "get", "not-found", 0.001)]
    # What a spawn on the invocation's thread hands to its job: the run span.
    assert runner.traceparent == traceparent_of_readable(run)
    assert current_traceparent() == ""  # reset once the run ended


def test_a_failed_run_is_marked_with_its_outcome(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    envelope = Envelope.for_call("inv-1", "echo", "d" * 64, (), b"", timeout_ms=1000,
                                 reply_to="q")
    tracing.runner(Runner(tracing.observing(None), Outcome.TRAP)).run(envelope, 1000)
    spans = by_name(exporter)
    assert "queue wait" not in spans  # never published: no wait to show
    run = spans["run echo"]
    assert run.parent is None  # no trace context came with it: a trace of its own
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "trap"


def test_host_calls_outside_an_invocation_make_no_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.observing(None)("cache", "get", "ok", 0.001)
    assert exporter.get_finished_spans() == ()


def test_traceparent_of_an_invalid_span_is_empty() -> None:
    from opentelemetry.trace import INVALID_SPAN

    assert traceparent_of(INVALID_SPAN) == ""
