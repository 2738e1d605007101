"""Per-key rate limits: a token bucket kept in Redis, shared by every dispatcher replica.

`dispatcher.auth` runs the same Lua function inside its key lookup script (one round trip
per request); `RateLimiter` runs it alone.

A bucket holds up to `burst` tokens and refills at `rate` tokens per second; each request
takes one. The whole read-refill-take step is one Lua script, so replicas never race, and it
reads the clock from Redis (`TIME`), so replicas with skewed clocks agree. A bucket left
alone expires once it would be full again: idle keys cost no memory.

`refill` is the same arithmetic in Python (a pure function, unit-tested; the script mirrors it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# A Lua function: take one token from bucket `key`; 0 when allowed, else ms to wait.
TAKE_TOKEN_LUA = """
local function take_token(key, rate, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
    ts = now
  end
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(ts))
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  return wait
end
"""

# KEYS[1] = bucket; ARGV = rate (tokens/s), burst. Returns the wait in ms (0: allowed).
TOKEN_BUCKET_LUA = TAKE_TOKEN_LUA + """
return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""


@dataclass(frozen=True)
class Limit:
    """A key's limit: `rate` requests per second on average, bursts of up to `burst`."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of requests per second, not {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {self.burst}")


def refill(tokens: float, elapsed_ms: float, limit: Limit) -> tuple[bool, float, int]:
    """One request against a bucket holding `tokens` last seen `elapsed_ms` ago.

    Returns (allowed, tokens left, milliseconds until a request would be allowed).
    """
    tokens = min(float(limit.burst), tokens + max(0.0, elapsed_ms) * limit.rate / 1000)
    if tokens >= 1:
        return True, tokens - 1, 0
    return False, tokens, math.ceil((1 - tokens) * 1000 / limit.rate)


def function_bucket(name: str) -> str:
    """The bucket of function `name`'s fleet-wide `rate_limit`, shared by the dispatchers
    (synchronous calls) and the workers (jobs): key `<prefix>:ratelimit:function:<name>`."""
    return f"function:{name}"


def retry_after_s(wait_ms: int) -> int:
    """The Retry-After header value (whole seconds, at least 1) for a wait in milliseconds."""
    return max(1, math.ceil(wait_ms / 1000))


class RateLimiter:
    """Token buckets in Redis under `<prefix>:ratelimit:<id>`."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(TOKEN_BUCKET_LUA)

    async def take(self, bucket: str, limit: Limit) -> int:
        """Take one token from `bucket`: 0 when allowed, else milliseconds to wait."""
        wait = await self._script(
            keys=[f"{self.prefix}:ratelimit:{bucket}"], args=[limit.rate, limit.burst]
        )
        return int(wait)
