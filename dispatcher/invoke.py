"""`POST /v1/functions/{name}/invoke`, served on the raw ASGI scope before FastAPI's stack.

The hottest route skips FastAPI's and Starlette's per-request layers (error, telemetry and
body-limit middlewares, routing, the request object, dependency solving): under load they
were about a third of the dispatcher's CPU per call. `FlotillaApp` (dispatcher/app.py)
hands every POST whose path matches the route (`invoked_function`, under any root path) to
`InvokeHandler`, which does, in this order, what the app's middleware, the `require(INVOKE)`
dependency, the parameters' validation and the exception handlers do for other routes:

1. a new invocation id (state, log context, `flotilla-invocation-id` response header);
2. the request header cap (431), then the API key (401/403/429) before anything else is
   looked at, then the name's pattern (422, in FastAPI's words);
3. `?version=` (the last one, as Starlette's `query_params.get`), the function (404), the
   body up to its `max_body_bytes` (413), the call through the `Invoker` (502/503/504);
4. the guest's response (hop-by-hop headers dropped), or the error's problem document from
   `problems.problem_response`, the renderer the app's exception handlers use;
5. the request counted under the route template, as the middleware counts other routes.

`router` holds the route as the OpenAPI document and method matching see it (`invoke` is
its documentation: parameters, problems, raw body); requests reach `InvokeHandler` only.
"""

from __future__ import annotations

import re
import time
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Response
from fastapi.routing import APIRoute

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, NAME_PARAM, VERSION_PARAM, Api, require
from dispatcher.auth import INVOKE, ApiKey
from dispatcher.passthrough import (
    INVOCATION_HEADER,
    ClientGone,
    check_header_size,
    read_body,
    request_headers,
    response_headers,
)
from dispatcher.problems import problem_response
from flotilla import logs
from flotilla.config import NAME_PATTERN
from flotilla.errors import (
    BodyTooLarge,
    FunctionFailed,
    FunctionNotFound,
    FunctionRateLimited,
    FunctionTimeout,
    InvalidRequest,
    Unavailable,
)
from flotilla.jobs import new_id

INVOKE_ROUTE = "/v1/functions/{name}/invoke"
_PREFIX = "/v1/functions/"
_SUFFIX = "/invoke"
_NAME = re.compile(NAME_PATTERN)  # anchored; fullmatch: "$" would allow a newline
_INVOCATION_HEADER = INVOCATION_HEADER.encode()
CLIENT_GONE = 499  # nginx's "client closed request": counted, nothing to answer


def invoked_function(path: str, root_path: str = "") -> str | None:
    """The function a request path names if it is the invoke route's, else None.

    The path is matched as Starlette's router matches it: without `root_path` when it
    starts with it, and `{name}` is one non-empty path segment.
    """
    if root_path and path.startswith(root_path):
        if len(path) == len(root_path):
            return None
        if path[len(root_path)] == "/":
            path = path[len(root_path):]
    if len(path) > len(_PREFIX) + len(_SUFFIX) and path.startswith(_PREFIX) and \
            path.endswith(_SUFFIX):
        name = path[len(_PREFIX):-len(_SUFFIX)]
        if "/" not in name:
            return name
    return None


class InvokeHandler:
    """The invoke route as one ASGI callable (see the module docstring for its steps)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        m = api.metrics
        self._duration = m.request_duration.labels(INVOKE_ROUTE) if m is not None else None
        self._requests: dict[int, Any] = {}  # by status, looked up once (labels() locks)

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Any, send: Any, name: str, *,
        counted: bool = True,
    ) -> None:
        """Answer one POST to the invoke route naming function `name`.

        `counted=False`: the request metrics are someone else's (InvocationIdMiddleware's,
        which also gave the request its invocation id when it came through FastAPI's stack).
        """
        state = scope.setdefault("state", {})
        invocation_id = state.get("invocation_id") or new_id()
        state["invocation_id"] = invocation_id
        logs.bind(invocation_id, name)
        began = time.perf_counter()
        status = 500
        try:
            try:
                status, headers, body = await self._invoke(scope, receive, name, invocation_id)
            except ClientGone:
                status = CLIENT_GONE
                return
            except Exception as exc:  # noqa: BLE001 - each error becomes its problem document
                response = problem_response(
                    exc, invocation_id=invocation_id, instance=scope["path"],
                    retry_after_s=self.api.options.retry_after_s,
                    where=f"POST {scope['path']}",
                )
                status, headers, body = (
                    response.status_code, list(response.raw_headers), bytes(response.body)
                )
            headers.append((_INVOCATION_HEADER, invocation_id.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            # Counted once the response is sent, as InvocationIdMiddleware does.
            if counted and self._duration is not None:
                self._count(status, time.perf_counter() - began)

    async def _invoke(
        self, scope: MutableMapping[str, Any], receive: Any, name: str, invocation_id: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) of the guest's response; raises the request's error."""
        api = self.api
        raw = scope.get("headers") or ()
        check_header_size(raw)
        authorization, declared, guest = request_headers(raw)
        await authorize_invoke(api, authorization, name)
        version = None
        if query := scope.get("query_string"):
            for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if k == "version":
                    version = v  # the last one, as Starlette's query_params.get
        fn = await api.invoker.resolve(name, version)
        body = await read_body(receive, declared, fn.config.max_body_bytes)
        reply = await api.invoker.call(fn, body, guest, invocation_id=invocation_id)
        return reply.status, response_headers(reply.headers, len(reply.body)), reply.body

    def _count(self, status: int, seconds: float) -> None:
        assert self._duration is not None and self.api.metrics is not None
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self.api.metrics.requests.labels(
                INVOKE_ROUTE, str(status)
            )
        child.inc()
        self._duration.observe(seconds)


async def authorize_invoke(api: Api, authorization: str | None, name: str) -> ApiKey | None:
    """`require(INVOKE)`, then the `name` parameter's check, in FastAPI's order and words."""
    key = None
    if api.auth is not None:  # before the parameters are looked at, as in require()
        key = await api.auth.authorize(authorization, INVOKE, name)
    if _NAME.fullmatch(name) is None:
        msg = f"String should match pattern '{NAME_PATTERN}'"
        raise InvalidRequest(f"path.name: {msg}", errors=[{"loc": ["path", "name"], "msg": msg}])
    return key


async def invoke(name: str = NAME_PARAM, version: str | None = VERSION_PARAM) -> Response:
    """Run the function once; hold the caller until its reply or timeout + margin."""
    # Documentation only: `InvokeHandler` answers these requests before routing.
    raise AssertionError("POST .../invoke is served by InvokeHandler")


class DocumentedRoute(APIRoute):
    """The invoke route as routing and the OpenAPI document see it.

    It lists POST at its path, so other methods get 405 with `Allow: POST`; a POST never
    reaches it (FlotillaApp serves those first), and should something call the FastAPI
    stack directly, it is answered by `InvokeHandler` all the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What Starlette's handle() calls once the method checked out (else: 405).
        self.app = self._serve

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        name = scope["path_params"]["name"]
        await scope["app"].invoke_handler(scope, receive, send, name, counted=False)


router = APIRouter()
router.add_api_route(
    INVOKE_ROUTE,
    invoke,
    methods=["POST"],
    route_class_override=DocumentedRoute,
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
            FunctionTimeout, FunctionRateLimited, *AUTH_PROBLEMS,
        ),
    },
    openapi_extra={"requestBody": openapi.RAW_BODY},
    dependencies=[require(INVOKE)],
)
