"""The whole web request, end to end: HTTP (uvicorn on a loopback port) -> dispatcher ->
RabbitMQ -> a real worker running the probe guest, with Redis and the moto S3 server.

What the guest's `invocation` interface reports for every method, with and without a
sub-path and a query; the caller (key id, none for public calls); HEAD answers; public
functions invokable without a key while everything else still needs one, limited per
client address; jobs and the Python client carrying a method, path and query.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from dispatcher.auth import DEPLOY, INVOKE
from flotilla.client import Client
from flotilla.errors import InvalidRequest
from tests.api.webfleet import WebFleet, web_fleet

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
INVOCATION = {"x-probe-op": "invocation"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    redis_url: str, amqp_url: str, aws_endpoint_url: str, probe_wasm: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[WebFleet]:
    async with web_fleet(
        redis_url=redis_url, amqp_url=amqp_url, aws_endpoint_url=aws_endpoint_url,
        probe_wasm=probe_wasm, cache_dir=str(tmp_path_factory.mktemp("worker-cache")),
        public_rate=0.01, public_burst=3,
    ) as fleet:
        yield fleet


def seen(resp: httpx.Response) -> dict[str, Any]:
    """What the probe's `invocation` op reported (without the time left)."""
    assert resp.status_code == 200, resp.text
    result = dict(resp.json()["result"])
    assert 0 < result.pop("remaining_ms") <= 10_000
    return result


@pytest.mark.parametrize("method", [m for m in METHODS if m != "HEAD"])
async def test_the_guest_sees_method_path_query_and_caller(fleet: WebFleet, method: str) -> None:
    # When a key calls a sub-path with a query (repeats, an escape, a blank, `version`)
    url = "/v1/functions/probe/invoke/orders/a%2Fb%20c/?x=1&y=%C3%A9+z&x=2&version=latest&e="
    resp = await fleet.client.request(method, url, headers=INVOCATION)
    # Then the guest saw all of it but `version`, the path as sent, the key's id
    assert seen(resp) == {
        "method": method, "path": "/orders/a%2Fb%20c/",
        "query": [["x", "1"], ["y", "é z"], ["x", "2"], ["e", ""]],
        "caller": "bootstrap", "kind": "sync", "attempt": 1,
    }
    # and without a sub-path or query, the path is "/"
    plain = await fleet.client.request(method, "/v1/functions/probe/invoke", headers=INVOCATION)
    assert seen(plain) == {"method": method, "path": "/", "query": [], "caller": "bootstrap",
                           "kind": "sync", "attempt": 1}


async def test_a_post_with_a_body_still_picks_its_op_from_the_body(fleet: WebFleet) -> None:
    key_id, key = await fleet.new_key(INVOKE, functions=("probe",))
    resp = await fleet.client.post("/v1/functions/probe/invoke/x", headers={"Authorization": key},
                                   content=json.dumps({"op": "invocation"}))
    assert seen(resp)["caller"] == key_id
    assert seen(resp)["path"] == "/x"


async def test_head_answers_the_headers_of_a_get_without_the_body(fleet: WebFleet) -> None:
    headers = {"x-probe-op": json.dumps({"op": "respond", "status": 203, "body": "twelve bytes",
                                         "headers": [["x-kind", "head"]]})}
    get = await fleet.client.get("/v1/functions/probe/invoke/p", headers=headers)
    head = await fleet.client.head("/v1/functions/probe/invoke/p", headers=headers)
    assert (get.status_code, get.content) == (203, b"twelve bytes")
    assert head.status_code == 203
    assert head.content == b""
    assert head.headers["x-kind"] == "head"
    assert head.headers["content-length"] == "12"
    # and the HEAD reached the guest as HEAD
    probe = await fleet.client.head("/v1/functions/probe/invoke",
                                    headers={"x-probe-op": json.dumps(
                                        {"op": "respond", "status": 204})})
    assert probe.status_code == 204


