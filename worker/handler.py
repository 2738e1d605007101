"""Per-envelope handling, independent of any transport: bytes in, (reply, settle decision) out.

`EnvelopeHandler.handle(body)` is what both the AMQP consumer (`worker/consumer.py`) and the
in-process `MemoryTransport` run for each delivery, on a worker thread:

- malformed bytes -> no reply, REJECT (without requeue: the broker dead-letters it);
- deadline already passed -> `expired` reply, ACK (the function is not run);
- otherwise the `Runner` runs it -> its reply (ok, guest failure, not_found...), ACK;
- the runner raising -> `internal` reply, ACK (retrying a worker bug would not help).

With a `JobFlow` (worker/flow.py), around the run: admission (`max_concurrency`, a job's
`rate_limit`): a job refused is ACKed with no reply and a `follow_up` that publishes it
again later; the start gate: a cancelled or finished job is ACKed with no reply and never
runs; retries: a failed attempt to retry is ACKed with no reply (its outcome still counted)
and a `follow_up` publishing the next attempt and a `Retrying` notice; an exhausted one
keeps its reply and adds a dead letter. The transport publishes `follow_up` before the
reply, and both before the ack.

An envelope's `attempt` counts a job's retries only: a redelivery after a worker crash (the
quorum queue's `x-delivery-count`, passed in as `redeliveries`) keeps it, since a crash is
not an attempt; `redeliveries` feeds poison detection (`RunLedger`). A job about to run is
announced through `on_start` (a `Started` notice; the job then reads as `running`).

The transport then publishes the reply (if any) to `route` and settles the delivery: reply
first, ack second, so a worker dying in between causes a redelivery, never a lost reply.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from flotilla import logs
from flotilla.envelope import REPLY_JOB, Envelope, EnvelopeError, Reply, Started, now_ms, reply_to
from flotilla.metrics import WorkerMetrics
from flotilla.outcomes import Outcome
from worker.flow import Again, FollowUp, JobFlow

log = logging.getLogger(__name__)


class Settle(enum.Enum):
    """How a delivery is settled once handled."""

    ACK = "ack"  # done (whatever the outcome): remove it from the queue
    REJECT = "reject"  # unusable (malformed): dead-letter it, never redeliver
    REQUEUE = "requeue"  # not started (shutting down): give it back for another worker


@dataclass(frozen=True)
class Handled:
    """The result of handling one delivery: what to publish where, and how to settle."""

    settle: Settle
    reply: Reply | None = None
    route: str = ""  # queue to publish `reply` to ("" when there is no reply)
    function: str = ""  # the envelope's function ("" when malformed)
    queued_ms: int | None = None  # publish to start of handling, when the envelope says
    follow_up: FollowUp | None = None  # to publish before the reply (worker/flow.py)


class Runner(Protocol):
    """Runs one envelope's function and says how it went (blocking; called from a thread)."""

    def run(self, envelope: Envelope, timeout_ms: int) -> Reply:
        """Invoke `envelope.function` at `envelope.digest` for at most `timeout_ms`."""


# A run may end up to this long after its budget: the runner keeps the function's own timeout
# when the budget is at most this much shorter (see worker/runner.py, DEADLINE_SLACK_MS).
RUN_SLACK_MS = 1_000


@dataclass
class Watch:
    """What the transport needs to answer for an invocation whose thread it stops waiting for.

    The handler fills it (on the invocation thread) just before the function runs; the
    transport reads it (on its event loop) and marks it `abandoned` when it answers instead.
    """

    envelope: Envelope | None = None
    route: str = ""
    queued_ms: int | None = None
    due_ms: int | None = None  # wall clock by which the run must have ended
    abandoned: bool = False

    def arm(self, timeout_ms: int) -> None:
        """The run starts now with this timeout (the runner knows it once the code is loaded)."""
        self.due_ms = now_ms() + timeout_ms


# The watch of the run on this thread, for a runner that knows its timeout better than the
# envelope's budget does (jobs: the budget is the job's TTL; loading code takes time too).
_current_watch: ContextVar[Watch | None] = ContextVar("flotilla_watch", default=None)


def arm_watch(timeout_ms: int) -> None:
    """Called by a runner on the invocation thread as the function starts with `timeout_ms`."""
    watch = _current_watch.get()
    if watch is not None:
        watch.arm(timeout_ms)


def run_timeout_ms(remaining_ms: int) -> int | None:
    """Time budget of an invocation from its deadline; None when it should not start."""
    return remaining_ms if remaining_ms > 0 else None


POISON_RUNS = 3


