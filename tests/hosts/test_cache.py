"""CacheHost against a real Redis (integration) and fakeredis (dev mode): every call and error."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.cache import CacheHost, connect_redis, fake_redis
from flotilla.hosts.policy import MAX_CACHE_KEY_BYTES, MAX_CACHE_VALUE_BYTES
from tests.hosts.conftest import MakeCtx, TcpProxy, closed_port


@pytest.fixture(params=["redis", "fakeredis"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The same CacheHost code runs on real Redis and on fakeredis (dev mode)."""
    if request.param == "redis":
        request.applymarker(pytest.mark.integration)
        real = connect_redis(request.getfixturevalue("redis_url"))
        yield real
        real.close()
    else:
        yield fake_redis()


@pytest.fixture
def cache(client: redis.Redis) -> CacheHost:
    return CacheHost(client)


@pytest.fixture
def ctx(make_ctx: MakeCtx, unique: str, client: redis.Redis) -> Iterator[InvocationContext]:
    context = make_ctx(name=unique)
    yield context
    for key in client.scan_iter(f"fn:{unique}:*"):
        client.delete(key)


def test_set_get_delete_round_trip(cache: CacheHost, ctx: InvocationContext) -> None:
    assert cache.get(ctx, "k") is None
    cache.set(ctx, "k", b"\x00value\xff", 0)
    assert cache.get(ctx, "k") == b"\x00value\xff"
    cache.delete(ctx, "k")
    assert cache.get(ctx, "k") is None
    cache.delete(ctx, "k")  # deleting an absent key is fine


def test_keys_are_namespaced_per_function(
    cache: CacheHost, client: redis.Redis, make_ctx: MakeCtx, unique: str
) -> None:
    a = make_ctx(name=f"{unique}-a")
    b = make_ctx(name="other", cache_namespace=f"{unique}-b")
    try:
        cache.set(a, "shared", b"from-a", 0)
        assert cache.get(b, "shared") is None
        cache.set(b, "shared", b"from-b", 0)
        assert cache.get(a, "shared") == b"from-a"
        assert client.get(f"fn:{unique}-a:shared") == b"from-a"
        assert client.get(f"fn:{unique}-b:shared") == b"from-b"
        cache.delete(b, "shared")
        assert cache.get(a, "shared") == b"from-a"
    finally:
        client.delete(f"fn:{unique}-a:shared", f"fn:{unique}-b:shared")


def test_set_with_ttl_expires_and_zero_means_no_expiry(
    cache: CacheHost, client: redis.Redis, ctx: InvocationContext, unique: str
) -> None:
    cache.set(ctx, "ttl", b"v", 60_000)
    assert 0 < client.pttl(f"fn:{unique}:ttl") <= 60_000
    cache.set(ctx, "ttl", b"v", 0)  # overwriting without a TTL removes the expiry
    assert client.pttl(f"fn:{unique}:ttl") == -1


def test_set_if_absent_writes_once(
    cache: CacheHost, client: redis.Redis, ctx: InvocationContext, unique: str
) -> None:
    assert cache.set_if_absent(ctx, "lock", b"first", 30_000) is True
    assert cache.set_if_absent(ctx, "lock", b"second", 30_000) is False
    assert cache.get(ctx, "lock") == b"first"
    assert 0 < client.pttl(f"fn:{unique}:lock") <= 30_000
    assert cache.set_if_absent(ctx, "forever", b"x", 0) is True
    assert client.pttl(f"fn:{unique}:forever") == -1


def test_increment_sets_ttl_only_on_creation(
    cache: CacheHost, client: redis.Redis, ctx: InvocationContext, unique: str
) -> None:
    key = f"fn:{unique}:window"
    assert cache.increment(ctx, "window", 5, 60_000) == 5
    first = client.pttl(key)
    assert 0 < first <= 60_000
    assert cache.increment(ctx, "window", -2, 1_000) == 3
    assert client.pttl(key) > 1_000  # not shortened: the window was fixed at creation
    assert cache.increment(ctx, "plain", 1, 0) == 1
    assert client.pttl(f"fn:{unique}:plain") == -1


