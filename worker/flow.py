"""What happens to an invocation around its run: admission, the start gate, retries.

`JobFlow` is the handler's collaborator (worker/handler.py; sync, on the invocation thread):

1. **Admission** (`admit`), for any envelope of a function with `max_concurrency` or (jobs
   only) a `rate_limit` (flotilla/admission.py): a concurrency lease, then a job's token.
   A job refused either is *deferred*: the handler answers `Again(delay)`, the transport
   publishes the envelope into the delay chain (flotilla/delays.py) and acks the delivery,
   so a waiting job holds no sandbox slot and no prefetch slot, and is neither failed nor
   lost. The wait is a jittered `DEFER_MS` for a lease (leases are short-lived and
   released without notice, so it polls) and the bucket's own answer for a token. A
   synchronous call over `max_concurrency` waits on its thread (polling every 20-50 ms)
   until its deadline, then answers `timeout`; its token was taken by the dispatcher.
2. **The start gate** (`start`), jobs only: `JobGate.start` (flotilla/jobstate.py) for the
   job id and the envelope's attempt: a cancelled job is acked and never runs, a finished
   one (a redelivery) is acked without running.
3. **Retries** (`after`), jobs only: the attempt's outcome and the function's retry policy
   (flotilla/retries.py) give `Again(backoff, notice=Retrying(...))` (publish attempt + 1
   into the delay chain, then the notice, then ack; no reply), `Exhausted` (the reply is
   published as always, and the envelope goes to `<prefix>.dlx` with reason `exhausted`),
   or nothing.

Redis unreachable: admission and the gate fail open (the invocation runs, a warning is
logged): a job is never held back for ever because its bookkeeping is down.

`publish_follow_up` is the AMQP side of `Again`/`Exhausted`, used by the consumer before
it publishes the reply and acks: each publish is confirmed, so a worker dying in between
leaves the delivery unacked and it runs again (a retry may then be published twice: two
attempts run, the job store keeps the first result).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiormq

from flotilla.admission import LEASE_MARGIN_MS, JobTokens, Leases
from flotilla.config import FunctionConfig
from flotilla.envelope import RETRYING_TYPE, Envelope, Reply, Retrying, now_ms
from flotilla.jobstate import START_CANCELLED, START_FINISHED, JobGate
from flotilla.ratelimit import Limit
from flotilla.retries import Verdict, backoff_ms, verdict
from flotilla.topology import Topology

log = logging.getLogger(__name__)

# A job refused a concurrency lease comes back after a uniform wait in this range (ms).
DEFER_MS = (250, 750)
# A synchronous call refused a lease asks again after a uniform wait in this range (ms).
SYNC_POLL_MS = (20, 50)


@dataclass(frozen=True)
class Again:
    """Publish `body` (an envelope) again, into the delay chain when `delay_ms` > 0, then
    `notice` (a retry's) to the job results; no reply."""

    body: bytes
    function: str
    delay_ms: int
    notice: Retrying | None = None
    reason: str = "retried"  # or "deferred:max_concurrency", "deferred:rate_limit" (metrics)


@dataclass(frozen=True)
class Exhausted:
    """Publish `body` (the envelope) to the dead-letter exchange with `headers`."""

    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)


FollowUp = Again | Exhausted

ConfigLookup = Callable[[Envelope], FunctionConfig | None]
"""The `FunctionConfig` of an envelope's version (the worker's: `SandboxRunner.config`); it
may raise when the version is not found or unreachable (`JobFlow.config` answers None)."""


@dataclass(frozen=True)
class Admission:
    """What `JobFlow.admit` decided: run (holding `lease`, if any), defer a job (`refused`
    names the limit), or refuse a synchronous call whose deadline passed while waiting
    (`refused` says so)."""

    lease: str | None = None
    defer_ms: int | None = None
    refused: str = ""


RUN = Admission()


