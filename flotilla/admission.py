"""Whether an invocation may start now: a function's `max_concurrency` and a job's rate limit.

Both are fleet-wide and live in Redis, checked by the worker (on the invocation thread,
with a sync client) just before it runs an envelope:

- **Concurrency leases** (`Leases`): a sorted set `<prefix>:leases:<function>` of lease ids
  (the invocation id) scored by expiry (epoch ms from Redis' own clock). `ACQUIRE_LUA`
  drops expired leases, then grants the lease when the invocation already holds one (a
  redelivery after a crash takes its own lease over) or fewer than `max_concurrency` are
  held; else it answers how long until the first lease expires. A lease is given back when
  the run ends (`release`); one whose worker died expires after the function's timeout plus
  `LEASE_MARGIN_MS`, so a crash blocks a slot for at most that long.
- **Job tokens** (`JobTokens`): one token from the function's `rate_limit` bucket, the same
  bucket (`flotilla.ratelimit.function_bucket`) the dispatchers take synchronous calls'
  tokens from, so calls and jobs share the rate. A refused take answers how long until a
  token is there (nothing is taken).

What the worker does when refused is its business (worker/flow.py: a job is deferred into
the delay chain, a synchronous call waits until its deadline).
"""

from __future__ import annotations

from typing import Any

from flotilla.ratelimit import TOKEN_BUCKET_LUA, Limit, function_bucket

# How long past the function's timeout a lease outlives a worker that died holding it.
LEASE_MARGIN_MS = 5_000

# KEYS[1]: the function's lease set. ARGV: lease id, limit, hold_ms.
# 0 when granted; else milliseconds until the earliest lease expires (at least 1).
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1])
    or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
"""


class Leases:
    """Fleet-wide concurrency leases per function (see the module doc); thread-safe."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(ACQUIRE_LUA)

    def key(self, function: str) -> str:
        """The lease set of `function`."""
        return f"{self._prefix}:leases:{function}"

    def acquire(self, function: str, lease_id: str, limit: int, hold_ms: int) -> int:
        """Take (or renew) `lease_id`: 0 when granted, else ms until a lease expires."""
        return int(self._acquire(keys=[self.key(function)], args=[lease_id, limit, hold_ms]))

    def release(self, function: str, lease_id: str) -> None:
        """Give the lease back (nothing when it expired meanwhile)."""
        self._redis.zrem(self.key(function), lease_id)

    def held(self, function: str) -> int:
        """Leases held now, expired ones included until the next acquire (tests, metrics)."""
        return int(self._redis.zcard(self.key(function)))


class JobTokens:
    """Takes a job's token from its function's `rate_limit` bucket; thread-safe."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._prefix = prefix
        self._take = redis.register_script(TOKEN_BUCKET_LUA)

    def take(self, function: str, limit: Limit) -> int:
        """0 when a token was taken, else milliseconds until one is there."""
        key = f"{self._prefix}:ratelimit:{function_bucket(function)}"
        return int(self._take(keys=[key], args=[limit.rate, limit.burst]))
