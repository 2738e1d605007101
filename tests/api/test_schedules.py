"""Cron schedules: validation and tick arithmetic (table tests), the scheduler's exactly-once
ticks with two replicas and a restart on real Redis (their clocks driven by the test), and
the routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from flotilla.errors import FunctionNotFound, InvalidSchedule, Unavailable
from flotilla.metrics import DispatcherMetrics
from flotilla.schedules import Schedule, Scheduler, ScheduleStore, latest_tick, next_tick
from tests.api.conftest import Api
from tests.api.test_http_api import assert_problem, deploy

pytestmark = pytest.mark.integration


def at(text: str) -> float:
    """Epoch seconds of an ISO time (UTC unless it says otherwise)."""
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@pytest.mark.parametrize(
    "cron, tz, now, latest, upcoming",
    [
        ("*/5 * * * *", "UTC", "2030-01-01T12:07:30", "2030-01-01T12:05:00",
         "2030-01-01T12:10:00"),
        ("*/5 * * * *", "UTC", "2030-01-01T12:05:00", "2030-01-01T12:05:00",
         "2030-01-01T12:10:00"),
        ("*/10 * * * * *", "UTC", "2030-01-01T12:00:15.5", "2030-01-01T12:00:10",
         "2030-01-01T12:00:20"),
        # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        ("0 9 * * *", "Europe/Paris", "2030-01-15T10:00:00", "2030-01-15T08:00:00",
         "2030-01-16T08:00:00"),
        ("0 9 * * *", "Europe/Paris", "2030-07-15T10:00:00", "2030-07-15T07:00:00",
         "2030-07-16T07:00:00"),
        ("0 0 1 * *", "UTC", "2030-03-10T00:00:00", "2030-03-01T00:00:00",
         "2030-04-01T00:00:00"),
    ],
)
def test_ticks(cron: str, tz: str, now: str, latest: str, upcoming: str) -> None:
    zone = ZoneInfo(tz)
    assert latest_tick(cron, zone, at(now)) == at(latest)
    assert next_tick(cron, zone, at(now)) == at(upcoming)


GOOD = {"function": "echo", "cron": "*/5 * * * *"}


@pytest.mark.parametrize(
    "doc, field",
    [
        ({**GOOD, "cron": "* * * *"}, "cron"),
        ({**GOOD, "cron": "61 * * * *"}, "cron"),
        ({**GOOD, "cron": "0 0 30 2 *"}, "cron"),  # never happens
        ({**GOOD, "cron": 5}, "cron"),
        ({**GOOD, "timezone": "Mars/Olympus"}, "timezone"),
        ({**GOOD, "function": "Bad_Name"}, "function"),
        ({**GOOD, "body_base64": "***"}, "body_base64"),
        ({**GOOD, "headers": [["x-a"]]}, "headers"),
        ({**GOOD, "headers": [["bad name", "v"]]}, "headers"),
        ({**GOOD, "headers": [["x-a", "line\nbreak"]]}, "headers"),
        ({**GOOD, "colour": "blue"}, "colour"),
        ([], "schedule"),
    ],
)
def test_invalid_schedules(doc: Any, field: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        Schedule.from_request("nightly", doc)
    assert caught.value.extra["field"] == field


def test_valid_schedule_round_trips() -> None:
    s = Schedule.from_request("nightly", {**GOOD, "cron": " 0  3 * * * ", "timezone":
                                          "Europe/Paris", "body_base64": "aGk=",
                                          "headers": [["X-A", "1"]]})
    assert (s.cron, s.body, s.headers) == ("0 3 * * *", b"hi", (("x-a", "1"),))
    assert Schedule.from_json(__import__("json").dumps(s.to_dict())) == s


class Jobs:
    """A fake SubmitTick recording what it submitted; `fail` makes the next call raise."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.fail: Exception | None = None

    async def __call__(self, schedule: Schedule) -> str:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        self.submitted.append(schedule.name)
        return f"job-{len(self.submitted)}"


@pytest.fixture
async def replicas(redis_url: str, unique: str) -> AsyncIterator[list[ScheduleStore]]:
    """Three dispatchers' stores on one Redis (separate clients): two replicas and one
    that plays the first after a restart."""
    clients = [aioredis.from_url(redis_url) for _ in range(3)]
    yield [ScheduleStore(c, prefix=unique) for c in clients]
    keys = [k async for k in clients[0].scan_iter(f"{unique}:*")]
    if keys:
        await clients[0].delete(*keys)
    for c in clients:
        await c.aclose()


T0 = at("2030-01-01T12:00:30")


