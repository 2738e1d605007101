"""The dispatcher's HTTP API: `create_app(...)` builds a FastAPI app from its collaborators.

Routes (all JSON except invoke, which passes bodies through; all errors are RFC 9457
problem documents, `application/problem+json`, see `dispatcher/problems.py`):

- `PUT /v1/functions/{name}` deploy (multipart: `component` file, `config` JSON object);
- `GET /v1/functions`, `GET /v1/functions/{name}`, `DELETE /v1/functions/{name}`;
- `POST /v1/functions/{name}/invoke[?version=]` synchronous invocation;
- `POST /v1/functions/{name}/jobs[?version=&callback_url=]` asynchronous job (202);
- `GET /v1/jobs/{id}[?wait=S]` job status, long-polled up to 30 s;
- `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}` API keys (admin scope).

With an `Authenticator` (`dispatcher/auth.py`) every route but /healthz, /readyz, /metrics
and the OpenAPI document needs `Authorization: Bearer <key>` with the route's scope
(deploy, invoke or admin); without one (dev mode, --insecure) nothing is checked.

Every response carries `flotilla-invocation-id`. The app keeps no state of its own: the
registry and jobs live in Redis, code in the artifact store, in-flight calls in the transport.
The routes reach their collaborators through `app.state.api` (an `Api`), set by `create_app`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from dispatcher import openapi
from dispatcher.auth import ADMIN, DEPLOY, INVOKE, ApiKey, Authenticator
from dispatcher.problems import PROBLEM_MEDIA_TYPE, Problem, add_problem_handlers
from flotilla import logs
from flotilla.config import NAME_PATTERN, FunctionConfig
from flotilla.envelope import (
    OK,
    REPLY_JOB,
    TIMEOUT,
    Envelope,
    Headers,
    Reply,
    now_ms,
)
from flotilla.errors import (
    ApiError,
    BodyTooLarge,
    CallbackNotAllowed,
    ComponentError,
    Forbidden,
    FunctionFailed,
    FunctionNotFound,
    FunctionTimeout,
    HeadersTooLarge,
    InvalidComponent,
    InvalidConfig,
    InvalidRequest,
    JobNotFound,
    KeyNotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_for_reply,
)
from flotilla.jobs import MAX_WAIT_S, JobRecord, JobStore, callback_allowed, new_id
from flotilla.metrics import DispatcherMetrics
from flotilla.ratelimit import Limit
from flotilla.registry import (
    LATEST,
    Deployer,
    FunctionNotDeployed,
    FunctionVersion,
    Registry,
    ResolveCache,
)
from flotilla.secrets import SecretStore
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull, Transport

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
READY_TIMEOUT_S = 1.0
# uvicorn (httptools) parses headers without a limit; far past any real caller, answer 431.
MAX_HEADERS = 200
MAX_HEADER_BYTES = 64 * 1024
NAME_PARAM = Path(description="Function name", pattern=NAME_PATTERN)
_NAME = re.compile(NAME_PATTERN)  # anchored; fullmatch: "$" would allow a newline
VERSION_PARAM = Query(
    None, description="Version: `latest` (default), a digest, a digest prefix or a number"
)


@dataclass(frozen=True)
class ApiOptions:
    """The dispatcher settings the routes need (a subset of DispatcherSettings)."""

    reply_margin_ms: int = 2_000
    job_ttl_s: int = 86_400
    callback_hosts: tuple[str, ...] = ()
    retry_after_s: int = 1
    resolve_ttl_s: float = 1.0  # how long a resolved version is reused (0: never)


@dataclass(frozen=True)
class Api:
    """The routes' collaborators (one per app, in `app.state.api`)."""

    registry: Registry
    deployer: Deployer
    jobs: JobStore
    transport: Transport
    options: ApiOptions = field(default_factory=ApiOptions)
    metrics: DispatcherMetrics | None = None
    versions: ResolveCache | None = None
    auth: Authenticator | None = None  # None: auth is off (dev mode or --insecure)
    children: dict[tuple[int, tuple[str, ...]], Any] = field(
        default_factory=dict, compare=False, repr=False
    )  # labelled metric children, see `child`

    def published(self, result: str) -> None:
        """Count one publish by result (confirmed, rejected, failed)."""
        if self.metrics is not None:
            self.child(self.metrics.publishes, result).inc()

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once (`labels()` takes a lock and builds keys)."""
        key = (id(metric), labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found

    def unavailable(self, exc: Exception) -> Unavailable:
        """The 503 problem for a transport error, counted as a rejected or failed publish."""
        self.published("rejected" if isinstance(exc, QueueFull) else "failed")
        return Unavailable(str(exc), retry_after_s=self.options.retry_after_s)

    def forget(self, name: str) -> None:
        """This dispatcher changed `name`: stop reusing its resolved versions."""
        if self.versions is not None:
            self.versions.forget(name)

    async def resolve(self, name: str, version: str | None) -> FunctionVersion:
        """The function version a request names; FunctionNotFound (404) when there is none."""
        source = self.versions or self.registry
        try:
            return await source.get_version(name, version or LATEST)
        except FunctionNotDeployed as exc:
            raise FunctionNotFound(str(exc), function=name) from None


async def get_api(request: Request) -> Api:
    """Dependency: the app's collaborators (async: FastAPI runs sync ones in a thread)."""
    api: Api = request.app.state.api
    return api


ApiDep = Depends(get_api)
router = APIRouter()
BEARER = HTTPBearer(
    auto_error=False, description="An API key (`flotilla keys create`): `Bearer flk_...`"
)
BearerDep = Security(BEARER)  # declares the scheme in the OpenAPI document
AUTH_PROBLEMS = (Unauthorized, Forbidden, RateLimited)


def require(scope: str) -> Any:
    """Dependency: the request's API key must hold `scope` (for invoke: the path's function).

    It runs before the route's parameters are looked at, so a caller without a valid key
    learns nothing about them, and never reads the registry: a 403 does not say whether a
    function exists. The key is left in `request.state.api_key` (None when auth is off).
    """

    async def authorize(
        request: Request,
        _: HTTPAuthorizationCredentials | None = BearerDep,
    ) -> None:
        api: Api = request.app.state.api
        key = None
        if api.auth is not None:
            function = request.path_params.get("name") if scope == INVOKE else None
            key = await api.auth.authorize(request.headers.get("authorization"), scope, function)
        request.state.api_key = key

    return Depends(authorize)


def create_app(
    *,
    registry: Registry,
    deployer: Deployer,
    jobs: JobStore,
    transport: Transport,
    options: ApiOptions | None = None,
    metrics: DispatcherMetrics | None = None,
    auth: Authenticator | None = None,
    secrets: SecretStore | None = None,
) -> FastAPI:
    """The HTTP API wired to its collaborators (nothing is started or connected here).

    With `metrics`, requests, waiting callers, reply latency and publishes are recorded and
    served at `/metrics` (Prometheus text format). With `auth`, routes need API keys;
    without it they are open (the processes decide explicitly: see service.py and dev.py).
    """
    opts = options or ApiOptions()
    cache = ResolveCache(registry, ttl_s=opts.resolve_ttl_s) if opts.resolve_ttl_s > 0 else None
    api = Api(registry, deployer, jobs, transport, opts, metrics, cache, auth)
    app = FlotillaApp(
        title="Flotilla",
        version="0.1.0",
        description="Deploy and invoke WebAssembly functions; errors are RFC 9457 problems.",
    )
    app.state.api = api
    app.add_middleware(InvocationIdMiddleware, metrics=metrics)
    add_problem_handlers(app, retry_after_s=api.options.retry_after_s)
    # The routes themselves, not include_router(): FastAPI wraps an included router in a
    # per-request matching layer (~5% of the dispatcher's busy samples under load).
    app.router.routes.extend(router.routes)
    from dispatcher.routes import secrets as secret_routes  # here: it imports this module

    app.state.secrets = secrets  # None: the secrets routes answer 501
    secret_routes.add_routes(app)
    if metrics is not None:
        app.add_api_route("/metrics", prometheus_metrics, include_in_schema=False)
    openapi.install(app, secured=auth is not None)
    return app


