"""The invoke route is served on the raw ASGI scope by one handler (`dispatcher/invoke.py`),
before FastAPI's stack; these tests hold it to the route's contract: the answers the
FastAPI route gave before (statuses, problem documents byte for byte, headers, hop-by-hop
filtering, one `flotilla-invocation-id`), the OpenAPI document's promises, and the
metrics every other route records, with and without a root path."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Match

from dispatcher.invoke import INVOKE_PATH_ROUTE, INVOKE_ROUTE, invoked_function
from flotilla.envelope import Envelope, Reply
from flotilla.outcomes import Outcome
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull
from tests.api.conftest import WASM, Api, echo

PATTERN = "^[a-z][a-z0-9-]{0,62}$"
NAME_ERROR = f"String should match pattern '{PATTERN}'"


def _teapot(e: Envelope) -> Reply:
    return Reply(
        e.invocation_id, e.correlation_id, Outcome.OK, status=418,
        headers=(("x-a", "1"), ("transfer-encoding", "chunked"), ("flotilla-invocation-id", "x"),
                 ("Connection", "close"), ("X-Multi", "a"), ("x-multi", "b")),
        body=b"tea",
    )


def _failed(outcome: str, error: str) -> Any:
    return lambda e: Reply(e.invocation_id, e.correlation_id, outcome, error=error)


def _explode(e: Envelope) -> Reply:
    raise RuntimeError("the transport broke in an unexpected way")


@dataclasses.dataclass
class Case:
    """One request and the answer the route gave before it had one handler."""

    fn: str = "echo"
    query: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b"hi"
    worker: Any = echo
    fail: Exception | None = None
    status: int = 200
    problem: Problem | None = None  # the document, without instance and invocation_id
    instance: bool = True  # problems only: whether the document names the request path
    answer: list[tuple[str, str]] | None = None  # ok answers: headers, "{digest}" filled in
    published: str | None = None  # the publish result counted, if any


@dataclasses.dataclass(frozen=True)
class Problem:
    """A problem document's members: the standard ones, then the extension members."""

    slug: str
    title: str
    status: int
    detail: str
    extra: dict[str, Any]

    def document(self, instance: str | None, invocation_id: str) -> dict[str, Any]:
        """The members in the order the document sends them."""
        out: dict[str, Any] = {"type": f"urn:flotilla:problem:{self.slug}", "title": self.title,
                               "status": self.status, "detail": self.detail}
        if instance is not None:
            out["instance"] = instance
        return {**out, **self.extra, "invocation_id": invocation_id}


def _problem(slug: str, title: str, status: int, detail: str, **extra: Any) -> Problem:
    return Problem(slug, title, status, detail, extra)