def test_increment_is_atomic_under_threads(cache: CacheHost, ctx: InvocationContext) -> None:
    threads, rounds = 8, 50
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(rounds):
                cache.increment(ctx, "plain", 1, 0)
                cache.increment(ctx, "ttl", 2, 60_000)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    assert cache.increment(ctx, "plain", 0, 0) == threads * rounds
    assert cache.increment(ctx, "ttl", 0, 60_000) == 2 * threads * rounds


@pytest.mark.parametrize(
    ("value", "delta", "detail"),
    [(b"not a number", 1, "not an integer"), (b"9223372036854775807", 1, "overflow")],
)
def test_increment_rejects_non_integers_and_overflow(
    cache: CacheHost, ctx: InvocationContext, value: bytes, delta: int, detail: str
) -> None:
    cache.set(ctx, "n", value, 0)
    for ttl in (0, 5_000):
        with pytest.raises(HostError) as info:
            cache.increment(ctx, "n", delta, ttl)
        assert info.value.case == "invalid-argument"
        assert detail in (info.value.detail or "")
    assert cache.get(ctx, "n") == value


def test_limits_are_invalid_argument_and_nothing_is_written(
    cache: CacheHost, client: redis.Redis, ctx: InvocationContext, unique: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: cache.get(ctx, "k" * (MAX_CACHE_KEY_BYTES + 1)),
        lambda: cache.set(ctx, "k" * (MAX_CACHE_KEY_BYTES + 1), b"v", 0),
        lambda: cache.set(ctx, "big", b"v" * (MAX_CACHE_VALUE_BYTES + 1), 0),
        lambda: cache.set_if_absent(ctx, "big", b"v" * (MAX_CACHE_VALUE_BYTES + 1), 0),
        lambda: cache.set(ctx, "ttl", b"v", 2**64 - 1),
        lambda: cache.increment(ctx, "", 1, 0),
        lambda: cache.delete(ctx, ""),
    ]
    for call in calls:
        with pytest.raises(HostError) as info:
            call()
        assert info.value.case == "invalid-argument"
    assert list(client.scan_iter(f"fn:{unique}:*")) == []
    cache.set(ctx, "k" * MAX_CACHE_KEY_BYTES, b"v" * MAX_CACHE_VALUE_BYTES, 0)  # the limits fit
    assert cache.get(ctx, "k" * MAX_CACHE_KEY_BYTES) == b"v" * MAX_CACHE_VALUE_BYTES


def test_deadline_passed_is_unavailable(cache: CacheHost, make_ctx: MakeCtx) -> None:
    ctx = make_ctx(seconds=-1)
    with pytest.raises(HostError) as info:
        cache.get(ctx, "k")
    assert info.value.case == "unavailable"


@pytest.mark.integration
def test_redis_down_is_unavailable_quickly(make_ctx: MakeCtx) -> None:
    client = connect_redis(f"redis://127.0.0.1:{closed_port()}/0")
    cache = CacheHost(client)
    ctx = make_ctx()
    for call in (
        lambda: cache.get(ctx, "k"),
        lambda: cache.set(ctx, "k", b"v", 0),
        lambda: cache.set_if_absent(ctx, "k", b"v", 0),
        lambda: cache.delete(ctx, "k"),
        lambda: cache.increment(ctx, "k", 1, 1_000),
    ):
        start = time.monotonic()
        with pytest.raises(HostError) as info:
            call()
        assert info.value.case == "unavailable"
        assert time.monotonic() - start < 1.0
    client.close()


@pytest.mark.integration
def test_cache_recovers_once_redis_is_back(
    redis_proxy: TcpProxy, make_ctx: MakeCtx, unique: str
) -> None:
    client = connect_redis(f"redis://127.0.0.1:{redis_proxy.port}/0")
    cache = CacheHost(client)
    ctx = make_ctx(name=unique)
    try:
        cache.set(ctx, "k", b"before", 60_000)
        redis_proxy.stop()
        with pytest.raises(HostError) as info:
            cache.get(ctx, "k")
        assert info.value.case == "unavailable"
        redis_proxy.start()
        assert cache.get(ctx, "k") == b"before"
    finally:
        client.delete(f"fn:{unique}:k")
        client.close()
