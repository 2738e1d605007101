"""Sandbox test fixtures: one shared Sandbox over fake hosts, and the test guests."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flotilla.config import FunctionConfig
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.sandbox import LoadedFunction, Request, Sandbox, new_request
from tests.guests.wat import build_wat

PYGUEST_DIR = Path(__file__).resolve().parent / "pyguest"


def persistent_cache_dir() -> Path:
    """A cache kept between test runs (built guests, compiled artifacts)."""
    base = os.environ.get("FLOTILLA_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "flotilla")
    return Path(base)


@dataclass
class FakeCache:
    """CacheHost stand-in: `behaviour(key)` returns bytes/None or raises; calls are recorded."""

    behaviour: Callable[[str], bytes | None] = lambda key: None
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, ctx: InvocationContext, key: str) -> bytes | None:
        with self.lock:
            self.calls.append(key)
        return self.behaviour(key)


@dataclass
class FakeLog:
    """LogHost stand-in: appends to the invocation's LogSink, like the real one."""

    def log(self, ctx: InvocationContext, level: str, message: str) -> None:
        ctx.logs.add(level, message)


@dataclass
class FakeHosts:
    """Just enough of HostClients for the WAT guests (cache.get and log.log)."""

    cache: FakeCache = field(default_factory=FakeCache)
    log: FakeLog = field(default_factory=FakeLog)
    http: Any = None
    s3: Any = None
    dynamodb: Any = None


@pytest.fixture(scope="session")
def fake_hosts() -> FakeHosts:
    """The fakes behind the shared sandbox (reset the cache behaviour per test)."""
    return FakeHosts()


@pytest.fixture
def fake_cache(fake_hosts: FakeHosts) -> Iterator[FakeCache]:
    """The shared sandbox's cache fake, reset before and after the test."""
    fake_hosts.cache.behaviour = lambda key: None
    fake_hosts.cache.calls.clear()
    yield fake_hosts.cache
    fake_hosts.cache.behaviour = lambda key: None
    fake_hosts.cache.calls.clear()


@pytest.fixture(scope="session")
def sandbox(fake_hosts: FakeHosts) -> Iterator[Sandbox]:
    """One Sandbox for the session (as in a worker), over fake hosts, persistent cache."""
    sb = Sandbox(fake_hosts, cache_dir=persistent_cache_dir())
    yield sb
    sb.close()


@pytest.fixture(scope="session")
def modes(sandbox: Sandbox) -> LoadedFunction:
    """The misbehaving WAT guest (tests/guests/wat/modes.wat)."""
    return sandbox.load(build_wat("modes"))


@pytest.fixture(scope="session")
def echo(sandbox: Sandbox) -> LoadedFunction:
    """The trivial WAT echo shipped with the package."""
    return sandbox.load(build_wat("echo"))


@pytest.fixture(scope="session")
def probe(sandbox: Sandbox) -> LoadedFunction:
    """The Python WASI probe guest (componentize-py build and compile, both cached)."""
    from flotilla.build import build_guest

    path = build_guest(PYGUEST_DIR / "app.py", cache_dir=persistent_cache_dir())
    return sandbox.load(path.read_bytes())


def config(**overrides: Any) -> FunctionConfig:
    """A FunctionConfig for tests (short timeout, small memory, 1 MiB bodies)."""
    values: dict[str, Any] = {
        "name": "t",
        "timeout_ms": 2_000,
        "memory_limit_mb": 64,
        "max_body_bytes": 1 << 20,
    }
    values.update(overrides)
    return FunctionConfig(**values)


def req(body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> Request:
    """A request to function `t`."""
    return new_request("t", body, headers)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` (for conditions no event signals) until true or `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


__all__ = ["HostError", "config", "req", "wait_until"]
