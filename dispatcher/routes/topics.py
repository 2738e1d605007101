"""`GET /v1/topics/{topic}/events`: a topic's messages as Server-Sent Events (subscribe scope).

The stream (text/event-stream), once the subscription is live:

    : subscribed to orders.created          (a comment: published from now on arrives)

    event: message                          (a message that is UTF-8 text without CR:
    data: first line                         its lines as `data:` lines)
    data: second line

    event: message-base64                   (any other message: its bytes in base64)
    data: AAEC/w==

    : keep-alive                            (after `topic_keepalive_s` without a message)

    event: overflow                         (the subscriber fell behind: every message
    data: subscriber of 'orders.created'...  before this was delivered, none after; the
                                             server closes the stream)
    event: unavailable                      (the broker connection was lost; closed too)
    data: subscription to ... lost: ...

Delivery is at most once: nothing is kept for a subscriber that is not connected, so a
reconnecting subscriber misses what was published in between (no `id:` lines, no
Last-Event-ID). A subscriber that stops reading is cut off (`overflow`) once
`topic_max_messages` or `topic_max_bytes` wait for it; if it still does not read what is
left within `topic_grace_s`, its connection is closed.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, Api, ApiDep, require
from dispatcher.auth import SUBSCRIBE
from flotilla.config import TOPIC_PATTERN
from flotilla.errors import InvalidRequest, Unavailable
from flotilla.topics import Subscription, SubscriptionEnded, TopicMessage, TopicsUnavailable

router = APIRouter()

EVENT_STREAM = "text/event-stream"
KEEPALIVE = b": keep-alive\n\n"
STREAM_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: pass events on as they come
}


# One event of the stream (OpenAPI 3.1: an event stream's `schema` describes each event).
EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["message", "message-base64", "overflow",
                                             "unavailable"]},
        "data": {"type": "string", "description": "The message (text or base64), or why "
                 "the stream ended"},
    },
}


def sse_event(message: TopicMessage) -> bytes:
    """One message as an event: `message` with its text when it is UTF-8 without CR
    (which SSE would turn into a line break), else `message-base64`."""
    try:
        text = message.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\r" in text:
        return b"event: message-base64\ndata: " + base64.b64encode(message.data) + b"\n\n"
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"event: message\n{lines}\n".encode()


def end_event(error: SubscriptionEnded) -> bytes:
    """The event that ends a stream: `overflow` or `unavailable`, with the reason."""
    detail = " ".join(str(error).split())  # one line
    return f"event: {error.reason}\ndata: {detail}\n\n".encode()


class EventStream(Response):
    """The response streaming one subscription; it closes the subscription when done."""

    media_type = EVENT_STREAM

    def __init__(self, subscription: Subscription, *, keepalive_s: float, grace_s: float) -> None:
        super().__init__(headers=STREAM_HEADERS, media_type=EVENT_STREAM)
        # Response computed a Content-Length of its empty body: a stream has none.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.subscription = subscription
        self.keepalive_s = keepalive_s
        self.grace_s = grace_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Stream until the client leaves, the subscription ends, or a cut-off subscriber
        has not read the rest within the grace period."""
        sub = self.subscription
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            await send({"type": "http.response.body", "more_body": True,
                        "body": f": subscribed to {sub.topic}\n\n".encode()})
            tasks = {
                asyncio.ensure_future(self._write(send)),
                asyncio.ensure_future(_disconnected(receive)),
                asyncio.ensure_future(self._grace_over()),
            }
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await sub.close()

    async def _write(self, send: Any) -> None:
        sub = self.subscription
        while True:
            try:
                message = await sub.get(self.keepalive_s)
            except SubscriptionEnded as end:
                await send({"type": "http.response.body", "body": end_event(end)})
                return
            chunk = KEEPALIVE if message is None else sse_event(message)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _grace_over(self) -> None:
        # A timer, not a poll: it starts only once the subscription has ended.
        await self.subscription.ended.wait()
        await asyncio.sleep(self.grace_s)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@router.get(
    "/v1/topics/{topic}/events",
    summary="Read a topic's messages as Server-Sent Events",
    operation_id="topic_events",
    description=(
        "Streams every message published to the topic while connected, at most once "
        "(nothing is kept for absent subscribers). Events: `message` (UTF-8 text), "
        "`message-base64` (other bytes), and at the end `overflow` (the subscriber fell "
        "behind) or `unavailable` (broker lost); comments `: subscribed to <topic>` first "
        "and `: keep-alive` when idle. Needs the `subscribe` scope."
    ),
    response_class=EventStream,
    status_code=200,
    responses={
        200: {"description": "The event stream", "content": {EVENT_STREAM: {"schema": EVENT}}},
        **openapi.problem_responses(InvalidRequest, Unavailable, *AUTH_PROBLEMS),
    },
    dependencies=[require(SUBSCRIBE)],
)
async def topic_events(
    topic: str = Path(description="An exact topic name (no wildcards)", pattern=TOPIC_PATTERN,
                      max_length=1040),
    api: Api = ApiDep,
) -> EventStream:
    """Subscribe, then stream (see the module docstring for the events)."""
    if api.topics is None:
        raise Unavailable("topics are not configured on this dispatcher")
    opts = api.options
    try:
        sub = await api.topics.subscribe(
            topic, max_messages=opts.topic_max_messages, max_bytes=opts.topic_max_bytes
        )
    except TopicsUnavailable as exc:
        raise Unavailable(str(exc), retry_after_s=opts.retry_after_s) from None
    return EventStream(sub, keepalive_s=opts.topic_keepalive_s, grace_s=opts.topic_grace_s)
