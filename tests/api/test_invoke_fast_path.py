"""The invoke route served before FastAPI's stack (`FlotillaApp`) answers exactly as the
FastAPI route it shortcuts: same statuses, problem documents and headers, same metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from dispatcher.app import FlotillaApp
from flotilla.envelope import Envelope, Reply
from flotilla.outcomes import Outcome
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull
from tests.api.conftest import WASM, Api

CASES: list[tuple[str, dict[str, Any]]] = [
    ("ok", {}),
    ("ok with guest headers and a version", {"query": "?version=latest", "headers": {"x-a": "1"}}),
    ("pinned version that does not exist", {"query": "?version=9"}),
    ("unknown function", {"fn": "nope"}),
    ("name that fails the pattern", {"fn": "Bad_Name"}),
    ("declared body over the limit", {"body": b"x" * 2048}),
    ("guest status and hop-by-hop headers", {"worker": "teapot"}),
    ("function error", {"worker": "error"}),
    ("queue full", {"fail": QueueFull("full")}),
    ("broker down", {"fail": BrokerUnavailable("down")}),
    ("no reply in time", {"fail": CallTimeout("late")}),
]


def _teapot(e: Envelope) -> Reply:
    return Reply(
        e.invocation_id, e.correlation_id, Outcome.OK, status=418,
        headers=(("x-a", "1"), ("transfer-encoding", "chunked"), ("flotilla-invocation-id", "x")),
        body=b"tea",
    )


def _error(e: Envelope) -> Reply:
    return Reply(e.invocation_id, e.correlation_id, Outcome.FUNCTION_ERROR, error="boom")


@pytest.mark.parametrize(("case", "request_"), CASES, ids=[c for c, _ in CASES])
async def test_fast_path_answers_as_fastapi_does(
    api: Api, case: str, request_: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployed function, and the same app reached without the shortcut
    deployed = await api.client.put(
        "/v1/functions/echo",
        files={"component": ("fn.wasm", WASM, "application/wasm")},
        data={"config": json.dumps({"max_body_bytes": 1024})},
    )
    assert deployed.status_code == 201, deployed.text
    app = api.client._transport.app  # type: ignore[attr-defined]
    shortcuts: list[str] = []
    serve = FlotillaApp._serve_invoke

    async def counted(self: FlotillaApp, scope: Any, receive: Any, send: Any, name: str) -> None:
        shortcuts.append(name)
        await serve(self, scope, receive, send, name)

    monkeypatch.setattr(FlotillaApp, "_serve_invoke", counted)

    async def through_fastapi(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    slow = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=through_fastapi), base_url="http://test"
    )
    workers = {"teapot": _teapot, "error": _error}
    if "worker" in request_:
        api.transport.worker = workers[request_["worker"]]
    api.transport.fail = request_.get("fail")
    url = f"/v1/functions/{request_.get('fn', 'echo')}/invoke{request_.get('query', '')}"
    kwargs = {"content": request_.get("body", b"hi"), "headers": request_.get("headers", {})}
    # When both answer the same request
    async with slow:
        fast_response = await api.client.post(url, **kwargs)
        slow_response = await slow.post(url, **kwargs)
    # Then only the first took the shortcut
    assert shortcuts == [request_.get("fn", "echo")]
    # and status, headers and body match, except each response's own invocation id
    assert fast_response.status_code == slow_response.status_code
    assert _comparable(fast_response) == _comparable(slow_response)
    assert len(fast_response.headers.get_list("flotilla-invocation-id")) == 1
    # and both requests were counted under the route template
    metrics = (await api.client.get("/metrics")).text
    label = f'route="/v1/functions/{{name}}/invoke",status="{fast_response.status_code}"'
    assert f"flotilla_http_requests_total{{{label}}} 2.0" in metrics


def _comparable(response: httpx.Response) -> tuple[list[tuple[str, str]], Any]:
    own_id = response.headers["flotilla-invocation-id"]
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "flotilla-invocation-id"]
    if response.headers.get("content-type") == "application/problem+json":
        body = response.json()
        assert body.pop("invocation_id") == own_id
        return headers, body
    return headers, response.content
