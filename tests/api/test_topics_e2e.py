"""Topics end to end: a guest publishes (`topics.publish` in a real worker) through
RabbitMQ's topic exchange to subscribers reading `GET /v1/topics/{topic}/events` over real
HTTP (uvicorn on a loopback port) and to the Python client's `subscribe`.

Two SSE subscribers and the client get the same messages in order (text, multi-line,
binary, exactly 1 MiB); denied topics, bad names and oversize messages are refused to the
guest and reach nobody; the subscribe scope; keep-alives; a subscriber that does not read is
cut off with `event: overflow` after everything before it; a lost broker connection ends a
stream with `event: unavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dispatcher.auth import INVOKE, SUBSCRIBE
from flotilla.client import Client
from flotilla.errors import InvalidRequest
from flotilla.topics import (
    MAX_MESSAGE_BYTES,
    AmqpTopics,
    SubscriptionLost,
    SubscriptionOverflow,
    TopicMessage,
)
from flotilla.topology import Topology
from tests.api.webfleet import ADMIN_KEY, Event, WebFleet, subscribed, web_fleet

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]
MAX_MESSAGES = 40  # what one subscriber may have waiting before it is cut off


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    redis_url: str, amqp_url: str, aws_endpoint_url: str, probe_wasm: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[WebFleet]:
    async with web_fleet(
        redis_url=redis_url, amqp_url=amqp_url, aws_endpoint_url=aws_endpoint_url,
        probe_wasm=probe_wasm, cache_dir=str(tmp_path_factory.mktemp("worker-cache")),
        topic_max_messages=MAX_MESSAGES, topic_keepalive_s=0.5, topic_grace_s=30.0,
    ) as fleet:
        yield fleet


async def publish_ops(fleet: WebFleet, function: str, ops: list[dict[str, Any]],
                      **request: Any) -> list[dict[str, Any]]:
    """Run `topics.publish` ops in one invocation of `function`; each op's outcome."""
    resp = await fleet.client.post(f"/v1/functions/{function}/invoke",
                                   content=json.dumps({"op": "batch", "ops": ops}), **request)
    assert resp.status_code == 200, resp.text
    return [dict(r) for r in resp.json()["result"]]


def publish(topic: str, message: str | bytes) -> dict[str, Any]:
    data: Any = message if isinstance(message, str) else {"b64": base64.b64encode(message).decode()}
    return {"op": "topics.publish", "topic": topic, "message": data}


def as_bytes(event: Event) -> bytes:
    """A message event's bytes."""
    assert event.name in ("message", "message-base64"), event
    return event.data.encode() if event.name == "message" else base64.b64decode(event.data)


async def test_two_sse_subscribers_and_the_client_get_every_message_in_order(
    fleet: WebFleet,
) -> None:
    big = b"y" * MAX_MESSAGE_BYTES
    binary = b"\x00\xff\r\nbin"
    expected = [b"hello", b"two\nlines\n", binary, big, b"last"]
    async with (
        subscribed(fleet.client, "news.today") as first,
        subscribed(fleet.client, "news.today") as second,
        Client(fleet.amqp_url, queue_prefix=fleet.prefix, redis_url=fleet.redis_url) as client,
        client.subscribe("news.today") as messages,
    ):
        # When a guest publishes, with refused publishes in between
        outcomes = await publish_ops(fleet, "probe", [
            publish("news.today", "hello"),
            publish("news.today", "two\nlines\n"),
            publish("other.today", "denied: not in publish_topics"),
            publish("news.today", binary),
            publish("news.today", b"z" * (MAX_MESSAGE_BYTES + 1)),
            publish("News.Today", "not a topic name"),
            publish("news.today", big),
            publish("news.today.deeper", "news.* is one word only"),
            publish("news.today", "last"),
        ])
        # Then the guest saw ok, denied and invalid-argument where due
        assert [o["ok"] or o["error"]["case"] for o in outcomes] == [
            True, True, "denied", True, "invalid-argument", "invalid-argument", True, "denied",
            True,
        ]
        assert "publish_topics" in outcomes[2]["error"]["detail"]
        assert str(MAX_MESSAGE_BYTES) in outcomes[4]["error"]["detail"]
        # and each subscriber got exactly the published messages, in order
        for reader in (first, second):
            events = await reader.events(len(expected))
            assert [as_bytes(e) for e in events] == expected
            assert [e.name for e in events] == [
                "message", "message", "message-base64", "message", "message"]
        received = [await asyncio.wait_for(anext(messages), 20) for _ in expected]
        assert received == [TopicMessage("news.today", m) for m in expected]


async def test_a_public_function_publishes_too_and_patterns_reach_deep_topics(
    fleet: WebFleet,
) -> None:
    async with subscribed(fleet.client, "bulk.a.b.c") as reader, fleet.anonymous() as anon:
        resp = await anon.post("/v1/functions/web/invoke", content=json.dumps(
            {"op": "topics.publish", "topic": "bulk.a.b.c", "message": "from the public"}))
        assert resp.json()["ok"], resp.text
        [event] = await reader.events(1)
        assert event == Event("message", "from the public")


