"""Topics without a broker: names and patterns (pure functions, table-driven), the checks a
publish passes, a subscription's bounded buffer and its endings, the in-memory bus, the
worker's blocking publisher, and the event stream's encoding."""

from __future__ import annotations

import asyncio
import base64
import threading

import pytest

from dispatcher.routes.topics import end_event, sse_event
from flotilla.config import FunctionConfig
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.topics import BusPublisher
from flotilla.topics import (
    MAX_MESSAGE_BYTES,
    MemoryTopics,
    Subscription,
    SubscriptionLost,
    SubscriptionOverflow,
    TopicMessage,
    publish_refusal,
    topic_allowed,
    valid_topic,
)


@pytest.mark.parametrize(("topic", "patterns", "allowed"), [
    ("a", ["a"], True),
    ("a.b", ["a"], False),
    ("a.b", ["a.*"], True),
    ("a", ["a.*"], False),
    ("a.b.c", ["a.*"], False),
    ("a.b.c", ["a.#"], True),
    ("a", ["a.#"], True),  # `#` is zero or more words
    ("a.b", ["#"], True),
    ("x.b", ["*.b"], True),
    ("x.y.b", ["*.b"], False),
    ("x.y.b", ["#.b"], True),
    ("a.x.y.z", ["a.#.z"], True),
    ("a.z", ["a.#.z"], True),
    ("a.z.q", ["a.#.z"], False),
    ("orders.eu", ["users.*", "orders.*"], True),
    ("orders.eu", [], False),
    ("ab", ["a*"], False),  # wildcards are whole words only
])
def test_topic_patterns_match_as_amqp_topic_routing(
    topic: str, patterns: list[str], allowed: bool
) -> None:
    assert topic_allowed(topic, patterns) is allowed


@pytest.mark.parametrize(("topic", "valid"), [
    ("a", True), ("orders.created", True), ("a_b-c.0", True), (".".join("w" * 16), True),
    (".".join("w" * 17), False), ("", False), ("a..b", False), ("a.", False), ("A", False),
    ("a.*", False), ("#", False), ("a b", False), ("é", False), ("x" * 65, False),
    ("a\n", False),
])
def test_topic_names(topic: str, valid: bool) -> None:
    assert valid_topic(topic) is valid


def test_a_publish_is_checked_for_name_then_permission_then_size() -> None:
    patterns = ["news.*"]
    assert publish_refusal("news.a", MAX_MESSAGE_BYTES, patterns) is None
    assert publish_refusal("News", 1, patterns)[0] == "invalid-argument"  # type: ignore[index]
    assert publish_refusal("sport.a", MAX_MESSAGE_BYTES + 1, patterns)[0] == "denied"  # type: ignore[index]
    case, detail = publish_refusal("news.a", MAX_MESSAGE_BYTES + 1, patterns)  # type: ignore[misc]
    assert case == "invalid-argument"
    assert str(MAX_MESSAGE_BYTES) in detail


async def test_a_subscription_hands_out_in_order_and_is_cut_off_past_its_bounds() -> None:
    stopped = asyncio.Event()

    async def stop() -> None:
        stopped.set()

    sub = Subscription("t", max_messages=3, max_bytes=10, stop=stop)
    for data in (b"a", b"bb", b"ccc"):
        sub.deliver(TopicMessage("t", data))
    assert not sub.ended.is_set()
    # When a fourth message arrives while three wait: cut off, the feed stopped
    sub.deliver(TopicMessage("t", b"d"))
    assert sub.ended.is_set()
    await asyncio.wait_for(stopped.wait(), 5)
    sub.deliver(TopicMessage("t", b"late"))  # ignored once ended
    # Then the three are still handed out, then the overflow
    assert [(await sub.get()).data for _ in range(3)] == [b"a", b"bb", b"ccc"]  # type: ignore[union-attr]
    with pytest.raises(SubscriptionOverflow, match="fell behind"):
        await sub.get()
    # And the byte bound counts too
    small = Subscription("t", max_messages=100, max_bytes=4)
    small.deliver(TopicMessage("t", b"1234"))
    small.deliver(TopicMessage("t", b"5"))
    assert isinstance(small.error, SubscriptionOverflow)
    await small.close()


