"""Asynchronous jobs: their records and first-wins results in Redis, waiting, and callbacks.

Redis layout (keys start with `<prefix>:`; all expire after settings.job_ttl_s):

- `job:<id>`: JSON `JobRecord` written at submit time;
- `job:<id>:running`: present once a worker reported the job started (optional);
- `job:<id>:result`: JSON result, written with SET NX so the first result wins and
  duplicates (redelivered jobs, two dispatchers consuming results) are ignored;
- channel `job:<id>`: a message is published when the result is stored, which wakes
  long-polling readers (they subscribe first, then read, so no result is missed).

Job ids embed their creation time (12 hex digits of epoch milliseconds, then 20 random hex
digits), so a reader can tell "expired" (older than the TTL, data gone) from "never existed".

Callbacks: when a result is stored, the dispatcher that stored it POSTs the job status
document to the job's callback URL, retrying on failure per `next_delay`. Only hosts listed
in settings.callback_hosts are accepted (`callback_allowed`), checked at submit time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from flotilla.envelope import Reply, Started
from flotilla.outcomes import Outcome

log = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
STATUS_EXPIRED = "expired"
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, STATUS_EXPIRED)

MAX_WAIT_S = 30.0
CALLBACK_ATTEMPTS = 6
CALLBACK_BASE_DELAY_S = 0.5
CALLBACK_MAX_DELAY_S = 30.0


class _RandomHex:
    """Random hex digits for ids, read from `os.urandom` 2,000 bytes (200 ids) at a time."""

    BATCH = 4000

    def __init__(self) -> None:
        self.digits = ""
        self.at = self.BATCH
        self.lock = threading.Lock()
        # A forked child must not hand out the digits its parent has left in the batch.
        os.register_at_fork(after_in_child=self.forget)

    def forget(self) -> None:
        """Drop the batch: the next id reads a fresh one."""
        self.at = self.BATCH

    def take(self, n: int) -> str:
        """The next `n` (<= BATCH) random hex digits."""
        with self.lock:
            at = self.at
            if at + n > self.BATCH:
                self.digits = secrets.token_hex(self.BATCH // 2)
                at = 0
            self.at = at + n
            return self.digits[at:at + n]


_random_hex = _RandomHex()


def new_id(now_ms: int | None = None) -> str:
    """A new invocation/job id: 12 hex digits of epoch ms + 20 random hex digits.

    The random digits come from one `os.urandom` read per 200 ids rather than a getrandom
    syscall per request; they are just as unpredictable.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return f"{ms:012x}{_random_hex.take(20)}"


def id_time_ms(job_id: str) -> int | None:
    """The creation time embedded in an id from `new_id`; None for anything else."""
    if len(job_id) != 32:
        return None
    try:
        int(job_id, 16)
    except ValueError:
        return None
    return int(job_id[:12], 16)


def next_delay(attempt: int) -> float | None:
    """Seconds to wait before callback attempt `attempt + 1` (attempt counts from 1); None: stop.

    Exponential from CALLBACK_BASE_DELAY_S, doubling, capped at CALLBACK_MAX_DELAY_S, for at
    most CALLBACK_ATTEMPTS attempts in all.
    """
    if attempt < 1 or attempt >= CALLBACK_ATTEMPTS:
        return None
    return float(min(CALLBACK_MAX_DELAY_S, CALLBACK_BASE_DELAY_S * 2.0 ** (attempt - 1)))


def parse_hosts(setting: str) -> tuple[str, ...]:
    """settings.callback_hosts ("a.example.com, b:8080") as a tuple of lowercase entries."""
    return tuple(h.strip().lower() for h in setting.split(",") if h.strip())


def callback_allowed(url: str, hosts: Sequence[str]) -> bool:
    """True when `url` is http(s) and its host (or host:port) is listed in `hosts`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname.lower()
    return host in hosts or (port is not None and f"{host}:{port}" in hosts)


@dataclass(frozen=True)
class JobRecord:
    """What is known about a job when it is submitted."""

    job_id: str
    function: str
    digest: str
    created_at: float
    callback_url: str | None = None


@dataclass(frozen=True)
class JobStatus:
    """A job as GET /v1/jobs/{id} reports it."""

    job_id: str
    status: str
    function: str | None = None
    digest: str | None = None
    created_at: float | None = None
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the job (result members merged in when finished)."""
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "function": self.function,
            "digest": self.digest,
            "created_at": self.created_at,
        }
        if self.result is not None:
            out.update({k: v for k, v in self.result.items() if k != "status"})
        return out

    @property
    def finished(self) -> bool:
        """True once the job has a result (or is gone for good)."""
        return self.status in (SUCCEEDED, FAILED, STATUS_EXPIRED)


def result_from_reply(reply: Reply) -> dict[str, Any]:
    """The stored result of a job: status, outcome, and the response or the error."""
    if reply.outcome is Outcome.OK:
        return {
            "status": SUCCEEDED,
            "outcome": reply.outcome,
            "response": {
                "status": reply.status,
                "headers": [list(h) for h in reply.headers],
                "body": base64.b64encode(reply.body).decode("ascii"),
            },
            "error": None,
            "finished_at": time.time(),
        }
    return {
        "status": STATUS_EXPIRED if reply.outcome is Outcome.EXPIRED else FAILED,
        "outcome": reply.outcome,
        "response": None,
        "error": {"outcome": reply.outcome, "message": reply.error},
        "finished_at": time.time(),
    }


