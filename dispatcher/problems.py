"""Problem documents (RFC 9457) and the typed errors the HTTP API turns into them.

Each error class carries a stable `type` URI, an HTTP status and a title; raising one
anywhere below the routes yields an `application/problem+json` response. Extra members
(e.g. `outcome`, `field`) travel in `extra`. `add_problem_handlers` makes every other
error an app can answer (validation, unknown route, Redis or S3 outage) a problem too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from flotilla.envelope import EXPIRED, INTERNAL, NOT_FOUND, TIMEOUT, Reply
from flotilla.errors import FlotillaError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:flotilla:problem:"


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invocation_id: str | None = None


class DispatcherError(FlotillaError):
    """Base class of errors the HTTP API reports as problem documents."""

    slug = "internal"
    status = 500
    title = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def type(self) -> str:
        """The stable problem type URI."""
        return TYPE_PREFIX + self.slug

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """The JSON body of the problem document."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body


class FunctionNotFound(DispatcherError):
    """No function (or no such version of it) is deployed under that name."""

    slug = "function-not-found"
    status = 404
    title = "Function not found"


class JobNotFound(DispatcherError):
    """No job with that id exists (never submitted, or too old to tell)."""

    slug = "job-not-found"
    status = 404
    title = "Job not found"


class KeyNotFound(DispatcherError):
    """No API key with that id (never created, or revoked)."""

    slug = "key-not-found"
    status = 404
    title = "API key not found"


class BodyTooLarge(DispatcherError):
    """The request body is larger than the function's max_body_bytes (or the upload cap)."""

    slug = "body-too-large"
    status = 413
    title = "Request body too large"


class HeadersTooLarge(DispatcherError):
    """Too many request headers, or too many bytes of them."""

    slug = "headers-too-large"
    status = 431
    title = "Request headers too large"


class InvalidConfig(DispatcherError):
    """The function config sent with a deploy is invalid; `field` names the culprit."""

    slug = "invalid-config"
    status = 422
    title = "Invalid function config"


class InvalidComponent(DispatcherError):
    """The uploaded file is not a component targeting the flotilla function world."""

    slug = "invalid-component"
    status = 422
    title = "Invalid component"


class InvalidRequest(DispatcherError):
    """The HTTP request itself is malformed (missing field, bad parameter)."""

    slug = "invalid-request"
    status = 422
    title = "Invalid request"


class FunctionFailed(DispatcherError):
    """The guest returned err, trapped, ran out of memory or returned a bad response."""

    slug = "function-failed"
    status = 502
    title = "Function failed"


class FunctionTimeout(DispatcherError):
    """No reply within the function's timeout plus the reply margin."""

    slug = "function-timeout"
    status = 504
    title = "Function timed out"


class Unavailable(DispatcherError):
    """The queue is full or the broker is unreachable; retry after `Retry-After` seconds."""

    slug = "unavailable"
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, **extra)


def error_for_reply(reply: Reply, *, retry_after_s: int = 1) -> DispatcherError:
    """The API error for a reply whose outcome is not `ok` (HTTP API and Python client alike).

    timeout and expired are 504; not_found and internal (the worker could not run it) are
    503; every guest failure (err, trap, memory limit, bad response) is 502.
    """
    outcome, iid = reply.outcome, reply.invocation_id
    if outcome in (TIMEOUT, EXPIRED):
        return FunctionTimeout(
            reply.error or "the function timed out", outcome=outcome, invocation_id=iid
        )
    if outcome in (NOT_FOUND, INTERNAL):
        return Unavailable(
            reply.error or "the worker could not run the function",
            retry_after_s=retry_after_s, outcome=outcome, invocation_id=iid,
        )
    return FunctionFailed(reply.error or outcome, outcome=outcome, invocation_id=iid)


class CallbackNotAllowed(DispatcherError):
    """A job's callback URL is not http(s) or its host is not in settings.callback_hosts."""

    slug = "callback-not-allowed"
    status = 403
    title = "Callback URL not allowed"


class Unauthorized(DispatcherError):
    """No API key, a malformed Authorization header, or a key that is unknown or revoked."""

    slug = "unauthorized"
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="flotilla"'}, **extra)


class Forbidden(DispatcherError):
    """A valid API key without the scope (or the function) the request needs."""

    slug = "forbidden"
    status = 403
    title = "Forbidden"


class RateLimited(DispatcherError):
    """The API key used up its request rate; retry after `Retry-After` seconds."""

    slug = "rate-limited"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, **extra)


ALL_ERRORS: tuple[type[DispatcherError], ...] = (
    FunctionNotFound,
    JobNotFound,
    KeyNotFound,
    BodyTooLarge,
    HeadersTooLarge,
    InvalidConfig,
    InvalidComponent,
    InvalidRequest,
    FunctionFailed,
    FunctionTimeout,
    Unavailable,
    CallbackNotAllowed,
    Unauthorized,
    Forbidden,
    RateLimited,
)


def problem_response(request: Request, err: DispatcherError) -> JSONResponse:
    """The problem document response of a DispatcherError."""
    body = err.to_problem(instance=request.url.path)
    body["invocation_id"] = getattr(request.state, "invocation_id", None)
    return JSONResponse(
        body, status_code=err.status, headers=err.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def add_problem_handlers(app: FastAPI, *, retry_after_s: int = 1) -> None:
    """Answer every error as a problem document: ours, validation, HTTP, Redis and S3 outages."""
    import redis.exceptions
    from botocore.exceptions import BotoCoreError, ClientError

    async def on_dispatcher_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DispatcherError)
        return problem_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(request, InvalidRequest(detail or "invalid request", errors=errors))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request))
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
            request, Unavailable(f"Redis is unavailable: {exc}", retry_after_s=retry_after_s)
        )

    async def on_s3_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("artifact store failed: %s", exc)
        return problem_response(
            request, Unavailable(f"the artifact store failed: {exc}", retry_after_s=retry_after_s)
        )

    app.add_exception_handler(DispatcherError, on_dispatcher_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, on_redis_down)
    app.add_exception_handler(BotoCoreError, on_s3_down)
    app.add_exception_handler(ClientError, on_s3_down)


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette only names the first route's)."""
    methods: set[str] = set()
    for route in _flat_routes(app.router.routes):
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _flat_routes(routes: Any) -> Any:
    """Routes with included routers expanded (FastAPI wraps them; no prefixes are used here)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _flat_routes(included.routes)
        else:
            yield route
