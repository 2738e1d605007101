"""OpenTelemetry tracing: one trace per invocation, from the caller's HTTP request through the
queue and the worker to each of the guest's host calls.

Off unless the process is told otherwise: `Tracing.from_env(service, switch)` answers None
when `switch` (the `tracing` setting, FLOTILLA_TRACING) is false, or when it is unset and
neither OTEL_EXPORTER_OTLP_TRACES_ENDPOINT nor OTEL_EXPORTER_OTLP_ENDPOINT is set (and when
OTEL_SDK_DISABLED is true). Off, Flotilla imports nothing of opentelemetry (fastapi and
redis load parts of its API on their own), and every hook on the hot path is one check: `if
tracing is None` or a `with` over a shared `nullcontext` (the dispatcher), the host-call hook
and runner left unwrapped (the worker), a ContextVar read finding None (spawn). On, a
`Tracing` owns its own TracerProvider (not the global one: the process decides, a library
embedding Flotilla keeps its own) with a batch processor and the OTLP/HTTP exporter. The
service name is OTEL_SERVICE_NAME or the process's (DISPATCHER, WORKER, DEV); the SDK reads
the other standard variables itself (OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*...), and incoming headers are read with the
propagators of OTEL_PROPAGATORS (default W3C trace context and baggage).

The spans of one synchronous call (one trace id: the caller's when it sent `traceparent`):

    POST /v1/functions/{name}/invoke   server     dispatcher/invoke.py
    └─ publish {function}              producer   flotilla/invoker.py (a call: until the reply)
       ├─ queue wait                   internal   worker: envelope.published_ms -> run start
       └─ run {function}               consumer   worker: the runner (Tracing.runner)
          ├─ load                      internal   only when the code was not in memory
          ├─ instantiate               internal   placed after the run, from Reply.timings
          ├─ call                      internal
          └─ {interface}.{operation}   client     one per host call (Tracing.observing)

The envelope's `traceparent` (W3C) is the publish span's, so the worker's spans join the
caller's trace. A job's publish span is a child of the request that submitted it (its HTTP
span: other /v1 routes get a server span too, `serve_http`), so the job's run, however much
later, is in the submitter's trace; a spawned job's publish is a child of the spawning run
(`current_traceparent` on the invocation's thread). A retried job keeps its envelope's
traceparent: every attempt's run is a child of the same publish.

Attributes are bounded and never carry data: function, version digest, invocation id, kind,
attempt, outcome; host calls: interface, operation, outcome (never keys, values, bodies,
URLs, error messages or secrets). Failed spans get status ERROR with the outcome or the
error's type as description, never its message (a guest's error text is the guest's data).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from flotilla.errors import SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from flotilla.envelope import Envelope, Reply
    from flotilla.hosts.observe import Observe

log = logging.getLogger(__name__)

DISPATCHER = "flotilla-dispatcher"
WORKER = "flotilla-worker"
DEV = "flotilla-dev"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# What tracing needs beyond opentelemetry-api (the `tracing` extra).
SDK_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")

# The hooks' answers when tracing is off: shared, so the off path allocates nothing.
NO_SPAN: AbstractContextManager[None] = nullcontext(None)
NO_TRACEPARENT: AbstractContextManager[str] = nullcontext("")

# The run span of the invocation on this thread (set by the traced runner): host calls and
# spawns made by the guest find their parent here.
_run_span: ContextVar[Span | None] = ContextVar("flotilla_run_span", default=None)


def enabled(switch: bool | None, environ: Mapping[str, str]) -> bool:
    """Whether to trace: `switch` when set, else when an OTLP endpoint is configured;
    never with OTEL_SDK_DISABLED=true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if switch is not None:
        return switch
    return any(environ.get(name) for name in ENDPOINT_VARS)


def check_installed(switch: bool | None, environ: Mapping[str, str] | None = None) -> None:
    """SettingsError when tracing is on but the SDK or the exporter is not installed (a
    supervisor checks before it starts processes that would all refuse to start)."""
    if not enabled(switch, os.environ if environ is None else environ):
        return
    for module in SDK_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            raise SettingsError(_not_installed(module))


