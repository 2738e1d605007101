"""The sandbox's bridge over the real HostClients (Redis cache), with the WAT guest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.config import FunctionConfig
from flotilla.hosts.base import InvocationContext
from flotilla.hosts.clients import HostClients
from flotilla.sandbox import Outcome, Sandbox
from flotilla.settings import WorkerSettings
from tests.guests.wat import build_wat
from tests.sandbox.conftest import req

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    hosts = HostClients.from_settings(WorkerSettings(redis_url=redis_url))
    sb = Sandbox(hosts, cache_dir=Path(tmp_path_factory.mktemp("real-hosts")))
    yield sb
    sb.close()
    hosts.close()


def test_cache_get_through_redis(real: Sandbox, unique: str) -> None:
    config = FunctionConfig(name=unique, timeout_ms=5_000)
    fn = real.load(build_wat("modes"))
    assert real.invoke(fn, config, req(b"g")).response.status == 404
    ctx = InvocationContext(config, "setup", time.monotonic() + 5)
    real._linker.hosts.cache.set(ctx, "k", b"from-redis", 10_000)
    try:
        result = real.invoke(fn, config, req(b"g"))
        assert result.outcome is Outcome.OK
        assert (result.response.status, result.response.body) == (200, b"from-redis")
        other = FunctionConfig(name=unique + "-other", timeout_ms=5_000)
        assert real.invoke(fn, other, req(b"g")).response.status == 404  # namespaced
    finally:
        real._linker.hosts.cache.delete(ctx, "k")