ECHOED = [("content-type", "application/octet-stream"), ("x-digest", "{digest}")]
CASES: dict[str, Case] = {
    "ok": Case(answer=[*ECHOED, ("content-length", "2")], published="confirmed"),
    "hop-by-hop and callback headers do not reach the guest": Case(
        query="?version=latest",
        headers={"x-a": "1", "Connection": "keep-alive", "flotilla-callback-url": "http://x",
                 "TE": "trailers", "X-Dup": "1"},
        answer=[*ECHOED, ("x-echo-x-a", "1"), ("x-echo-x-dup", "1"), ("content-length", "2")],
        published="confirmed",
    ),
    "the last version parameter counts": Case(
        query="?version=9&version=latest&other=1", answer=[*ECHOED, ("content-length", "2")],
        published="confirmed",
    ),
    "an empty version is the latest": Case(
        query="?version=", answer=[*ECHOED, ("content-length", "2")], published="confirmed",
    ),
    "empty body": Case(body=b"", answer=[*ECHOED, ("content-length", "0")], published="confirmed"),
    "guest status, hop-by-hop and invocation id headers dropped": Case(
        worker=_teapot, status=418,
        answer=[("x-a", "1"), ("x-multi", "a"), ("x-multi", "b"), ("content-length", "3")],
        published="confirmed",
    ),
    "pinned version that does not exist": Case(
        query="?version=9", status=404,
        problem=_problem("function-not-found", "Function not found", 404,
                         "function 'echo' has no version '9'", function="echo"),
    ),
    "unknown function": Case(
        fn="nope", status=404,
        problem=_problem("function-not-found", "Function not found", 404,
                         "function 'nope' is not deployed", function="nope"),
    ),
    "name that fails the pattern": Case(
        fn="Bad_Name", status=422,
        problem=_problem("invalid-request", "Invalid request", 422, f"path.name: {NAME_ERROR}",
                         errors=[{"loc": ["path", "name"], "msg": NAME_ERROR}]),
    ),
    "declared body over the limit": Case(
        body=b"x" * 2048, status=413,
        problem=_problem("body-too-large", "Request body too large", 413,
                         "body of 2048 bytes exceeds the function's limit of 1024"),
    ),
    "too many headers": Case(
        headers={f"x-h{i}": "v" for i in range(250)}, status=431,
        problem=_problem("headers-too-large", "Request headers too large", 431,
                         "at most 200 request headers of 65536 bytes in all"),
    ),
    "function error": Case(
        worker=_failed(Outcome.FUNCTION_ERROR, "boom"), status=502, published="confirmed",
        problem=_problem("function-failed", "Function failed", 502, "boom",
                         outcome="function_error"),
    ),
    "worker without the artifact": Case(
        worker=_failed(Outcome.NOT_FOUND, ""), status=503, published="confirmed",
        problem=_problem("unavailable", "Service unavailable", 503,
                         "the worker could not run the function", outcome="not_found"),
    ),
    "expired before it ran": Case(
        worker=_failed(Outcome.EXPIRED, "late"), status=504, published="confirmed",
        problem=_problem("function-timeout", "Function timed out", 504, "late",
                         outcome="expired"),
    ),
    "queue full": Case(
        fail=QueueFull("full"), status=503, published="rejected",
        problem=_problem("unavailable", "Service unavailable", 503, "full"),
    ),
    "broker down": Case(
        fail=BrokerUnavailable("down"), status=503, published="failed",
        problem=_problem("unavailable", "Service unavailable", 503, "down"),
    ),
    "no reply in time": Case(
        fail=CallTimeout("late"), status=504, published="confirmed",
        problem=_problem("function-timeout", "Function timed out", 504,
                         "no reply within 30000 ms (+500 ms margin)", outcome="timeout"),
    ),
    "unexpected error": Case(
        worker=_explode, status=500, instance=False,
        problem=_problem("internal", "Internal error", 500,
                         "the dispatcher failed unexpectedly; see its log"),
    ),
}


@pytest.fixture
async def deployed(api: Api) -> str:
    """Deploys `echo` (max_body_bytes 1024); its digest."""
    response = await api.client.put(
        "/v1/functions/echo",
        files={"component": ("fn.wasm", WASM, "application/wasm")},
        data={"config": json.dumps({"max_body_bytes": 1024})},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["digest"])


@pytest.mark.parametrize("root_path", ["", "/api"], ids=["no root path", "root path"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_answers_as_the_route_always_did(
    api: Api, deployed: str, case: str, root_path: str
) -> None:
    # Given a deployed function and a scripted worker
    c = CASES[case]
    api.transport.worker = c.worker
    api.transport.fail = c.fail
    app = api.client._transport.app  # type: ignore[attr-defined]
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path=root_path), base_url="http://test"
    )
    path = f"{root_path}/v1/functions/{c.fn}/invoke"
    # When the request is made
    async with client:
        response = await client.post(path + c.query, content=c.body, headers=c.headers)
    # Then it gets the status, headers and body it always got
    assert response.status_code == c.status, response.text
    ids = response.headers.get_list("flotilla-invocation-id")
    assert len(ids) == 1
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "flotilla-invocation-id"]
    if c.problem is None:
        assert c.answer is not None
        assert headers == [(k, v.format(digest=deployed)) for k, v in c.answer]
        assert response.content == (b"tea" if c.worker is _teapot else c.body)
    else:
        expected = c.problem.document(path if c.instance else None, ids[0])
        # byte for byte: same members in the same order
        assert response.content == json.dumps(expected, separators=(",", ":")).encode()
        assert dict(headers)["content-type"] == "application/problem+json"
        assert ("retry-after" in dict(headers)) == (c.status == 503)
    # and the answer is one the OpenAPI document lists, under the problem type it names
    operation = (await api.client.get("/openapi.json")).json()["paths"][INVOKE_ROUTE]["post"]
    documented = operation["responses"].get(str(c.status))
    if c.problem is None:
        assert documented is None or c.status == 200  # the guest's own status: `default`
    elif c.status not in (431, 500):  # answers every route may give
        assert documented is not None, c.status
        assert f"urn:flotilla:problem:{c.problem.slug}" in documented["description"]
    # and it was counted under the route template, and its publish by result
    metrics = (await api.client.get("/metrics")).text
    label = f'route="{INVOKE_ROUTE}",status="{c.status}"'
    assert f"flotilla_http_requests_total{{{label}}} 1.0" in metrics
    if c.published is not None:
        assert f'flotilla_publishes_total{{result="{c.published}"}} 1.0' in metrics
    else:
        assert "flotilla_publishes_total{" not in metrics
    assert "flotilla_callers_in_flight 0.0" in metrics


