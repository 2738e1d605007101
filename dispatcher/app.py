"""The dispatcher's HTTP API: `create_app(...)` builds a FastAPI app from its collaborators.

Routes (all JSON except invoke, which passes bodies through; all errors are RFC 9457
problem documents, `application/problem+json`, see `dispatcher/problems.py`):

- `PUT /v1/functions/{name}` deploy (multipart: `component` file, `config` JSON object);
- `GET /v1/functions`, `GET /v1/functions/{name}`, `DELETE /v1/functions/{name}`;
- `POST /v1/functions/{name}/invoke[?version=]` synchronous invocation;
- `POST /v1/functions/{name}/jobs[?version=&callback_url=]` asynchronous job (202);
- `GET /v1/jobs/{id}[?wait=S]` job status, long-polled up to 30 s.

Every response carries `flotilla-invocation-id`. The app keeps no state of its own: the
registry and jobs live in Redis, code in the artifact store, in-flight calls in the transport.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.jobs import (
    MAX_WAIT_S,
    JobRecord,
    JobStore,
    callback_allowed,
    new_id,
)
from dispatcher.problems import (
    PROBLEM_MEDIA_TYPE,
    TYPE_PREFIX,
    BodyTooLarge,
    CallbackNotAllowed,
    DispatcherError,
    FunctionFailed,
    FunctionNotFound,
    FunctionTimeout,
    InvalidComponent,
    InvalidConfig,
    InvalidRequest,
    JobNotFound,
    Problem,
    Unavailable,
)
from dispatcher.registry import LATEST, Deployer, FunctionNotDeployed, FunctionVersion, Registry
from dispatcher.transport import BrokerUnavailable, CallTimeout, QueueFull, Transport
from flotilla.config import MAX_MAX_BODY_BYTES, FunctionConfig
from flotilla.envelope import (
    EXPIRED,
    INTERNAL,
    NOT_FOUND,
    OK,
    REPLY_JOB,
    TIMEOUT,
    Envelope,
    Reply,
    now_ms,
)
from flotilla.errors import ComponentError, ConfigError

log = logging.getLogger(__name__)

INVOCATION_HEADER = "flotilla-invocation-id"
CALLBACK_HEADER = "flotilla-callback-url"
MAX_COMPONENT_BYTES = 64 * 1024 * 1024
# Connection-level headers are not the caller's to pass on, nor the guest's to set.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
    }
)
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"


@dataclass(frozen=True)
class ApiOptions:
    """The dispatcher settings the routes need (a subset of DispatcherSettings)."""

    reply_margin_ms: int = 2_000
    job_ttl_s: int = 86_400
    callback_hosts: tuple[str, ...] = ()
    retry_after_s: int = 1


def _problems(*errors: type[DispatcherError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given problem types (merged per status)."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = out.setdefault(err.status, {"model": Problem, "description": ""})
        sep = "; " if entry["description"] else ""
        entry["description"] += f"{sep}{err.title} (`{TYPE_PREFIX}{err.slug}`)"
        if err.status == 503:
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            }
    return out


class InvocationIdMiddleware:
    """Gives every request an invocation id (request.state.invocation_id) and echoes it in
    the `flotilla-invocation-id` response header; turns unhandled errors into a 500 problem."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        invocation_id = new_id()
        scope.setdefault("state", {})["invocation_id"] = invocation_id
        started = False

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", [])
                    if k.lower() != INVOCATION_HEADER.encode()
                ]
                headers.append((INVOCATION_HEADER.encode(), invocation_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            problem = {
                "type": "urn:flotilla:problem:internal",
                "title": "Internal error",
                "status": 500,
                "detail": "the dispatcher failed unexpectedly; see its log",
                "invocation_id": invocation_id,
            }
            response = JSONResponse(problem, status_code=500, media_type=PROBLEM_MEDIA_TYPE)
            await response(scope, receive, send_with_id)


def problem_response(request: Request, err: DispatcherError) -> JSONResponse:
    """The problem document response of a DispatcherError."""
    body = err.to_problem(instance=request.url.path)
    body["invocation_id"] = getattr(request.state, "invocation_id", None)
    return JSONResponse(
        body, status_code=err.status, headers=err.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def create_app(
    *,
    registry: Registry,
    deployer: Deployer,
    jobs: JobStore,
    transport: Transport,
    options: ApiOptions | None = None,
) -> FastAPI:
    """The HTTP API wired to its collaborators (nothing is started or connected here)."""
    opts = options or ApiOptions()
    app = FastAPI(
        title="Flotilla",
        version="0.1.0",
        description="Deploy and invoke WebAssembly functions; errors are RFC 9457 problems.",
    )
    app.add_middleware(InvocationIdMiddleware)
    _add_error_handlers(app, opts)

    async def resolve(name: str, version: str | None) -> FunctionVersion:
        try:
            return await registry.get_version(name, version or LATEST)
        except FunctionNotDeployed as exc:
            raise FunctionNotFound(str(exc), function=name) from None

    @app.put(
        "/v1/functions/{name}",
        status_code=201,
        summary="Deploy a function (a new immutable version)",
        responses={
            200: {"description": "Identical bytes and config: the existing version"},
            **_problems(BodyTooLarge, InvalidConfig, Unavailable),
        },
    )
    async def deploy(
        request: Request,
        name: str = Path(description="Function name"),
        component: UploadFile = File(description="The component (.wasm)"),
        config: str = Form("{}", description="JSON object of FunctionConfig fields"),
    ) -> JSONResponse:
        if len(name) > 63:
            raise InvalidConfig(f"name {name[:70]!r} is longer than 63 characters", field="name")
        try:
            import json

            cfg = FunctionConfig.from_dict(json.loads(config), name=name)
        except ValueError as exc:
            field = getattr(exc, "field", "config")
            raise InvalidConfig(str(exc), field=field) from None
        wasm = await component.read(MAX_COMPONENT_BYTES + 1)
        if len(wasm) > MAX_COMPONENT_BYTES:
            raise BodyTooLarge(f"components are limited to {MAX_COMPONENT_BYTES} bytes")
        try:
            version, created = await deployer.deploy(cfg, wasm)
        except ComponentError as exc:
            raise InvalidComponent(str(exc)) from None
        body = {**version.to_dict(), "created": created}
        return JSONResponse(body, status_code=201 if created else 200)

    @app.get("/v1/functions", summary="List deployed functions")
    async def list_functions() -> dict[str, Any]:
        summaries = await registry.list_functions()
        return {
            "functions": [
                {
                    "name": s.name,
                    "latest": s.latest.digest,
                    "version_count": s.version_count,
                    "config": s.latest.config.to_dict(),
                    "updated_at": s.latest.created_at,
                }
                for s in summaries
            ]
        }

    @app.get(
        "/v1/functions/{name}",
        summary="A function's config and versions",
        responses=_problems(FunctionNotFound),
    )
    async def get_function(name: str) -> dict[str, Any]:
        latest = await resolve(name, None)
        versions = await registry.list_versions(name)
        return {
            "name": name,
            "latest": latest.digest,
            "config": latest.config.to_dict(),
            "versions": [v.to_dict() for v in versions],
        }

    @app.delete(
        "/v1/functions/{name}",
        status_code=204,
        summary="Delete a function and its version history",
        responses=_problems(FunctionNotFound),
    )
    async def delete_function(name: str) -> Response:
        if not await registry.delete(name):
            raise FunctionNotFound(f"function {name!r} is not deployed", function=name)
        return Response(status_code=204)

    @app.post(
        "/v1/functions/{name}/invoke",
        summary="Invoke a function and wait for its response",
        response_class=Response,
        responses={
            "default": {
                "description": "The function's own response: its status, headers and body",
                "content": {"*/*": {"schema": {}}},
            },
            **_problems(
                FunctionNotFound, BodyTooLarge, InvalidRequest, FunctionFailed, Unavailable,
                FunctionTimeout,
            ),
        },
        openapi_extra={
            "requestBody": {
                "description": "Passed to the function as its request body",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def invoke(
        request: Request,
        name: str,
        version: str | None = Query(None, description="Version digest, digest prefix or number"),
    ) -> Response:
        fn = await resolve(name, version)
        body = await _read_body(request, fn.config.max_body_bytes)
        timeout_ms = fn.config.timeout_ms
        envelope = Envelope(
            invocation_id=request.state.invocation_id,
            correlation_id=request.state.invocation_id,
            function=name,
            digest=fn.digest,
            headers=_guest_headers(request),
            body=body,
            deadline_ms=now_ms() + timeout_ms,
        )
        try:
            reply = await transport.call(envelope, (timeout_ms + opts.reply_margin_ms) / 1000)
        except CallTimeout:
            raise FunctionTimeout(
                f"no reply within {timeout_ms} ms (+{opts.reply_margin_ms} ms margin)",
                outcome=TIMEOUT,
            ) from None
        except (QueueFull, BrokerUnavailable) as exc:
            raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
        return _reply_response(reply, opts)

    @app.post(
        "/v1/functions/{name}/jobs",
        status_code=202,
        summary="Submit an asynchronous job",
        description=(
            "Returns at once with the job id. The optional callback URL (query parameter "
            f"`callback_url` or header `{CALLBACK_HEADER}`) receives a POST of the job "
            "document once the job finishes; its host must be in the dispatcher's "
            "callback_hosts."
        ),
        responses=_problems(
            FunctionNotFound, BodyTooLarge, InvalidRequest, CallbackNotAllowed, Unavailable
        ),
        openapi_extra={
            "requestBody": {
                "description": "Passed to the function as its request body",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def submit_job(
        request: Request,
        name: str,
        version: str | None = Query(None, description="Version digest, digest prefix or number"),
        callback_url: str | None = Query(None, description="URL the result is POSTed to"),
        flotilla_callback_url: str | None = Header(None, description="Same as callback_url"),
    ) -> JSONResponse:
        callback = callback_url or flotilla_callback_url
        if callback and not callback_allowed(callback, opts.callback_hosts):
            raise CallbackNotAllowed(
                f"callback URL {callback!r} is not http(s) to one of the allowed callback hosts"
            )
        fn = await resolve(name, version)
        body = await _read_body(request, fn.config.max_body_bytes)
        job_id: str = request.state.invocation_id
        await jobs.create(JobRecord(job_id, name, fn.digest, time.time(), callback))
        envelope = Envelope(
            invocation_id=job_id,
            correlation_id=job_id,
            function=name,
            digest=fn.digest,
            headers=_guest_headers(request),
            body=body,
            # A job may wait in the queue as long as its result would be kept.
            deadline_ms=now_ms() + opts.job_ttl_s * 1000,
            reply_mode=REPLY_JOB,
        )
        try:
            await transport.submit(envelope)
        except (QueueFull, BrokerUnavailable) as exc:
            raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
        return JSONResponse(
            {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"},
            status_code=202,
            headers={"Location": f"/v1/jobs/{job_id}"},
        )

    @app.get(
        "/v1/jobs/{job_id}",
        summary="A job's status and, once finished, its response or error",
        responses=_problems(JobNotFound),
    )
    async def get_job(
        job_id: str,
        wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="Seconds to wait for a result"),
    ) -> dict[str, Any]:
        status = await jobs.wait(job_id, wait) if wait else await jobs.get(job_id)
        if status is None:
            raise JobNotFound(f"no job {job_id!r}")
        return status.to_dict()

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_types(
                get_openapi(
                    title=app.title, version=app.version, description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI, opts: ApiOptions) -> None:
    import redis.exceptions

    @app.exception_handler(DispatcherError)
    async def on_dispatcher_error(request: Request, exc: DispatcherError) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(request, InvalidRequest(detail or "invalid request", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": str(exc.detail),
            "status": exc.status_code,
            "invocation_id": getattr(request.state, "invocation_id", None),
        }
        return JSONResponse(
            body, status_code=exc.status_code, headers=exc.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    @app.exception_handler(redis.exceptions.ConnectionError)
    async def on_redis_down(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request, Unavailable(f"Redis is unavailable: {exc}", retry_after_s=opts.retry_after_s)
        )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the function's limit of {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the function's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _guest_headers(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple(
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in request.headers.raw
        if k.decode("latin-1").lower() not in HOP_BY_HOP
        and k.decode("latin-1").lower() != CALLBACK_HEADER
    )


def _reply_response(reply: Reply, opts: ApiOptions) -> Response:
    if reply.outcome == OK:
        headers = [(k, v) for k, v in reply.headers if k.lower() not in HOP_BY_HOP]
        response = Response(content=reply.body, status_code=reply.status)
        response.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in headers
            if k.lower() != INVOCATION_HEADER
        ] + [(b"content-length", str(len(reply.body)).encode())]
        return response
    if reply.outcome in (TIMEOUT, EXPIRED):
        raise FunctionTimeout(reply.error or "the function timed out", outcome=reply.outcome)
    if reply.outcome in (NOT_FOUND, INTERNAL):
        raise Unavailable(
            reply.error or "the worker could not run the function",
            retry_after_s=opts.retry_after_s,
            outcome=reply.outcome,
        )
    raise FunctionFailed(reply.error or reply.outcome, outcome=reply.outcome)


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are served as application/problem+json: say so in the OpenAPI."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in ("4", "5") and "application/json" in content:
                    del content["application/json"]
                    content[PROBLEM_MEDIA_TYPE] = {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    }
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema
