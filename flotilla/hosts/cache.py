"""The `cache` host interface: a per-function namespace of keys in Redis.

Semantics the guest relies on:

- Every key is stored as `fn:{cache_namespace}:{key}`, so a function can neither read nor
  overwrite another function's keys (namespaces default to the function name).
- Keys are 1 byte to 1 KiB of UTF-8, values at most 1 MiB, TTLs 0 (no expiry) to ten years;
  anything else is `invalid-argument` and never reaches Redis.
- `set-if-absent` is `SET NX PX`: true when this call wrote the value. `set-if-present`
  is `SET XX PX`. `set-if-equal` compares the current value with `expected` and writes in
  one Lua script (atomic: of two writers expecting the same value, exactly one wins); an
  absent key equals nothing.
- `increment` runs `SET key 0 NX PX ttl` and `INCRBY key delta` in one MULTI/EXEC
  transaction: the counter is created at 0 with the TTL only when the key is absent, so the
  TTL is set exactly once, when the counter is created, and later increments never extend it
  (a fixed window). With ttl-ms 0 it is a plain INCRBY (no expiry). A key that does not hold
  an integer, or an overflow past the signed 64-bit range, is `invalid-argument`.
- Redis unreachable, timing out or failing is `unavailable` for that call only: connections
  time out quickly (`connect_timeout`, `socket_timeout`), redis-py does not retry, and the
  pool reconnects on a later call once Redis is back. A call made after the invocation's
  deadline fails at once; a call in flight may overrun it by at most `socket_timeout`.

One `redis.Redis` (one ConnectionPool, thread-safe) serves every invocation of the process.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flotilla.hosts import interface as wit
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.observe import Meter, Observe
from flotilla.hosts.policy import (
    cache_key,
    check_cache_key,
    check_cache_value,
    check_ttl_ms,
)
from flotilla.sandbox import abi

# KEYS[1] the key; ARGV: expected, value, ttl-ms (0: no expiry). 1 when written.
SET_IF_EQUAL_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

DEFAULT_CONNECT_TIMEOUT = 0.25
DEFAULT_SOCKET_TIMEOUT = 1.0


def connect_redis(
    url: str,
    *,
    max_connections: int = 64,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
) -> redis.Redis:
    """A client on one bounded, thread-safe pool with short timeouts and no retries.

    No connection is made until the first command.
    """
    pool = redis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def fake_redis() -> redis.Redis:
    """An in-process Redis (fakeredis) for dev mode: same commands, no server needed."""
    import fakeredis

    return fakeredis.FakeRedis()


class CacheHost:
    """The guest's cache calls on one shared Redis client; thread-safe."""

    def __init__(self, client: redis.Redis, *, observe: Observe | None = None) -> None:
        self._client = client
        self._meter = Meter("cache", observe)
        self._set_if_equal = client.register_script(SET_IF_EQUAL_LUA)

    def get(self, ctx: InvocationContext, key: str) -> bytes | None:
        """The value of `key`, or None when absent or expired."""
        with self._meter.measure("get"):
            name = self._key(ctx, key)
            value = self._run(ctx, self._client.get, name)
            return None if value is None else bytes(value)

    def set(self, ctx: InvocationContext, key: str, value: bytes, ttl_ms: int) -> None:
        """Write `value`; `ttl_ms` 0 means no expiry."""
        with self._meter.measure("set"):
            name = self._key(ctx, key)
            _check(check_cache_value(value))
            _check(check_ttl_ms(ttl_ms))
            self._run(ctx, self._client.set, name, value, px=ttl_ms or None)

    def set_if_absent(self, ctx: InvocationContext, key: str, value: bytes, ttl_ms: int) -> bool:
        """Write `value` only when `key` is absent (SET NX PX); True when written."""
        with self._meter.measure("set_if_absent"):
            name = self._key(ctx, key)
            _check(check_cache_value(value))
            _check(check_ttl_ms(ttl_ms))
            return bool(self._run(ctx, self._client.set, name, value, nx=True, px=ttl_ms or None))

    def set_if_present(self, ctx: InvocationContext, key: str, value: bytes, ttl_ms: int) -> bool:
        """Write `value` only when `key` exists (SET XX PX); True when written."""
        with self._meter.measure("set_if_present"):
            name = self._key(ctx, key)
            _check(check_cache_value(value))
            _check(check_ttl_ms(ttl_ms))
            return bool(self._run(ctx, self._client.set, name, value, xx=True, px=ttl_ms or None))

    def set_if_equal(
        self, ctx: InvocationContext, key: str, expected: bytes, value: bytes, ttl_ms: int
    ) -> bool:
        """Write `value` only when the current value equals `expected`, atomically."""
        with self._meter.measure("set_if_equal"):
            name = self._key(ctx, key)
            _check(check_cache_value(expected))
            _check(check_cache_value(value))
            _check(check_ttl_ms(ttl_ms))
            args = [expected, value, ttl_ms]
            return bool(self._run(ctx, self._set_if_equal, keys=[name], args=args))

    def delete(self, ctx: InvocationContext, key: str) -> None:
        """Remove `key`; removing an absent key is not an error."""
        with self._meter.measure("delete"):
            name = self._key(ctx, key)
            self._run(ctx, self._client.delete, name)

    def increment(self, ctx: InvocationContext, key: str, delta: int, ttl_ms: int) -> int:
        """Atomically add `delta` and return the new value; the TTL applies on creation only."""
        with self._meter.measure("increment"):
            name = self._key(ctx, key)
            _check(check_ttl_ms(ttl_ms))
            if ttl_ms == 0:
                return int(self._run(ctx, self._client.incrby, name, delta))
            return int(self._run(ctx, self._increment_with_ttl, name, delta, ttl_ms))

    def _increment_with_ttl(self, name: str, delta: int, ttl_ms: int) -> int:
        pipe = self._client.pipeline(transaction=True)
        pipe.set(name, 0, nx=True, px=ttl_ms)
        pipe.incrby(name, delta)
        _, value = pipe.execute()
        return int(value)

    def _key(self, ctx: InvocationContext, key: str) -> str:
        _check(check_cache_key(key))
        return cache_key(ctx.config.cache_namespace, key)

    def _run(self, ctx: InvocationContext, call: Any, *args: Any, **kwargs: Any) -> Any:
        if ctx.remaining() <= 0:
            raise HostError("unavailable", "the invocation's deadline has passed")
        try:
            return call(*args, **kwargs)
        except redis.ResponseError as exc:
            message = str(exc)
            if "not an integer" in message or "overflow" in message:
                raise HostError("invalid-argument", f"cache: {message}") from None
            raise HostError("unavailable", f"cache error: {message}") from None
        except redis.RedisError as exc:
            raise HostError("unavailable", f"cache unavailable: {exc}") from None