async def test_the_guest_gets_the_callers_headers_and_the_transports_reply_queue(
    api: Api, deployed: str
) -> None:
    # When a caller sends hop-by-hop and callback headers beside its own
    headers = {"X-Mine": "1", "Connection": "keep-alive", "flotilla-callback-url": "http://x"}
    response = await api.client.post("/v1/functions/echo/invoke", content=b"hi", headers=headers)
    assert response.status_code == 200
    # Then the envelope carries only the caller's own (and httpx's), with the function's
    # timeout plus the reply margin, addressed to the transport's reply queue
    envelope, timeout = api.transport.calls[-1]
    assert [k for k, _ in envelope.headers] == [
        "host", "accept", "accept-encoding", "user-agent", "x-mine"
    ]
    assert timeout == 30.5
    assert envelope.reply_to == api.transport.reply_queue_name
    assert envelope.invocation_id == envelope.correlation_id == response.headers[
        "flotilla-invocation-id"
    ]
    assert (envelope.function, envelope.digest, envelope.body) == ("echo", deployed, b"hi")


@pytest.mark.parametrize("path", ["/v1/functions/echo/invoke", "/v1/functions/echo/invoke/a/b"])
@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "CONNECT"])
async def test_other_methods_are_not_allowed(api: Api, method: str, path: str) -> None:
    response = await api.client.request(method, path)
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
    assert response.json()["invocation_id"] == response.headers["flotilla-invocation-id"]


async def test_a_post_routed_through_fastapi_gets_the_same_answer(
    api: Api, deployed: str
) -> None:
    # Given the app's FastAPI stack called directly (as a mount that skipped FlotillaApp would)
    app = api.client._transport.app  # type: ignore[attr-defined]

    async def stack(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack), base_url="http://test"
    ) as through_stack:
        answers = [
            await c.post(f"/v1/functions/{fn}/invoke", content=b"hi")
            for c in (api.client, through_stack) for fn in ("echo", "nope")
        ]
    # Then the one handler answered both ways alike, counted once each
    for direct, routed in zip(answers[:2], answers[2:], strict=True):
        assert (direct.status_code, direct.headers.get("content-type")) == (
            routed.status_code, routed.headers.get("content-type")
        )
        if routed.status_code != 200:
            assert routed.json()["invocation_id"] == routed.headers["flotilla-invocation-id"]
            assert {**direct.json(), "invocation_id": ""} == {**routed.json(), "invocation_id": ""}
    metrics = (await api.client.get("/metrics")).text
    assert f'flotilla_http_requests_total{{route="{INVOKE_ROUTE}",status="404"}} 2.0' in metrics


PATHS = [
    "/v1/functions/echo/invoke", "/v1/functions/a-b-1/invoke", "/v1/functions/Bad_Name/invoke",
    "/v1/functions//invoke", "/v1/functions/invoke", "/v1/functions/a/b/invoke",
    "/v1/functions/echo/invoke/", "/v1/functions/echo", "/v1/functions/echo/jobs", "/invoke",
    "/api/v1/functions/echo/invoke", "/apix/v1/functions/echo/invoke", "/api", "",
    "/v1/functions/echo/invoke/a", "/v1/functions/echo/invoke/a/b/", "/v1/functions/echo/invokes",
    "/v1/functions/echo/invoke//x", "/v1/functions/echo/invokex/y", "/v1/functions//invoke/x",
    "/api/v1/functions/echo/invoke/x", "/v1/functions/echo/jobs/invoke",
]


