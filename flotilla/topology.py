"""Queue and exchange names and arguments: one place, derived from `queue_prefix`.

Work travels in lanes, each a queue every worker process consumes (worker/consumer.py):

- `<prefix>.sync`: the synchronous lane, every function's calls with a caller waiting.
  Workers run its deliveries before any job waiting for a sandbox slot, so a sync call never
  queues behind jobs. Its type is the `sync_lane` setting: `quorum` (the default: replicated,
  persistent, survives the loss of a node and a broker restart) or `classic` (one node,
  transient messages: a broker restart or the loss of that node loses the calls in it, each
  surfacing to its caller as a timeout it may retry). docs/reliability.md has the figures.
- `<prefix>.jobs.<function>`: one durable quorum queue per function for its jobs (and
  spawned, scheduled and retried ones), persistent and confirmed. Workers consume every
  function's job queue with a small prefetch and take jobs for free slots round-robin over
  functions, so one function's backlog delays no other function's jobs. The queue is
  declared by the first job published to it and by every worker that learns of the function
  (at start from the registry, then from its deploy notice: worker/lanes.py).

Publishes use the default exchange (routing key = queue name) and publisher confirms.
`x-delivery-limit` (quorum lanes) dead-letters a message that keeps crashing workers (every
redelivery after a lost channel counts); `x-max-length` + `x-overflow: reject-publish` makes
a full lane nack publishes so the dispatcher answers 503 instead of buffering without bound.
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

import re
from collections.abc import Iterable
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
# The types the synchronous lane may have (`sync_lane` setting, FLOTILLA_SYNC_LANE).
SYNC_LANES = ("quorum", "classic")
JOBS_INFIX = ".jobs."


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
    # The synchronous lane's queue type, one of SYNC_LANES (a queue argument too: every
    # declarer of one prefix must agree).
    sync_lane: str = "quorum"

    def __post_init__(self) -> None:
        if self.sync_lane not in SYNC_LANES:
            raise ValueError(f"sync_lane must be one of {SYNC_LANES}, got {self.sync_lane!r}")

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
    def sync(self) -> str:
        """The synchronous lane: calls with a caller waiting for the reply."""
        return f"{self.prefix}.sync"

    @property
    def sync_persistent(self) -> bool:
        """Whether sync envelopes are published persistent (a quorum lane keeps every
        message on disk anyway; a classic lane keeps transient ones in memory only)."""
        return self.sync_lane == "quorum"

    def job_queue(self, function: str) -> str:
        """The job lane of `function` (a valid function name: flotilla.config.NAME_PATTERN)."""
        return f"{self.prefix}{JOBS_INFIX}{function}"

    def job_function(self, queue: str) -> str | None:
        """The function whose job lane `queue` is; None for any other queue."""
        head = f"{self.prefix}{JOBS_INFIX}"
        return queue[len(head):] if queue.startswith(head) and len(queue) > len(head) else None

    @property
    def lane_pattern(self) -> str:
        """A regular expression matching the sync lane and every job lane (KEDA's queueName)."""
        prefix = re.escape(self.prefix)
        return f"^{prefix}\\.(sync|jobs\\..+)$"

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

    def job_arguments(self) -> dict[str, Any]:
        """`x-` arguments of every job lane."""
        return {
            **self._quorum(),
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-delivery-limit": self.delivery_limit,
            "x-max-length": self.max_length,
            "x-overflow": "reject-publish",
        }

    def sync_arguments(self) -> dict[str, Any]:
        """`x-` arguments of the synchronous lane. A classic queue has no delivery limit:
        the workers' run ledger (worker/handler.py) is what parks a poison envelope there."""
        if self.sync_lane == "quorum":
            return self.job_arguments()
        return {
            "x-queue-type": "classic",
            "x-dead-letter-exchange": self.dead_letter_exchange,
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

    def queue_names(self, functions: Iterable[str] = ()) -> tuple[str, ...]:
        """Every durable queue of this deployment with the job lanes of `functions` (tests
        delete them afterwards; the registry's function set names every job lane a worker
        or a dispatcher declared)."""
        jobs = tuple(self.job_queue(f) for f in sorted(set(functions)))
        return (self.sync, self.dead_letters, self.job_results, *self.delays.queue_names(),
                *jobs)

    async def declare(self, channel: AbstractChannel, *, adopt_sync: bool = False) -> AbstractQueue:
        """Declare everything but the job lanes (idempotent); returns the sync lane. With
        `adopt_sync`, the sync lane is only looked up (passive): it exists already, maybe of
        the other `sync_lane` type."""
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
        # The delay chain of delayed jobs and retries; each job lane binds itself to it.
        await self.delays.declare(channel)
        if adopt_sync:
            return await channel.declare_queue(self.sync, passive=True)
        return await channel.declare_queue(
            self.sync, durable=True, arguments=self.sync_arguments()
        )

    async def declare_jobs(self, channel: AbstractChannel, function: str) -> AbstractQueue:
        """Declare the job lane of `function` and bind it to the delay chain's last exchange,
        so delayed jobs and retries of the function reach it (idempotent)."""
        queue = await channel.declare_queue(
            self.job_queue(function), durable=True, arguments=self.job_arguments()
        )
        delays = self.delays
        # The chain's last exchange (declared by `declare`, repeated here: cheap and
        # idempotent, and a transport told not to declare may be first).
        await channel.declare_exchange(delays.deliver, aio_pika.ExchangeType.TOPIC, durable=True)
        await delays.bind_destination(channel, queue.name)
        return queue

    async def delete(self, channel: AbstractChannel, functions: Iterable[str] = ()) -> None:
        """Delete every queue and exchange of this prefix, the job lanes of `functions`
        included (tests and `flotilla` teardown; deleting a missing queue is no error)."""
        for name in self.queue_names(functions):
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