_FUNCTION_PATH = re.compile(r"^/v1/functions/([^/]+)")


def function_of(path: str) -> str | None:
    """The function a request path names (for log lines), or None."""
    match = _FUNCTION_PATH.match(path)
    return match.group(1) if match else None


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
        logs.bind(invocation_id, function_of(scope.get("path", "")))
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
            headers = scope.get("headers") or ()
            if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > \
                    MAX_HEADER_BYTES:
                err = HeadersTooLarge(
                    f"at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all"
                )
                body = {**err.to_problem(), "invocation_id": invocation_id}
                response = JSONResponse(body, status_code=err.status,
                                        media_type=PROBLEM_MEDIA_TYPE)
                await response(scope, receive, send_with_id)
                return
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


INVOKE_ROUTE = "/v1/functions/{name}/invoke"
_INVOKE_PREFIX = "/v1/functions/"
_INVOKE_SUFFIX = "/invoke"
_INVOCATION_HEADER = INVOCATION_HEADER.encode()
_SKIPPED_REQUEST_HEADERS = HOP_BY_HOP | {CALLBACK_HEADER}
_SKIPPED_REPLY_HEADERS = HOP_BY_HOP | {INVOCATION_HEADER}


class FlotillaApp(FastAPI):
    """The FastAPI app, with `POST /v1/functions/{name}/invoke` served before its stack.

    The hottest route skips FastAPI's and Starlette's per-request layers (error, telemetry
    and body-limit middlewares, routing, the request object, dependency solving): under
    load they were about a third of the dispatcher's CPU per call. `_serve_invoke` does
    what `InvocationIdMiddleware`, `serve_invoke`, `invoke` and the problem handlers do for
    that route, in the same order and with the same responses; every other request goes
    through FastAPI as before. `invoke` still documents the route in the OpenAPI document.
    """

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """Serve invoke requests directly; anything else through FastAPI."""
        if scope["type"] == "http" and scope["method"] == "POST" and not self.root_path \
                and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(_INVOKE_PREFIX) and path.endswith(_INVOKE_SUFFIX):
                name = path[len(_INVOKE_PREFIX):-len(_INVOKE_SUFFIX)]
                if name and "/" not in name:
                    await self._serve_invoke(scope, receive, send, name)
                    return
        await super().__call__(scope, receive, send)

    async def _serve_invoke(
        self, scope: MutableMapping[str, Any], receive: Any, send: Any, name: str
    ) -> None:
        api: Api = self.state.api
        invocation_id = new_id()
        scope.setdefault("state", {})["invocation_id"] = invocation_id
        logs.bind(invocation_id, name)
        began = time.perf_counter()
        status = 500
        try:
            try:
                status, headers, body = await _invoke_raw(api, scope, receive, name, invocation_id)
            except _ClientGone:
                status = 499  # nginx's "client closed request": counted, nothing to answer
                return
            except Exception as exc:  # noqa: BLE001 - each error becomes its problem document
                status, headers, body = _problem_of(exc, scope, invocation_id, api.options)
            headers.append((_INVOCATION_HEADER, invocation_id.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            # Counted once the response is sent, as InvocationIdMiddleware does.
            if (m := api.metrics) is not None:
                api.child(m.requests, INVOKE_ROUTE, str(status)).inc()
                api.child(m.request_duration, INVOKE_ROUTE).observe(time.perf_counter() - began)


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _invoke_raw(
    api: Api, scope: MutableMapping[str, Any], receive: Any, name: str, invocation_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The invoke route on the raw ASGI scope: (status, headers, body) of an `ok` reply."""
    raw = scope.get("headers") or ()
    if len(raw) > MAX_HEADERS or sum(len(k) + len(v) for k, v in raw) > MAX_HEADER_BYTES:
        raise HeadersTooLarge(
            f"at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all"
        )
    authorization = declared = None
    guest = []
    for k, v in raw:
        key = k.decode("latin-1")
        lower = key.lower()
        if lower == "authorization":
            if authorization is None:
                authorization = v.decode("latin-1")
        elif lower == "content-length" and declared is None:
            declared = v.decode("latin-1")
        if lower not in _SKIPPED_REQUEST_HEADERS:
            guest.append((key, v.decode("latin-1")))
    await _authorize_invoke(api, authorization, name)
    version = None
    if query := scope.get("query_string"):
        for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if k == "version":
                version = v  # the last one, as Starlette's query_params.get
    fn = await api.resolve(name, version)
    limit = fn.config.max_body_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the function's limit of {limit}")
    body = await _receive_body(receive, limit)
    reply = await call_function(api, name, fn, invocation_id, tuple(guest), body)
    if reply.outcome != OK:
        raise error_for_reply(reply, retry_after_s=api.options.retry_after_s)
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in reply.headers
        if k.lower() not in _SKIPPED_REPLY_HEADERS
    ]
    headers.append((b"content-length", str(len(reply.body)).encode()))
    return reply.status, headers, reply.body


async def _receive_body(receive: Any, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body exceeds the function's limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _problem_of(
    exc: Exception, scope: MutableMapping[str, Any], invocation_id: str, opts: ApiOptions
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The response the app's problem handlers (or its 500 fallback) give for `exc`."""
    import redis.exceptions
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        exc = Unavailable(f"Redis is unavailable: {exc}", retry_after_s=opts.retry_after_s)
    elif isinstance(exc, (BotoCoreError, ClientError)):
        log.warning("artifact store failed: %s", exc)
        exc = Unavailable(f"the artifact store failed: {exc}", retry_after_s=opts.retry_after_s)
    if isinstance(exc, ApiError):
        document = exc.to_problem(instance=scope["path"])
        document["invocation_id"] = invocation_id
        response = JSONResponse(document, status_code=exc.status, headers=exc.headers,
                                media_type=PROBLEM_MEDIA_TYPE)
    else:
        log.error("unhandled error in POST %s", scope["path"], exc_info=exc)
        response = JSONResponse(
            {
                "type": "urn:flotilla:problem:internal",
                "title": "Internal error",
                "status": 500,
                "detail": "the dispatcher failed unexpectedly; see its log",
                "invocation_id": invocation_id,
            },
            status_code=500,
            media_type=PROBLEM_MEDIA_TYPE,
        )
    return response.status_code, list(response.raw_headers), bytes(response.body)


@router.put(
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
        201: {"description": "A new version", "links": openapi.function_links()},
        200: {"description": "Identical bytes and config: the existing version",
              "content": {"application/json": {"schema": {"type": "object"}}},
              "links": openapi.function_links()},
        **openapi.problem_responses(
            BodyTooLarge, InvalidConfig, InvalidComponent, InvalidRequest, Unavailable,
            *AUTH_PROBLEMS,
        ),
    },
    openapi_extra={"requestBody": openapi.DEPLOY_BODY},
    dependencies=[require(DEPLOY)],
)
async def deploy(request: Request, name: str = NAME_PARAM, api: Api = ApiDep) -> JSONResponse:
    """Validate, precompile and record a new version (or find the identical one)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise BodyTooLarge(f"deploy uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    config, wasm = await _read_deploy_form(request, name)
    try:
        version, created = await api.deployer.deploy(config, wasm)
    except ComponentError as exc:
        raise InvalidComponent(str(exc)) from None
    api.forget(name)
    body = {**version.to_dict(), "created": created}
    return JSONResponse(body, status_code=201 if created else 200)


@router.get(
    "/v1/functions",
    summary="List deployed functions",
    operation_id="list_functions",
    responses=openapi.problem_responses(*AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def list_functions(api: Api = ApiDep) -> dict[str, Any]:
    """Every function with its latest version."""
    return {
        "functions": [
            {
                "name": s.name,
                "latest": s.latest.digest,
                "version_count": s.version_count,
                "config": s.latest.config.to_dict(),
                "updated_at": s.latest.created_at,
            }
            for s in await api.registry.list_functions()
        ]
    }


@router.get(
    "/v1/functions/{name}",
    summary="A function's config and versions",
    operation_id="get_function",
    responses=openapi.problem_responses(InvalidRequest, FunctionNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def get_function(name: str = NAME_PARAM, api: Api = ApiDep) -> dict[str, Any]:
    """The latest config and every version of a function."""
    latest = await api.resolve(name, None)
    versions = await api.registry.list_versions(name)
    return {
        "name": name,
        "latest": latest.digest,
        "config": latest.config.to_dict(),
        "versions": [v.to_dict() for v in versions],
    }


@router.delete(
    "/v1/functions/{name}",
    status_code=204,
    summary="Delete a function and its version history",
    operation_id="delete_function",
    responses=openapi.problem_responses(InvalidRequest, FunctionNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEPLOY)],
)
async def delete_function(name: str = NAME_PARAM, api: Api = ApiDep) -> Response:
    """Forget a function (its code stays in the content-addressed store)."""
    api.forget(name)
    if not await api.registry.delete(name):
        raise FunctionNotFound(f"function {name!r} is not deployed", function=name)
    return Response(status_code=204)


class InvokeRoute(APIRoute):
    """The invoke route, served by `serve_invoke` rather than FastAPI's request handler.

    The hottest route skips per-request dependency solving and parameter validation:
    `serve_invoke` does by hand what the
    declared dependencies and parameters of `invoke` would, in the same order. `invoke`'s
    signature and the decorator still describe the route in the OpenAPI document.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The hand-written handler (FastAPI builds the ASGI app from it)."""
        return serve_invoke


async def invoke(
    request: Request,
    name: str = NAME_PARAM,
    version: str | None = VERSION_PARAM,
    api: Api = ApiDep,
) -> Response:
    """Run the function once; hold the caller until its reply or timeout + margin."""
    fn = await api.resolve(name, version)
    body = await _read_body(request, fn.config.max_body_bytes)
    reply = await call_function(
        api, name, fn, request.state.invocation_id, _guest_headers(request), body
    )
    return _reply_response(reply, api.options)


async def call_function(
    api: Api, name: str, fn: FunctionVersion, invocation_id: str, headers: Headers,
    body: bytes,
) -> Reply:
    """Publish one invocation of `fn` and wait for its reply (the invoke route's core).

    FunctionTimeout (504) when no reply came within the function's timeout + the reply
    margin; Unavailable (503) when the broker refused or could not take the envelope.
    """
    timeout_ms = fn.config.timeout_ms
    margin_ms = api.options.reply_margin_ms
    envelope = Envelope(
        invocation_id=invocation_id,
        correlation_id=invocation_id,
        function=name,
        digest=fn.digest,
        headers=headers,
        body=body,
        deadline_ms=now_ms() + timeout_ms,
        # The transport's own reply queue up front, so its call() need not copy the envelope.
        reply_to=getattr(api.transport, "reply_queue_name", ""),
    )
    m = api.metrics
    began = time.perf_counter()
    if m is not None:
        m.in_flight.inc()
    try:
        reply = await api.transport.call(envelope, (timeout_ms + margin_ms) / 1000)
    except CallTimeout:
        api.published("confirmed")
        raise FunctionTimeout(
            f"no reply within {timeout_ms} ms (+{margin_ms} ms margin)", outcome=TIMEOUT
        ) from None
    except (QueueFull, BrokerUnavailable) as exc:
        raise api.unavailable(exc) from None
    finally:
        if m is not None:
            m.in_flight.dec()
    api.published("confirmed")
    if m is not None:
        m.reply_latency.observe(time.perf_counter() - began)
    return reply


async def serve_invoke(request: Request) -> Response:
    """POST /v1/functions/{name}/invoke: `require(INVOKE)`, then `invoke`'s parameters."""
    api: Api = request.app.state.api
    name: str = request.path_params["name"]
    key = await _authorize_invoke(api, request.headers.get("authorization"), name)
    request.state.api_key = key
    return await invoke(request, name, request.query_params.get("version"), api)


async def _authorize_invoke(api: Api, authorization: str | None, name: str) -> ApiKey | None:
    """`require(INVOKE)`, then the `name` parameter's check, in FastAPI's order and words."""
    key = None
    if api.auth is not None:  # before the parameters are looked at, as in require()
        key = await api.auth.authorize(authorization, INVOKE, name)
    if _NAME.fullmatch(name) is None:
        msg = f"String should match pattern '{NAME_PATTERN}'"
        raise InvalidRequest(f"path.name: {msg}", errors=[{"loc": ["path", "name"], "msg": msg}])
    return key


router.add_api_route(
    "/v1/functions/{name}/invoke",
    invoke,
    methods=["POST"],
    route_class_override=InvokeRoute,
    summary="Invoke a function and wait for its response",
    operation_id="invoke",
    response_class=Response,
    responses={
        "default": {
            "description": "The function's own response: its status, headers and body",
            "content": {"*/*": {"schema": {}}},
        },
        **openapi.problem_responses(
            FunctionNotFound, BodyTooLarge, InvalidRequest, FunctionFailed, Unavailable,
            FunctionTimeout, *AUTH_PROBLEMS,
        ),
    },
    openapi_extra={"requestBody": openapi.RAW_BODY},
    dependencies=[require(INVOKE)],
)



@router.post(
    "/v1/functions/{name}/jobs",
    status_code=202,
    summary="Submit an asynchronous job",
    operation_id="submit_job",
    description=(
        "Returns at once with the job id. The optional callback URL (query parameter "
        f"`callback_url` or header `{CALLBACK_HEADER}`) receives a POST of the job "
        "document (as GET /v1/jobs/{id} shows it) once the job finishes, retried with "
        "backoff until a 2xx; its host must be in the dispatcher's callback_hosts (else 403)."
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
    fn = await api.resolve(name, version)
    body = await _read_body(request, fn.config.max_body_bytes)
    job_id: str = request.state.invocation_id
    await api.jobs.create(JobRecord(job_id, name, fn.digest, time.time(), callback))
    envelope = Envelope(
        invocation_id=job_id,
        correlation_id=job_id,
        function=name,
        digest=fn.digest,
        headers=_guest_headers(request),
        body=body,
        # A job may wait in the queue as long as its result would be kept.
        deadline_ms=now_ms() + api.options.job_ttl_s * 1000,
        reply_mode=REPLY_JOB,
    )
    try:
        await api.transport.submit(envelope)
    except (QueueFull, BrokerUnavailable) as exc:
        await api.jobs.forget(job_id)  # never queued: do not report it as queued
        raise api.unavailable(exc) from None
    api.published("confirmed")
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


class KeyRequest(BaseModel):
    """The body of POST /v1/keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="What the key is for")
    scopes: list[Literal["deploy", "invoke", "admin"]] = Field(min_length=1, max_length=3)
    functions: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=1000,
        description="Functions the invoke scope covers (empty: all)",
    )
    rate: float = Field(100.0, ge=0, le=1_000_000,
                        description="Requests per second on average (0: unlimited)")
    burst: int = Field(200, ge=1, le=1_000_000, description="Requests allowed at once")


def _authenticator(api: Api) -> Authenticator:
    if api.auth is None:
        raise Forbidden("API keys are switched off on this dispatcher (dev or insecure mode)")
    return api.auth


@router.post(
    "/v1/keys",
    status_code=201,
    summary="Create an API key (shown once, in this response)",
    operation_id="create_key",
    responses={
        400: {"model": Problem, "description": "The body is not JSON (`about:blank`)"},
        **openapi.problem_responses(InvalidRequest, *AUTH_PROBLEMS),
    },
    dependencies=[require(ADMIN)],
)
async def create_key(body: KeyRequest, api: Api = ApiDep) -> JSONResponse:
    """A new key; only its SHA-256 is stored, so `key` cannot be shown again."""
    auth = _authenticator(api)
    limit = Limit(body.rate, body.burst) if body.rate > 0 else None
    record, key = await auth.keys.create(
        body.name, body.scopes, functions=body.functions, limit=limit
    )
    return JSONResponse({"key": key, **record.to_dict()}, status_code=201)


@router.get(
    "/v1/keys",
    summary="List API keys (never the keys themselves)",
    operation_id="list_keys",
    responses=openapi.problem_responses(*AUTH_PROBLEMS),
    dependencies=[require(ADMIN)],
)
async def list_keys(api: Api = ApiDep) -> dict[str, Any]:
    """Every key's id, name, scopes, functions and limit."""
    return {"keys": [k.to_dict() for k in await _authenticator(api).keys.list()]}


@router.delete(
    "/v1/keys/{key_id}",
    status_code=204,
    summary="Revoke an API key (at once, on every replica)",
    operation_id="revoke_key",
    responses=openapi.problem_responses(KeyNotFound, *AUTH_PROBLEMS),
    dependencies=[require(ADMIN)],
)
async def revoke_key(
    key_id: str = Path(pattern=r"^[0-9a-f]{12}$"), api: Api = ApiDep
) -> Response:
    """Forget the key: requests with it get 401 from now on."""
    if not await _authenticator(api).keys.revoke(key_id):
        raise KeyNotFound(f"no API key {key_id!r}")
    return Response(status_code=204)


@router.get("/healthz", summary="Liveness", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """Always ok while the process serves HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Redis answers",
    operation_id="readyz",
    responses=openapi.problem_responses(Unavailable),
)
async def readyz(api: Api = ApiDep) -> dict[str, str]:
    """Ready when the broker connection is open and Redis answers a PING within a second."""
    if hasattr(api.transport, "connection"):  # the AMQP transport (dev mode has no broker)
        connection = api.transport.connection
        if connection is None or connection.is_closed:
            raise Unavailable("the RabbitMQ connection is not open")
    try:
        await asyncio.wait_for(api.registry.redis.ping(), READY_TIMEOUT_S)
    except (TimeoutError, OSError) as exc:
        raise Unavailable(f"Redis did not answer: {exc or 'timeout'}") from None
    return {"status": "ready"}


async def prometheus_metrics(api: Api = ApiDep) -> Response:
    """The dispatcher's metrics in Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    assert api.metrics is not None
    return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _read_deploy_form(request: Request, name: str) -> tuple[FunctionConfig, bytes]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        # Starlette would parse anything else as an empty form: say what is wrong instead.
        raise InvalidRequest(
            f"expected a multipart/form-data body (parts `component`, `config`), got "
            f"{content_type[:100] or 'no content type'!r}"
        )
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
        config = _parse_config(config_text, name)
        if isinstance(component, str):  # a part sent without a filename
            wasm = component.encode("utf-8", "surrogateescape")
        else:
            wasm = await component.read(MAX_COMPONENT_BYTES + 1)
    finally:
        await form.close()
    if len(wasm) > MAX_COMPONENT_BYTES:
        raise BodyTooLarge(f"components are limited to {MAX_COMPONENT_BYTES} bytes")
    return config, wasm


def _parse_config(text: str, name: str) -> FunctionConfig:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidConfig(f"config is not valid JSON: {exc}", field="config") from None
    except RecursionError:  # a config is flat; thousands of nested brackets are an attack
        raise InvalidConfig("config JSON is nested too deeply", field="config") from None
    if isinstance(data, dict) and data.get("name") == name:
        data = {k: v for k, v in data.items() if k != "name"}
    try:
        return FunctionConfig.from_dict(data, name=name)
    except ValueError as exc:
        raise InvalidConfig(str(exc), field=getattr(exc, "field", "config")) from None
    except TypeError as exc:  # a wrongly typed value deep inside the config
        raise InvalidConfig(str(exc), field="config") from None


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
    pairs = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw)
    return tuple(
        (k, v) for k, v in pairs if k.lower() not in HOP_BY_HOP and k.lower() != CALLBACK_HEADER
    )


def _reply_response(reply: Reply, opts: ApiOptions) -> Response:
    if reply.outcome == OK:
        response = Response(content=reply.body, status_code=reply.status)
        response.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in reply.headers
            if k.lower() not in HOP_BY_HOP and k.lower() != INVOCATION_HEADER
        ] + [(b"content-length", str(len(reply.body)).encode())]
        return response
    raise error_for_reply(reply, retry_after_s=opts.retry_after_s)
