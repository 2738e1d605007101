"""Schedules: a function submitted as a job on every tick of a cron expression.

A schedule is `{name, function, cron, timezone, body, headers}`. `cron` has 5 fields
(minute hour day-of-month month day-of-week) or 6 (seconds first), evaluated by `cronsim`
in the schedule's IANA time zone (default UTC; daylight-saving jumps as Debian cron handles
them). Every tick submits exactly one job of the function's latest version, kind
`scheduled`, with the schedule's body and headers.

Redis (under `<prefix>:`):

- `schedules`: hash name -> JSON schedule;
- `schedule:<name>:last`: the epoch second of the last tick taken (at creation or update:
  the time of the PUT, so no tick before it runs);
- `schedule:<name>:tick:<epoch second>`: the lease of one tick (the taker's id, then the
  job's id), kept LEASE_TTL_S;
- `schedule:<name>:last-job`: JSON `{tick, job_id}` of the last job a tick submitted.

Exactly once per tick, across replicas and restarts: every dispatcher runs a `Scheduler`
that, about once a second, computes each schedule's latest tick at or before now. When it
is after `last`, `TAKE_LUA` takes it in one script: the tick's lease (SET NX) and `last`
moved to it, so one replica takes each tick, and a restarted dispatcher finds the tick
taken. The taker submits the job. A submit that fails before the job was queued for a
passing reason (broker or Redis down: Unavailable) gives the tick back for the next pass;
one that cannot succeed (the function was deleted, its body limit shrank) keeps it taken
and is logged and counted. A dispatcher that dies between taking a tick and queueing its
job loses that tick: at most once, never twice.

Missed ticks (every dispatcher down across one or more ticks): when one comes back, the
latest missed tick runs once, at once; earlier missed ticks are skipped (like anacron, or
a Kubernetes CronJob without a starting deadline), so a long outage does not end in a burst.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from redis.exceptions import RedisError

from flotilla.config import NAME_RE
from flotilla.envelope import KIND_SCHEDULED
from flotilla.errors import InvalidSchedule, Unavailable

if TYPE_CHECKING:
    from flotilla.invoker import Invoker

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # kept in Redis: schedules are for small payloads
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16 * 1024
LEASE_TTL_S = 3600
POLL_S = 1.0
FIELDS = ("function", "cron", "timezone", "body_base64", "headers")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # an HTTP token

# KEYS: schedules hash, last, lease. ARGV: name, tick, holder, lease ttl.
# The previous `last` when this call took the tick, else false.
TAKE_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= last then return false end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4]) then return false end
redis.call('SET', KEYS[2], ARGV[2])
return tostring(last)
"""

