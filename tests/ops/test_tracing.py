"""One trace per invocation across real processes: a dispatcher process and a worker
supervisor (two worker processes) on the real RabbitMQ and Redis export over OTLP/HTTP to a
receiver in this test, which decodes the `ExportTraceServiceRequest` protobufs.

A synchronous call that makes cache host calls, sent with a caller's `traceparent`, must
come back as one tree in the caller's trace: the dispatcher's HTTP span, its publish, the
worker's queue wait and run, the run's instantiate and call, and one span per host call
carrying interface, operation and outcome only (never the key or the value). A job
submitted over HTTP runs in its submitter's trace, under the publish of the submitting
request.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from loadtest.fleet import Fleet
from tests.guests.build import probe_wasm  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class Span:
    """One received span, flattened."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int


class Receiver:
    """An OTLP/HTTP traces endpoint (POST /v1/traces, protobuf) keeping every span."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and \
                    self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(Span(
                        service, s.name, s.trace_id.hex(), s.span_id.hex(),
                        s.parent_span_id.hex(), s.kind, s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        {a.key: _value(a.value) for a in s.attributes}, s.status.code,
                    ))
        with self._changed:
            self.requests += 1
            self.spans.extend(spans)
            self._changed.notify_all()

    def wait(self, done: Callable[[list[Span]], bool], timeout: float = 20) -> list[Span]:
        """The spans received, once `done(spans)` holds (AssertionError after `timeout`)."""
        end = time.monotonic() + timeout
        with self._changed:
            while not done(self.spans):
                left = end - time.monotonic()
                assert left > 0, f"spans did not arrive: {[s.name for s in self.spans]}"
                self._changed.wait(left)
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    receiver: Receiver, amqp_url: str, redis_url: str, aws_endpoint_url: str,
    probe_wasm: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    """A dispatcher and a worker of two processes exporting traces to `receiver` (only the
    endpoint is set: tracing turns on by it), with the probe deployed."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
        env.delenv("OTEL_SERVICE_NAME", raising=False)
        env.delenv("FLOTILLA_TRACING", raising=False)
        fleet = Fleet(
            workers=1, processes=2, concurrency=2, amqp_url=amqp_url, redis_url=redis_url,
            aws_endpoint_url=aws_endpoint_url, log_dir=tmp_path_factory.mktemp("trace-logs"),
        )
        await fleet.start()
    try:
        await fleet.deploy({"probe": probe_wasm.read_bytes()})
        yield fleet
    finally:
        await fleet.stop()


def new_traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, span id) of a caller's span."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def of_trace(trace_id: str, names: set[str]) -> Callable[[list[Span]], bool]:
    def done(spans: list[Span]) -> bool:
        return names <= {s.name for s in spans if s.trace_id == trace_id}
    return done


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP Span.SpanKind
ERROR = 2  # OTLP Status.StatusCode


