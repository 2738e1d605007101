"""The HTTP API over ASGI against real Redis and moto S3, with a scripted fake transport."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from flotilla.envelope import Reply
from flotilla.jobs import new_id
from flotilla.outcomes import Outcome
from flotilla.transport import BrokerUnavailable, CallTimeout, QueueFull
from tests.api.conftest import WASM, Api

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


async def deploy(api: Api, fn: str = "echo", wasm: bytes = WASM, **config):
    return await api.client.put(
        f"/v1/functions/{fn}",
        files={"component": ("fn.wasm", wasm, "application/wasm")},
        data={"config": json.dumps(config)},
    )


def assert_problem(resp, status: int, slug: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.headers["flotilla-invocation-id"]
    body = resp.json()
    assert body["type"] == f"urn:flotilla:problem:{slug}"
    assert body["status"] == status
    return body


async def test_deploy_is_versioned_and_idempotent(api: Api) -> None:
    first = await deploy(api, timeout_ms=1000)
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert v1["created"] is True and v1["number"] == 1
    again = await deploy(api, timeout_ms=1000)
    assert again.status_code == 200
    assert again.json()["digest"] == v1["digest"]
    second = await deploy(api, timeout_ms=2000)
    assert second.json()["number"] == 2

    # Both objects landed in S3 and the artifact verifies.
    assert api.artifacts.get_artifact(v1["artifact_sha256"], "eng") == b"native:" + WASM
    assert api.artifacts.get_component(v1["wasm_sha256"]) == WASM

    got = (await api.client.get("/v1/functions/echo")).json()
    assert got["latest"] == second.json()["digest"]
    assert got["config"]["timeout_ms"] == 2000
    assert [v["number"] for v in got["versions"]] == [1, 2]
    listed = (await api.client.get("/v1/functions")).json()["functions"]
    assert [(f["name"], f["version_count"]) for f in listed] == [("echo", 2)]

    deleted = await api.client.delete("/v1/functions/echo")
    assert deleted.status_code == 204
    assert_problem(await api.client.get("/v1/functions/echo"), 404, "function-not-found")
    assert_problem(await api.client.delete("/v1/functions/echo"), 404, "function-not-found")


@pytest.mark.parametrize(
    "config, field",
    [({"timeout_ms": 0}, "timeout_ms"), ({"bogus": 1}, "bogus"), ({"name": "other"}, "name")],
)
async def test_invalid_config_is_422(api: Api, config: dict, field: str) -> None:
    body = assert_problem(await deploy(api, **config), 422, "invalid-config")
    assert body["field"] == field


async def test_invalid_component_and_missing_parts(api: Api) -> None:
    body = assert_problem(await deploy(api, wasm=b"not wasm"), 422, "invalid-component")
    assert "magic" in body["detail"]
    resp = await api.client.put("/v1/functions/echo", data={"config": "{}"})
    assert_problem(resp, 422, "invalid-request")
    resp = await api.client.put(
        "/v1/functions/echo",
        files={"component": ("fn.wasm", WASM)},
        data={"config": "{not json"},
    )
    assert_problem(resp, 422, "invalid-config")
    assert_problem(await deploy(api, fn="Bad_Name"), 422, "invalid-request")


async def test_invoke_passes_request_and_response_through(api: Api) -> None:
    await deploy(api, timeout_ms=1500)
    resp = await api.client.post(
        "/v1/functions/echo/invoke", content=b"hello", headers={"x-trace": "abc"}
    )
    assert resp.status_code == 200
    assert resp.content == b"hello"
    assert resp.headers["x-echo-x-trace"] == "abc"
    invocation_id = resp.headers["flotilla-invocation-id"]
    envelope, timeout = api.transport.calls[-1]
    assert envelope.invocation_id == invocation_id
    assert timeout == pytest.approx(2.0)  # function timeout + reply margin


async def test_guest_status_and_headers_are_returned(api: Api) -> None:
    await deploy(api)
    api.transport.worker = lambda e: Reply(
        e.invocation_id, e.correlation_id, Outcome.OK, status=418,
        headers=(("x-a", "1"), ("x-a", "2"), ("transfer-encoding", "chunked")), body=b"tea",
    )
    resp = await api.client.post("/v1/functions/echo/invoke")
    assert resp.status_code == 418
    assert resp.headers.get_list("x-a") == ["1", "2"]
    assert resp.content == b"tea"


async def test_version_pinning(api: Api) -> None:
    v1 = (await deploy(api, env={"V": "1"})).json()
    v2 = (await deploy(api, env={"V": "2"})).json()
    latest = await api.client.post("/v1/functions/echo/invoke")
    assert latest.headers["x-digest"] == v2["digest"]
    for selector in (v1["digest"], v1["digest"][:10], "1"):
        pinned = await api.client.post(f"/v1/functions/echo/invoke?version={selector}")
        assert pinned.headers["x-digest"] == v1["digest"]
    missing = await api.client.post("/v1/functions/echo/invoke?version=9")
    assert_problem(missing, 404, "function-not-found")


async def test_unknown_function_is_404(api: Api) -> None:
    assert_problem(await api.client.post("/v1/functions/nope/invoke"), 404, "function-not-found")
    assert_problem(await api.client.post("/v1/functions/nope/jobs"), 404, "function-not-found")


async def test_body_over_limit_is_413(api: Api) -> None:
    await deploy(api, max_body_bytes=4)
    assert (await api.client.post("/v1/functions/echo/invoke", content=b"1234")).status_code == 200
    resp = await api.client.post("/v1/functions/echo/invoke", content=b"12345")
    assert_problem(resp, 413, "body-too-large")

    async def chunks():
        yield b"123"
        yield b"45"

    streamed = await api.client.post("/v1/functions/echo/invoke", content=chunks())
    assert_problem(streamed, 413, "body-too-large")
    assert_problem(await api.client.post("/v1/functions/echo/jobs", content=b"12345"), 413,
                   "body-too-large")


@pytest.mark.parametrize("outcome", [Outcome.FUNCTION_ERROR, Outcome.TRAP, "memory_limit", "bad_response"])
async def test_guest_failures_are_502(api: Api, outcome: str) -> None:
    await deploy(api)
    api.transport.worker = lambda e: Reply(e.invocation_id, e.correlation_id, outcome,
                                           error="boom")
    body = assert_problem(await api.client.post("/v1/functions/echo/invoke"), 502,
                          "function-failed")
    assert body["outcome"] == outcome and body["detail"] == "boom"


async def test_timeouts_are_504(api: Api) -> None:
    await deploy(api)
    api.transport.worker = lambda e: Reply(e.invocation_id, e.correlation_id, Outcome.TIMEOUT,
                                           error="deadline")
    body = assert_problem(await api.client.post("/v1/functions/echo/invoke"), 504,
                          "function-timeout")
    assert body["outcome"] == Outcome.TIMEOUT
    api.transport.fail = CallTimeout("no reply")
    assert_problem(await api.client.post("/v1/functions/echo/invoke"), 504, "function-timeout")


@pytest.mark.parametrize("error", [QueueFull("full"), BrokerUnavailable("down")])
async def test_broker_trouble_is_503_with_retry_after(api: Api, error: Exception) -> None:
    await deploy(api)
    api.transport.fail = error
    for path in ("/v1/functions/echo/invoke", "/v1/functions/echo/jobs"):
        resp = await api.client.post(path)
        assert_problem(resp, 503, "unavailable")
        assert int(resp.headers["retry-after"]) >= 1
    # The job that could not be queued is not reported as queued.
    job_id = resp.headers["flotilla-invocation-id"]
    assert_problem(await api.client.get(f"/v1/jobs/{job_id}"), 404, "job-not-found")


async def test_validation_errors_are_problems(api: Api) -> None:
    resp = await api.client.get(f"/v1/jobs/{new_id()}?wait=abc")
    body = assert_problem(resp, 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["query", "wait"]
    resp = await api.client.get("/no/such/route")
    assert resp.status_code == 404 and resp.headers["content-type"] == PROBLEM


async def test_job_lifecycle_with_wait_and_duplicate_results(api: Api) -> None:
    await deploy(api)
    submitted = await api.client.post("/v1/functions/echo/jobs", content=b"work")
    assert submitted.status_code == 202
    job = submitted.json()
    assert job["status_url"] == f"/v1/jobs/{job['job_id']}"
    envelope = api.transport.submitted[-1]
    assert envelope.invocation_id == job["job_id"] and envelope.reply_mode == "job"
    assert (await api.client.get(job["status_url"])).json()["status"] == "queued"

    # Given a long-polling reader, when the result arrives, then it wakes up at once.
    waiter = asyncio.create_task(api.client.get(job["status_url"] + "?wait=10"))
    await asyncio.sleep(0.2)  # let the reader subscribe; it must not return before the result
    assert not waiter.done()
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = Reply(job["job_id"], job["job_id"], Outcome.OK, status=201, headers=(("a", "b"),), body=b"r1")
    await api.recorder.handle(reply)
    done = (await asyncio.wait_for(waiter, 5)).json()
    assert loop.time() - started < 2
    assert done["status"] == "succeeded"
    assert done["response"] == {
        "status": 201, "headers": [["a", "b"]], "body": base64.b64encode(b"r1").decode()
    }

    # A duplicate result (redelivery) is ignored: the first one stays.
    await api.recorder.handle(Reply(job["job_id"], job["job_id"], Outcome.FUNCTION_ERROR, error="late"))
    again = (await api.client.get(job["status_url"])).json()
    assert again["status"] == "succeeded" and again["response"]["body"] == done["response"]["body"]


async def test_failed_job_reports_error(api: Api) -> None:
    await deploy(api)
    job = (await api.client.post("/v1/functions/echo/jobs")).json()
    await api.recorder.handle(Reply(job["job_id"], job["job_id"], Outcome.TRAP, error="unreachable"))
    got = (await api.client.get(job["status_url"] + "?wait=1")).json()
    assert got["status"] == "failed"
    assert got["error"] == {"outcome": Outcome.TRAP, "message": "unreachable"}


async def test_wait_times_out_with_the_current_status(api: Api) -> None:
    await deploy(api)
    job = (await api.client.post("/v1/functions/echo/jobs")).json()
    got = await api.client.get(job["status_url"] + "?wait=0.3")
    assert got.json()["status"] == "queued"


async def test_unknown_and_expired_jobs(api: Api) -> None:
    assert_problem(await api.client.get(f"/v1/jobs/{new_id()}"), 404, "job-not-found")
    assert_problem(await api.client.get("/v1/jobs/whatever?wait=1"), 404, "job-not-found")
    old = new_id(now_ms=1_000_000)
    assert (await api.client.get(f"/v1/jobs/{old}")).json()["status"] == "expired"


async def test_callback_is_posted_once(api: Api) -> None:
    await deploy(api)
    url = "https://hooks.example.com/done"
    job = (await api.client.post("/v1/functions/echo/jobs", params={"callback_url": url})).json()
    job2 = (
        await api.client.post("/v1/functions/echo/jobs", headers={"flotilla-callback-url": url})
    ).json()
    assert "flotilla-callback-url" not in dict(api.transport.submitted[-1].headers)
    for j in (job, job2):
        reply = Reply(j["job_id"], j["job_id"], Outcome.OK, status=200, body=b"x")
        await api.recorder.handle(reply)
        await api.recorder.handle(reply)  # duplicate: no second callback
    await api.recorder.drain()
    assert [(u, d["job_id"], d["status"]) for u, d in api.posted] == [
        (url, job["job_id"], "succeeded"), (url, job2["job_id"], "succeeded")
    ]


@pytest.mark.parametrize(
    "url", ["https://evil.example.com/x", "ftp://hooks.example.com/", "not a url"]
)
async def test_callback_host_must_be_allowed(api: Api, url: str) -> None:
    await deploy(api)
    resp = await api.client.post("/v1/functions/echo/jobs", params={"callback_url": url})
    assert_problem(resp, 403, "callback-not-allowed")
    assert api.transport.submitted == []


async def test_openapi_documents_problem_responses(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    invoke = schema["paths"]["/v1/functions/{name}/invoke"]["post"]["responses"]
    for status in ("404", "413", "422", "502", "503", "504"):
        assert list(invoke[status]["content"]) == [PROBLEM]
    assert "HTTPValidationError" not in json.dumps(schema)


async def test_method_not_allowed_lists_every_method(api: Api) -> None:
    resp = await api.client.request("PATCH", "/v1/functions/echo")
    assert resp.status_code == 405 and resp.headers["content-type"] == PROBLEM
    assert resp.headers["allow"] == "DELETE, GET, PUT"


async def test_deploy_body_is_documented_as_multipart_with_config_schema(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    put = schema["paths"]["/v1/functions/{name}"]["put"]
    form = put["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["component"]
    assert form["schema"]["properties"]["config"]["additionalProperties"] is False
    assert "GetFunction" in put["responses"]["201"]["links"]


async def test_metrics_count_requests_by_route_template(api: Api) -> None:
    await deploy(api)
    await api.client.post("/v1/functions/echo/invoke", content=b"x")
    await api.client.post("/v1/functions/nope/invoke")
    text = (await api.client.get("/metrics")).text
    route = 'route="/v1/functions/{name}/invoke"'
    assert f'flotilla_http_requests_total{{{route},status="200"}} 1.0' in text
    assert f'flotilla_http_requests_total{{{route},status="404"}} 1.0' in text
    assert 'flotilla_publishes_total{result="confirmed"} 1.0' in text
    assert "flotilla_reply_latency_seconds_count 1.0" in text


async def test_artifact_store_down_is_503(redis_url: str, unique: str) -> None:
    import boto3
    import httpx
    import redis.asyncio as aioredis
    from botocore.config import Config

    from dispatcher.app import create_app
    from flotilla.artifacts import ArtifactStore, S3Backend
    from flotilla.jobs import JobStore
    from flotilla.registry import Deployer, Registry
    from tests.api.conftest import FakeTransport, fake_compile

    s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                      config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    redis = aioredis.from_url(redis_url)
    registry = Registry(redis, prefix=unique)
    app = create_app(
        registry=registry,
        deployer=Deployer(registry, ArtifactStore(S3Backend(s3, unique), "k"),
                          compile=fake_compile, engine_fingerprint="eng"),
        jobs=JobStore(redis, prefix=unique), transport=FakeTransport(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        resp = await client.put("/v1/functions/echo", files={"component": ("f.wasm", WASM)})
    await redis.aclose()
    body = assert_problem(resp, 503, "unavailable")
    assert "artifact store" in body["detail"]
    assert resp.headers["retry-after"] == "1"


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}


async def test_not_ready_and_503_when_redis_is_down(tmp_path) -> None:
    import httpx
    import redis.asyncio as aioredis

    from dispatcher.app import create_app
    from flotilla.artifacts import ArtifactStore, LocalBackend
    from flotilla.jobs import JobStore
    from flotilla.registry import Deployer, Registry
    from tests.api.conftest import FakeTransport, fake_compile

    redis = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    registry = Registry(redis, prefix="down")
    app = create_app(
        registry=registry,
        deployer=Deployer(registry, ArtifactStore(LocalBackend(tmp_path), "k"),
                          compile=fake_compile, engine_fingerprint="eng"),
        jobs=JobStore(redis, prefix="down"), transport=FakeTransport(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert_problem(await client.get("/readyz"), 503, "unavailable")
        assert_problem(await client.post("/v1/functions/echo/invoke"), 503, "unavailable")
    await redis.aclose()