class RunLedger:
    """Counts, in Redis, the runs of envelopes that arrived redelivered (poison detection).

    RabbitMQ counts a delivery against every unacked envelope of a worker that died, run or
    only prefetched, so its delivery limit also dead-letters innocent envelopes when workers
    die repeatedly with a deep prefetch. This counts runs instead: an envelope redelivered
    after a crash is counted as it starts (first deliveries cost nothing), and the handler
    dead-letters it once it has started `poison_runs` times before. The quorum queue's
    delivery limit stays as a backstop for when Redis is out of reach.
    """

    def __init__(self, redis: Any, prefix: str, ttl_s: int = 86_400) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s

    def count_run(self, invocation_id: str) -> int | None:
        """Runs of this envelope after redeliveries, this one included; None if unknown."""
        key = f"{self._prefix}:runs:{invocation_id}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self._ttl_s)
            count, _ = pipe.execute()
            return int(count)
        except Exception as exc:  # noqa: BLE001 - any client failure: fall back, never crash
            log.warning("run ledger unavailable (%s); using the delivery count", exc)
            return None


class EnvelopeHandler:
    """Decodes, checks the deadline, runs, and decides how to settle one delivery."""

    def __init__(
        self,
        runner: Runner,
        *,
        job_results: str,
        clock: Callable[[], int] = now_ms,
        metrics: WorkerMetrics | None = None,
        run_slack_ms: int = RUN_SLACK_MS,
        runs: RunLedger | None = None,
        poison_runs: int = POISON_RUNS,
        flow: JobFlow | None = None,
    ) -> None:
        """`runs`/`poison_runs`: an envelope redelivered after it started `poison_runs` times
        is dead-lettered (with an `internal` reply) instead of run again (see RunLedger);
        `flow`: admission, the start gate and retries (worker/flow.py)."""
        self._flow = flow
        self._runs = runs
        self._poison_runs = poison_runs
        self._runner = runner
        self._run_slack_ms = run_slack_ms
        self._job_results = job_results
        self._clock = clock
        self._metrics = metrics

    def handle(
        self,
        body: bytes,
        redeliveries: int = 0,
        on_start: Callable[[Started], None] | None = None,
        watch: Watch | None = None,
    ) -> Handled:
        """Handle one delivery's body; never raises.

        `redeliveries`: how often the broker delivered it before (poison detection; a
        redelivery is not an attempt: `attempt` counts retries only);
        `on_start`: called (on this thread) just before a job-mode envelope runs;
        `watch`: filled just before the function runs (see `abandon`).
        """
        try:
            handled = self._handle(body, redeliveries, on_start, watch)
            # An abandoned invocation was counted when it was answered: its late result is not.
            if self._metrics is not None and not (watch is not None and watch.abandoned):
                observe(self._metrics, handled)
            return handled
        finally:
            # The thread's lines are tagged with this delivery only while it is handled:
            # nothing the thread logs later (or a caller of `handle` on its own thread)
            # carries a stale invocation id.
            logs.unbind()

    def abandon(self, watch: Watch, blocked_ms: int) -> Handled:
        """The `timeout` answer for a run still blocked `blocked_ms` after it was due
        (called by the transport, which stops waiting for its thread)."""
        envelope = watch.envelope
        assert envelope is not None, "only a run that started can be abandoned"
        watch.abandoned = True
        reply = reply_to(
            envelope,
            Outcome.TIMEOUT,
            f"the function did not return by its timeout: blocked in a host call (a WASI "
            f"poll such as sleep) {blocked_ms} ms past it; its thread was abandoned",
        )
        handled = Handled(Settle.ACK, reply, watch.route, envelope.function, watch.queued_ms)
        flow = self._flow
        if flow is not None and envelope.reply_mode == REPLY_JOB:
            # A timeout like any other: retried per the policy (its lease expires by itself).
            config = flow.config(envelope)
            follow_up = flow.after(envelope, reply, config) if config is not None else None
            route = "" if isinstance(follow_up, Again) else watch.route
            handled = dataclasses.replace(handled, route=route, follow_up=follow_up)
        if self._metrics is not None:
            self._metrics.abandoned.inc()
            observe(self._metrics, handled)
        return handled

    def _handle(
        self,
        body: bytes,
        redeliveries: int,
        on_start: Callable[[Started], None] | None,
        watch: Watch | None,
    ) -> Handled:
        try:
            envelope = Envelope.decode(body)
        except EnvelopeError as exc:
            log.warning("rejecting malformed envelope to the DLQ: %s", exc)
            return Handled(Settle.REJECT)
        logs.bind(envelope.invocation_id, envelope.function)
        route = self._job_results if envelope.reply_mode == REPLY_JOB else envelope.reply_to
        now = self._clock()
        queued_ms = now - envelope.published_ms if envelope.published_ms > 0 else None
        budget = run_timeout_ms(envelope.remaining_ms(now))
        if budget is None:
            reply = reply_to(
                envelope, Outcome.EXPIRED, "the invocation's deadline passed before it ran"
            )
            return Handled(Settle.ACK, reply, route, envelope.function, queued_ms)
        if redeliveries > 0 and self._runs is not None:
            runs = self._runs.count_run(envelope.invocation_id)
            # Earlier starts: the first delivery (assumed to have run) plus counted reruns.
            started_before = runs if runs is not None else redeliveries
            if started_before >= self._poison_runs:
                log.error(
                    "dead-lettering %s: started %d times, each ending its worker",
                    envelope.invocation_id,
                    started_before,
                )
                reply = reply_to(
                    envelope,
                    Outcome.INTERNAL,
                    f"the invocation was dead-lettered: it started {started_before} times "
                    "and each time its worker process died",
                )
                return Handled(Settle.REJECT, reply, route, envelope.function, queued_ms)
        job = envelope.reply_mode == REPLY_JOB
        flow = self._flow
        config = flow.config(envelope) if flow is not None else None
        lease = None
        if flow is not None:
            if config is not None:
                admission = flow.admit(envelope, config, job)
                if admission.defer_ms is not None:
                    again = Again(body, envelope.function, admission.defer_ms,
                                  reason=f"deferred:{admission.refused}")
                    return Handled(Settle.ACK, None, route, envelope.function, queued_ms, again)
                if admission.refused:
                    reply = reply_to(envelope, Outcome.TIMEOUT, admission.refused)
                    return Handled(Settle.ACK, reply, route, envelope.function, queued_ms)
                lease = admission.lease
            if job and not flow.start(envelope):
                flow.release(envelope.function, lease)
                return Handled(Settle.ACK, None, route, envelope.function, queued_ms)
        if on_start is not None and job:
            try:
                on_start(Started(envelope.invocation_id, envelope.attempt))
            except Exception:  # the running mark is informative: run the job anyway
                log.exception("announcing job %s as started failed", envelope.invocation_id)
        if watch is not None:
            watch.envelope, watch.route, watch.queued_ms = envelope, route, queued_ms
            # Set last: the transport reads due_ms first. A runner may re-arm it (arm_watch).
            watch.due_ms = now + budget + self._run_slack_ms
        token = _current_watch.set(watch)
        started = time.perf_counter()
        try:
            reply = self._runner.run(envelope, budget)
        except Exception as exc:
            log.exception("invocation %s failed in the worker", envelope.invocation_id)
            reply = reply_to(
                envelope,
                Outcome.INTERNAL,
                f"worker error: {type(exc).__name__}: {exc}",
                timings={"total_ms": (time.perf_counter() - started) * 1000},
            )
        finally:
            _current_watch.reset(token)
            if flow is not None:
                flow.release(envelope.function, lease)
        if log.isEnabledFor(logging.DEBUG):  # tagged with the invocation by flotilla.logs
            log.debug("ran: %s in %.2f ms", reply.outcome, (time.perf_counter() - started) * 1000)
        follow_up = flow.after(envelope, reply, config) \
            if flow is not None and job and config is not None and not reply.ok else None
        if isinstance(follow_up, Again):  # retried: the reply is envelope, not published
            return Handled(Settle.ACK, reply, "", envelope.function, queued_ms, follow_up)
        return Handled(Settle.ACK, reply, route, envelope.function, queued_ms, follow_up)


