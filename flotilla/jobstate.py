"""A job's lifecycle in Redis: the transitions that must not race, one Lua script each.

Keys of job `<id>` (all under `<prefix>:job:<id>`, see flotilla/jobs.py for the record and
the result):

- `job:<id>:state`: hash `attempt` (highest attempt started or failed), `phase` (`running`
  or `retrying`), while retrying `next_attempt_at_ms`, and the last failed attempt's
  `error` and `outcome`;
- `job:<id>:cancelled`: present once the job was cancelled; the worker checks it (through
  `JobGate.start`) before running a delivery;
- `job:<id>:result`: the first result wins (a cancel writes one too: status `cancelled`).

The race that matters is "a worker starts the job" against "a caller cancels it": `START`
and `CANCEL` each run as one script, so Redis orders them and exactly one wins. A start
that comes first marks the job `running` and the cancel answers 409; a cancel that comes
first stores the `cancelled` result and sets the flag, and the start answers `cancelled`
(the worker then acks the delivery without running it and publishes nothing: the result
is already there).

`status_of` turns what the keys hold into the status a reader sees; `job_delay_ms` checks
when a job submitted with `delay_ms` or `run_at` is due (at most 7 days ahead).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flotilla.errors import InvalidRequest

QUEUED = "queued"
SCHEDULED = "scheduled"
RUNNING = "running"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
STATUS_EXPIRED = "expired"
CANCELLED = "cancelled"
JOB_STATUSES = (SCHEDULED, QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, STATUS_EXPIRED, CANCELLED)
FINISHED_STATUSES = (SUCCEEDED, FAILED, STATUS_EXPIRED, CANCELLED)
MAX_DELAY_MS = 7 * 86_400_000  # jobs are scheduled at most 7 days ahead

# What `START` answers (the worker runs the delivery unless it is CANCELLED; a FINISHED
# job's redelivery may be acked without running, its result being stored already).
STARTED = "started"
START_CANCELLED = "cancelled"
START_FINISHED = "finished"
START_UNKNOWN = "unknown"  # no record (never submitted through a JobStore, or expired): run

# KEYS: record, state, cancelled, result. ARGV: attempt, ttl_s.
START_LUA = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'cancelled' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local attempt = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
if attempt >= current then
  redis.call('HSET', KEYS[2], 'attempt', attempt, 'phase', 'running')
  redis.call('HDEL', KEYS[2], 'next_attempt_at_ms')
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
end
return 'started'
"""

# KEYS: record, state, cancelled, result. ARGV: the cancelled result (JSON), ttl_s, channel.
# Returns {'cancelled'}, {'running'}, {'finished', result} or {'unknown'}.
CANCEL_LUA = """
local result = redis.call('GET', KEYS[4])
if result then return {'finished', result} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
if redis.call('HGET', KEYS[2], 'phase') == 'running' then return {'running'} end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', ttl)
redis.call('SET', KEYS[4], ARGV[1], 'EX', ttl)
redis.call('PUBLISH', ARGV[3], 'cancelled')
return {'cancelled'}
"""

# KEYS: record, state, result. ARGV: failed attempt, next_attempt_at_ms, error, outcome, ttl_s
# (counted from the next attempt: the record is kept at least that long, so a long backoff
# does not outlive it). 1 when recorded; 0 when the job finished, is unknown, or a later
# attempt already started.
RETRYING_LUA = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local attempt = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
if current > attempt then return 0 end
local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], 'attempt', attempt, 'phase', 'retrying',
  'next_attempt_at_ms', ARGV[2], 'error', ARGV[3], 'outcome', ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""


@dataclass(frozen=True)
class JobKeys:
    """The Redis keys of one job."""

    record: str
    state: str
    cancelled: str
    result: str
    channel: str  # pub/sub channel announcing the result

    @classmethod
    def of(cls, prefix: str, job_id: str) -> JobKeys:
        """The keys of `job_id` under `prefix`."""
        base = f"{prefix}:job:{job_id}"
        return cls(base, f"{base}:state", f"{base}:cancelled", f"{base}:result", base)

    def gate(self) -> list[str]:
        """KEYS of START and CANCEL."""
        return [self.record, self.state, self.cancelled, self.result]


