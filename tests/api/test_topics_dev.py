"""Dev mode's topics: the in-process worker's `topics.publish` reaches subscribers of the
stack's in-memory bus (the one `GET /v1/topics/{topic}/events` reads), and a public
function's web request reaches the guest, with no services at all."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from flotilla.dev.stack import build_dev
from flotilla.settings import DispatcherSettings
from flotilla.topics import TopicMessage
from tests.guests.build import probe_wasm  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


async def test_a_guest_publishes_to_dev_mode_subscribers(
    probe_wasm: Path, aws_endpoint_url: str,  # noqa: F811 - fixture
) -> None:
    environ = {"FLOTILLA_CACHE_DIR": os.environ["FLOTILLA_CACHE_DIR"]}
    settings = DispatcherSettings.from_env(environ, aws_endpoint_url=aws_endpoint_url)
    stack = build_dev(settings, loop=asyncio.get_running_loop(), concurrency=1)
    await stack.start()
    try:
        bus = stack.app.state.api.topics
        sub = await bus.subscribe("dev.news")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app),
                                     base_url="http://dev", timeout=120) as client:
            config = {"publish_topics": ["dev.*"], "public": True}
            resp = await client.put("/v1/functions/probe",
                                    files={"component": ("f", probe_wasm.read_bytes())},
                                    data={"config": json.dumps(config)})
            assert resp.status_code == 201, resp.text
            resp = await client.post("/v1/functions/probe/invoke", content=json.dumps(
                {"op": "batch", "ops": [
                    {"op": "topics.publish", "topic": "dev.news", "message": "hi"},
                    {"op": "topics.publish", "topic": "prod.news", "message": "no"},
                ]}))
            outcomes = resp.json()["result"]
            assert [o["ok"] or o["error"]["case"] for o in outcomes] == [True, "denied"]
            assert await sub.get(10) == TopicMessage("dev.news", b"hi")
            resp = await client.get("/v1/functions/probe/invoke/a%20b?k=v",
                                    headers={"x-probe-op": "invocation"})
            seen = resp.json()["result"]
            assert (seen["method"], seen["path"], seen["query"], seen["caller"]) == (
                "GET", "/a%20b", [["k", "v"]], None)
        await sub.close()
    finally:
        await stack.close()
