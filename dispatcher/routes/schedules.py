"""Schedules (cron), deploy scope: `PUT /v1/schedules/{name}`, `GET /v1/schedules`,
`GET /v1/schedules/{name}`, `DELETE /v1/schedules/{name}`.

Every dispatcher runs the `Scheduler` that submits their jobs (flotilla/schedules.py: one
job per tick across replicas and restarts; after an outage, the latest missed tick once).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, Api, ApiDep, require
from dispatcher.auth import DEPLOY
from flotilla.config import NAME_PATTERN
from flotilla.errors import FunctionNotFound, InvalidRequest, InvalidSchedule, ScheduleNotFound
from flotilla.schedules import MAX_HEADERS, Schedule, ScheduleStore, next_tick

router = APIRouter()
SCHEDULE_PARAM = Path(description="Schedule name", pattern=NAME_PATTERN)


class ScheduleRequest(BaseModel):
    """The body of PUT /v1/schedules/{name}."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(pattern=NAME_PATTERN, description="The function each tick submits")
    cron: str = Field(
        min_length=1, max_length=200,
        description="5 fields (minute hour day-of-month month day-of-week) or 6 (seconds "
                    "first), e.g. `*/5 * * * *`",
    )
    timezone: str = Field("UTC", min_length=1, max_length=64,
                          description="IANA time zone the expression is read in")
    body_base64: str = Field("", description="The jobs' request body, base64")
    headers: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list, max_length=MAX_HEADERS,
        description="The jobs' request headers, as [name, value] pairs",
    )


def _store(api: Api) -> ScheduleStore:
    assert api.schedules is not None, "create_app always sets the schedule store"
    return api.schedules


async def _document(store: ScheduleStore, schedule: Schedule) -> dict[str, Any]:
    """The schedule as GET shows it: its fields, its next run and its last job."""
    out = schedule.to_dict()
    out["next_run_at"] = next_tick(schedule.cron, schedule.zone, time.time())
    out["last_job"] = await store.last_job(schedule.name)
    return out


@router.put(
    "/v1/schedules/{name}",
    summary="Create or replace a schedule",
    operation_id="put_schedule",
    description=(
        "The function must be deployed and the body within its max_body_bytes. Ticks start "
        "after this request: a replaced schedule does not catch up on earlier ones."
    ),
    responses={
        200: {"description": "Replaced"},
        201: {"description": "Created"},
        **openapi.problem_responses(
            InvalidRequest, InvalidSchedule, FunctionNotFound, *AUTH_PROBLEMS
        ),
    },
    dependencies=[require(DEPLOY)],
)
async def put_schedule(
    body: ScheduleRequest, name: str = SCHEDULE_PARAM, api: Api = ApiDep
) -> JSONResponse:
    """Validate the schedule (cron, time zone, function, body) and store it."""
    schedule = Schedule.from_request(name, body.model_dump())
    fn = await api.invoker.resolve(schedule.function)
    if len(schedule.body) > fn.config.max_body_bytes:
        raise InvalidSchedule(
            f"body_base64: {len(schedule.body)} bytes exceed {fn.name}'s max_body_bytes "
            f"({fn.config.max_body_bytes})", field="body_base64",
        )
    store = _store(api)
    existed = await store.get(name) is not None
    stored = await store.put(schedule)
    return JSONResponse(await _document(store, stored), status_code=200 if existed else 201)


@router.get(
    "/v1/schedules",
    summary="Every schedule",
    operation_id="list_schedules",
    responses=openapi.problem_responses(*AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def list_schedules(api: Api = ApiDep) -> dict[str, Any]:
    """The schedules, by name, with their next runs."""
    store = _store(api)
    return {"schedules": [await _document(store, s) for s in await store.all()]}


@router.get(
    "/v1/schedules/{name}",
    summary="One schedule, its next run and its last job",
    operation_id="get_schedule",
    responses=openapi.problem_responses(InvalidRequest, ScheduleNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def get_schedule(name: str = SCHEDULE_PARAM, api: Api = ApiDep) -> dict[str, Any]:
    """The schedule `name`."""
    store = _store(api)
    schedule = await store.get(name)
    if schedule is None:
        raise ScheduleNotFound(f"no schedule {name!r}")
    return await _document(store, schedule)


@router.delete(
    "/v1/schedules/{name}",
    status_code=204,
    summary="Delete a schedule (its next tick does not run)",
    operation_id="delete_schedule",
    responses=openapi.problem_responses(InvalidRequest, ScheduleNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def delete_schedule(name: str = SCHEDULE_PARAM, api: Api = ApiDep) -> Response:
    """Remove the schedule; jobs it already submitted are not touched."""
    if not await _store(api).delete(name):
        raise ScheduleNotFound(f"no schedule {name!r}")
    return Response(status_code=204)