def _not_installed(module: str) -> str:
    return (f"tracing is on (FLOTILLA_TRACING, or an OTEL_EXPORTER_OTLP_*ENDPOINT is set) but "
            f"{module} is not installed: pip install 'flotilla[tracing]', or set "
            "FLOTILLA_TRACING=0")


def traceparent_of(span: Span) -> str:
    """The W3C `traceparent` header value naming `span` ("" for an invalid span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def current_traceparent() -> str:
    """The `traceparent` of the run span of the invocation on this thread, "" when none
    (tracing off, or not on an invocation's thread)."""
    span = _run_span.get()
    return "" if span is None else traceparent_of(span)


class Runner(Protocol):
    """What the worker runs envelopes with (worker.handler.Runner, restated: the core does
    not import the worker)."""

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        """Invoke the envelope's function for at most `timeout_ms`."""


class Tracing:
    """Flotilla's spans over one OpenTelemetry tracer (see the module docstring)."""

    def __init__(self, tracer: Tracer, provider: TracerProvider | None = None) -> None:
        """`tracer`: where spans go; `provider`: flushed and closed by `shutdown` (None when
        the caller owns it, e.g. a test's in-memory exporter)."""
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._provider = provider
        self._trace = trace
        self._propagate = propagate
        self._w3c = TraceContextTextMapPropagator()
        self._kind = SpanKind
        self._error = Status(StatusCode.ERROR)
        self._status = Status
        self._error_code = StatusCode.ERROR

    @classmethod
    def from_env(
        cls, service: str, switch: bool | None = None, environ: Mapping[str, str] | None = None,
    ) -> Tracing | None:
        """Tracing for the process `service` (DISPATCHER, WORKER, DEV) exporting over
        OTLP/HTTP, or None when off (see `enabled`). OTEL_SERVICE_NAME overrides `service`."""
        environ = os.environ if environ is None else environ
        if not enabled(switch, environ):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise SettingsError(_not_installed(exc.name or "opentelemetry")) from None

        name = environ.get("OTEL_SERVICE_NAME") or service
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=_traces_endpoint(environ)
        )))
        log.info("tracing on: service %s, OTLP/HTTP to %s", name,
                 _traces_endpoint(environ) or "the exporter's default")
        return cls(provider.get_tracer("flotilla"), provider)

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocking: up to the exporter's timeout)."""
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception:  # a collector that is down must not fail the process's exit
                log.exception("flushing traces failed")

    # -- dispatcher ---------------------------------------------------------------------

    @contextmanager
    def serving(self, scope: MutableMapping[str, Any], route: str) -> Iterator[Span]:
        """A server span for the HTTP request `scope` (ASGI), current while inside,
        continuing the caller's trace from its headers; `responded` records the status."""
        carrier = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers") or ()
        }
        method = scope.get("method", "")
        span = self._tracer.start_span(
            f"{method} {route}", context=self._propagate.extract(carrier),
            kind=self._kind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        )
        with self._trace.use_span(span, end_on_exit=True, record_exception=False,
                                  set_status_on_exception=False):
            yield span

    def responded(self, span: Span, status: int) -> None:
        """Record the HTTP status of a server span (5xx marks it failed)."""
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._error)

    async def serve_http(
        self, app: Callable[..., Awaitable[None]], scope: MutableMapping[str, Any],
        receive: Any, send: Any,
    ) -> None:
        """Run the ASGI `app` for one request under a server span, named by the route
        template once routing matched it (the path itself is never recorded)."""
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self.serving(scope, "") as span:
            try:
                await app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                span.update_name(f"{scope.get('method', '')} {route}")
                span.set_attribute("http.route", route)
                self.responded(span, status)

    @contextmanager
    def publishing(
        self, function: str, digest: str, invocation_id: str, kind: str, parent: str = "",
    ) -> Iterator[str]:
        """A producer span around one publish (a synchronous call: until its reply), child
        of `parent` (a traceparent) or else of the current span; yields its traceparent for
        the envelope. An error leaving it marks it failed with the error's type."""
        context = self._w3c.extract({"traceparent": parent}) if parent else None
        span = self._tracer.start_span(
            f"publish {function}", context=context, kind=self._kind.PRODUCER,
            attributes=_attributes(function, digest, invocation_id, kind),
        )
        try:
            yield traceparent_of(span)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(self._status(self._error_code, type(exc).__name__))
            raise
        finally:
            span.end()

    # -- worker -------------------------------------------------------------------------

    def runner(self, runner: Runner) -> Runner:
        """`runner` with each run traced: queue wait, run, its phases, and (through
        `observing`) its host calls."""
        return _TracedRunner(runner, self)

    def run(self, runner: Runner, envelope: Envelope, timeout_ms: int) -> Reply:
        """Run `envelope` with `runner` under a run span (see `runner`)."""
        now = time.time_ns()
        parent = self._w3c.extract({"traceparent": envelope.traceparent}) \
            if envelope.traceparent else None
        attributes = _attributes(envelope.function, envelope.digest, envelope.invocation_id,
                                 envelope.start_kind, envelope.attempt)
        if envelope.published_ms > 0:
            # Clocks of two machines: a publish "after" the start is drawn as no wait.
            start = min(envelope.published_ms * 1_000_000, now)
            # No attributes of its own: its parent (the publish) and sibling (the run) have them.
            self._tracer.start_span("queue wait", context=parent, start_time=start).end(
                end_time=now)
        span = self._tracer.start_span(
            f"run {envelope.function}", context=parent, kind=self._kind.CONSUMER,
            attributes=attributes, start_time=now,
        )
        token = _run_span.set(span)
        try:
            reply = runner.run(envelope, timeout_ms)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(self._status(self._error_code, type(exc).__name__))
            span.end()
            raise
        finally:
            _run_span.reset(token)
        self._phases(span, now, reply.timings)
        span.set_attribute("flotilla.outcome", str(reply.outcome))
        if not reply.ok:
            span.set_status(self._status(self._error_code, str(reply.outcome)))
        span.end()
        return reply

    def _phases(self, run: Span, start_ns: int, timings: Mapping[str, float]) -> None:
        """Child spans of `run` from the sandbox's phase durations, laid end to end from
        the run's start (load, instantiate, call: the order the runner does them)."""
        context = self._trace.set_span_in_context(run)
        at = start_ns
        for phase in ("load", "instantiate", "call"):
            ms = timings.get(f"{phase}_ms")
            if ms is None:
                continue
            end = at + int(ms * 1_000_000)
            # Loading from memory takes microseconds: a span only when it fetched or compiled.
            if phase != "load" or ms >= 1.0:
                self._tracer.start_span(phase, context=context, start_time=at).end(end_time=end)
            at = end

    def observing(self, observe: Observe | None) -> Observe:
        """A host-call hook that reports to `observe` (the metrics') and adds a span under
        the run span of the invocation on this thread."""

        def both(interface: str, operation: str, outcome: str, seconds: float) -> None:
            if observe is not None:
                observe(interface, operation, outcome, seconds)
            self.host_call(interface, operation, outcome, seconds)

        return both

    def host_call(self, interface: str, operation: str, outcome: str, seconds: float) -> None:
        """A span for one host call that just ended after `seconds`, under this thread's run
        span (none outside an invocation)."""
        run = _run_span.get()
        if run is None:
            return
        end = time.time_ns()
        span = self._tracer.start_span(
            f"{interface}.{operation}", context=self._trace.set_span_in_context(run),
            kind=self._kind.CLIENT, start_time=end - int(seconds * 1e9),
            attributes={"flotilla.host.interface": interface,
                        "flotilla.host.operation": operation,
                        "flotilla.host.outcome": outcome},
        )
        if outcome != "ok":
            span.set_status(self._status(self._error_code, outcome))
        span.end(end_time=end)


class _TracedRunner:
    """A Runner whose runs are traced by a `Tracing`."""

    def __init__(self, runner: Runner, tracing: Tracing) -> None:
        self._runner = runner
        self._tracing = tracing

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        return self._tracing.run(self._runner, envelope, timeout_ms)


def _attributes(
    function: str, digest: str, invocation_id: str, kind: str, attempt: int | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "flotilla.function": function, "flotilla.digest": digest,
        "flotilla.invocation_id": invocation_id, "flotilla.kind": kind,
    }
    if attempt is not None:
        attributes["flotilla.attempt"] = attempt
    return attributes


def _traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL the variables name (the base endpoint + /v1/traces), or
    None for the exporter's default (http://localhost:4318/v1/traces)."""
    url = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if url:
        return url
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None