def observe(metrics: WorkerMetrics, handled: Handled) -> None:
    """Count one handled delivery in the worker's metrics."""
    reply = handled.reply
    follow_up = handled.follow_up
    if follow_up is not None:
        event = follow_up.reason if isinstance(follow_up, Again) else "exhausted"
        metrics.job_flow.labels(handled.function, event).inc()
    if reply is None:  # malformed (rejected), or a job not run: cancelled, finished, deferred
        if handled.settle is Settle.REJECT:
            metrics.dead_lettered.labels("malformed").inc()
        elif follow_up is None:
            metrics.job_flow.labels(handled.function, "not_run").inc()
        return
    if reply.outcome is Outcome.EXPIRED:
        metrics.expired.inc()
    # Names of functions the worker could not find are unbounded: keep them out of labels.
    function = handled.function if reply.outcome is not Outcome.NOT_FOUND else "-"
    metrics.invocations.labels(function, reply.outcome).inc()
    if handled.queued_ms is not None:
        metrics.queue_wait.labels(function).observe(max(0, handled.queued_ms) / 1000)
    timings = reply.timings
    if "instantiate_ms" in timings:
        metrics.instantiate.labels(function).observe(timings["instantiate_ms"] / 1000)
    if "call_ms" in timings:
        metrics.execution.labels(function).observe(timings["call_ms"] / 1000)
