"""The `topics` host interface: publish a message to a topic that subscribers read live.

The client is a `TopicPublisher`; it checks the topic against the function's
`publish_topics`, the name and the size (`denied`, `invalid-argument`) and publishes, or
answers `unavailable`. A worker built without one answers `unavailable`.
"""

from __future__ import annotations

from typing import Any, Protocol

from flotilla.hosts import interface as wit
from flotilla.hosts.base import InvocationContext


class TopicPublisher(Protocol):
    """Publishes one message to a topic on behalf of the invocation's function."""

    def publish(self, ctx: InvocationContext, topic: str, message: bytes) -> None:
        """Publish `message` to `topic`; HostError names what was wrong."""


def _publish(host: TopicPublisher, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.publish(ctx, wit.arg_string(a, 0), wit.arg_bytes(a, 1))
    return wit.ok()


INTERFACE = wit.Interface(
    "topics",
    (wit.HostFunc("publish", _publish),),
    errors={"denied": True, "unavailable": True, "invalid-argument": True},
    client="topics",
)
