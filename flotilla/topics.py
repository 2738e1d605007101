"""Topics: functions publish messages (`topics.publish`) that subscribers read live.

Semantics (the README's "Topics" section says the same to users):

- a topic is words of `a-z0-9_-` joined by '.' (`orders.created`), at most 16 words; a
  function may publish to topics matching its config's `publish_topics` patterns, where a
  word may be `*` (exactly one word) or `#` (any number of words), as in AMQP topic routing
  (`topic_allowed`, a pure function); messages are bytes, at most `MAX_MESSAGE_BYTES`;
- subscribers name exact topics (no patterns) and get each message published while they
  are subscribed, at most once, in the order each publisher published them. Nothing is
  kept for subscribers that are not connected: a subscriber that reconnects misses what
  was published in between;
- a subscriber that falls behind is cut off rather than buffered without bound: once
  `max_messages` or `max_bytes` wait in its `Subscription`, delivery to it stops, what was
  buffered is still handed out in order, and then it ends with `SubscriptionOverflow`.

Over RabbitMQ (`AmqpTopics`): one durable topic exchange `<prefix>.topics`
(`Topology.topics`); each subscriber declares its own exclusive, auto-deleted,
server-named queue bound with its topic and consumes it without acks (at most once), so a
subscriber that goes away leaves nothing behind. Its queue is bounded too (`x-max-length`,
dropping the oldest) as a backstop for a consumer process that cannot keep up at all; the
cut-off above is what a slow reader meets. Publishes are publisher-confirmed, so a publish
that returned is on the broker. `MemoryTopics` is the same in one process (dev mode).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from flotilla.amqp import split_urls
from flotilla.config import TOPIC_PATTERN
from flotilla.errors import FlotillaError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_MESSAGES = 1000  # waiting in one subscription before it is cut off
DEFAULT_MAX_BYTES = 8 << 20
# The broker-side backstop of a subscriber's queue (see the module docstring).
QUEUE_ARGUMENTS = {
    "x-max-length": 10_000,
    "x-max-length-bytes": 64 << 20,
    "x-overflow": "drop-head",
}
RECONNECT_PAUSE_S = 1.0  # after a failed connect, callers fail at once for this long
_TOPIC = re.compile(TOPIC_PATTERN)


def valid_topic(topic: str) -> bool:
    """True for a topic name (words of a-z, 0-9, '_', '-' joined by '.'; no wildcards)."""
    return _TOPIC.fullmatch(topic) is not None


def topic_allowed(topic: str, patterns: Sequence[str]) -> bool:
    """True when `topic` matches one of `patterns` (`*`: one word, `#`: zero or more)."""
    words = topic.split(".")
    return any(_matches(words, pattern.split(".")) for pattern in patterns)


def _matches(words: Sequence[str], pattern: Sequence[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_matches(words[i:], rest) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _matches(words[1:], rest)


def publish_refusal(topic: str, size: int, patterns: Sequence[str]) -> tuple[str, str] | None:
    """Why a function with `publish_topics` = `patterns` may not publish `size` bytes to
    `topic`, as (WIT error case, detail); None when it may."""
    if not valid_topic(topic):
        return "invalid-argument", (
            f"{topic[:300]!r} is not a topic name: words of a-z, 0-9, '_', '-' joined by '.'"
        )
    if not topic_allowed(topic, patterns):
        return "denied", f"topic {topic!r} does not match the function's publish_topics"
    if size > MAX_MESSAGE_BYTES:
        return "invalid-argument", f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"
    return None


@dataclass(frozen=True)
class TopicMessage:
    """One message as a subscriber receives it."""

    topic: str
    data: bytes


class TopicsUnavailable(FlotillaError):
    """The broker carrying topics cannot be reached; retry later."""


class SubscriptionEnded(FlotillaError):
    """A subscription ended before its subscriber closed it."""

    reason = "ended"


class SubscriptionOverflow(SubscriptionEnded):
    """The subscriber fell behind; messages after the ones handed out were not delivered."""

    reason = "overflow"


class SubscriptionLost(SubscriptionEnded):
    """The connection to the broker was lost; messages published meanwhile are missed."""

    reason = "unavailable"


class Subscription:
    """One subscriber's bounded buffer, fed by its bus; iterate it for `TopicMessage`s.

    `deliver` (on the event loop) appends or, past the bounds, ends the subscription with
    `SubscriptionOverflow` and stops its feed; `lose` ends it with `SubscriptionLost`. Either
    way the buffered messages are still handed out first, then the error is raised.
    `ended` is set as soon as it ended (before the buffer is drained).
    """

    def __init__(
        self,
        topic: str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.topic = topic
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.ended = asyncio.Event()
        self.error: SubscriptionEnded | None = None
        self._stop = stop
        self._stopping: asyncio.Future[None] | None = None
        self._buffer: deque[TopicMessage] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()

    def deliver(self, message: TopicMessage) -> None:
        """Buffer one message, or cut the subscriber off when it is too far behind."""
        if self.error is not None:
            return
        if (
            len(self._buffer) >= self.max_messages
            or self._bytes + len(message.data) > self.max_bytes
        ):
            self._end(SubscriptionOverflow(
                f"subscriber of {self.topic!r} fell behind ({len(self._buffer)} messages, "
                f"{self._bytes} bytes waiting): later messages were not delivered; subscribe "
                "again to resume (what is published meanwhile is missed)"
            ))
            return
        self._buffer.append(message)
        self._bytes += len(message.data)
        self._ready.set()

    def lose(self, detail: str) -> None:
        """End the subscription: its feed is gone (e.g. the broker connection was lost)."""
        if self.error is None:
            self._end(SubscriptionLost(
                f"subscription to {self.topic!r} lost: {detail}; subscribe again to resume "
                "(what is published meanwhile is missed)"
            ))

    def _end(self, error: SubscriptionEnded) -> None:
        self.error = error
        self.ended.set()
        self._ready.set()
        self._stopping = asyncio.ensure_future(self._run_stop())

    async def _run_stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            try:
                await stop()
            except Exception:
                log.debug("stopping the feed of %r failed", self.topic, exc_info=True)

    async def get(self, timeout: float | None = None) -> TopicMessage | None:
        """The next message; None when none came within `timeout` seconds; the ending error
        once the buffer is drained."""
        while not self._buffer:
            if self.error is not None:
                raise self.error
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        message = self._buffer.popleft()
        self._bytes -= len(message.data)
        return message

    def __aiter__(self) -> AsyncIterator[TopicMessage]:
        return self

    async def __anext__(self) -> TopicMessage:
        try:
            message = await self.get()
        except SubscriptionEnded as end:
            if type(end) is SubscriptionEnded:  # closed by its subscriber: iteration ends
                raise StopAsyncIteration from None
            raise
        assert message is not None  # no timeout: a message or the ending error
        return message

    async def close(self) -> None:
        """Stop the feed and drop what is buffered (idempotent)."""
        if self.error is None:
            self.error = SubscriptionEnded(f"subscription to {self.topic!r} closed")
            self.ended.set()
            self._ready.set()
        self._buffer.clear()
        await self._run_stop()
        if self._stopping is not None:
            await self._stopping


class TopicBus(Protocol):
    """Where topic messages travel: the broker (AmqpTopics) or this process (MemoryTopics)."""

    async def start(self) -> None:
        """Connect (TopicsUnavailable when the broker cannot be reached)."""

    async def close(self) -> None:
        """End every subscription and disconnect."""

    async def publish(self, topic: str, data: bytes, *, publisher: str = "") -> None:
        """Publish one message (checked by the caller); TopicsUnavailable on failure."""

    async def subscribe(
        self, topic: str, *, max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Subscription:
        """A live subscription to `topic` (subscribed when this returns)."""


class MemoryTopics:
    """A `TopicBus` inside one process (dev mode): publishes reach the subscriptions of the
    topic directly."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, set[Subscription]] = {}

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """End every subscription."""
        for subs in list(self.subscriptions.values()):
            for sub in list(subs):
                sub.lose("the server is shutting down")
        self.subscriptions.clear()

    async def publish(self, topic: str, data: bytes, *, publisher: str = "") -> None:
        """Hand the message to every current subscriber of `topic`."""
        message = TopicMessage(topic, data)
        for sub in list(self.subscriptions.get(topic, ())):
            sub.deliver(message)

    async def subscribe(
        self, topic: str, *, max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Subscription:
        """A subscription that lasts until closed or cut off."""
        subs = self.subscriptions.setdefault(topic, set())

        async def stop() -> None:
            subs.discard(sub)

        sub = Subscription(topic, max_messages=max_messages, max_bytes=max_bytes, stop=stop)
        subs.add(sub)
        return sub


class AmqpTopics:
    """A `TopicBus` over RabbitMQ (see the module docstring for the topology).

    One plain connection, opened by `start` or on first use and again on the first use
    after it broke (not robust on purpose: a subscription whose connection broke has missed
    messages, so it ends with `SubscriptionLost` instead of resuming silently). Publishes
    share one confirming channel; each subscription has a channel of its own.
    """

    def __init__(
        self, url: str | Sequence[str], exchange: str, *,
        connection_name: str = "flotilla-topics",
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.urls = split_urls(url)  # a cluster's nodes: each connect tries them in turn
        self.exchange_name = exchange
        self.connection_name = connection_name
        self.connect_timeout_s = connect_timeout_s
        self.subscriptions: set[Subscription] = set()
        self._connection: Any = None
        self._exchange: Any = None
        self._lock = asyncio.Lock()
        self._failed_at = 0.0
        self._closed = False

    async def start(self) -> None:
        """Connect and declare the exchange (TopicsUnavailable when the broker is down)."""
        await self._connect()

    async def _open(self, aio_pika: Any) -> Any:
        """A plain connection to the first of the URLs (in a shuffled order) that answers."""
        urls = random.sample(self.urls, len(self.urls))
        for url in urls[:-1]:
            try:
                return await aio_pika.connect(
                    url, timeout=self.connect_timeout_s,
                    client_properties={"connection_name": self.connection_name},
                )
            except Exception as exc:  # noqa: BLE001 - the next node may answer
                node = urlsplit(url).netloc.rpartition("@")[2]  # never the password
                log.info("topics: %s did not answer (%s); trying the next node", node, exc)
        return await aio_pika.connect(
            urls[-1], timeout=self.connect_timeout_s,
            client_properties={"connection_name": self.connection_name},
        )

    async def _connect(self) -> Any:
        if self._connection is not None and not self._connection.is_closed:
            return self._connection
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            if self._closed:
                raise TopicsUnavailable("topics are closed")
            if time.monotonic() - self._failed_at < RECONNECT_PAUSE_S:
                raise TopicsUnavailable("the broker could not be reached a moment ago")
            import aio_pika

            try:
                connection = await self._open(aio_pika)
                channel = await connection.channel(publisher_confirms=True)
                self._exchange = await channel.declare_exchange(
                    self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
            except Exception as exc:
                self._failed_at = time.monotonic()
                raise TopicsUnavailable(f"cannot reach the broker for topics: {exc}") from exc
            connection.close_callbacks.add(self._connection_closed)
            self._connection = connection
            return connection

    def _connection_closed(self, *_: Any) -> None:
        for sub in list(self.subscriptions):
            sub.lose("the broker connection was lost")

    async def close(self) -> None:
        """End every subscription, close the connection."""
        self._closed = True
        for sub in list(self.subscriptions):
            sub.lose("the server is shutting down")
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close_callbacks.discard(self._connection_closed)
            await connection.close()

    async def publish(self, topic: str, data: bytes, *, publisher: str = "") -> None:
        """Publish and wait for the broker's confirm (TopicsUnavailable on failure)."""
        import aio_pika

        await self._connect()
        message = aio_pika.Message(
            data, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            content_type="application/octet-stream", app_id=publisher or None,
        )
        try:
            await self._exchange.publish(message, routing_key=topic)
        except Exception as exc:
            raise TopicsUnavailable(f"publish to {topic!r} failed: {exc}") from exc

    async def subscribe(
        self, topic: str, *, max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Subscription:
        """Declare the subscriber's queue, bind it to `topic` and consume it."""
        connection = await self._connect()
        try:
            channel = await connection.channel()
        except Exception as exc:
            raise TopicsUnavailable(f"cannot open a channel for topics: {exc}") from exc

        async def stop() -> None:
            self.subscriptions.discard(sub)
            channel.close_callbacks.discard(lost)
            if not channel.is_closed:
                await channel.close()  # the queue is auto-deleted with its consumer

        def lost(*_: Any) -> None:
            sub.lose("the broker closed its channel")

        sub = Subscription(topic, max_messages=max_messages, max_bytes=max_bytes, stop=stop)
        try:
            queue = await channel.declare_queue(
                "", exclusive=True, auto_delete=True, arguments=QUEUE_ARGUMENTS
            )
            await queue.bind(self.exchange_name, routing_key=topic)

            async def on_message(incoming: Any) -> None:
                sub.deliver(TopicMessage(topic, incoming.body))

            await queue.consume(on_message, no_ack=True)
        except Exception as exc:
            await stop()
            raise TopicsUnavailable(f"cannot subscribe to {topic!r}: {exc}") from exc
        channel.close_callbacks.add(lost)
        self.subscriptions.add(sub)
        return sub