# KEYS: last, lease. ARGV: tick, previous last. Gives a tick back (its submit failed).
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('DEL', KEYS[2])
return 1
"""


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone `name`; InvalidSchedule when there is none by that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"timezone: {name!r} is not an IANA time zone (e.g. UTC, "
                              "Europe/Paris)", field="timezone") from None


def check_cron(cron: str, zone: ZoneInfo) -> None:
    """InvalidSchedule unless `cron` is a 5- or 6-field expression with a next tick."""
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise InvalidSchedule(
            f"cron: {cron!r} needs 5 fields (minute hour day month weekday) or 6 (seconds "
            "first)", field="cron",
        )
    try:
        next(CronSim(cron, datetime.now(zone)))
    except (CronSimError, StopIteration) as exc:
        raise InvalidSchedule(f"cron: {cron!r}: {exc or 'never matches'}", field="cron") from None


def latest_tick(cron: str, zone: ZoneInfo, now: float) -> int:
    """The epoch second of the latest tick of `cron` at or before `now`."""
    # From one second past now, backwards: CronSim steps back a second before matching.
    start = datetime.fromtimestamp(int(now) + 1, zone)
    return int(next(CronSim(cron, start, reverse=True)).timestamp())


def next_tick(cron: str, zone: ZoneInfo, now: float) -> int:
    """The epoch second of the first tick of `cron` after `now`."""
    return int(next(CronSim(cron, datetime.fromtimestamp(int(now), zone))).timestamp())


@dataclass(frozen=True)
class Schedule:
    """One schedule, validated (`from_request`) and as stored."""

    name: str
    function: str
    cron: str
    timezone: str = "UTC"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    @classmethod
    def from_request(cls, name: str, doc: Any) -> Schedule:
        """A schedule from a PUT body; InvalidSchedule names the first bad field."""
        if not isinstance(doc, Mapping):
            raise InvalidSchedule("the schedule must be a JSON object", field="schedule")
        unknown = sorted(set(doc) - set(FIELDS))
        if unknown:
            raise InvalidSchedule(f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})",
                                  field=unknown[0])
        if not NAME_RE.match(name):
            raise InvalidSchedule(f"name: {name!r} must be 1-63 of a-z, 0-9 and '-', starting "
                                  "with a letter", field="name")
        function = doc.get("function")
        if not isinstance(function, str) or not NAME_RE.match(function):
            raise InvalidSchedule(f"function: {function!r} is not a function name",
                                  field="function")
        cron, tz = doc.get("cron"), doc.get("timezone", "UTC")
        if not isinstance(cron, str):
            raise InvalidSchedule("cron: must be a string such as '*/5 * * * *'", field="cron")
        if not isinstance(tz, str):
            raise InvalidSchedule("timezone: must be a string such as 'UTC'", field="timezone")
        check_cron(cron, zone_of(tz))
        return cls(name, function, " ".join(cron.split()), tz, _body(doc.get("body_base64", "")),
                   _headers(doc.get("headers", [])))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the schedule (as GET shows it, without the run times)."""
        return {
            "name": self.name, "function": self.function, "cron": self.cron,
            "timezone": self.timezone,
            "body_base64": base64.b64encode(self.body).decode("ascii"),
            "headers": [list(h) for h in self.headers],
            "created_at": self.created_at, "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> Schedule:
        """The schedule as stored."""
        doc = json.loads(raw)
        return cls(
            doc["name"], doc["function"], doc["cron"], doc["timezone"],
            base64.b64decode(doc["body_base64"]), tuple((k, v) for k, v in doc["headers"]),
            doc["created_at"], doc["updated_at"],
        )


def _body(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidSchedule("body_base64: must be a base64 string", field="body_base64")
    try:
        body = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSchedule("body_base64: is not valid base64", field="body_base64") from None
    if len(body) > MAX_BODY_BYTES:
        raise InvalidSchedule(f"body_base64: the body is over {MAX_BODY_BYTES} bytes",
                              field="body_base64")
    return body


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    ok = isinstance(value, list) and len(value) <= MAX_HEADERS and all(
        isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], str)
        and _HEADER_NAME.match(h[0]) and "\r" not in h[1] and "\n" not in h[1] for h in value
    )
    if not ok or sum(len(k) + len(v) for k, v in value) > MAX_HEADER_BYTES:
        raise InvalidSchedule(
            f"headers: must be a list of at most {MAX_HEADERS} [name, value] string pairs "
            f"(names HTTP tokens, values without line breaks, {MAX_HEADER_BYTES} bytes in all)",
            field="headers",
        )
    return tuple((k.lower(), v) for k, v in value)


@dataclass(frozen=True)
class Tick:
    """What one pass did with one schedule's due tick."""

    name: str
    at: int  # epoch second of the tick
    job_id: str | None = None  # the job it submitted
    error: str | None = None  # why it submitted none