async def test_get_times_out_with_none_and_lose_ends_after_the_buffer() -> None:
    sub = Subscription("t")
    assert await sub.get(0.01) is None
    sub.deliver(TopicMessage("t", b"x"))
    sub.lose("gone")
    assert (await sub.get()) == TopicMessage("t", b"x")
    with pytest.raises(SubscriptionLost, match="gone"):
        await sub.get()


async def test_iteration_ends_quietly_when_the_subscriber_closes() -> None:
    bus = MemoryTopics()
    sub = await bus.subscribe("t")
    await bus.publish("t", b"1")
    await bus.publish("other", b"not for t")
    got = []
    async for message in sub:
        got.append(message.data)
        await sub.close()
    assert got == [b"1"]
    assert bus.subscriptions["t"] == set()
    # and closing the bus ends what is left as lost
    left = await bus.subscribe("t")
    await bus.close()
    with pytest.raises(SubscriptionLost):
        await anext(left)


def ctx(*patterns: str, remaining_s: float = 5.0) -> InvocationContext:
    import time

    config = FunctionConfig(name="pub", publish_topics=patterns)
    return InvocationContext(config, "inv-1", time.monotonic() + remaining_s)


async def test_the_worker_publisher_blocks_its_thread_until_the_loop_published() -> None:
    loop = asyncio.get_running_loop()
    bus = MemoryTopics()
    sub = await bus.subscribe("news.a")
    publisher = BusPublisher(bus, loop, timeout_s=5)
    errors: list[str] = []

    def invocation() -> None:  # an invocation thread
        publisher.publish(ctx("news.*"), "news.a", b"one")
        publisher.publish(ctx("news.*"), "news.a", b"two")
        for topic, data in (("sport.a", b"x"), ("bad topic", b"x"),
                            ("news.a", b"x" * (MAX_MESSAGE_BYTES + 1))):
            try:
                publisher.publish(ctx("news.*"), topic, data)
            except HostError as exc:
                errors.append(exc.case)

    await asyncio.to_thread(invocation)
    assert [(await sub.get(1)).data for _ in range(2)] == [b"one", b"two"]  # type: ignore[union-attr]
    assert errors == ["denied", "invalid-argument", "invalid-argument"]
    # On the loop's own thread it refuses rather than deadlock
    with pytest.raises(HostError) as refused:
        publisher.publish(ctx("news.*"), "news.a", b"x")
    assert refused.value.case == "unavailable"


async def test_the_worker_publisher_times_out_as_unavailable() -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()

    class Stuck(MemoryTopics):
        async def publish(self, topic: str, data: bytes, *, publisher: str = "") -> None:
            await asyncio.to_thread(release.wait)

    publisher = BusPublisher(Stuck(), loop, timeout_s=60)
    with pytest.raises(HostError) as timed_out:
        # the invocation's own deadline (0.05 s) caps the wait
        await asyncio.to_thread(publisher.publish, ctx("t", remaining_s=0.05), "t", b"x")
    release.set()
    assert timed_out.value.case == "unavailable"
    assert "not confirmed" in str(timed_out.value.detail)


@pytest.mark.parametrize(("data", "wire"), [
    (b"plain", b"event: message\ndata: plain\n\n"),
    (b"a\nb\n", b"event: message\ndata: a\ndata: b\ndata: \n\n"),
    (b" lead", b"event: message\ndata:  lead\n\n"),
    (b"", b"event: message\ndata: \n\n"),
    ("é".encode(), "event: message\ndata: é\n\n".encode()),
    (b"cr\r", b"event: message-base64\ndata: " + base64.b64encode(b"cr\r") + b"\n\n"),
    (b"\xff\x00", b"event: message-base64\ndata: /wA=\n\n"),
])
def test_messages_as_events(data: bytes, wire: bytes) -> None:
    assert sse_event(TopicMessage("t", data)) == wire


def test_the_ending_event_is_one_line() -> None:
    event = end_event(SubscriptionOverflow("fell\nbehind  badly"))
    assert event == b"event: overflow\ndata: fell behind badly\n\n"
    assert end_event(SubscriptionLost("x")).startswith(b"event: unavailable\n")
