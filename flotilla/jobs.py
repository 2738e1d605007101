"""Asynchronous jobs: their records and first-wins results in Redis, waiting, and callbacks.

Redis layout (keys start with `<prefix>:`; all expire after settings.job_ttl_s, plus the
delay for a job scheduled ahead):

- `job:<id>`: JSON `JobRecord` written at submit time;
- `job:<id>:state`, `job:<id>:cancelled`: the job's progress (running, retrying) and the
  cancel flag, changed only by the Lua transitions of flotilla/jobstate.py;
- `job:<id>:result`: JSON result, written with SET NX so the first result wins and
  duplicates (redelivered jobs, two dispatchers consuming results, a result arriving after
  a cancel) are ignored;
- channel `job:<id>`: a message is published when the result is stored, which wakes
  long-polling readers (they subscribe first, then read, so no result is missed).

Statuses: `scheduled` (submitted with a delay that has not passed), `queued`, `running`,
`retrying` (an attempt failed; `next_attempt_at` says when the next one is due), then one
of `succeeded`, `failed`, `expired`, `cancelled`.

Job ids embed their creation time (12 hex digits of epoch milliseconds, then 20 random hex
digits), so a reader can tell "expired" (older than the TTL, data gone) from "never existed".

Callbacks: when a result is stored, the dispatcher that stored it POSTs the job status
document to the job's callback URL, retrying on failure per `next_delay`. Only hosts listed
in settings.callback_hosts are accepted (`callback_allowed`), checked at submit time. A
cancelled job gets no callback (whoever cancelled it has the document).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from flotilla.envelope import Reply, Retrying, Started
from flotilla.jobstate import (
    CANCEL_LUA,
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    JOB_STATUSES,
    MAX_DELAY_MS,
    QUEUED,
    RETRYING,
    RETRYING_LUA,
    RUNNING,
    SCHEDULED,
    START_LUA,
    STARTED,
    STATUS_EXPIRED,
    SUCCEEDED,
    JobGate,
    JobKeys,
    Progress,
    job_delay_ms,
    status_of,
)
from flotilla.outcomes import Outcome

log = logging.getLogger(__name__)

__all__ = [
    "CANCELLED",
    "FAILED",
    "JOB_STATUSES",
    "MAX_DELAY_MS",
    "QUEUED",
    "RUNNING",
    "SCHEDULED",
    "STATUS_EXPIRED",
    "SUCCEEDED",
    "JobGate",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "ResultRecorder",
    "job_delay_ms",
    "new_id",
]

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
    kind: str = "job"  # job | scheduled (delayed or cron) | spawned
    run_at: float | None = None  # epoch seconds when submitted with a delay
    parent_id: str | None = None  # the invocation that spawned it

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobRecord:
        """The record as stored (fields added later default when absent)."""
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class JobStatus:
    """A job as GET /v1/jobs/{id} reports it."""

    job_id: str
    status: str
    function: str | None = None
    digest: str | None = None
    created_at: float | None = None
    result: dict[str, Any] | None = None
    kind: str | None = None
    run_at: float | None = None
    parent_id: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    last_error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the job (result members merged in when finished)."""
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "function": self.function,
            "digest": self.digest,
            "created_at": self.created_at,
            "kind": self.kind,
            "run_at": self.run_at,
            "parent_id": self.parent_id,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
        }
        if self.status == RETRYING:
            out["last_error"] = self.last_error
        if self.result is not None:
            out.update({k: v for k, v in self.result.items() if k != "status"})
        return out

    @property
    def finished(self) -> bool:
        """True once the job has a result (or is gone for good)."""
        return self.status in FINISHED_STATUSES


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


def cancelled_result() -> dict[str, Any]:
    """The stored result of a cancelled job."""
    now = time.time()
    return {"status": CANCELLED, "outcome": None, "response": None, "error": None,
            "finished_at": now, "cancelled_at": now}