class ScheduleStore:
    """Schedules and their ticks in Redis (see the module docstring for the keys)."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.index = f"{prefix}:schedules"
        self._take = redis.register_script(TAKE_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    def _k(self, name: str, suffix: str) -> str:
        return f"{self.prefix}:schedule:{name}:{suffix}"

    async def put(self, schedule: Schedule, *, now: float | None = None) -> Schedule:
        """Create or replace a schedule (keeping its creation time); ticks start after now."""
        now = time.time() if now is None else now
        earlier = await self.get(schedule.name)
        created = earlier.created_at if earlier is not None else now
        schedule = replace(schedule, created_at=created, updated_at=now)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.index, schedule.name, json.dumps(schedule.to_dict()))
            pipe.set(self._k(schedule.name, "last"), str(int(now)))
            await pipe.execute()
        return schedule

    async def get(self, name: str) -> Schedule | None:
        """The schedule `name`, or None."""
        raw = await self.redis.hget(self.index, name)
        return Schedule.from_json(raw) if raw is not None else None

    async def all(self) -> list[Schedule]:
        """Every schedule, by name."""
        raw = await self.redis.hgetall(self.index)
        return sorted((Schedule.from_json(v) for v in raw.values()), key=lambda s: s.name)

    async def delete(self, name: str) -> bool:
        """Remove a schedule (its next tick does not run); False when there was none."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.index, name)
            pipe.delete(self._k(name, "last"), self._k(name, "last-job"))
            removed, _ = await pipe.execute()
        return bool(removed)

    async def lasts(self, names: list[str]) -> list[int]:
        """The last tick taken of each schedule (0 when unknown)."""
        if not names:
            return []
        raw = await self.redis.mget([self._k(n, "last") for n in names])
        return [int(float(v)) if v is not None else 0 for v in raw]

    async def last_job(self, name: str) -> dict[str, Any] | None:
        """`{tick, job_id}` of the last job a tick of `name` submitted."""
        raw = await self.redis.get(self._k(name, "last-job"))
        return json.loads(raw) if raw is not None else None

    async def take(self, name: str, tick: int, holder: str) -> int | None:
        """Take tick `tick` of `name` (one caller wins, once): the previous last tick, or
        None when it was taken already, is not after the last one, or the schedule is gone."""
        previous = await self._take(
            keys=[self.index, self._k(name, "last"), self._k(name, f"tick:{tick}")],
            args=[name, tick, holder, LEASE_TTL_S],
        )
        return int(previous) if previous is not None else None

    async def give_back(self, name: str, tick: int, previous: int) -> None:
        """Undo `take` after a submit that failed for a passing reason."""
        await self._release(keys=[self._k(name, "last"), self._k(name, f"tick:{tick}")],
                            args=[tick, previous])

    async def submitted(self, name: str, tick: int, job_id: str) -> None:
        """Record the job a tick submitted (on its lease and as the last job)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._k(name, f"tick:{tick}"), job_id, ex=LEASE_TTL_S)
            pipe.set(self._k(name, "last-job"), json.dumps({"tick": tick, "job_id": job_id}))
            await pipe.execute()


SubmitTick = Callable[[Schedule], Awaitable[str]]  # submits the schedule's job; its id


class Scheduler:
    """Runs the due ticks of every schedule, once each across all replicas (module doc).

    `submit(schedule)` queues the job and returns its id; Unavailable means "not queued,
    try again" (the tick is given back), any other error "cannot be queued" (the tick is
    spent). `run()` loops until cancelled; `run_once(now)` is one pass (tests drive it
    with their own clock).
    """

    def __init__(
        self, store: ScheduleStore, submit: SubmitTick, *, metrics: Any = None,
        clock: Callable[[], float] = time.time, poll_s: float = POLL_S,
    ) -> None:
        self.store = store
        self.submit = submit
        self.metrics = metrics
        self.clock = clock
        self.poll_s = poll_s
        self.holder = uuid.uuid4().hex[:12]  # who took a tick, on its lease
        self._next_due: float | None = None

    async def run_once(self, now: float | None = None) -> list[Tick]:
        """Take and run every due tick this replica wins; what it did."""
        now = self.clock() if now is None else now
        schedules = await self.store.all()
        lasts = await self.store.lasts([s.name for s in schedules])
        done: list[Tick] = []
        next_due: int | None = None
        for schedule, last in zip(schedules, lasts, strict=True):
            try:
                zone = schedule.zone
                due = latest_tick(schedule.cron, zone, now)
                if due > last and (tick := await self._run(schedule, due)) is not None:
                    done.append(tick)
                upcoming = next_tick(schedule.cron, zone, now)
            except Exception:  # one broken schedule must not stop the others
                log.exception("schedule %s: pass failed", schedule.name)
                continue
            next_due = upcoming if next_due is None else min(next_due, upcoming)
        self._next_due = next_due
        return done

    async def _run(self, schedule: Schedule, due: int) -> Tick | None:
        previous = await self.store.take(schedule.name, due, self.holder)
        if previous is None:
            return None  # another replica took it, or it was deleted meanwhile
        try:
            job_id = await self.submit(schedule)
        except (Unavailable, RedisError) as exc:  # passing: the next pass tries again
            await self.store.give_back(schedule.name, due, previous)
            log.warning("schedule %s: tick %d not queued (%s); retrying", schedule.name, due,
                        exc)
            return Tick(schedule.name, due, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the function is gone or changed (or a bug):
            # retrying every pass would not help, so the tick is spent, logged and counted.
            log.error("schedule %s: tick %d cannot run: %s", schedule.name, due, exc)
            self._count("failed")
            return Tick(schedule.name, due, error=str(exc))
        await self.store.submitted(schedule.name, due, job_id)
        self._count("submitted")
        log.info("schedule %s: tick %d submitted job %s", schedule.name, due, job_id)
        return Tick(schedule.name, due, job_id=job_id)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.schedule_ticks.labels(result).inc()

    async def run(self) -> None:
        """Pass after pass until cancelled: at each schedule's next tick, at least every
        `poll_s` (new schedules, other replicas' changes); errors are logged, not fatal."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("scheduler pass failed")
            now = self.clock()
            due_in = self.poll_s if self._next_due is None else self._next_due - now
            await asyncio.sleep(min(self.poll_s, max(0.01, due_in)))


def submit_with(invoker: Invoker) -> SubmitTick:
    """The SubmitTick of a dispatcher: the latest version of the schedule's function, as a
    job of kind `scheduled`."""

    async def submit(schedule: Schedule) -> str:
        fn = await invoker.resolve(schedule.function)
        return await invoker.submit(fn, schedule.body, schedule.headers, kind=KIND_SCHEDULED)

    return submit
