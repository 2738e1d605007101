"""Jobs: `POST /v1/functions/{name}/jobs` (submit, 202) and `GET /v1/jobs/{id}` (status,
long-polled), invoke scope. Submitting goes through the same `Invoker` as invoke."""

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
    InvalidRequest,
    JobNotFound,
    Unavailable,
)
from flotilla.invoker import WebRequest
from flotilla.jobs import MAX_WAIT_S, callback_allowed

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
        "query parameters but `version` and `callback_url`."
    ),
    responses={
        202: {"description": "Accepted; poll `status_url`", "links": openapi.JOB_LINKS},
        **openapi.problem_responses(
            FunctionNotFound, BodyTooLarge, InvalidRequest, CallbackNotAllowed, Unavailable,
            *AUTH_PROBLEMS,
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
    api: Api = ApiDep,
) -> JSONResponse:
    """Queue the function as a job; its result is kept for settings.job_ttl_s."""
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
    job_id = await api.invoker.submit(
        fn, body, guest, job_id=request.state.invocation_id, callback_url=callback,
        request=WebRequest(method, path, query, key.id if key is not None else None),
    )
    return JSONResponse(
        {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"},
        status_code=202,
        headers={"Location": f"/v1/jobs/{job_id}"},
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
    """queued | running | succeeded | failed | expired, with the result once finished."""
    key: ApiKey | None = request.state.api_key
    status = await api.jobs.wait(job_id, wait) if wait else await api.jobs.get(job_id)
    # A key limited to some functions sees other functions' jobs as missing (not forbidden).
    if status is None or (key is not None and not key.may_invoke(status.function or "")):
        raise JobNotFound(f"no job {job_id!r}")
    return status.to_dict()
