"""`GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS /v1/functions/{name}/invoke[/{path...}]`, served
on the raw ASGI scope before FastAPI's stack.

The hottest route skips FastAPI's and Starlette's per-request layers (error, telemetry and
body-limit middlewares, routing, the request object, dependency solving): under load they
were about a third of the dispatcher's CPU per call. `FlotillaApp` (dispatcher/app.py)
hands every request of one of `METHODS` whose path matches the route (`invoked_function`,
under any root path) to `InvokeHandler`, which does, in this order, what the app's
middleware, the `require(INVOKE)` dependency, the parameters' validation and the exception
handlers do for other routes:

1. a new invocation id (state, log context, `flotilla-invocation-id` response header);
2. the request header cap (431), then who may call (`admit`): with a key, the key (401/429)
   and its invoke scope (403) before anything else is looked at, then the name's pattern
   (422, in FastAPI's words); without one, the per-address limit (429), then the function
   must be public (else 401, the same answer whether or not it exists);
3. `?version=` (the last one, as Starlette's `query_params.get`), the function (404), the
   body up to its `max_body_bytes` (413), the call through the `Invoker` (502/503/504) with
   the web request the guest sees: method, sub-path as sent, query without `version`, caller;
4. the guest's response (hop-by-hop headers dropped; no body for HEAD), or the error's
   problem document from `problems.problem_response`, the renderer the app's exception
   handlers use;
5. the request counted under the route template, as the middleware counts other routes;
6. with tracing on (flotilla/tracing.py), all of it inside a server span named by the route
   template, continuing the caller's `traceparent`; the invoker's publish span is its child.

`routes` holds the two routes as routing sees them (every method of `METHODS`, so other
methods get 405 with their `Allow`); each carries one documented route per method for the
OpenAPI document (`documented`: parameters, problems, raw body, operation ids `invoke`,
`invoke_get`, ..., `invoke_path_post`, ...). Requests reach `InvokeHandler` only.
"""

from __future__ import annotations

import re
import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import Path, Response
from fastapi.routing import APIRoute

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, NAME_PARAM, VERSION_PARAM, Api, require
from dispatcher.auth import INVOKE, NEEDS_KEY, ApiKey, permit
from dispatcher.passthrough import (
    INVOCATION_HEADER,
    INVOKE_PARAMS,
    ClientGone,
    check_header_size,
    guest_query,
    raw_sub_path,
    read_body,
    request_headers,
    response_headers,
)
from dispatcher.problems import problem_response
from flotilla import logs
from flotilla.config import NAME_PATTERN
from flotilla.errors import (
    BodyTooLarge,
    Forbidden,
    FunctionFailed,
    FunctionNotFound,
    FunctionRateLimited,
    FunctionTimeout,
    InvalidRequest,
    Unauthorized,
    Unavailable,
)
from flotilla.invoker import METHODS, PLAIN_POST, WebRequest
from flotilla.jobs import new_id
from flotilla.registry import LATEST, FunctionVersion
from flotilla.tracing import NO_SPAN

INVOKE_ROUTE = "/v1/functions/{name}/invoke"
INVOKE_PATH_ROUTE = "/v1/functions/{name}/invoke/{path:path}"
INVOKE_METHODS = frozenset(METHODS)
ROUTE_DEPTH = 4  # segments naming the route: v1, functions, {name}, invoke
_PREFIX = "/v1/functions/"
_SUFFIX = "/invoke"
_NAME = re.compile(NAME_PATTERN)  # anchored; fullmatch: "$" would allow a newline
_INVOCATION_HEADER = INVOCATION_HEADER.encode()
CLIENT_GONE = 499  # nginx's "client closed request": counted, nothing to answer


def invoked_function(path: str, root_path: str = "") -> tuple[str, str] | None:
    """(function name, decoded sub-path) if a request path is the invoke route's, else None.

    The path is matched as Starlette's router matches the two routes: without `root_path`
    when it starts with it; `{name}` is one non-empty path segment; the sub-path is "" for
    `.../invoke`, else what follows `.../invoke` ("/" for `.../invoke/`).
    """
    if root_path and path.startswith(root_path):
        if len(path) == len(root_path):
            return None
        if path[len(root_path)] == "/":
            path = path[len(root_path):]
    if not path.startswith(_PREFIX):
        return None
    slash = path.find("/", len(_PREFIX))
    if slash <= len(_PREFIX) or not path.startswith(_SUFFIX, slash):
        return None
    end = slash + len(_SUFFIX)
    if end == len(path):
        return path[len(_PREFIX):slash], ""
    if path[end] == "/":
        return path[len(_PREFIX):slash], path[end:]
    return None


