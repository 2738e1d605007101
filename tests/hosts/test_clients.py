"""HostClients wiring, the dev-mode cache, the metrics hook and the log host (unit)."""

from __future__ import annotations

import time

import pytest

from flotilla.hosts.base import HostError, LogSink
from flotilla.hosts.clients import HostClients
from flotilla.hosts.log import LogHost
from flotilla.settings import WorkerSettings
from tests.hosts.conftest import MakeCtx, closed_port


def test_dev_clients_need_no_redis_server(make_ctx: MakeCtx) -> None:
    settings = WorkerSettings(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    clients = HostClients.for_dev(settings)
    try:
        ctx = make_ctx(name="dev-fn")
        clients.cache.set(ctx, "k", b"v", 0)
        assert clients.cache.get(ctx, "k") == b"v"
        assert clients.cache.increment(ctx, "n", 3, 1_000) == 3
    finally:
        clients.close()


def test_non_dev_clients_use_the_configured_redis(make_ctx: MakeCtx) -> None:
    settings = WorkerSettings(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    clients = HostClients.from_settings(settings)
    try:
        with pytest.raises(HostError) as info:
            clients.cache.get(make_ctx(), "k")
        assert info.value.case == "unavailable"
    finally:
        clients.close()


def test_observe_hook_sees_every_call_with_its_outcome(make_ctx: MakeCtx) -> None:
    seen: list[tuple[str, str, str, float]] = []
    clients = HostClients.for_dev(observe=lambda *event: seen.append(event))
    try:
        ctx = make_ctx(name="obs")
        clients.cache.set(ctx, "k", b"v", 0)
        with pytest.raises(HostError):
            clients.cache.get(ctx, "")
        with pytest.raises(HostError):
            clients.http.invoke(ctx, "GET", "http://example.com/", [], b"", None)
        with pytest.raises(HostError):
            clients.s3.get_object(ctx, "not-allowed", "k")
        with pytest.raises(HostError):
            clients.dynamodb.get_item(ctx, "not-allowed", "{}")
        clients.log.log(ctx, "info", "hello")
    finally:
        clients.close()
    assert [event[:3] for event in seen] == [
        ("cache", "set", "ok"),
        ("cache", "get", "invalid-argument"),
        ("http", "invoke", "denied"),
        ("s3", "get_object", "denied"),
        ("dynamodb", "get_item", "denied"),
        ("log", "log", "ok"),
    ]
    assert all(0 <= event[3] < 1 for event in seen)


def test_log_records_level_message_and_time(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    log = LogHost()
    before = int(time.time() * 1000)
    for level in ("debug", "info", "warn", "error", "bogus"):
        log.log(ctx, level, f"{level} message")
    assert [(r.level, r.message) for r in ctx.logs.records] == [
        ("debug", "debug message"),
        ("info", "info message"),
        ("warn", "warn message"),
        ("error", "error message"),
        ("info", "bogus message"),
    ]
    assert all(before <= r.time_ms <= int(time.time() * 1000) for r in ctx.logs.records)


def test_log_is_capped_by_the_sink(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    ctx.logs = LogSink(max_records=2)
    log = LogHost()
    for i in range(5):
        log.log(ctx, "info", str(i))
    assert [r.message for r in ctx.logs.records] == ["0", "1"] and ctx.logs.dropped == 3


def test_a_failing_observe_hook_does_not_fail_the_call(make_ctx: MakeCtx) -> None:
    def broken(*event: object) -> None:
        raise RuntimeError("metrics backend down")

    clients = HostClients.for_dev(observe=broken)
    try:
        ctx = make_ctx(name="obs")
        clients.cache.set(ctx, "k", b"v", 0)
        assert clients.cache.get(ctx, "k") == b"v"
        with pytest.raises(HostError) as info:  # the guest's error still wins
            clients.cache.get(ctx, "")
        assert info.value.case == "invalid-argument"
    finally:
        clients.close()
