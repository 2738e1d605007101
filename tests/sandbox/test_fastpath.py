"""The C accelerator (`_fastcall`) against the ctypes path: same results on every outcome."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from flotilla.sandbox import InvocationResult, LoadedFunction, Outcome, Request, Sandbox, fastpath
from flotilla.sandbox.engine import tune_malloc
from tests.guests.wat import build_wat
from tests.sandbox.conftest import FakeCache, FakeHosts, config, persistent_cache_dir, req
from tests.services import unavailable


@pytest.fixture(scope="module")
def ctypes_sandbox(fake_hosts: FakeHosts) -> Iterator[Sandbox]:
    """A Sandbox that never uses the accelerator (the fallback path)."""
    sb = Sandbox(fake_hosts, cache_dir=persistent_cache_dir(), accelerate=False)
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def fast(sandbox: Sandbox) -> Sandbox:
    """The shared sandbox, which must be running on the accelerator."""
    if sandbox.call_path != "c-extension":
        unavailable("flotilla/sandbox/_fastcall was not built (pip install -e . builds it)")
    return sandbox


def same(a: InvocationResult, b: InvocationResult) -> None:
    """Assert two results agree on everything but timings."""
    assert (a.outcome, a.response, a.error) == (b.outcome, b.response, b.error)
    assert [(r.level, r.message) for r in a.logs] == [(r.level, r.message) for r in b.logs]


REQUESTS = [
    req(b""),
    req(b"x"),
    req(bytes(range(256)) * 300, (("content-type", "text/plain"), ("x-\u00e9t\u00e9", "\u2603"))),
    req(b"e"),  # err("boom")
    req(b"s"),  # status 99
    req(b"u"),  # unreachable
    req(b"b" + struct.pack("<I", 70_000)),  # big response, under the cap
    req(b"b" + struct.pack("<I", 2 << 20)),  # over max_body_bytes (1 MiB)
    req(b"L"),  # log.log then echo
    req(b"c"),  # call counter: 1 in a fresh instance
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: repr(r.body[:1]))
def test_both_paths_agree(
    fast: Sandbox, ctypes_sandbox: Sandbox, modes: LoadedFunction, request_: Request
) -> None:
    slow_modes = ctypes_sandbox.load(build_wat("modes"))
    a = fast.invoke(modes, config(), request_)
    b = ctypes_sandbox.invoke(slow_modes, config(), request_)
    same(a, b)
    assert a.timings.total_us > 0


def test_echo_round_trips_headers_and_body(fast: Sandbox, modes: LoadedFunction) -> None:
    headers = (("a", ""), ("", "b"), ("\u00fc", "x" * 5000))
    body = bytes(range(256)) * 4096  # 1 MiB
    result = fast.invoke(modes, config(max_body_bytes=2 << 20), req(body, headers))
    assert result.ok, result.error
    assert result.response is not None
    assert result.response.body == body
    assert result.response.headers == headers


def test_host_calls_run_on_many_threads(
    fast: Sandbox, modes: LoadedFunction, fake_cache: FakeCache
) -> None:
    # Given a cache that answers with the key, when 4 threads invoke the guest that calls it
    fake_cache.behaviour = lambda key: b"value-of-" + key.encode()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fast.invoke(modes, config(), req(b"g")), range(40)))
    # then every invocation got its own host call through the GIL-released C call
    assert all(r.ok and r.response and r.response.body == b"value-of-k" for r in results)
    assert len(fake_cache.calls) == 40


def test_failures_leave_the_accelerator_usable(fast: Sandbox, modes: LoadedFunction) -> None:
    assert fast.invoke(modes, config(timeout_ms=30), req(b"l")).outcome == Outcome.TIMEOUT
    bomb = fast.invoke(modes, config(memory_limit_mb=8), req(b"m"))
    assert bomb.outcome == Outcome.TRAP and "unreachable" in (bomb.error or "")
    after = fast.invoke(modes, config(), req(b"xhello"))
    assert after.ok and after.response is not None and after.response.body == b"xhello"


def test_accelerate_false_uses_ctypes(ctypes_sandbox: Sandbox) -> None:
    assert ctypes_sandbox.call_path == "ctypes"


def test_layout_constants_match_wasmtime_py() -> None:
    module = fastpath.load()
    if module is None:
        unavailable("flotilla/sandbox/_fastcall was not built")
    assert fastpath._layout_mismatch(module) is None


def test_malloc_tuning_is_off_for_zero() -> None:
    assert tune_malloc(0) is False
