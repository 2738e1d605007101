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

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Header, Path, Query, Request
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
from flotilla.config import (
    BUCKET_RE,
    HOST_PATTERN_RE,
    MAX_MAX_BODY_BYTES,
    MAX_MEMORY_LIMIT_MB,
    MAX_TIMEOUT_MS,
    RESERVED_ENV,
    TABLE_RE,
    FunctionConfig,
)
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
from flotilla.errors import ComponentError
from flotilla.metrics import DispatcherMetrics

log = logging.getLogger(__name__)

INVOCATION_HEADER = "flotilla-invocation-id"
CALLBACK_HEADER = "flotilla-callback-url"
MAX_COMPONENT_BYTES = 64 * 1024 * 1024
MAX_UPLOAD_BYTES = MAX_COMPONENT_BYTES + 1024 * 1024  # the component plus its config
# Connection-level headers are not the caller's to pass on, nor the guest's to set.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
    }
)
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
NAME_PARAM = Path(description="Function name", pattern=NAME_PATTERN)
VERSION_PARAM = Query(
    None, description="Version: `latest` (default), a digest, a digest prefix or a number"
)
# The config form field as JSON Schema (mirrors flotilla.config; the server re-validates).
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "env": {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                              "not": {"enum": list(RESERVED_ENV)}},
            "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
            "maxProperties": 64,
        },
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS},
        "memory_limit_mb": {"type": "integer", "minimum": 1, "maximum": MAX_MEMORY_LIMIT_MB},
        "max_body_bytes": {"type": "integer", "minimum": 0, "maximum": MAX_MAX_BODY_BYTES},
        "allowed_hosts": {"type": "array", "maxItems": 100,
                          "items": {"type": "string", "pattern": HOST_PATTERN_RE.pattern}},
        "cache_namespace": {"type": "string", "pattern": r"^([a-z][a-z0-9-]{0,62})?$"},
        "s3_buckets": {"type": "array", "maxItems": 100,
                       "items": {"type": "string", "pattern": BUCKET_RE.pattern}},
        "dynamodb_tables": {"type": "array", "maxItems": 100,
                            "items": {"type": "string", "pattern": TABLE_RE.pattern}},
    },
}
DEPLOY_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["component"],
                "properties": {
                    # OpenAPI 3.1 spelling of a file part (not format: binary).
                    "component": {"type": "string", "contentMediaType": "application/wasm",
                                  "description": "The component (.wasm)"},
                    "config": CONFIG_SCHEMA,
                },
            },
            "encoding": {
                "component": {"contentType": "application/wasm, application/octet-stream"},
                "config": {"contentType": "application/json"},
            },
        }
    },
}
RAW_BODY: dict[str, Any] = {
    "description": "Passed to the function as its request body",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


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


def _function_links() -> dict[str, Any]:
    by_name = {"name": "$response.body#/name"}
    return {
        "GetFunction": {"operationId": "get_function", "parameters": by_name},
        "InvokeFunction": {"operationId": "invoke", "parameters": by_name},
        "SubmitJob": {"operationId": "submit_job", "parameters": by_name},
        "DeleteFunction": {"operationId": "delete_function", "parameters": by_name},
    }


def _parse_config(text: str, name: str) -> FunctionConfig:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidConfig(f"config is not valid JSON: {exc}", field="config") from None
    if isinstance(data, dict) and data.get("name") == name:
        data = {k: v for k, v in data.items() if k != "name"}
    try:
        return FunctionConfig.from_dict(data, name=name)
    except ValueError as exc:
        raise InvalidConfig(str(exc), field=getattr(exc, "field", "config")) from None
    except TypeError as exc:  # a wrongly typed value deep inside the config
        raise InvalidConfig(str(exc), field="config") from None


class InvocationIdMiddleware:
    """Gives every request an invocation id (request.state.invocation_id) and echoes it in
    the `flotilla-invocation-id` response header; turns unhandled errors into a 500 problem;
    counts requests by route template and status when given metrics."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], metrics: DispatcherMetrics | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        invocation_id = new_id()
        scope.setdefault("state", {})["invocation_id"] = invocation_id
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
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
        finally:
            if self.metrics is not None:
                self._observe(scope, status, time.perf_counter() - began)

    def _observe(self, scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
        assert self.metrics is not None
        # The route template, not the path: labels stay bounded.
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.request_duration.labels(route).observe(seconds)


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
    metrics: DispatcherMetrics | None = None,
) -> FastAPI:
    """The HTTP API wired to its collaborators (nothing is started or connected here).

    With `metrics`, requests, waiting callers, reply latency and publishes are recorded and
    served at `/metrics` (Prometheus text format).
    """
    opts = options or ApiOptions()
    m = metrics
    app = FastAPI(
        title="Flotilla",
        version="0.1.0",
        description="Deploy and invoke WebAssembly functions; errors are RFC 9457 problems.",
    )
    app.add_middleware(InvocationIdMiddleware, metrics=metrics)

    def published(result: str) -> None:
        if m is not None:
            m.publishes.labels(result).inc()
    _add_error_handlers(app, opts)

    async def resolve(name: str, version: str | None) -> FunctionVersion:
        try:
            return await registry.get_version(name, version or LATEST)
        except FunctionNotDeployed as exc:
            raise FunctionNotFound(str(exc), function=name) from None

    @app.put(
        "/v1/functions/{name}",
        status_code=201,
        operation_id="deploy",
        summary="Deploy a function (a new immutable version)",
        description=(
            "Multipart form: `component` is the .wasm file, `config` an optional JSON object of "
            "function config fields (the name comes from the path). Identical bytes and "
            "config return the existing version with 200."
        ),
        responses={
            201: {"description": "A new version", "links": _function_links()},
            200: {"description": "Identical bytes and config: the existing version",
                  "content": {"application/json": {"schema": {"type": "object"}}},
                  "links": _function_links()},
            **_problems(BodyTooLarge, InvalidConfig, InvalidComponent, InvalidRequest,
                        Unavailable),
        },
        openapi_extra={"requestBody": DEPLOY_BODY},
    )
    async def deploy(
        request: Request,
        name: str = Path(description="Function name", pattern=NAME_PATTERN),
    ) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            raise BodyTooLarge(f"deploy uploads are limited to {MAX_UPLOAD_BYTES} bytes")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies raise several types
            raise InvalidRequest(f"expected a multipart/form-data body: {exc}") from None
        try:
            component = form.get("component")
            config_text = form.get("config") or "{}"
            if component is None:
                raise InvalidRequest("the form field `component` (the .wasm file) is missing")
            if not isinstance(config_text, str):
                config_text = (await config_text.read()).decode("utf-8", "replace")
            cfg = _parse_config(config_text, name)
            if isinstance(component, str):  # a part sent without a filename
                wasm = component.encode("utf-8", "surrogateescape")
            else:
                wasm = await component.read(MAX_COMPONENT_BYTES + 1)
        finally:
            await form.close()
        if len(wasm) > MAX_COMPONENT_BYTES:
            raise BodyTooLarge(f"components are limited to {MAX_COMPONENT_BYTES} bytes")
        try:
            version, created = await deployer.deploy(cfg, wasm)
        except ComponentError as exc:
            raise InvalidComponent(str(exc)) from None
        body = {**version.to_dict(), "created": created}
        return JSONResponse(body, status_code=201 if created else 200)

    @app.get("/v1/functions", summary="List deployed functions", operation_id="list_functions")
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
        operation_id="get_function",
        responses=_problems(FunctionNotFound),
    )
    async def get_function(name: str = NAME_PARAM) -> dict[str, Any]:
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
        operation_id="delete_function",
        responses=_problems(FunctionNotFound),
    )
    async def delete_function(name: str = NAME_PARAM) -> Response:
        if not await registry.delete(name):
            raise FunctionNotFound(f"function {name!r} is not deployed", function=name)
        return Response(status_code=204)

    @app.post(
        "/v1/functions/{name}/invoke",
        summary="Invoke a function and wait for its response",
        operation_id="invoke",
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
        openapi_extra={"requestBody": RAW_BODY},
    )
    async def invoke(
        request: Request,
        name: str = NAME_PARAM,
        version: str | None = VERSION_PARAM,
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
        began = time.perf_counter()
        if m is not None:
            m.in_flight.inc()
        try:
            reply = await transport.call(envelope, (timeout_ms + opts.reply_margin_ms) / 1000)
        except CallTimeout:
            published("confirmed")
            raise FunctionTimeout(
                f"no reply within {timeout_ms} ms (+{opts.reply_margin_ms} ms margin)",
                outcome=TIMEOUT,
            ) from None
        except QueueFull as exc:
            published("rejected")
            raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
        except BrokerUnavailable as exc:
            published("failed")
            raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
        finally:
            if m is not None:
                m.in_flight.dec()
        published("confirmed")
        if m is not None:
            m.reply_latency.observe(time.perf_counter() - began)
        return _reply_response(reply, opts)

    @app.post(
        "/v1/functions/{name}/jobs",
        status_code=202,
        summary="Submit an asynchronous job",
        operation_id="submit_job",
        description=(
            "Returns at once with the job id. The optional callback URL (query parameter "
            f"`callback_url` or header `{CALLBACK_HEADER}`) receives a POST of the job "
            "document once the job finishes; its host must be in the dispatcher's "
            "callback_hosts."
        ),
        responses={
            202: {
                "description": "Accepted; poll `status_url`",
                "links": {"GetJob": {"operationId": "get_job",
                                     "parameters": {"job_id": "$response.body#/job_id"}}},
            },
            **_problems(
                FunctionNotFound, BodyTooLarge, InvalidRequest, CallbackNotAllowed, Unavailable
            ),
        },
        openapi_extra={"requestBody": RAW_BODY},
    )
    async def submit_job(
        request: Request,
        name: str = NAME_PARAM,
        version: str | None = VERSION_PARAM,
        callback_url: str | None = Query(None, description="URL the result is POSTed to"),
        flotilla_callback_url: str | None = Header(None, description="Same as callback_url"),
    ) -> JSONResponse:
        callback = callback_url or flotilla_callback_url or None
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
        except QueueFull as exc:
            published("rejected")
            raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
        except BrokerUnavailable as exc:
            published("failed")
            raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
        published("confirmed")
        return JSONResponse(
            {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}"},
            status_code=202,
            headers={"Location": f"/v1/jobs/{job_id}"},
        )

    @app.get(
        "/v1/jobs/{job_id}",
        summary="A job's status and, once finished, its response or error",
        operation_id="get_job",
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

    if metrics is not None:
        registry_ = metrics.registry

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return Response(generate_latest(registry_), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Liveness", operation_id="healthz")
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
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        body = {
            "type": "about:blank",
            "title": str(exc.detail),
            "status": exc.status_code,
            "invocation_id": getattr(request.state, "invocation_id", None),
        }
        return JSONResponse(
            body, status_code=exc.status_code, headers=headers, media_type=PROBLEM_MEDIA_TYPE,
        )

    async def on_redis_down(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request, Unavailable(f"Redis is unavailable: {exc}", retry_after_s=opts.retry_after_s)
        )

    async def on_s3_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("artifact store failed: %s", exc)
        return problem_response(
            request,
            Unavailable(f"the artifact store failed: {exc}", retry_after_s=opts.retry_after_s),
        )

    app.add_exception_handler(redis.exceptions.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, on_redis_down)
    app.add_exception_handler(BotoCoreError, on_s3_down)
    app.add_exception_handler(ClientError, on_s3_down)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette only names the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


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
