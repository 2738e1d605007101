"""Which job lanes a worker process consumes: every deployed function's, found as it runs.

Each function has a job lane (`<prefix>.jobs.<function>`, flotilla/topology.py) that every
worker process consumes. `FunctionWatch` tells the consumer about functions:

- at start, the registry's function set (`Registry.names()`): every function deployed
  before the worker started;
- then each deploy's notice on the Redis channel `<prefix>:deploys` (published by the
  registry in the deploy's transaction): a new function's lane is consumed within a Redis
  round trip and a queue declare of its deploy;
- and the whole set again every `poll_s` seconds, a backstop for notices missed while the
  subscription was down (Redis restarting, the network): a notice is not stored, so a
  worker that was not subscribed when it was published never sees it.

Nothing is lost while no worker consumes a lane: the dispatcher declares a function's lane
before it publishes the function's first job there (flotilla/transport.py), and the jobs
wait in it. A function that is deleted keeps its lane (jobs still in it are answered
`not_found`); a failure to add a lane is logged and tried again at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from flotilla.registry import Registry, deploy_channel

log = logging.getLogger(__name__)

# Seconds between listings of the registry's function set (the backstop above).
POLL_S = 5.0
# Seconds before subscribing again after the subscription failed.
RETRY_S = 1.0
# Seconds `close()` waits for each of its steps, and a subscription for its own close.
CLOSE_S = 2.0
PUBSUB_CLOSE_S = 0.2
# The longest a subscription waits for a notice before looking at the closing flag.
WAKE_S = 0.5

AddFunction = Callable[[str], Awaitable[None]]


class FunctionWatch:
    """Calls `add(name)` for every deployed function: those at start, then each new one.
    It owns `redis` (an asyncio client): `close()` closes it."""

    def __init__(
        self, redis: Any, prefix: str, add: AddFunction, *, poll_s: float = POLL_S
    ) -> None:
        self._redis = redis
        self._registry = Registry(redis, prefix=prefix)
        self._channel = deploy_channel(prefix)
        self._add = add
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.listed = 0  # completed listings of the registry (tests wait on it)

    async def start(self) -> None:
        """Add the functions deployed now (a failure is logged: the watch retries), then
        follow deploys in the background."""
        try:
            await self._list()
        except Exception as exc:  # noqa: BLE001 - Redis down: the follow loop lists again
            log.warning("listing the deployed functions failed (trying again): %r", exc)
        self._task = asyncio.create_task(self._follow(), name="function-watch")

    async def close(self) -> None:
        """Stop following and close the Redis client, within `CLOSE_S` each (a subscription
        cut mid-read must not hold up a worker's exit)."""
        # The flag too: redis-py may turn a cancel mid-read into a ConnectionError, which the
        # follow loop would otherwise take for Redis going away and subscribe again.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=CLOSE_S)
            self._task = None
        try:
            await asyncio.wait_for(self._redis.aclose(), CLOSE_S)
        except Exception as exc:  # noqa: BLE001 - closing: nothing left to do but say so
            log.warning("closing the deploy watch's Redis client failed: %r", exc)

    async def _list(self) -> None:
        for name in await self._registry.names():
            await self._add_one(name)
        self.listed += 1

    async def _add_one(self, name: str) -> None:
        try:
            await self._add(name)
        except Exception as exc:  # noqa: BLE001 - the next listing tries again
            log.warning("consuming the job lane of %s failed (trying again): %r", name, exc)

    async def _follow(self) -> None:
        while not self._closing:
            try:
                await self._subscribed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: subscribe again
                if self._closing:
                    return
                log.warning("following deploys failed (subscribing again): %r", exc)
                await asyncio.sleep(RETRY_S)

    async def _subscribed(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            # Listed after subscribing: a function deployed before the subscription is in
            # the set, one deployed after it sends a notice.
            await self._list()
            listed = time.monotonic()
            while not self._closing:  # redis-py may swallow a cancel: look at the flag
                wait = max(0.0, min(WAKE_S, listed + self._poll_s - time.monotonic()))
                message = await pubsub.get_message(timeout=wait)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    await self._add_one(data.decode() if isinstance(data, bytes) else str(data))
                if time.monotonic() >= listed + self._poll_s:
                    await self._list()
                    listed = time.monotonic()
        finally:
            # Bounded: cancelled while connecting, redis-py's close can wait on the
            # connection for a long time; the client's own close drops it anyway.
            try:
                await asyncio.wait_for(pubsub.aclose(), PUBSUB_CLOSE_S)
            except (TimeoutError, ConnectionError, OSError) as exc:
                log.debug("closing the deploy subscription: %r", exc)