async def test_a_public_function_needs_no_key_for_invoke_only(fleet: WebFleet) -> None:
    xff = {"x-forwarded-for": "198.51.100.1"}
    async with fleet.anonymous() as anon:
        # Given no key: the public function answers every method, the caller is none
        for method in ("GET", "POST", "DELETE"):
            resp = await anon.request(method, "/v1/functions/web/invoke/hook?a=1",
                                      headers={**INVOCATION, **xff})
            assert seen(resp) == {"method": method, "path": "/hook", "query": [["a", "1"]],
                                  "caller": None, "kind": "sync", "attempt": 1}
        # and everything else still needs a key (its config, jobs, deploys, topics, keys)
        for i, (method, path) in enumerate([
            ("GET", "/v1/functions/web"), ("DELETE", "/v1/functions/web"),
            ("PUT", "/v1/functions/web"), ("POST", "/v1/functions/web/jobs"),
            ("GET", "/v1/functions"), ("GET", "/v1/keys"), ("GET", "/v1/topics/news.a/events"),
            ("POST", "/v1/functions/probe/invoke"),
        ]):
            resp = await anon.request(method, path, headers={"x-forwarded-for": f"198.51.100.{9 + i}"})
            assert resp.status_code == 401, (method, path, resp.text)
        # and a private function and a missing one look alike
        private = await anon.post("/v1/functions/probe/invoke",
                                  headers={"x-forwarded-for": "198.51.100.2"})
        missing = await anon.post("/v1/functions/ghost/invoke",
                                  headers={"x-forwarded-for": "198.51.100.3"})
        assert private.json()["detail"] == missing.json()["detail"]
    # With a key that may not invoke it (deploy only), it is public all the same
    key_id, key = await fleet.new_key(DEPLOY)
    resp = await fleet.client.get("/v1/functions/web/invoke", headers={
        **INVOCATION, "Authorization": key})
    assert seen(resp)["caller"] == key_id


async def test_calls_without_a_key_are_limited_per_client_address(fleet: WebFleet) -> None:
    # Given a burst of 3 per address (and a refill of one per 100 s)
    async with fleet.anonymous() as anon:
        first = {"x-forwarded-for": "203.0.113.7"}
        answers = [
            (await anon.get("/v1/functions/web/invoke", headers={**first, **INVOCATION}))
            for _ in range(4)
        ]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[-1].headers["content-type"] == "application/problem+json"
        assert int(answers[-1].headers["retry-after"]) >= 1
        # Then another address has its own bucket, and private functions count too
        second = {"x-forwarded-for": "203.0.113.8"}
        assert (await anon.get("/v1/functions/web/invoke", headers={**second, **INVOCATION})
                ).status_code == 200
        assert [(await anon.get("/v1/functions/probe/invoke", headers=second)).status_code
                for _ in range(3)] == [401, 401, 429]
        # and a key is not limited by its address
        resp = await fleet.client.get("/v1/functions/web/invoke", headers={**first, **INVOCATION})
        assert resp.status_code == 200


async def test_jobs_carry_method_path_and_query(fleet: WebFleet) -> None:
    resp = await fleet.client.post(
        "/v1/functions/probe/jobs?q=1&q=2&version=latest",
        headers={"flotilla-method": "put", "flotilla-path": "/things/7"},
        content=json.dumps({"op": "invocation"}),
    )
    assert resp.status_code == 202, resp.text
    done = (await fleet.client.get(resp.json()["status_url"], params={"wait": 20})).json()
    assert done["status"] == "succeeded", done
    result = json.loads(base64.b64decode(done["response"]["body"]))["result"]
    assert (result["method"], result["path"], result["query"], result["caller"],
            result["kind"]) == ("PUT", "/things/7", [["q", "1"], ["q", "2"]], "bootstrap", "job")
    bad = await fleet.client.post("/v1/functions/probe/jobs", headers={"flotilla-method": "TRACE"})
    assert bad.status_code == 422
    assert "flotilla-method" in bad.json()["detail"]


async def test_the_python_client_passes_method_path_and_query(fleet: WebFleet) -> None:
    async with Client(fleet.amqp_url, queue_prefix=fleet.prefix,
                      redis_url=fleet.redis_url) as client:
        response = await client.invoke("probe", headers=[("x-probe-op", "invocation")],
                                       method="PATCH", path="/p/q", query=[("a", "1"), ("a", "")])
        result = json.loads(response.body)["result"]
        assert (result["method"], result["path"], result["query"], result["caller"]) == (
            "PATCH", "/p/q", [["a", "1"], ["a", ""]], None)
        default = json.loads((await client.invoke(
            "probe", headers=[("x-probe-op", "invocation")])).body)["result"]
        assert (default["method"], default["path"]) == ("POST", "/")
        job_id = await client.submit("probe", json.dumps({"op": "invocation"}).encode(),
                                     method="GET", path="/j")
        with pytest.raises(InvalidRequest):
            await client.invoke("probe", method="TRACE")
        with pytest.raises(InvalidRequest):
            await client.invoke("probe", method="GET", path="no-slash")
    status = (await fleet.client.get(f"/v1/jobs/{job_id}", params={"wait": 20})).json()
    job = json.loads(base64.b64decode(status["response"]["body"]))["result"]
    assert (job["method"], job["path"], job["kind"]) == ("GET", "/j", "job")
