"""Queue and exchange names and arguments: one place, derived from `queue_prefix`.

- `<prefix>.invocations`: durable quorum queue every worker consumes. Publishes use the
  default exchange (routing key = queue name), persistent delivery mode, publisher confirms.
  `x-delivery-limit` dead-letters a message that keeps crashing workers (every redelivery
  after a lost channel counts); `x-max-length` + `x-overflow: reject-publish` makes a full
  queue nack publishes so the dispatcher answers 503 instead of buffering without bound.
- `<prefix>.dlx` (fanout exchange) -> `<prefix>.dead` (durable quorum queue): envelopes a
  worker rejected (malformed), that hit the delivery limit, or whose message TTL expired
  (synchronous calls nobody waits for any more). Bounded: 10,000 messages, kept a day.
- `<prefix>.job-results`: durable quorum queue of job replies; the dispatchers consume it,
  so a result survives the dispatcher that submitted the job dying.
- Sync replies go to each caller's own exclusive, auto-delete, server-named queue.
- `<prefix>.topics`: durable topic exchange of `topics.publish`; each subscriber binds its
  own exclusive, auto-delete queue to it (flotilla/topics.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from flotilla.delays import DelayChain
from flotilla.envelope import REPLY_JOB

# Seconds between reconnect attempts of robust connections (aio-pika's default is 5 s;
# callers and queued work wait on every second of an outage).
RECONNECT_INTERVAL_S = 1.0
# A backstop: workers dead-letter envelopes that keep killing them after POISON_RUNS starts
# (worker/handler.py RunLedger); the broker's count also grows for envelopes a dying worker
# only held, so it is set high enough not to catch those.
DEFAULT_DELIVERY_LIMIT = 20
DEFAULT_MAX_LENGTH = 100_000
# Nothing consumes the dead-letter queue: it is for inspection, so it is bounded (oldest
# dropped first) and forgets after a day rather than growing with every expired call.
DEAD_LETTER_MAX_LENGTH = 10_000
DEAD_LETTER_TTL_MS = 86_400_000


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every queue and exchange of one deployment (one prefix)."""

    prefix: str = "flotilla"
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    max_length: int = DEFAULT_MAX_LENGTH
    # Replicas of each quorum queue (0: the broker's default, every node of the cluster).
    # A setting, not asked of the broker: it is a queue argument every declarer must repeat
    # exactly (else 406 PRECONDITION_FAILED), and a process starting while a node is down
    # would count fewer nodes than the one that declared the queue.
    quorum_size: int = 0

    def _quorum(self) -> dict[str, Any]:
        """`x-queue-type` and, when set, the replica count of a quorum queue."""
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.quorum_size:
            args["x-quorum-initial-group-size"] = self.quorum_size
        return args

    @property
    def delays(self) -> DelayChain:
        """The delay levels of delayed jobs and retries (flotilla/delays.py)."""
        return DelayChain(self.prefix, self.quorum_size)

    @property
    def invocations(self) -> str:
        """The queue of pending invocation envelopes."""
        return f"{self.prefix}.invocations"

    @property
    def dead_letter_exchange(self) -> str:
        """Exchange receiving rejected, over-delivered and expired envelopes."""
        return f"{self.prefix}.dlx"

    @property
    def dead_letters(self) -> str:
        """Queue bound to the dead-letter exchange (inspect it; nothing consumes it)."""
        return f"{self.prefix}.dead"

    @property
    def job_results(self) -> str:
        """Durable queue of replies to jobs, consumed by the dispatchers."""
        return f"{self.prefix}.job-results"

    @property
    def topics(self) -> str:
        """Topic exchange of the messages functions publish (no durable queue is bound)."""
        return f"{self.prefix}.topics"

    def invocation_arguments(self) -> dict[str, Any]:
        """`x-` arguments of the invocations queue."""
        return {
            **self._quorum(),
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-delivery-limit": self.delivery_limit,
            "x-max-length": self.max_length,
            "x-overflow": "reject-publish",
        }

    def dead_letter_arguments(self) -> dict[str, Any]:
        """`x-` arguments of the dead-letter queue: bounded in length and age."""
        return {
            **self._quorum(),
            "x-max-length": DEAD_LETTER_MAX_LENGTH,
            "x-message-ttl": DEAD_LETTER_TTL_MS,
        }

    def job_result_arguments(self) -> dict[str, Any]:
        """`x-` arguments of the job-results queue (a result that crashes dispatchers is parked)."""
        return {
            **self._quorum(),
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-delivery-limit": self.delivery_limit,
        }

    def queue_names(self) -> tuple[str, ...]:
        """Every durable queue of this deployment (tests delete them afterwards)."""
        return (self.invocations, self.dead_letters, self.job_results, *self.delays.queue_names())

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        """Declare everything (idempotent); returns the invocations queue."""
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await channel.declare_queue(
            self.dead_letters, durable=True, arguments=self.dead_letter_arguments()
        )
        await dead.bind(dlx)
        await channel.declare_queue(
            self.job_results, durable=True, arguments=self.job_result_arguments()
        )
        invocations = await channel.declare_queue(
            self.invocations, durable=True, arguments=self.invocation_arguments()
        )
        await self.delays.declare(channel, destinations=(self.invocations,))
        return invocations

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete every queue and exchange of this prefix (tests and `flotilla` teardown)."""
        for name in self.queue_names():
            await channel.queue_delete(name)
        await channel.exchange_delete(self.dead_letter_exchange)
        await channel.exchange_delete(self.topics)
        for name in self.delays.exchange_names():
            await channel.exchange_delete(name)


def message_ttl_ms(reply_mode: str, remaining_ms: int, grace_ms: int = 1_000) -> int | None:
    """Per-message TTL of an envelope, or None for no expiry.

    Synchronous calls: nobody waits once the deadline passed, so the broker dead-letters the
    message instead of handing a worker work nobody wants; `grace_ms` keeps clock skew from
    expiring messages a worker could still answer in time. Jobs get no TTL: a worker records
    an `expired` result for them, so the job does not stay pending forever.
    """
    if reply_mode == REPLY_JOB:
        return None
    return max(1, remaining_ms + grace_ms)
