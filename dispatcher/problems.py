"""Problem documents (RFC 9457) and the typed errors the HTTP API turns into them.

Each error class carries a stable `type` URI, an HTTP status and a title; raising one
anywhere below the routes yields an `application/problem+json` response. Extra members
(e.g. `outcome`, `field`) travel in `extra`. `problem_response` renders any error as its
problem response; `add_problem_handlers` registers it (and validation and HTTP errors) with
the app, and the invoke handler (`dispatcher/invoke.py`) calls it directly.
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


INTERNAL_DETAIL = "the dispatcher failed unexpectedly; see its log"


def problem_response(
    exc: BaseException,
    *,
    invocation_id: str | None,
    instance: str | None = None,
    retry_after_s: int = 1,
    where: str = "",
) -> JSONResponse:
    """The problem response of any error, for every route (the invoke handler included).

    An ApiError answers as itself (`instance`: the request path); a Redis or artifact-store
    outage as 503 `unavailable`; anything else as a 500 `internal`, logged with `where`
    (e.g. "POST /v1/...") and never with its message in the response.
    """
    err = api_error_of(exc, retry_after_s)
    if err is None:
        log.error("unhandled error in %s", where, exc_info=exc)
        err, instance = ApiError(INTERNAL_DETAIL), None  # the base class is the 500
    body = err.to_problem(instance=instance)
    body["invocation_id"] = invocation_id
    return JSONResponse(
        body, status_code=err.status, headers=err.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def api_error_of(exc: BaseException, retry_after_s: int = 1) -> ApiError | None:
    """The ApiError an error is answered as: itself, Unavailable for a Redis or S3 outage,
    None for anything unexpected (a 500)."""
    if isinstance(exc, ApiError):
        return exc
    import redis.exceptions
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return Unavailable(f"Redis is unavailable: {exc}", retry_after_s=retry_after_s)
    if isinstance(exc, (BotoCoreError, ClientError)):
        log.warning("artifact store failed: %s", exc)
        return Unavailable(f"the artifact store failed: {exc}", retry_after_s=retry_after_s)
    return None


def add_problem_handlers(app: FastAPI, *, retry_after_s: int = 1) -> None:
    """Answer every error as a problem document: ours, validation, HTTP, Redis and S3 outages."""
    import redis.exceptions
    from botocore.exceptions import BotoCoreError, ClientError

    def answer(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            exc, invocation_id=getattr(request.state, "invocation_id", None),
            instance=request.url.path, retry_after_s=retry_after_s,
            where=f"{request.method} {request.url.path}",
        )

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return answer(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return answer(request, InvalidRequest(detail or "invalid request", errors=errors))

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

    app.add_exception_handler(ApiError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for outage in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                   BotoCoreError, ClientError):
        app.add_exception_handler(outage, on_error)


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