class InvokeHandler:
    """The invoke routes as one ASGI callable (see the module docstring for its steps)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.tracing = api.invoker.tracing  # None: off (flotilla/tracing.py)
        m = api.metrics
        self._duration = m.request_duration.labels(INVOKE_ROUTE) if m is not None else None
        self._requests: dict[int, Any] = {}  # by status, looked up once (labels() locks)

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Any, send: Any, name: str,
        sub_path: str = "", *, counted: bool = True,
    ) -> None:
        """Answer one request to the invoke route naming function `name` (and `sub_path`,
        decoded, "" when none).

        `counted=False`: the request metrics are someone else's (InvocationIdMiddleware's,
        which also gave the request its invocation id when it came through FastAPI's stack).
        """
        state = scope.setdefault("state", {})
        invocation_id = state.get("invocation_id") or new_id()
        state["invocation_id"] = invocation_id
        logs.bind(invocation_id, name)
        began = time.perf_counter()
        status = 500
        tracing = self.tracing
        with (NO_SPAN if tracing is None
              else tracing.serving(scope, INVOKE_PATH_ROUTE if sub_path else INVOKE_ROUTE)) as span:
            try:
                try:
                    status, headers, body = await self._invoke(
                        scope, receive, name, sub_path, invocation_id
                    )
                except ClientGone:
                    status = CLIENT_GONE
                    return
                except Exception as exc:  # noqa: BLE001 - each error becomes its problem document
                    response = problem_response(
                        exc, invocation_id=invocation_id, instance=scope["path"],
                        retry_after_s=self.api.options.retry_after_s,
                        where=f"{scope['method']} {scope['path']}",
                    )
                    status, headers, body = (
                        response.status_code, list(response.raw_headers), bytes(response.body)
                    )
                headers.append((_INVOCATION_HEADER, invocation_id.encode()))
                if scope["method"] == "HEAD":
                    body = b""  # the headers (Content-Length too) as a GET would have them
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            finally:
                # Counted once the response is sent, as InvocationIdMiddleware does.
                if counted and self._duration is not None:
                    self._count(status, time.perf_counter() - began)
                if span is not None and tracing is not None:
                    span.set_attribute("flotilla.function", name)
                    span.set_attribute("flotilla.invocation_id", invocation_id)
                    tracing.responded(span, status)

    async def _invoke(
        self, scope: MutableMapping[str, Any], receive: Any, name: str, sub_path: str,
        invocation_id: str,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) of the guest's response; raises the request's error."""
        api = self.api
        raw = scope.get("headers") or ()
        check_header_size(raw)
        authorization, declared, guest = request_headers(raw)
        query, version = guest_query(scope.get("query_string") or b"", INVOKE_PARAMS)
        fn, caller = await admit(api, scope, authorization, name, version)
        body = await read_body(receive, declared, fn.config.max_body_bytes)
        method = scope["method"]
        if method == "POST" and not sub_path and not query and caller is None:
            request = PLAIN_POST  # the common case shares one object
        else:
            request = WebRequest(
                method, raw_sub_path(scope, ROUTE_DEPTH, sub_path), query, caller
            )
        reply = await api.invoker.call(
            fn, body, guest, invocation_id=invocation_id, request=request
        )
        headers = response_headers(reply.headers, len(reply.body), head=method == "HEAD")
        return reply.status, headers, reply.body

    def _count(self, status: int, seconds: float) -> None:
        assert self._duration is not None and self.api.metrics is not None
        child = self._requests.get(status)
        if child is None:
            child = self._requests[status] = self.api.metrics.requests.labels(
                INVOKE_ROUTE, str(status)
            )
        child.inc()
        self._duration.observe(seconds)


async def admit(
    api: Api, scope: MutableMapping[str, Any], authorization: str | None, name: str,
    version: str | None,
) -> tuple[FunctionVersion, str | None]:
    """(the function version to run, the caller's key id or None), or the request's error.

    With a key: `require(INVOKE)` then the `name` parameter's check, in FastAPI's order and
    words; the registry is read only once the key may invoke `name`, or, when it may not,
    to find `name` public (then the key's id is still the caller). Without a key: a token
    from the caller's address bucket, then the function must be public; a function that is
    not, one that does not exist and a name that could not exist all answer the same 401.
    Without auth (dev mode, --insecure), anyone may invoke anything.
    """
    auth = api.auth
    if auth is not None and authorization:
        key: ApiKey = await auth.authenticate(authorization)
        try:
            permit(key, INVOKE, name)
        except Forbidden:
            public = await public_version(api, name, version)
            if public is None:
                raise
            return public, key.id
        check_name(name)
        return await api.invoker.resolve(name, version), key.id
    if auth is not None:
        client = scope.get("client")
        await auth.admit_anonymous(client[0] if client else None)
        public = await public_version(api, name, version)
        if public is None:
            raise Unauthorized(NEEDS_KEY)
        return public, None
    check_name(name)
    return await api.invoker.resolve(name, version), None


