"""The `topics` host interface: publish a message to a topic that subscribers read live.

The client is a `TopicPublisher`; it checks the topic against the function's
`publish_topics`, the name and the size (`denied`, `invalid-argument`) and publishes, or
answers `unavailable`. A worker built without one answers `unavailable`.

`BusPublisher` is the real one: the checks of `flotilla.topics.publish_refusal`, then the
publish on the process's `TopicBus` (RabbitMQ in a worker, in-process in dev mode). Host
calls run on invocation threads while the bus lives on the process's event loop, so each
publish is handed to the loop (`run_coroutine_threadsafe`) and the invocation waits for the
broker's confirm, at most `timeout_s` and never past its own deadline. One invocation's
publishes therefore reach the broker in the order it made them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Protocol

from flotilla.hosts import interface as wit
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.topics import TopicBus, publish_refusal

PUBLISH_TIMEOUT_S = 5.0


class TopicPublisher(Protocol):
    """Publishes one message to a topic on behalf of the invocation's function."""

    def publish(self, ctx: InvocationContext, topic: str, message: bytes) -> None:
        """Publish `message` to `topic`; HostError names what was wrong."""


class BusPublisher:
    """A thread-safe, blocking `TopicPublisher` over a `TopicBus` running on `loop`."""

    def __init__(
        self, bus: TopicBus, loop: asyncio.AbstractEventLoop, *,
        timeout_s: float = PUBLISH_TIMEOUT_S,
    ) -> None:
        self.bus = bus
        self.loop = loop
        self.timeout_s = timeout_s

    def publish(self, ctx: InvocationContext, topic: str, message: bytes) -> None:
        """Check, publish, wait for the confirm; HostError otherwise."""
        refusal = publish_refusal(topic, len(message), ctx.config.publish_topics)
        if refusal is not None:
            raise HostError(*refusal)
        if _running_loop() is self.loop:
            # Waiting here would block the very loop that must do the publish.
            raise HostError("unavailable", "topics cannot be published from the event loop")
        timeout = min(self.timeout_s, ctx.remaining())
        try:
            future = asyncio.run_coroutine_threadsafe(
                self.bus.publish(topic, message, publisher=ctx.config.name), self.loop
            )
        except RuntimeError as exc:  # the loop is closed: the process is stopping
            raise HostError("unavailable", f"topics are not running: {exc}") from None
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise HostError(
                "unavailable", f"publish to {topic!r} not confirmed within {timeout:.3f} s"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any failure of the bus is `unavailable`
            raise HostError("unavailable", str(exc)) from None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _publish(host: TopicPublisher, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.publish(ctx, wit.arg_string(a, 0), wit.arg_bytes(a, 1))
    return wit.ok()


INTERFACE = wit.Interface(
    "topics",
    (wit.HostFunc("publish", _publish),),
    errors={"denied": True, "unavailable": True, "invalid-argument": True},
    client="topics",
)