async def test_a_call_is_one_tree_in_the_callers_trace(
    fleet: Fleet, receiver: Receiver
) -> None:
    traceparent, trace_id, caller_span = new_traceparent()
    key, value = f"secret-key-{uuid.uuid4().hex}", f"secret-value-{uuid.uuid4().hex}"
    command = {"op": "batch", "ops": [
        {"op": "cache.set", "key": key, "value": value},
        {"op": "cache.get", "key": key},
    ]}
    async with httpx.AsyncClient(base_url=fleet.base_url, timeout=30) as client:
        resp = await client.post("/v1/functions/probe/invoke", content=json.dumps(command),
                                 headers={"traceparent": traceparent})
    assert resp.status_code == 200, resp.text
    invocation_id = resp.headers["flotilla-invocation-id"]
    names = {"POST /v1/functions/{name}/invoke", "publish probe", "queue wait", "run probe",
             "instantiate", "call", "cache.set", "cache.get"}
    spans = await asyncio.to_thread(receiver.wait, of_trace(trace_id, names))
    spans = [s for s in spans if s.trace_id == trace_id]
    http, publish = one(spans, "POST /v1/functions/{name}/invoke"), one(spans, "publish probe")
    wait, run = one(spans, "queue wait"), one(spans, "run probe")

    assert http.parent_id == caller_span and http.kind == SERVER
    assert http.service == publish.service == "flotilla-dispatcher"
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["flotilla.invocation_id"] == invocation_id
    assert publish.parent_id == http.span_id and publish.kind == PRODUCER
    assert wait.parent_id == run.parent_id == publish.span_id
    assert run.kind == CONSUMER and wait.service == run.service == "flotilla-worker"
    assert wait.end_ns <= run.start_ns + 1_000_000
    assert run.attributes["flotilla.outcome"] == "ok"
    assert run.attributes["flotilla.invocation_id"] == invocation_id
    assert run.attributes["flotilla.kind"] == "sync"
    assert run.attributes["flotilla.attempt"] == 1
    assert len(run.attributes["flotilla.digest"]) == 64
    for name in ("instantiate", "call", "cache.set", "cache.get"):
        child = one(spans, name)
        assert child.parent_id == run.span_id, name
        assert run.start_ns <= child.start_ns <= child.end_ns <= run.end_ns, name
    call = one(spans, "call")
    for name, operation in (("cache.set", "set"), ("cache.get", "get")):
        host = one(spans, name)
        assert host.kind == CLIENT
        assert host.attributes == {"flotilla.host.interface": "cache",
                                   "flotilla.host.operation": operation,
                                   "flotilla.host.outcome": "ok"}
        assert call.start_ns <= host.start_ns and host.end_ns <= call.end_ns + 1_000_000
    # Nothing the guest sent or stored is in any span of the trace.
    everything = repr([(s.name, s.attributes) for s in spans])
    assert key not in everything and value not in everything


async def test_a_job_runs_in_its_submitters_trace(fleet: Fleet, receiver: Receiver) -> None:
    traceparent, trace_id, caller_span = new_traceparent()
    message = f"guest-error-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=fleet.base_url, timeout=30) as client:
        resp = await client.post("/v1/functions/probe/jobs",
                                 content=json.dumps({"op": "err", "message": message}),
                                 headers={"traceparent": traceparent})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
    names = {"POST /v1/functions/{name}/jobs", "publish probe", "run probe"}
    spans = await asyncio.to_thread(receiver.wait, of_trace(trace_id, names))
    spans = [s for s in spans if s.trace_id == trace_id]
    http, publish = one(spans, "POST /v1/functions/{name}/jobs"), one(spans, "publish probe")
    run = one(spans, "run probe")
    assert http.parent_id == caller_span and http.attributes["http.response.status_code"] == 202
    assert publish.parent_id == http.span_id and publish.attributes["flotilla.kind"] == "job"
    assert run.parent_id == publish.span_id
    assert run.attributes["flotilla.invocation_id"] == publish.attributes[
        "flotilla.invocation_id"] == job_id
    assert run.attributes["flotilla.kind"] == "job"
    # The guest answered err: the run failed, and says how without saying what.
    assert run.status_code == ERROR
    assert run.attributes["flotilla.outcome"] == "function_error"
    assert message not in repr([(s.name, s.attributes) for s in spans])


async def test_probes_and_scrapes_are_not_traced(fleet: Fleet, receiver: Receiver) -> None:
    before = len(receiver.spans)
    async with httpx.AsyncClient(base_url=fleet.base_url, timeout=30) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        traceparent, trace_id, _ = new_traceparent()
        resp = await client.get("/v1/functions/probe", headers={"traceparent": traceparent})
        assert resp.status_code == 200
    spans = await asyncio.to_thread(
        receiver.wait, of_trace(trace_id, {"GET /v1/functions/{name}"}))
    assert {s.name for s in spans[before:]} >= {"GET /v1/functions/{name}"}
    assert not [s for s in spans[before:] if s.name.startswith(("GET /healthz", "GET /metrics",
                                                                 "GET unmatched"))]