async def public_version(api: Api, name: str, version: str | None) -> FunctionVersion | None:
    """The version to run for a caller without invoke rights, or None: the latest version
    must be public (so turning `public` off holds for every version at once), and so must
    a pinned one (a version deployed private is never exposed)."""
    if _NAME.fullmatch(name) is None:
        return None
    try:
        latest = await api.invoker.resolve(name, None)
    except FunctionNotFound:
        return None
    if not latest.config.public:
        return None
    if not version or version == LATEST:
        return latest
    pinned = await api.invoker.resolve(name, version)  # 404 is no secret: the function is public
    return pinned if pinned.config.public else None


def check_name(name: str) -> None:
    """The `name` parameter's pattern, as FastAPI words its failure (422)."""
    if _NAME.fullmatch(name) is None:
        msg = f"String should match pattern '{NAME_PATTERN}'"
        raise InvalidRequest(f"path.name: {msg}", errors=[{"loc": ["path", "name"], "msg": msg}])


async def invoke(name: str = NAME_PARAM, version: str | None = VERSION_PARAM) -> Response:
    """Run the function once; hold the caller until its reply or timeout + margin."""
    # Documentation only: `InvokeHandler` answers these requests before routing.
    raise AssertionError(".../invoke is served by InvokeHandler")


async def invoke_path(
    name: str = NAME_PARAM,
    path: str = Path(description="The sub-path the function sees (after `/invoke`), as sent"),
    version: str | None = VERSION_PARAM,
) -> Response:
    """Run the function once with a sub-path; hold the caller until its reply."""
    raise AssertionError(".../invoke/{path} is served by InvokeHandler")


class InvokeRoute(APIRoute):
    """An invoke route as routing sees it: every method of METHODS at its path, so other
    methods get 405 with `Allow`; none of those requests reaches it (FlotillaApp serves
    them first), and should something call the FastAPI stack directly, it is answered by
    `InvokeHandler` all the same. `documented` lists its routes of the OpenAPI document."""

    documented: list[APIRoute]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What Starlette's handle() calls once the method checked out (else: 405).
        self.app = self._serve

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        params = scope["path_params"]
        sub_path = "/" + params["path"] if "path" in params else ""
        await scope["app"].invoke_handler(
            scope, receive, send, params["name"], sub_path, counted=False
        )


PROBLEMS = openapi.problem_responses(
    FunctionNotFound, BodyTooLarge, InvalidRequest, FunctionFailed, Unavailable,
    FunctionTimeout, FunctionRateLimited, *AUTH_PROBLEMS,
)
GUEST_RESPONSE = {
    "description": "The function's own response: its status, headers and body "
    "(HEAD: the headers only)",
    "content": {"*/*": {"schema": {}}},
}
DESCRIPTION = (
    "The function sees the method, the sub-path (`/` when none; as sent, percent-encoding "
    "kept), the query without `version` (decoded, in order, repeats kept), the headers and "
    "the body (any method may carry one) through its `invocation` interface and request. "
    "Functions deployed with `public: true` need no API key (limited per client address)."
)
BODY_METHODS = ("POST", "PUT", "PATCH")


def _documented(path: str, endpoint: Any, method: str, operation_id: str) -> APIRoute:
    extra: dict[str, Any] = {"security": [{}]}  # alongside the key: public functions need none
    if method in BODY_METHODS:
        extra["requestBody"] = openapi.RAW_BODY
    return APIRoute(
        path, endpoint, methods=[method], summary=f"Invoke a function ({method})",
        description=DESCRIPTION, operation_id=operation_id, response_class=Response,
        responses={"default": GUEST_RESPONSE, **PROBLEMS}, openapi_extra=extra,
        dependencies=[require(INVOKE)],
    )


def _routes() -> list[InvokeRoute]:
    routes = []
    for path, endpoint, ids in (
        (INVOKE_ROUTE, invoke, "invoke"), (INVOKE_PATH_ROUTE, invoke_path, "invoke_path"),
    ):
        route = InvokeRoute(path, endpoint, methods=list(METHODS), include_in_schema=False,
                            response_class=Response)
        route.documented = [
            _documented(path, endpoint, method,
                        "invoke" if ids == "invoke" and method == "POST"
                        else f"{ids}_{method.lower()}")
            for method in METHODS
        ]
        routes.append(route)
    return routes


routes = _routes()
