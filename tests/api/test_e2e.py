"""End to end: HTTP API -> real RabbitMQ -> a real worker (sandbox) -> reply, with real Redis
and the moto S3 server. One dispatcher and one worker per module (compiles are cached)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import boto3
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import uvicorn

from dispatcher import service
from flotilla.settings import DispatcherSettings, WorkerSettings
from flotilla.topology import Topology
from tests.services import free_port, lane_functions
from worker.service import WorkerService

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]
PROBE_TIMEOUT_MS = 1500
ADMIN_KEY = "e2e-bootstrap-admin-key"  # the dispatcher refuses to serve without a key


@dataclass
class Fleet:
    client: httpx.AsyncClient
    prefix: str
    s3: Any
    callbacks: list[dict[str, Any]]
    callback_event: asyncio.Event
    callback_url: str


def callback_app(received: list[dict[str, Any]], event: asyncio.Event) -> Any:
    """A minimal ASGI app recording POSTed JSON bodies."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        document = json.loads(body)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        document["header_job_id"] = headers.get("flotilla-job-id")
        received.append(document)
        event.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    redis_url: str, amqp_url: str, aws_endpoint_url: str, echo_wasm: Path, probe_wasm: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    received: list[dict[str, Any]] = []
    event = asyncio.Event()
    port = free_port()
    hook = uvicorn.Server(uvicorn.Config(callback_app(received, event), host="127.0.0.1",
                                         port=port, log_level="warning", lifespan="off"))
    hook_task = asyncio.create_task(hook.serve())
    common: dict[str, Any] = {
        "amqp_url": amqp_url, "redis_url": redis_url, "aws_endpoint_url": aws_endpoint_url,
        "artifact_bucket": prefix, "artifact_key": "e2e-key", "queue_prefix": prefix,
    }
    # The dispatcher compiles with the shared cache (fast re-runs); the worker gets an empty
    # one, so it must fetch (and verify) artifacts from S3.
    settings = DispatcherSettings(**common, reply_margin_ms=1000, job_ttl_s=300,
                                  callback_hosts=f"127.0.0.1:{port}", admin_key=ADMIN_KEY)
    dispatcher = service.build(settings)
    await dispatcher.start()
    worker = WorkerService(WorkerSettings(
        **common, cache_dir=str(tmp_path_factory.mktemp("worker-cache")), concurrency=2,
        drain_timeout_s=5,
    ))
    worker_task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 30)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=dispatcher.app),
                               base_url="http://dispatcher", timeout=30,
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    for name, wasm, config in (
        ("echo", echo_wasm, {}),
        ("probe", probe_wasm, {"timeout_ms": PROBE_TIMEOUT_MS, "max_body_bytes": 4096,
                               "env": {"V": "1"}}),
        ("probe", probe_wasm, {"timeout_ms": PROBE_TIMEOUT_MS, "max_body_bytes": 4096,
                               "env": {"V": "2"}}),
    ):
        resp = await client.put(f"/v1/functions/{name}",
                                files={"component": ("f.wasm", wasm.read_bytes())},
                                data={"config": json.dumps(config)})
        assert resp.status_code == 201, resp.text
    s3 = boto3.client("s3", endpoint_url=aws_endpoint_url, region_name="us-east-1")
    try:
        yield Fleet(client, prefix, s3, received, event, f"http://127.0.0.1:{port}/hook")
    finally:
        await client.aclose()
        worker.stop()
        await asyncio.wait_for(worker_task, 30)
        await dispatcher.close()
        hook.should_exit = True
        await hook_task
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await Topology(prefix=prefix).delete(
                await connection.channel(), await lane_functions(redis_url, prefix))
        redis = aioredis.from_url(redis_url)
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def probe(fleet: Fleet, op: dict[str, Any], **params: str) -> httpx.Response:
    return await fleet.client.post("/v1/functions/probe/invoke", content=json.dumps(op),
                                   params=params)


async def test_sync_invoke_round_trip(fleet: Fleet) -> None:
    resp = await fleet.client.post("/v1/functions/echo/invoke", content=b"hello fleet",
                                   headers={"x-trace": "t1"})
    assert resp.status_code == 200
    assert resp.content == b"hello fleet"
    assert resp.headers["x-trace"] == "t1"
    assert len(resp.headers["flotilla-invocation-id"]) == 32


