"""The event stream's own lifecycle over real HTTP (uvicorn on a loopback socket) with the
in-memory bus: a shutting-down server ends its streams with `event: unavailable` (uvicorn
would otherwise wait for them forever), a client that disconnects ends its subscription, and
a cut-off subscriber that never reads is disconnected once the grace period is over."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import httpx
import uvicorn

from dispatcher import service
from dispatcher.app import ApiOptions, create_app
from flotilla.artifacts import ArtifactStore, LocalBackend
from flotilla.jobs import JobStore
from flotilla.registry import Deployer, Registry
from flotilla.topics import MemoryTopics, SubscriptionOverflow
from tests.api.conftest import FakeTransport, fake_compile
from tests.api.webfleet import EventReader, listening_socket


@asynccontextmanager
async def served(bus: MemoryTopics, **options: Any) -> AsyncIterator[tuple[Any, int, asyncio.Event]]:
    """(the server, its port, set when an event stream's ASGI call returned)."""
    redis = fakeredis.FakeAsyncRedis()
    registry = Registry(redis, prefix="s")
    with tempfile.TemporaryDirectory() as root:
        app = create_app(
            registry=registry,
            deployer=Deployer(registry, ArtifactStore(LocalBackend(root), "k"),
                              compile=fake_compile, engine_fingerprint="e"),
            jobs=JobStore(redis, prefix="s", ttl_s=60), transport=FakeTransport(),
            options=ApiOptions(**options), topics=bus,
        )
        finished = asyncio.Event()

        async def watched(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            finally:
                if scope["type"] == "http" and scope["path"].endswith("/events"):
                    finished.set()

        sock = listening_socket()
        server = service.http_server(
            uvicorn.Config(watched, log_level="critical", lifespan="off"), bus
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield server, sock.getsockname()[1], finished
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 30)
            sock.close()


async def test_shutdown_ends_open_streams_with_unavailable() -> None:
    bus = MemoryTopics()
    async with (
        served(bus) as (server, port, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        client.stream("GET", "/v1/topics/t/events") as resp,
    ):
        reader = EventReader(resp)
        assert (await reader.next()).data == "subscribed to t"  # type: ignore[union-attr]
        # When the server is asked to stop with the stream open
        server.should_exit = True
        # Then the stream ends with `unavailable`, and the server stops
        [event] = await reader.events(1)
        assert event.name == "unavailable"
        assert "shutting down" in event.data
        assert await reader.next() is None


async def test_a_client_that_leaves_ends_its_subscription() -> None:
    bus = MemoryTopics()
    async with served(bus) as (_, port, finished):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client, \
                client.stream("GET", "/v1/topics/t/events") as resp:
            await EventReader(resp).next()
            assert len(bus.subscriptions["t"]) == 1
        # the stream's call returns once the client is gone, and the subscription is closed
        await asyncio.wait_for(finished.wait(), 10)
        assert bus.subscriptions["t"] == set()


async def test_a_cut_off_subscriber_that_never_reads_is_disconnected_after_the_grace() -> None:
    bus = MemoryTopics()
    async with served(bus, topic_max_messages=5, topic_grace_s=0.2) as (_, port, finished):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(b"GET /v1/topics/t/events HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"subscribed to t"), 10)
        [sub] = bus.subscriptions["t"]
        # When far more is published than the socket buffers hold, and nothing is read
        # (each publish yields, so the stream writes what it can between them)
        for i in range(1000):
            await bus.publish("t", b"%04d" % i + b"m" * 65_536)
            await asyncio.sleep(0)
            if sub.ended.is_set():
                break
        assert isinstance(sub.error, SubscriptionOverflow)
        # Then the server gives up on it after the grace period: the response is cut off
        # (no final chunk) and the connection closed, without waiting for the client
        await asyncio.wait_for(finished.wait(), 10)
        received = b""
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
            received += chunk
        assert received.count(b"event: message") >= 5
        assert not received.endswith(b"0\r\n\r\n")
        writer.close()