async def test_subscribing_needs_the_subscribe_scope_and_a_topic_name(fleet: WebFleet) -> None:
    _, invoker = await fleet.new_key(INVOKE)
    _, subscriber = await fleet.new_key(SUBSCRIBE)
    async with fleet.anonymous() as anon:
        assert (await anon.get("/v1/topics/news.a/events")).status_code == 401
        forbidden = await anon.get("/v1/topics/news.a/events", headers={"Authorization": invoker})
        assert forbidden.status_code == 403
        assert "subscribe" in forbidden.json()["detail"]
        for bad in ("news.*", "news.%23", "News", "a..b"):
            resp = await anon.get(f"/v1/topics/{bad}/events", headers={"Authorization": subscriber})
            assert resp.status_code == 422, (bad, resp.text)
        async with subscribed(anon, "exact.topic", {"Authorization": subscriber}) as reader:
            await publish_ops(fleet, "probe", [publish("exact.topic", "for the subscriber")])
            assert await reader.events(1) == [Event("message", "for the subscriber")]


async def test_an_idle_stream_gets_keep_alives(fleet: WebFleet) -> None:
    async with subscribed(fleet.client, "news.quiet") as reader:
        assert await reader.next(10) == Event("", "keep-alive")


async def test_a_subscriber_that_does_not_read_is_cut_off_after_what_it_was_sent(
    fleet: WebFleet,
) -> None:
    # Given a subscriber with a tiny receive window that reads nothing after `subscribed`
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", fleet.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(b"GET /v1/topics/news.flood/events HTTP/1.1\r\nhost: x\r\n"
                 b"authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert head.startswith(b"HTTP/1.1 200")
    stream = ChunkedStream(reader)
    assert (await stream.until(b"\n\n")).startswith(b": subscribed to news.flood")
    bus = fleet.dispatcher.topics
    assert bus is not None
    [sub] = [s for s in bus.subscriptions if s.topic == "news.flood"]
    # When far more is published than the window, the buffers and the limit hold
    count = 600
    await publish_direct(fleet, "news.flood", [b"%05d:" % i + b"m" * 32_000 for i in range(count)])
    # Then the dispatcher cut the subscriber off (and stopped its queue)
    await asyncio.wait_for(sub.ended.wait(), 30)
    assert isinstance(sub.error, SubscriptionOverflow)
    # and once it reads, it gets messages 0..k-1 in order, then `overflow`, then the end
    events = []
    while (block := await asyncio.wait_for(stream.until(b"\n\n"), 30)) != b"":
        events.append(block)
    *messages, last = events
    assert last.startswith(b"event: overflow\ndata: subscriber of 'news.flood' fell behind")
    numbers = [int(m.split(b"data: ", 1)[1][:5]) for m in messages]
    assert numbers == list(range(len(numbers)))
    assert MAX_MESSAGES <= len(numbers) < count
    assert sub not in bus.subscriptions
    writer.close()


async def test_a_lost_broker_connection_ends_streams_and_client_subscriptions(
    fleet: WebFleet,
) -> None:
    bus = fleet.dispatcher.topics
    assert bus is not None
    async with (
        subscribed(fleet.client, "news.lost") as reader,
        Client(fleet.amqp_url, queue_prefix=fleet.prefix, redis_url=fleet.redis_url) as client,
        client.subscribe("news.lost") as messages,
    ):
        # When the connections carrying the subscriptions go away
        # (closing them here stands in for a broker dropping them)
        await bus._connection.close()
        await client._topics._connection.close()
        # Then the stream ends with `unavailable`, and the client's iteration raises
        [event] = await reader.events(1)
        assert event.name == "unavailable"
        assert "lost" in event.data
        assert await reader.next() is None
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(anext(messages), 20)
    # and the next subscriber connects again
    async with subscribed(fleet.client, "news.back") as again:
        await publish_ops(fleet, "probe", [publish("news.back", "again")])
        assert await again.events(1) == [Event("message", "again")]


async def test_the_client_refuses_topic_patterns() -> None:
    client = Client("amqp://127.0.0.1:1/", redis_url=None, resolve=_no_resolve)
    for bad in ("news.*", "news.#", "", "A"):
        with pytest.raises(InvalidRequest):
            client.subscribe(bad)


async def _no_resolve(name: str, selector: str) -> Any:
    raise AssertionError("not called")


async def publish_direct(fleet: WebFleet, topic: str, messages: list[bytes]) -> None:
    """Publish straight to the topic exchange (what many invocations would do, faster)."""
    bus = AmqpTopics(fleet.amqp_url, Topology(fleet.prefix).topics)
    await bus.start()
    try:
        for message in messages:
            await bus.publish(topic, message)
    finally:
        await bus.close()


class ChunkedStream:
    """The body of a chunked HTTP/1.1 response read from a raw stream, up to separators."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = b""
        self.done = False

    async def until(self, separator: bytes) -> bytes:
        """The body up to and without `separator`; b"" at the end of the body."""
        while separator not in self.buffer:
            if self.done:
                return b""
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                self.done = True
                continue
            self.buffer += await self.reader.readexactly(size)
            await self.reader.readexactly(2)
        block, _, self.buffer = self.buffer.partition(separator)
        return block

