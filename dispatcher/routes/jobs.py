"""Jobs, invoke scope: `POST /v1/functions/{name}/jobs` (submit: 202, or 200 for a repeated
Idempotency-Key; `delay_ms`/`run_at` schedule it ahead), `GET /v1/jobs/{id}` (status,
long-polled) and `DELETE /v1/jobs/{id}` (cancel). Submitting goes through the same
`Invoker` as invoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, NAME_PARAM, VERSION_PARAM, Api, ApiDep, require
from dispatcher.auth import INVOKE, ApiKey
from dispatcher.passthrough import (
    CALLBACK_HEADER,
    JOB_PARAMS,
    METHOD_HEADER,
    PATH_HEADER,
    guest_query,
    job_target,
    read_body,
    request_headers,
)
from flotilla.errors import (
    BodyTooLarge,
    CallbackNotAllowed,
    FunctionNotFound,
    IdempotencyConflict,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    Unavailable,
)
from flotilla.idempotency import MAX_KEY_LENGTH, check_key
from flotilla.invoker import WebRequest
from flotilla.jobs import MAX_DELAY_MS, MAX_WAIT_S, JobStatus, callback_allowed, job_delay_ms

router = APIRouter()


@router.post(
    "/v1/functions/{name}/jobs",
    status_code=202,
    summary="Submit an asynchronous job",
    operation_id="submit_job",
    description=(
        "Returns at once with the job id. The optional callback URL (query parameter "
        f"`callback_url` or header `{CALLBACK_HEADER}`) receives a POST of the job "
        "document (as GET /v1/jobs/{id} shows it) once the job finishes, retried with "
        "backoff until a 2xx; its host must be in the dispatcher's callback_hosts (else 403). "
        f"The job runs as a request with the method of header `{METHOD_HEADER}` (default "
        f"POST), the sub-path of header `{PATH_HEADER}` (default `/`) and this route's "
        "query parameters but `version`, `callback_url`, `delay_ms` and `run_at`. "
        "`delay_ms` or `run_at` (not both) schedule the job up to 7 days ahead: it reads "
        "`scheduled` until then. With an `Idempotency-Key` header, a repeated submission of "
        "the same function with the same key within 24 h answers 200 with the first job "
        "(nothing new runs; header `Idempotent-Replayed: true`); another body under that "
        "key is 409."
    ),
    responses={
        200: {"description": "An earlier submission with this Idempotency-Key; nothing new runs",
              "links": openapi.JOB_LINKS},
        202: {"description": "Accepted; poll `status_url`", "links": openapi.JOB_LINKS},
        **openapi.problem_responses(
            FunctionNotFound, BodyTooLarge, InvalidRequest, CallbackNotAllowed,
            IdempotencyConflict, Unavailable, *AUTH_PROBLEMS,
        ),
    },
    openapi_extra={"requestBody": openapi.RAW_BODY},
    dependencies=[require(INVOKE)],
)
async def submit_job(
    request: Request,
    name: str = NAME_PARAM,
    version: str | None = VERSION_PARAM,
    callback_url: str | None = Query(None, description="URL the result is POSTed to"),
    flotilla_callback_url: str | None = Header(None, description="Same as callback_url"),
    delay_ms: int | None = Query(
        None, ge=0, le=MAX_DELAY_MS, description="Run the job this many milliseconds from now"
    ),
    run_at: str | None = Query(
        None, description="Run the job at this RFC 3339 time (e.g. 2030-01-02T03:04:05Z); "
        "at most 7 days ahead", json_schema_extra={"format": "date-time"},
    ),
    idempotency_key: str | None = Header(
        None, min_length=1, max_length=MAX_KEY_LENGTH, pattern=r"^[!-~]+$",
        description="Same key, same function, within 24 h: the first submission's job",
    ),
    api: Api = ApiDep,
) -> JSONResponse:
    """Queue the function as a job; its result is kept for settings.job_ttl_s."""
    delay = job_delay_ms(delay_ms, run_at)
    idem = check_key(idempotency_key) if idempotency_key is not None else None
    callback = callback_url or flotilla_callback_url or None
    if callback and not callback_allowed(callback, api.options.callback_hosts):
        raise CallbackNotAllowed(
            f"callback URL {callback!r} is not http(s) to one of the allowed callback hosts"
        )
    method, path = job_target(request.scope["headers"])
    query, _ = guest_query(request.scope.get("query_string") or b"", JOB_PARAMS)
    key: ApiKey | None = request.state.api_key
    fn = await api.invoker.resolve(name, version)
    _, declared, guest = request_headers(request.scope["headers"])
    body = await read_body(request.receive, declared, fn.config.max_body_bytes)
    submitted = await api.invoker.submit_job(
        fn, body, guest, idempotency_key=idem, job_id=request.state.invocation_id,
        callback_url=callback, delay_ms=delay,
        request=WebRequest(method, path, query, key.id if key is not None else None),
    )
    job_id = submitted.job_id
    headers = {"Location": f"/v1/jobs/{job_id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"},
        status_code=200 if submitted.replayed else 202,
        headers=headers,
    )


@router.get(
    "/v1/jobs/{job_id}",
    summary="A job's status and, once finished, its response or error",
    operation_id="get_job",
    responses=openapi.problem_responses(InvalidRequest, JobNotFound, *AUTH_PROBLEMS),
    dependencies=[require(INVOKE)],
)
async def get_job(
    request: Request,
    job_id: str,
    wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="Seconds to wait for a result"),
    api: Api = ApiDep,
) -> dict[str, Any]:
    """scheduled | queued | running | retrying | succeeded | failed | expired | cancelled,
    with the attempts so far and the result once finished."""
    status = await api.jobs.wait(job_id, wait) if wait else await api.jobs.get(job_id)
    return visible(request, job_id, status).to_dict()


@router.delete(
    "/v1/jobs/{job_id}",
    summary="Cancel a job that has not started",
    operation_id="cancel_job",
    description=(
        "A `scheduled`, `queued` or `retrying` job becomes `cancelled` and never runs (200, "
        "the job document). A job that runs or has finished answers 409 with its `job_status`. "
        "Cancelling is atomic against a worker starting the job: exactly one of them wins."
    ),
    responses=openapi.problem_responses(JobNotFound, JobNotCancellable, *AUTH_PROBLEMS),
    dependencies=[require(INVOKE)],
)
async def cancel_job(request: Request, job_id: str, api: Api = ApiDep) -> dict[str, Any]:
    """Cancel the job unless it runs or has finished."""
    visible(request, job_id, await api.jobs.get(job_id))
    cancelled, status = await api.jobs.cancel(job_id)
    status = visible(request, job_id, status)
    if not cancelled:
        raise JobNotCancellable(
            f"job {job_id} is {status.status}: only scheduled, queued or retrying jobs can be "
            "cancelled", job_status=status.status,
        )
    if api.metrics is not None:
        api.metrics.jobs_cancelled.inc()
    return status.to_dict()


def visible(request: Request, job_id: str, status: JobStatus | None) -> JobStatus:
    """The status, or JobNotFound when there is none or the key may not see it: a key
    limited to some functions sees other functions' jobs as missing (not forbidden)."""
    key: ApiKey | None = request.state.api_key
    if status is None or (key is not None and not key.may_invoke(status.function or "")):
        raise JobNotFound(f"no job {job_id!r}")
    return status