def _check(problem: str | None) -> None:
    if problem is not None:
        raise HostError("invalid-argument", problem)


# ---- the WIT interface ----------------------------------------------------------------------


def _get(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    return wit.ok(wit.opt_bytes(host.get(ctx, wit.arg_string(a, 0))))


def _set(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.set(ctx, wit.arg_string(a, 0), wit.arg_bytes(a, 1), abi.get_u64(a[2]))
    return wit.ok()


def _set_if_absent(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    key, value, ttl = wit.arg_string(a, 0), wit.arg_bytes(a, 1), abi.get_u64(a[2])
    return wit.ok_bool(host.set_if_absent(ctx, key, value, ttl))


def _set_if_present(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    key, value, ttl = wit.arg_string(a, 0), wit.arg_bytes(a, 1), abi.get_u64(a[2])
    return wit.ok_bool(host.set_if_present(ctx, key, value, ttl))


def _set_if_equal(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    key, expected, value = wit.arg_string(a, 0), wit.arg_bytes(a, 1), wit.arg_bytes(a, 2)
    return wit.ok_bool(host.set_if_equal(ctx, key, expected, value, abi.get_u64(a[3])))


def _delete(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.delete(ctx, wit.arg_string(a, 0))
    return wit.ok()


def _increment(host: CacheHost, ctx: InvocationContext, a: Any) -> wit.Writer:
    value = int(host.increment(ctx, wit.arg_string(a, 0), abi.get_s64(a[1]), abi.get_u64(a[2])))
    return wit.ok(lambda v: abi.put_s64(v, value))


INTERFACE = wit.Interface(
    "cache",
    (
        wit.HostFunc("get", _get),
        wit.HostFunc("set", _set),
        wit.HostFunc("set-if-absent", _set_if_absent),
        wit.HostFunc("delete", _delete),
        wit.HostFunc("increment", _increment),
        wit.HostFunc("set-if-equal", _set_if_equal),
        wit.HostFunc("set-if-present", _set_if_present),
    ),
    errors={"unavailable": True, "invalid-argument": True},
    client="cache",
)
