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

from flotilla.errors import ApiError, InvalidRequest, Unavailable

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invocation_id: str | None = None


def problem_response(request: Request, err: ApiError) -> JSONResponse:
    """The problem document response of a ApiError."""
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
        assert isinstance(exc, ApiError)
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

    app.add_exception_handler(ApiError, on_dispatcher_error)
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