class JobStore:
    """Jobs in Redis (`redis.asyncio` client passed in); see the module docstring for keys."""

    def __init__(self, redis: Any, *, prefix: str = "flotilla", ttl_s: int = 86_400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _k(self, job_id: str, suffix: str = "") -> str:
        return f"{self.prefix}:job:{job_id}{suffix}"

    async def create(self, record: JobRecord) -> None:
        """Store a new job as queued."""
        await self.redis.set(self._k(record.job_id), json.dumps(asdict(record)), ex=self.ttl_s)

    async def forget(self, job_id: str) -> None:
        """Remove a job that was never queued (its submit failed)."""
        await self.redis.delete(self._k(job_id), self._k(job_id, ":running"))

    async def record(self, job_id: str) -> JobRecord | None:
        """The job's submit-time record; None when unknown or expired."""
        raw = await self.redis.get(self._k(job_id))
        return JobRecord(**json.loads(raw)) if raw is not None else None

    async def mark_running(self, job_id: str) -> bool:
        """Note that a worker started the job (status `running` until a result arrives);
        False (nothing written) when the job is unknown or already has a result."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self._k(job_id))
        pipe.exists(self._k(job_id, ":result"))
        known, finished = await pipe.execute()
        if not known or finished:
            return False
        # Racing a result stored right now is harmless: `get` prefers the result.
        await self.redis.set(self._k(job_id, ":running"), "1", ex=self.ttl_s)
        return True

    async def complete(self, reply: Reply) -> dict[str, Any] | None:
        """Store the job's result unless one exists; returns it when this call stored it."""
        job_id = reply.invocation_id
        result = result_from_reply(reply)
        stored = await self.redis.set(
            self._k(job_id, ":result"), json.dumps(result), ex=self.ttl_s, nx=True
        )
        if not stored:
            log.info("ignoring duplicate result for job %s", job_id)
            return None
        await self.redis.publish(self._k(job_id), result["status"])
        return result

    async def get(self, job_id: str) -> JobStatus | None:
        """The job's current status; None when it never existed."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._k(job_id))
        pipe.get(self._k(job_id, ":result"))
        pipe.exists(self._k(job_id, ":running"))
        raw_record, raw_result, running = await pipe.execute()
        record = JobRecord(**json.loads(raw_record)) if raw_record is not None else None
        result = json.loads(raw_result) if raw_result is not None else None
        if record is None and result is None:
            created = id_time_ms(job_id)
            if created is not None and created / 1000 < time.time() - self.ttl_s:
                return JobStatus(job_id, STATUS_EXPIRED)
            return None
        if result is not None:
            status = result["status"]
        else:
            status = RUNNING if running else QUEUED
        return JobStatus(
            job_id,
            status,
            function=record.function if record else None,
            digest=record.digest if record else None,
            created_at=record.created_at if record else None,
            result=result,
        )

    async def wait(self, job_id: str, timeout: float) -> JobStatus | None:
        """Like `get`, but waits up to `timeout` seconds (capped at 30) for a result."""
        timeout = max(0.0, min(timeout, MAX_WAIT_S))
        if timeout == 0:
            return await self.get(job_id)
        pubsub = self.redis.pubsub()
        try:
            # Subscribe before reading, so a result stored in between still wakes us.
            await pubsub.subscribe(self._k(job_id))
            status = await self.get(job_id)
            if status is None or status.finished:
                return status
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(left, 1.0)
                )
                if message is not None:
                    break
            return await self.get(job_id)
        finally:
            await pubsub.aclose()


PostFn = Callable[[str, dict[str, Any]], Awaitable[int]]


async def deliver_callback(
    url: str,
    document: dict[str, Any],
    post: PostFn,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """POST `document` to `url` until a 2xx, per `next_delay`; True when delivered."""
    attempt = 1
    while True:
        try:
            status = await post(url, document)
            if 200 <= status < 300:
                return True
            log.warning("callback %s answered %s (attempt %d)", url, status, attempt)
        except Exception as exc:  # noqa: BLE001 - any network failure is retried the same way
            log.warning("callback %s failed (attempt %d): %s", url, attempt, exc)
        delay = next_delay(attempt)
        if delay is None:
            log.error("giving up on callback %s after %d attempts", url, attempt)
            return False
        await sleep(delay)
        attempt += 1


class ResultRecorder:
    """Handles job results from the transport: store first-wins, then fire the callback once.

    Pass `handle` (and `started`) to `Transport.consume_job_results`. Callback deliveries run as background
    tasks (kept here so they are not garbage-collected); `drain()` awaits them on shutdown.
    """

    def __init__(self, jobs: JobStore, post: PostFn) -> None:
        self.jobs = jobs
        self.post = post
        self.tasks: set[asyncio.Task[bool]] = set()

    async def started(self, notice: Started) -> None:
        """A worker started the job: mark it running (pass to `consume_job_results`)."""
        await self.jobs.mark_running(notice.invocation_id)

    async def handle(self, reply: Reply) -> None:
        """Record one job result; duplicates are ignored (and fire no callback)."""
        result = await self.jobs.complete(reply)
        if result is None:
            return
        record = await self.jobs.record(reply.invocation_id)
        if record is None or not record.callback_url:
            return
        status = await self.jobs.get(reply.invocation_id)
        if status is None:
            return
        task = asyncio.create_task(deliver_callback(record.callback_url, status.to_dict(), self.post))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` seconds for pending callbacks, then cancel the rest."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