class JobFlow:
    """Admission, the start gate and retries of one worker process (see the module doc)."""

    def __init__(
        self,
        *,
        configs: ConfigLookup | None = None,
        gate: JobGate | None = None,
        leases: Leases | None = None,
        tokens: JobTokens | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._configs = configs
        self._gate = gate
        self._leases = leases
        self._tokens = tokens
        self._uniform = uniform
        self._sleep = sleep
        self._clock = clock

    def config(self, envelope: Envelope) -> FunctionConfig | None:
        """The function's config (None when unknown: the runner will answer not_found)."""
        if self._configs is None:
            return None
        try:
            return self._configs(envelope)
        except Exception:  # noqa: BLE001 - not found or unreachable: the runner answers it
            return None

    def admit(self, envelope: Envelope, config: FunctionConfig, job: bool) -> Admission:
        """A lease under `max_concurrency` and, for a job, a `rate_limit` token."""
        try:
            return self._admit(envelope, config, job)
        except Exception as exc:  # noqa: BLE001 - Redis down: run rather than hold work back
            log.warning("admission of %s unavailable (%s); running it", envelope.invocation_id,
                        exc)
            return RUN

    def _admit(self, envelope: Envelope, config: FunctionConfig, job: bool) -> Admission:
        lease = None
        fn = envelope.function
        if config.max_concurrency and self._leases is not None:
            hold_ms = config.timeout_ms + LEASE_MARGIN_MS
            # One per attempt: a redelivery (same attempt) takes its own lease over, and a
            # late thread of an earlier attempt cannot give a later attempt's lease back.
            lease_id = f"{envelope.invocation_id}:{envelope.attempt}"
            while self._leases.acquire(fn, lease_id, config.max_concurrency, hold_ms):
                if job:
                    return Admission(defer_ms=round(self._uniform(*DEFER_MS)),
                                     refused="max_concurrency")
                left = envelope.deadline_ms - self._clock()
                if left <= 0:
                    return Admission(refused=(
                        f"{fn} runs at most {config.max_concurrency} at once across the "
                        "fleet; no slot came free before the deadline"))
                self._sleep(min(left, self._uniform(*SYNC_POLL_MS)) / 1000)
            lease = lease_id
        limit = config.rate_limit
        if job and limit is not None and self._tokens is not None:
            wait_ms = self._tokens.take(fn, Limit(limit.per_second, limit.burst))
            if wait_ms:
                self.release(fn, lease)
                return Admission(defer_ms=wait_ms + round(self._uniform(0, 50)),
                                 refused="rate_limit")
        return Admission(lease=lease)

    def release(self, function: str, lease: str | None) -> None:
        """Give a lease back (after the run, or when the job is not run after all)."""
        if lease is None or self._leases is None:
            return
        try:
            self._leases.release(function, lease)
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.warning("releasing the lease of %s failed (it expires): %s", lease, exc)

    def start(self, envelope: Envelope) -> bool:
        """The start gate: False when the job must not run (cancelled, or finished)."""
        if self._gate is None:
            return True
        try:
            answer = self._gate.start(envelope.invocation_id, envelope.attempt)
        except Exception as exc:  # noqa: BLE001 - Redis down: run it (as before the gate)
            log.warning("start gate unavailable for %s (%s); running it",
                        envelope.invocation_id, exc)
            return True
        if answer in (START_CANCELLED, START_FINISHED):
            log.info("not running job %s: %s", envelope.invocation_id, answer)
            return False
        return True

    def after(self, envelope: Envelope, reply: Reply, config: FunctionConfig) -> FollowUp | None:
        """What follows a job attempt (`envelope.attempt` as counted on the wire)."""
        policy = config.retry
        decided = verdict(policy, envelope.attempt, reply.outcome)
        if decided is Verdict.RETRY:
            delay = backoff_ms(policy, envelope.attempt, self._uniform)
            notice = Retrying(envelope.invocation_id, envelope.attempt, self._clock() + delay,
                              reply.error, str(reply.outcome))
            body = replace(envelope, attempt=envelope.attempt + 1).encode()
            return Again(body, envelope.function, delay, notice)
        if decided is Verdict.EXHAUSTED:
            return Exhausted(envelope.encode(), {
                "x-flotilla-reason": "exhausted",
                "x-flotilla-error": f"{reply.outcome}: {reply.error}"[:1000],
                "x-flotilla-attempts": envelope.attempt,
            })
        return None


def destination(topology: Topology, function: str) -> str:
    """The queue a job of `function` is published to: its job lane (flotilla/topology.py)."""
    return topology.job_queue(function)


async def publish_follow_up(
    channel: aiormq.abc.AbstractChannel, topology: Topology, follow_up: FollowUp
) -> None:
    """Publish a follow-up on a confirmed channel; returns once the broker has all of it
    (raises otherwise: the delivery is then requeued, not acked)."""
    if isinstance(follow_up, Exhausted):
        await channel.basic_publish(
            follow_up.body, exchange=topology.dead_letter_exchange, routing_key="",
            properties=aiormq.spec.Basic.Properties(
                content_type="application/msgpack", delivery_mode=2,
                headers=dict(follow_up.headers),
            ),
        )
        return
    queue = destination(topology, follow_up.function)
    exchange, key = "", queue
    if follow_up.delay_ms > 0:
        hop = topology.delays.hop(follow_up.delay_ms, queue)
        exchange, key = hop.exchange, hop.routing_key
    await channel.basic_publish(
        follow_up.body, exchange=exchange, routing_key=key, mandatory=True,
        properties=aiormq.spec.Basic.Properties(
            content_type="application/msgpack", delivery_mode=2,
        ),
    )
    if follow_up.notice is not None:
        notice = follow_up.notice
        await channel.basic_publish(
            notice.encode(), routing_key=topology.job_results,
            properties=aiormq.spec.Basic.Properties(
                correlation_id=notice.invocation_id, message_type=RETRYING_TYPE,
                delivery_mode=2, content_type="application/msgpack",
            ),
        )