class JobGate:
    """The worker's side of the cancel race: call `start` before running a job delivery.

    Synchronous (a worker thread calls it with the worker's sync Redis client). Answers
    STARTED (run it; the job reads `running`), START_CANCELLED (ack without running:
    the job was cancelled), START_FINISHED (a result exists: a redelivery of a finished
    job) or START_UNKNOWN (no record: run it, as before jobs had records).
    """

    def __init__(self, redis: Any, *, prefix: str = "flotilla", ttl_s: int = 86_400) -> None:
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._start = redis.register_script(START_LUA)

    def start(self, job_id: str, attempt: int = 1) -> str:
        """Mark the job running unless it was cancelled or finished; what happened."""
        answer = self._start(keys=JobKeys.of(self.prefix, job_id).gate(),
                             args=[attempt, self.ttl_s])
        return _text(answer)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Progress:
    """What the state hash says about a job between its start and its result."""

    attempts: int = 0
    phase: str = ""  # running | retrying | "" (not started)
    next_attempt_at: float | None = None  # epoch seconds, while retrying
    last_error: dict[str, str] | None = None  # {outcome, message} of the last failed attempt

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes] | None) -> Progress:
        """The progress of a state hash (empty or None: not started)."""
        if not raw:
            return cls()
        d = {_text(k): _text(v) for k, v in raw.items()}
        next_ms = d.get("next_attempt_at_ms")
        error = {"outcome": d["outcome"], "message": d.get("error", "")} if d.get("outcome") \
            else None
        return cls(
            attempts=int(d.get("attempt") or 0),
            phase=d.get("phase", ""),
            next_attempt_at=int(next_ms) / 1000 if next_ms else None,
            last_error=error,
        )


def status_of(
    result: dict[str, Any] | None, progress: Progress, run_at: float | None,
    now: float | None = None,
) -> str:
    """The status a reader sees: the result's, else running/retrying, else scheduled until
    `run_at` (epoch seconds), else queued."""
    if result is not None:
        return str(result["status"])
    if progress.phase == RUNNING:
        return RUNNING
    if progress.phase == RETRYING:
        return RETRYING
    if run_at is not None and run_at > (time.time() if now is None else now):
        return SCHEDULED
    return QUEUED


def job_delay_ms(
    delay_ms: int | None, run_at: str | datetime | None, *, now: float | None = None
) -> int:
    """The delay of a job submitted with `?delay_ms=` or `?run_at=` (at most one of them):
    milliseconds from `now` (epoch seconds), 0 for "at once". InvalidRequest (422) when both
    are given, `run_at` is not RFC 3339 with a time zone, or the job would run more than 7
    days ahead; a `run_at` in the past means "at once"."""
    if delay_ms is not None and run_at is not None:
        raise InvalidRequest("give either delay_ms or run_at, not both")
    if run_at is not None:
        when = parse_rfc3339(run_at) if isinstance(run_at, str) else run_at
        if when.tzinfo is None:
            raise InvalidRequest("run_at needs a time zone")
        now = time.time() if now is None else now
        delay_ms = max(0, math.ceil((when.timestamp() - now) * 1000))
    delay_ms = delay_ms or 0
    if delay_ms < 0:
        raise InvalidRequest(f"delay_ms must be >= 0, got {delay_ms}")
    if delay_ms > MAX_DELAY_MS:
        raise InvalidRequest(
            f"a job can be scheduled at most 7 days ({MAX_DELAY_MS} ms) ahead, "
            f"not {delay_ms} ms"
        )
    return delay_ms


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time with a time zone (`2030-01-02T03:04:05Z`, `...+02:00`)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"run_at {text!r} is not an RFC 3339 date-time (e.g. 2030-01-02T03:04:05Z)"
        ) from None
    if when.tzinfo is None:
        raise InvalidRequest(f"run_at {text!r} needs a time zone (Z or +hh:mm)")
    return when