@pytest.mark.parametrize("root_path", ["", "/api", "/api/"])
@pytest.mark.parametrize("method", ["POST", "GET", "HEAD"])
def test_the_handler_takes_exactly_what_the_router_would_route_to_invoke(
    api: Api, root_path: str, method: str
) -> None:
    # Given the two routes as Starlette's router matches them
    app = api.client._transport.app  # type: ignore[attr-defined]
    base = next(r for r in app.routes if getattr(r, "path", "") == INVOKE_ROUTE)
    sub = next(r for r in app.routes if getattr(r, "path", "") == INVOKE_PATH_ROUTE)
    for path in PATHS:
        scope = {"type": "http", "method": method, "path": path, "root_path": root_path}
        routed = None
        for route in (base, sub):
            match, child = route.matches(scope)
            if match is Match.FULL:
                params = child["path_params"]
                routed = (params["name"], "/" + params["path"] if "path" in params else "")
                break
        # Then the handler serves a request exactly when the router would send it there,
        # with the same name and sub-path
        assert invoked_function(path, root_path) == routed, (path, root_path)


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", [
    "/v1/functions/echo/invoke?a=1&version=latest&a=2", "/v1/functions/echo/invoke/x/%7Ey%2Fz?q",
    "/v1/functions/nope/invoke/x",
])
async def test_every_method_answers_alike_on_both_paths(
    api: Api, deployed: str, method: str, target: str
) -> None:
    # Given the app's FastAPI stack called directly beside the fast path
    app = api.client._transport.app  # type: ignore[attr-defined]

    async def stack(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack), base_url="http://test"
    ) as through_stack:
        answers = [await c.request(method, target, content=b"hi")
                   for c in (api.client, through_stack)]
    # Then both answer the same, HEAD without a body
    direct, routed = answers
    strip = ("flotilla-invocation-id",)
    assert direct.status_code == routed.status_code
    assert [h for h in direct.headers.multi_items() if h[0] not in strip] == [
        h for h in routed.headers.multi_items() if h[0] not in strip]
    if direct.status_code == 404 and method == "HEAD":
        assert direct.content == routed.content == b""
        assert direct.headers["content-type"] == "application/problem+json"
    elif direct.status_code == 404:
        assert {**direct.json(), "invocation_id": ""} == {**routed.json(), "invocation_id": ""}
    else:
        assert direct.content == routed.content == (b"" if method == "HEAD" else b"hi")
        # and the guest got the method, the sub-path as sent and the query without version
        for envelope, _ in api.transport.calls[-2:]:
            assert envelope.method == method
            if "/x/" in target:
                assert (envelope.path, envelope.query) == ("/x/%7Ey%2Fz", (("q", ""),))
            else:
                assert (envelope.path, envelope.query) == ("/", (("a", "1"), ("a", "2")))
            assert envelope.caller is None  # auth is off here


async def test_a_plain_post_envelope_carries_no_web_fields(api: Api, deployed: str) -> None:
    response = await api.client.post("/v1/functions/echo/invoke?version=latest", content=b"x")
    assert response.status_code == 200
    envelope, _ = api.transport.calls[-1]
    assert (envelope.method, envelope.path, envelope.query, envelope.caller) == (
        "POST", "/", (), None)


async def test_the_document_lists_every_method_on_both_paths(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    for path, prefix in ((INVOKE_ROUTE, "invoke"),
                         ("/v1/functions/{name}/invoke/{path}", "invoke_path")):
        operations = schema["paths"][path]
        assert sorted(operations) == sorted(m.lower() for m in METHODS)
        for method, operation in operations.items():
            expected = "invoke" if (prefix, method) == ("invoke", "post") else f"{prefix}_{method}"
            assert operation["operationId"] == expected
            assert ("requestBody" in operation) == (method in ("post", "put", "patch"))
            assert "default" in operation["responses"]
            params = {p["name"] for p in operation["parameters"]}
            assert params == ({"name", "version", "path"} if prefix == "invoke_path"
                              else {"name", "version"})