class JobStore:
    """Jobs in Redis (`redis.asyncio` client passed in); see the module docstring for keys."""

    def __init__(self, redis: Any, *, prefix: str = "flotilla", ttl_s: int = 86_400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._start = redis.register_script(START_LUA)
        self._cancel = redis.register_script(CANCEL_LUA)
        self._retrying = redis.register_script(RETRYING_LUA)

    def _k(self, job_id: str, suffix: str = "") -> str:
        return f"{self.prefix}:job:{job_id}{suffix}"

    def keys(self, job_id: str) -> JobKeys:
        """The Redis keys of `job_id`."""
        return JobKeys.of(self.prefix, job_id)

    def ttl_for(self, delay_ms: int) -> int:
        """How long a job's keys live: the result TTL past the moment it is due."""
        return self.ttl_s + math.ceil(max(0, delay_ms) / 1000)

    async def create(self, record: JobRecord, *, ttl_s: int | None = None) -> None:
        """Store a new job as queued (scheduled when its record has a future `run_at`)."""
        await self.redis.set(self._k(record.job_id), json.dumps(asdict(record)),
                             ex=ttl_s or self.ttl_s)

    async def forget(self, job_id: str) -> None:
        """Remove a job that was never queued (its submit failed)."""
        keys = self.keys(job_id)
        await self.redis.delete(keys.record, keys.state)

    async def record(self, job_id: str) -> JobRecord | None:
        """The job's submit-time record; None when unknown or expired."""
        raw = await self.redis.get(self._k(job_id))
        return JobRecord.from_json(raw) if raw is not None else None

    async def mark_running(self, job_id: str, attempt: int = 1) -> bool:
        """Note that a worker started the job (status `running` until a result arrives);
        False (nothing written) when the job is unknown, cancelled or already finished."""
        answer = await self._start(keys=self.keys(job_id).gate(), args=[attempt, self.ttl_s])
        return _text(answer) == STARTED

    async def retrying(self, notice: Retrying) -> bool:
        """Note that an attempt failed and the next one is due (status `retrying`); False
        when the job finished, is unknown, or a later attempt already started."""
        keys = self.keys(notice.invocation_id)
        wait_ms = notice.next_attempt_at_ms - int(time.time() * 1000)
        done = await self._retrying(
            keys=[keys.record, keys.state, keys.result],
            args=[notice.attempt, notice.next_attempt_at_ms, notice.error, notice.outcome,
                  self.ttl_for(wait_ms)],
        )
        return bool(done)

    async def cancel(self, job_id: str) -> tuple[bool, JobStatus | None]:
        """Cancel a scheduled, queued or retrying job: (True, its status) when this call
        cancelled it; (False, its status) when it runs or has finished; (False, None) when
        there is no such job. Atomic against a worker starting it (flotilla/jobstate.py)."""
        record = await self.record(job_id)
        delay_ms = 0
        if record is not None and record.run_at is not None:
            delay_ms = int((record.run_at - time.time()) * 1000)
        keys = self.keys(job_id)
        answer = await self._cancel(
            keys=keys.gate(),
            args=[json.dumps(cancelled_result()), self.ttl_for(delay_ms), keys.channel],
        )
        outcome = _text(answer[0])
        if outcome == "unknown":
            return False, None
        return outcome == CANCELLED, await self.get(job_id)

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
        keys = self.keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.record)
        pipe.get(keys.result)
        pipe.hgetall(keys.state)
        raw_record, raw_result, raw_state = await pipe.execute()
        record = JobRecord.from_json(raw_record) if raw_record is not None else None
        result = json.loads(raw_result) if raw_result is not None else None
        if record is None and result is None:
            created = id_time_ms(job_id)
            if created is not None and created / 1000 < time.time() - self.ttl_s:
                return JobStatus(job_id, STATUS_EXPIRED)
            return None
        progress = Progress.from_redis(raw_state)
        run_at = record.run_at if record else None
        return JobStatus(
            job_id,
            status_of(result, progress, run_at),
            function=record.function if record else None,
            digest=record.digest if record else None,
            created_at=record.created_at if record else None,
            result=result,
            kind=record.kind if record else None,
            run_at=run_at,
            parent_id=record.parent_id if record else None,
            attempts=progress.attempts,
            next_attempt_at=progress.next_attempt_at if progress.phase == RETRYING else None,
            last_error=progress.last_error,
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
        await self.jobs.mark_running(notice.invocation_id, notice.attempt)

    async def retrying(self, notice: Retrying) -> None:
        """An attempt failed and another is due: mark the job retrying."""
        await self.jobs.retrying(notice)

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
