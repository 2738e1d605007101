"""A real fleet for the web-request and topics tests: the dispatcher (service.build, keys on)
served by uvicorn on a loopback port, a worker (real sandbox) in this process, RabbitMQ,
Redis and the moto S3 server; plus a Server-Sent Events reader for real HTTP streams."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import redis.asyncio as aioredis
import uvicorn

from dispatcher import service
from flotilla.settings import DispatcherSettings, WorkerSettings
from flotilla.topology import Topology
from tests.services import lane_functions
from worker.service import WorkerService

ADMIN_KEY = "webfleet-bootstrap-admin-key"
PUBLISH_TOPICS = ["news.*", "bulk.#", "exact.topic"]


@dataclass
class WebFleet:
    """What the tests reach: an HTTP client with the admin key, the server's URL and port,
    the dispatcher's collaborators (its topic bus), and the settings in use."""

    client: httpx.AsyncClient
    base_url: str
    port: int
    prefix: str
    dispatcher: service.Dispatcher
    amqp_url: str
    redis_url: str

    def admin(self) -> dict[str, str]:
        """The Authorization header of the bootstrap admin key."""
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def anonymous(self) -> httpx.AsyncClient:
        """A client sending no API key (close it)."""
        return httpx.AsyncClient(base_url=self.base_url, timeout=30)

    async def new_key(self, *scopes: str, functions: tuple[str, ...] = ()) -> tuple[str, str]:
        """(key id, Authorization header value) of a new key."""
        auth = self.dispatcher.auth
        assert auth is not None
        record, key = await auth.keys.create("test", scopes, functions=functions, limit=None)
        return record.id, f"Bearer {key}"


def listening_socket() -> socket.socket:
    """A bound, listening loopback socket: clients may connect before uvicorn serves it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@asynccontextmanager
async def web_fleet(
    *, redis_url: str, amqp_url: str, aws_endpoint_url: str, probe_wasm: Path,
    cache_dir: str, public_rate: float = 1000.0, public_burst: int = 1000,
    **options: Any,
) -> AsyncIterator[WebFleet]:
    """The fleet with `probe` (private) and `web` (the probe, public) deployed, both allowed
    to publish to PUBLISH_TOPICS; `options` override the dispatcher's ApiOptions."""
    prefix = f"web{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "amqp_url": amqp_url, "redis_url": redis_url, "aws_endpoint_url": aws_endpoint_url,
        "artifact_bucket": prefix, "artifact_key": "web-key", "queue_prefix": prefix,
    }
    settings = DispatcherSettings(**common, reply_margin_ms=1000, job_ttl_s=300,
                                  admin_key=ADMIN_KEY, public_rate=public_rate,
                                  public_burst=public_burst)
    dispatcher = service.build(settings)
    api = dispatcher.app.state.api
    dispatcher.app.state.api = dataclasses.replace(
        api, options=dataclasses.replace(api.options, **options)
    )
    await dispatcher.start()
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = service.http_server(
        uvicorn.Config(dispatcher.app, log_level="warning", lifespan="off",
                       http=service.http_protocol(), proxy_headers=True,
                       forwarded_allow_ips="127.0.0.1"),
        dispatcher.topics,
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    worker = WorkerService(WorkerSettings(**common, cache_dir=cache_dir, concurrency=2,
                                          drain_timeout_s=5))
    working = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 30)
    base_url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(base_url=base_url, timeout=30,
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    try:
        for name, public in (("probe", False), ("web", True)):
            config = {"timeout_ms": 10_000, "public": public, "publish_topics": PUBLISH_TOPICS}
            resp = await client.put(f"/v1/functions/{name}",
                                    files={"component": ("f.wasm", probe_wasm.read_bytes())},
                                    data={"config": json.dumps(config)})
            assert resp.status_code == 201, resp.text
        yield WebFleet(client, base_url, port, prefix, dispatcher, amqp_url, redis_url)
    finally:
        await client.aclose()
        worker.stop()
        await asyncio.wait_for(working, 30)
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        await dispatcher.close()
        sock.close()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await Topology(prefix=prefix).delete(
                await connection.channel(), await lane_functions(redis_url, prefix))
        redis = aioredis.from_url(redis_url)
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


@dataclass(frozen=True)
class Event:
    """One item of an event stream: an event (name, data) or a comment (name "")."""

    name: str
    data: str


class EventReader:
    """Reads Server-Sent Events from a streaming httpx response, one item at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 20) -> Event | None:
        """The next event or comment; None at the end of the stream."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Event | None:
        name, data = "message", []
        async for line in self._lines:
            if line.startswith(":"):
                return Event("", line[1:].strip())
            if line == "":
                if data:
                    return Event(name, "\n".join(data))
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        return None

    async def events(self, n: int, timeout: float = 20) -> list[Event]:
        """The next `n` events, comments skipped."""
        out: list[Event] = []
        while len(out) < n:
            item = await self.next(timeout)
            assert item is not None, f"the stream ended after {out}"
            if item.name:
                out.append(item)
        return out


@asynccontextmanager
async def subscribed(
    client: httpx.AsyncClient, topic: str, headers: dict[str, str] | None = None,
) -> AsyncIterator[EventReader]:
    """An event stream of `topic`, returned once its `: subscribed` comment arrived."""
    async with client.stream("GET", f"/v1/topics/{topic}/events", headers=headers) as resp:
        assert resp.status_code == 200, (await resp.aread()).decode()
        assert resp.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(resp)
        first = await reader.next()
        assert first == Event("", f"subscribed to {topic}"), first
        yield reader
