"""Prometheus metrics of both processes, in one place: `flotilla_` namespace, units, bounded labels.

Labels never carry invocation ids; function names are bounded by the registry. Each process
builds one `WorkerMetrics` or `DispatcherMetrics` on its own `CollectorRegistry` (passed
in, so tests can read values without a global registry).

Worker processes run under a supervisor (worker/supervisor.py), which serves one `/metrics`
for all of them with `SupervisorMetrics`: each child runs in prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor before the child starts,
makes every value an mmap-ed file) and the supervisor's `MultiProcessCollector` sums the
children's files. Counters and histograms of a child that died stay in the sum, so a restart
never makes a counter go backwards; gauges say how to combine (`multiprocess_mode`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# Sandbox phases are microseconds to milliseconds; end-to-end up to the 900 s timeout cap.
FAST_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)


class WorkerMetrics:
    """Metrics of a worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.invocations = Counter(
            "flotilla_invocations_total", "Invocations finished, by function and outcome",
            ["function", "outcome"], registry=r,
        )
        self.queue_wait = Histogram(
            "flotilla_queue_wait_seconds", "Time from publish to the start of the invocation",
            ["function"], buckets=FAST_BUCKETS, registry=r,
        )
        self.instantiate = Histogram(
            "flotilla_instantiate_seconds", "New store plus instantiation of a component",
            ["function"], buckets=FAST_BUCKETS, registry=r,
        )
        self.execution = Histogram(
            "flotilla_execution_seconds", "Time inside the guest's handle call",
            ["function"], buckets=FAST_BUCKETS, registry=r,
        )
        self.total = Histogram(
            "flotilla_invocation_duration_seconds", "Delivery to reply published",
            ["function"], buckets=FAST_BUCKETS, registry=r,
        )
        self.host_calls = Counter(
            "flotilla_host_calls_total", "Host calls by interface, operation and outcome",
            ["interface", "operation", "outcome"], registry=r,
        )
        self.host_call_duration = Histogram(
            "flotilla_host_call_duration_seconds", "Host call latency",
            ["interface", "operation"], buckets=FAST_BUCKETS, registry=r,
        )
        self.artifact_cache = Counter(
            "flotilla_artifact_cache_total", "Artifact lookups by tier and result",
            ["tier", "result"], registry=r,
        )
        self.compiles = Counter(
            "flotilla_compiles_total", "Components compiled by this process", registry=r,
        )
        # Summed over the live children of a supervisor; a dead child's count goes with it.
        self.in_flight = Gauge(
            "flotilla_invocations_in_flight", "Invocations running now", registry=r,
            multiprocess_mode="livesum",
        )
        self.dead_lettered = Counter(
            "flotilla_dead_lettered_total", "Deliveries rejected to the dead-letter queue",
            ["reason"], registry=r,
        )
        self.expired = Counter(
            "flotilla_expired_total", "Envelopes not run because their deadline had passed",
            registry=r,
        )
        self.job_flow = Counter(
            "flotilla_job_flow_total",
            "Jobs retried, deferred (max_concurrency, rate_limit), exhausted or not run "
            "(cancelled or finished) by the worker", ["function", "event"], registry=r,
        )
        self.abandoned = Counter(
            "flotilla_invocations_abandoned_total",
            "Invocations answered `timeout` while their thread was still blocked in a host call",
            registry=r,
        )

    def observe_host_call(
        self, interface: str, operation: str, outcome: str, seconds: float
    ) -> None:
        """Record one host call (the hook host clients call)."""
        self.host_calls.labels(interface, operation, outcome).inc()
        self.host_call_duration.labels(interface, operation).observe(seconds)


class SupervisorMetrics:
    """Metrics of a worker supervisor: its own, plus its children's from `multiprocess_dir`."""

    def __init__(
        self, multiprocess_dir: str | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if multiprocess_dir is not None:
            MultiProcessCollector(r, path=multiprocess_dir)
        self.restarts = Counter(
            "flotilla_worker_restarts_total",
            "Worker processes started again after one died", registry=r,
        )
        self.processes = Gauge(
            "flotilla_worker_processes", "Worker processes running under this supervisor",
            registry=r,
        )


class DispatcherMetrics:
    """Metrics of a dispatcher process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flotilla_http_requests_total", "HTTP requests by route and status",
            ["route", "status"], registry=r,
        )
        self.request_duration = Histogram(
            "flotilla_http_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=FAST_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "flotilla_callers_in_flight", "Synchronous callers waiting for a reply", registry=r,
        )
        self.reply_latency = Histogram(
            "flotilla_reply_latency_seconds", "Publish to reply received",
            buckets=FAST_BUCKETS, registry=r,
        )
        self._transport: object | None = None
        r.register(_TransportCollector(self))
        self.publishes = Counter(
            "flotilla_publishes_total", "Envelope publishes by result (confirmed, rejected, failed)",
            ["result"], registry=r,
        )
        self.redis_data_lost = Counter(
            "flotilla_redis_data_lost_total",
            "Times this dispatcher found Redis emptied (restart without persistence, flush)",
            registry=r,
        )
        self.api_keys = Gauge(
            "flotilla_api_keys", "API keys stored in Redis (with API keys on)", registry=r,
        )
        self.function_rate_limited = Counter(
            "flotilla_function_rate_limited_total",
            "Synchronous calls refused (429) by their function's rate_limit", ["function"],
            registry=r,
        )
        self.dead_letters = Counter(
            "flotilla_dead_letters_stored_total",
            "Dead letters taken off the dead-letter queue and stored, by reason", ["reason"],
            registry=r,
        )
        self.dead_letter_replays = Counter(
            "flotilla_dead_letter_replays_total", "Dead letters replayed as new jobs",
            registry=r,
        )
        self.schedule_ticks = Counter(
            "flotilla_schedule_ticks_total",
            "Cron ticks this dispatcher handled, by result (submitted, failed)", ["result"],
            registry=r,
        )
        self.jobs_cancelled = Counter(
            "flotilla_jobs_cancelled_total", "Jobs cancelled before they ran", registry=r,
        )

    def watch_transport(self, transport: object) -> None:
        """Report the transport's count of stray replies (it counts them on its reply path)."""
        self._transport = transport


class _TransportCollector(Collector):
    """`flotilla_stray_replies_total`, read from the transport at scrape time."""

    def __init__(self, metrics: DispatcherMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "flotilla_stray_replies",
            "Replies for unknown (late, duplicate) correlation ids",
        )
        family.add_metric([], getattr(self._metrics._transport, "stray_replies", 0))
        yield family
