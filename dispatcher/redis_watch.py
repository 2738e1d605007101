"""Notices when Redis lost its data, and says so loudly.

Everything a dispatcher keeps lives in Redis: the function registry, the API keys (hashed),
job records and results, rate-limit buckets. A Redis that restarts without persistence (or
is flushed, or fails over to an empty replica) comes back empty, and nothing would say so:
callers would see 404 for deployed functions and 401 for their keys. So each dispatcher keeps
a marker, `<prefix>:redis-epoch` (a random token written once with SET NX, adopted when
another replica wrote it), and checks every few seconds that it is still the one it knows.
When it is gone or different, the dispatcher logs an error saying what was lost and what to
do, counts `flotilla_redis_data_lost_total`, and writes a new marker (so each loss counts
once per replica). With API keys on it also reports `flotilla_api_keys` (keys stored); after
a loss, while no key is stored, `/readyz` answers 503 "API keys missing" (keys are created
again with `flotilla keys create`, which writes to Redis directly). The dispatcher never
runs open: an empty Redis authenticates no stored key (only the bootstrap admin key, when
set), so callers get 401, not access.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from dispatcher.auth import Authenticator
from flotilla.metrics import DispatcherMetrics

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0


class RedisWatch:
    """Checks the Redis epoch marker (and the stored key count) of one dispatcher."""

    def __init__(
        self, redis: Any, prefix: str, *, auth: Authenticator | None = None,
        metrics: DispatcherMetrics | None = None, interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.redis = redis
        self.key = f"{prefix}:redis-epoch"
        self.auth = auth
        self.metrics = metrics
        self.interval_s = interval_s
        self.token: bytes | None = None
        self.losses = 0
        self.keys_missing = False
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Compare the marker with ours (a loss when it changed), then count stored keys."""
        current = await self.redis.get(self.key)
        if current is None or current != self.token:
            await self.redis.set(self.key, secrets.token_hex(8), nx=True)
            seen, self.token = self.token, await self.redis.get(self.key)
            if seen is not None:
                self._lost()
        if self.auth is not None:
            count = await self.auth.keys.count()
            if self.metrics is not None:
                self.metrics.api_keys.set(count)
            missing = self.losses > 0 and count == 0
            if missing and not self.keys_missing:
                log.error("API keys missing: Redis lost them; every stored key now answers 401 "
                          "and /readyz 503 until one is created again (`flotilla keys create`)")
            self.keys_missing = missing

    def _lost(self) -> None:
        self.losses += 1
        if self.metrics is not None:
            self.metrics.redis_data_lost.inc()
        log.error("Redis lost its data (restarted without persistence, flushed, or failed over "
                  "to an empty replica): deployed functions, API keys, job records and results "
                  "from before are gone. Deploy the functions again (same digests, artifacts "
                  "are still in S3) and create API keys again; run Redis with persistence")

    async def run(self) -> None:
        """Check every `interval_s` until cancelled (a Redis that is down is /readyz's to
        report; the next check after it is back finds out what it lost)."""
        while True:
            with contextlib.suppress(Exception):  # any Redis error: the next check tries again
                await self.check()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Run the checks in a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