async def test_version_pinning(fleet: Fleet) -> None:
    latest = await probe(fleet, {"op": "env"})
    assert latest.json()["result"]["V"] == "2"
    pinned = await probe(fleet, {"op": "env"}, version="1")
    assert pinned.json()["result"]["V"] == "1"
    assert pinned.json()["result"]["FLOTILLA_INVOCATION_ID"] == pinned.headers[
        "flotilla-invocation-id"]


async def test_guest_err_and_trap_are_502(fleet: Fleet) -> None:
    err = await probe(fleet, {"op": "err", "message": "nope"})
    assert err.status_code == 502
    assert err.json()["outcome"] == "function_error" and "nope" in err.json()["detail"]
    trap = await probe(fleet, {"op": "raise"})
    assert trap.status_code == 502 and trap.json()["outcome"] == "trap"


async def test_timeout_is_504(fleet: Fleet) -> None:
    resp = await probe(fleet, {"op": "loop"})
    assert resp.status_code == 504
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["outcome"] == "timeout"


async def test_body_limit_and_unknown_function(fleet: Fleet) -> None:
    big = await fleet.client.post("/v1/functions/probe/invoke", content=b"x" * 4097)
    assert big.status_code == 413
    missing = await fleet.client.post("/v1/functions/missing/invoke")
    assert missing.status_code == 404


async def test_job_with_polling_and_callback(fleet: Fleet) -> None:
    submitted = await fleet.client.post(
        "/v1/functions/echo/jobs", content=b"async work",
        headers={"flotilla-callback-url": fleet.callback_url},
    )
    assert submitted.status_code == 202
    job = submitted.json()
    done = (await fleet.client.get(job["status_url"], params={"wait": 20})).json()
    assert done["status"] == "succeeded"
    assert base64.b64decode(done["response"]["body"]) == b"async work"
    await asyncio.wait_for(fleet.callback_event.wait(), 10)
    assert [c["job_id"] for c in fleet.callbacks] == [job["job_id"]]
    assert fleet.callbacks[0]["header_job_id"] == job["job_id"]
    assert fleet.callbacks[0]["response"] == done["response"]


async def test_failed_job(fleet: Fleet) -> None:
    job = (await fleet.client.post("/v1/functions/probe/jobs",
                                   content=json.dumps({"op": "err", "message": "bad"}))).json()
    done = (await fleet.client.get(job["status_url"], params={"wait": 20})).json()
    assert done["status"] == "failed"
    assert done["error"]["outcome"] == "function_error"


async def test_worker_refuses_tampered_artifact(fleet: Fleet, echo_wasm: Path) -> None:
    # A fresh version (unique env), so no cache anywhere holds it yet.
    config = {"env": {"RUN": uuid.uuid4().hex}}
    resp = await fleet.client.put("/v1/functions/tampered",
                                  files={"component": ("f.wasm", echo_wasm.read_bytes())},
                                  data={"config": json.dumps(config)})
    key = f"artifacts/{resp.json()['artifact_sha256']}"
    head = fleet.s3.head_object(Bucket=fleet.prefix, Key=key)
    original = fleet.s3.get_object(Bucket=fleet.prefix, Key=key)["Body"].read()
    evil = original[:-1] + bytes([original[-1] ^ 1])
    fleet.s3.put_object(Bucket=fleet.prefix, Key=key, Body=evil, Metadata=head["Metadata"])
    refused = await fleet.client.post("/v1/functions/tampered/invoke", content=b"x")
    assert refused.status_code == 503
    assert refused.json()["outcome"] == "internal"
    assert "HMAC" in refused.json()["detail"] or "content address" in refused.json()["detail"]


async def test_default_6_mib_body_of_every_byte_value_round_trips(fleet: Fleet) -> None:
    # The default max_body_bytes, through HTTP, RabbitMQ, the worker and a Python guest (the
    # body crosses the sandbox as one byte string: flotilla/sandbox/rawabi.py).
    body = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    resp = await fleet.client.post("/v1/functions/echo/invoke", content=body)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.content == body
    over = await fleet.client.post("/v1/functions/echo/invoke", content=body + b"x")
    assert over.status_code == 413