async def test_each_tick_runs_once_across_replicas_and_restarts(
    replicas: list[ScheduleStore],
) -> None:
    jobs = Jobs()
    await replicas[0].put(Schedule("every-minute", "echo", "* * * * *"), now=T0)
    a, b = (Scheduler(store, jobs) for store in replicas[:2])
    # Before the first tick after the PUT: nothing, however often they look.
    assert await a.run_once(T0 + 10) == [] and await b.run_once(T0 + 20) == []
    for minute in range(1, 6):
        now = T0 + minute * 60  # 30 s past each minute
        ticks = await asyncio.gather(a.run_once(now), b.run_once(now), a.run_once(now))
        assert sum(len(t) for t in ticks) == 1, (minute, ticks)
        restarted = Scheduler(replicas[2], jobs)
        assert await restarted.run_once(now) == []
    assert jobs.submitted == ["every-minute"] * 5
    last = await replicas[0].last_job("every-minute")
    assert last == {"tick": int(at("2030-01-01T12:05:00")), "job_id": "job-5"}


async def test_missed_ticks_run_once(replicas: list[ScheduleStore]) -> None:
    jobs = Jobs()
    await replicas[0].put(Schedule("s", "echo", "* * * * *"), now=T0)
    ticks = await Scheduler(replicas[1], jobs).run_once(T0 + 10 * 60)  # 10 ticks missed
    assert [t.at for t in ticks] == [int(at("2030-01-01T12:10:00"))]
    assert jobs.submitted == ["s"]


async def test_a_tick_not_queued_is_retried_one_that_cannot_run_is_spent(
    replicas: list[ScheduleStore],
) -> None:
    jobs, metrics = Jobs(), DispatcherMetrics()
    await replicas[0].put(Schedule("s", "echo", "* * * * *"), now=T0)
    scheduler = Scheduler(replicas[0], jobs, metrics=metrics)
    jobs.fail = Unavailable("broker down")
    assert [t.error for t in await scheduler.run_once(T0 + 60)] == ["broker down"]
    assert [t.job_id for t in await Scheduler(replicas[1], jobs).run_once(T0 + 61)] == ["job-1"]
    jobs.fail = FunctionNotFound("gone")
    assert [t.error for t in await scheduler.run_once(T0 + 120)] == ["gone"]
    assert await scheduler.run_once(T0 + 121) == []
    assert jobs.submitted == ["s"]
    count = metrics.registry.get_sample_value
    assert count("flotilla_schedule_ticks_total", {"result": "submitted"}) is None  # replica 2's
    assert count("flotilla_schedule_ticks_total", {"result": "failed"}) == 1


async def test_a_deleted_or_replaced_schedule(replicas: list[ScheduleStore]) -> None:
    jobs = Jobs()
    store = replicas[0]
    await store.put(Schedule("s", "echo", "* * * * *"), now=T0)
    scheduler = Scheduler(store, jobs)
    assert await store.delete("s") and not await store.delete("s")
    assert await scheduler.run_once(T0 + 60) == []
    # Re-created later: ticks before the PUT do not run.
    await store.put(Schedule("s", "echo", "0 * * * *"), now=T0 + 3 * 3600 + 5)
    assert await scheduler.run_once(T0 + 3 * 3600 + 10) == []
    assert len(await scheduler.run_once(T0 + 4 * 3600)) == 1


async def test_schedule_routes(api: Api) -> None:
    await deploy(api, "echo", max_body_bytes=4)
    body = {"function": "echo", "cron": "*/5 * * * *", "timezone": "UTC",
            "body_base64": "aGk=", "headers": [["x-a", "1"]]}
    created = await api.client.put("/v1/schedules/nightly", json=body)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert (doc["name"], doc["function"], doc["last_job"]) == ("nightly", "echo", None)
    assert doc["next_run_at"] % 300 == 0
    replaced = await api.client.put("/v1/schedules/nightly", json={**body, "cron": "0 * * * *"})
    assert replaced.status_code == 200 and replaced.json()["created_at"] == doc["created_at"]
    listed = (await api.client.get("/v1/schedules")).json()["schedules"]
    assert [(s["name"], s["cron"]) for s in listed] == [("nightly", "0 * * * *")]
    assert (await api.client.get("/v1/schedules/nightly")).json()["cron"] == "0 * * * *"
    assert_problem(await api.client.put("/v1/schedules/x", json={**body, "function": "nope"}),
                   404, "function-not-found")
    too_big = {**body, "body_base64": "aGVsbG8="}  # 5 bytes, over echo's 4
    assert_problem(await api.client.put("/v1/schedules/x", json=too_big), 422,
                   "invalid-schedule")
    assert_problem(await api.client.put("/v1/schedules/x", json={**body, "cron": "nope"}), 422,
                   "invalid-schedule")
    assert_problem(await api.client.put("/v1/schedules/x", json={"cron": "* * * * *"}), 422,
                   "invalid-request")
    assert (await api.client.delete("/v1/schedules/nightly")).status_code == 204
    assert_problem(await api.client.get("/v1/schedules/nightly"), 404, "schedule-not-found")
    assert_problem(await api.client.delete("/v1/schedules/nightly"), 404, "schedule-not-found")
